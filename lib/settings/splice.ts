/**
 * The settings both proxies share for their splices (docs/settings.md, "Splices"): how long a
 * splice may stay idle and when TCP keepalive starts probing its two sockets.
 * @module
 */
import * as check from "./check.ts";
import { defaultsOf, duration, fileKeys, type Infer, MAX_MS, withDefault } from "./schema.ts";

/** The declaration of both proxies' splice keys (docs/settings.md). */
export const SPLICE_SHAPE = {
  idleTimeoutMs: withDefault(
    duration(0),
    600_000,
    "A splice with no byte either way for this long is closed (both of its sockets; the log line says `idle timeout`). 0: never. As nginx's stream `proxy_timeout`.",
    { defaultDoc: "`600000` (10 min)" },
  ),
  tcpKeepAliveMs: withDefault(
    duration(0),
    60_000,
    "TCP keepalive on both sockets of every splice: the first probe after this much idleness, then 3 probes a sixth of it apart (1 s to 75 s), so a peer that vanished without FIN or RST is dropped within about 1.5 × this (the log line says `peer vanished`). The native driver sets these timings (and TCP_USER_TIMEOUT to the same bound); the portable one (`sockets: deno`) can only switch keepalive on, with the system's timings, so there `idle_timeout_ms` is the bound. 0: off. At least 1000 when on.",
    { key: "tcp_keepalive_ms", range: "0, or 1000 – 2 592 000 000" },
  ),
} as const;

/**
 * `idleTimeoutMs`: a splice with no byte either way for this long is closed; 0: never (as
 * nginx's proxy_timeout). `tcpKeepAliveMs`: TCP keepalive on both sockets of every splice, the
 * first probe after this much idleness, then probes at the interval `keepAliveTimings` derives;
 * 0: off (the system's default applies).
 */
export type SpliceSettings = Infer<typeof SPLICE_SHAPE>;

export const SPLICE_DEFAULTS = defaultsOf(SPLICE_SHAPE);

export const SPLICE_KEYS = fileKeys(SPLICE_SHAPE);

export { MAX_MS };

/** The check across the splice keys: keepalive counts whole seconds. */
export function checkSplice(s: SpliceSettings, problems: check.Problems): void {
  if (s.tcpKeepAliveMs > 0 && s.tcpKeepAliveMs < 1000) {
    problems.push(
      `tcp_keepalive_ms: ${s.tcpKeepAliveMs} is below 1000 (TCP keepalive counts whole seconds); use 0 to turn it off`,
    );
  }
}
