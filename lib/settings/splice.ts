/**
 * The settings both proxies share for their splices (docs/settings.md, "Splices"): how long a
 * splice may stay idle and when TCP keepalive starts probing its two sockets.
 * @module
 */
import * as check from "./check.ts";

export interface SpliceSettings {
  /** A splice with no byte either way for this long is closed; 0: never (as nginx's proxy_timeout). */
  idleTimeoutMs: number;
  /**
   * TCP keepalive on both sockets of every splice: the first probe after this much idleness, then
   * probes at the interval `keepAliveTimings` derives; 0: off (the system's default applies).
   */
  tcpKeepAliveMs: number;
}

export const SPLICE_DEFAULTS = {
  idleTimeoutMs: 600_000,
  tcpKeepAliveMs: 60_000,
} as const;

export const SPLICE_KEYS = ["idle_timeout_ms", "tcp_keepalive_ms"] as const;

const MAX_MS = 30 * 86_400_000;

/** Reads `idle_timeout_ms` and `tcp_keepalive_ms` (0 allowed: off) from a proxy's settings. */
export function parseSpliceSettings(
  data: Record<string, unknown>,
  problems: check.Problems,
): SpliceSettings {
  const idleTimeoutMs = check.integer(
    data.idle_timeout_ms ?? SPLICE_DEFAULTS.idleTimeoutMs,
    "idle_timeout_ms",
    problems,
    0,
    MAX_MS,
  );
  const tcpKeepAliveMs = check.integer(
    data.tcp_keepalive_ms ?? SPLICE_DEFAULTS.tcpKeepAliveMs,
    "tcp_keepalive_ms",
    problems,
    0,
    MAX_MS,
  );
  if (tcpKeepAliveMs > 0 && tcpKeepAliveMs < 1000) {
    problems.push(
      `tcp_keepalive_ms: ${tcpKeepAliveMs} is below 1000 (TCP keepalive counts whole seconds); use 0 to turn it off`,
    );
  }
  return { idleTimeoutMs, tcpKeepAliveMs };
}
