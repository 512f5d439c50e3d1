/**
 * Settings of the EPS role (`tls-pass run eps`); reference in docs/settings.md.
 * @module
 */
import type { HostPort } from "../role.ts";
import * as check from "./check.ts";
import { checkReadable, loadSettings } from "./loader.ts";
import { ADMIN_KEYS, type AdminSettings, parseAdminSettings } from "./admin.ts";

export interface EpsSettings extends AdminSettings {
  /** This EPS server's operator; its certificate's CN and DNS SAN. */
  operator: string;
  /** Links from peer EPS servers and from the own proxy. */
  listen?: HostPort;
  /** Links from the own proxy only (e.g. loopback). */
  proxyListen?: HostPort;
  /** This operator's certificate (leaf + intermediate) and its key, PEM. */
  certificateFile: string;
  keyFile: string;
  /** The directory folder (operators, permissions, pins, CA files). */
  directoryDir: string;
  /** Default deadline of a call. */
  callTimeoutMs: number;
  maxMessageBytes: number;
  maxStreamsPerLink: number;
  keepaliveIntervalMs: number;
  /** Deadline of the TLS handshake of a link. */
  handshakeTimeoutMs: number;
}

export const EPS_DEFAULTS = {
  callTimeoutMs: 5000,
  maxMessageBytes: 1024 * 1024,
  maxStreamsPerLink: 1024,
  keepaliveIntervalMs: 15_000,
  handshakeTimeoutMs: 10_000,
} as const;

const KEYS = [
  "operator",
  "listen",
  "proxy_listen",
  "certificate_file",
  "key_file",
  "directory_dir",
  "call_timeout_ms",
  "max_message_bytes",
  "max_streams_per_link",
  "keepalive_interval_ms",
  "handshake_timeout_ms",
  ...ADMIN_KEYS,
] as const;

/** Validates merged EPS settings, reporting every problem (docs/settings.md, "Validation"). */
export function parseEpsSettings(
  data: Record<string, unknown>,
  problems: check.Problems,
): EpsSettings {
  check.onlyKeys(data, KEYS, "", problems);
  const str = (key: string) =>
    check.required(data[key], key, problems) ? check.string(data[key], key, problems) : "";
  let operator = "";
  if (check.required(data.operator, "operator", problems)) {
    const v = data.operator;
    if (typeof v === "string" && check.normalizeHostName(v) === v) operator = v;
    else {
      problems.push(
        `operator: must be a lower-case host name (an operator name), got ${JSON.stringify(v)}`,
      );
    }
  }
  const s: EpsSettings = {
    ...parseAdminSettings(data, problems),
    operator,
    certificateFile: str("certificate_file"),
    keyFile: str("key_file"),
    directoryDir: str("directory_dir"),
    callTimeoutMs: check.durationMs(
      data.call_timeout_ms ?? EPS_DEFAULTS.callTimeoutMs,
      "call_timeout_ms",
      problems,
    ),
    maxMessageBytes: check.bytes(
      data.max_message_bytes ?? EPS_DEFAULTS.maxMessageBytes,
      "max_message_bytes",
      problems,
      1024,
      64 * 1024 * 1024,
    ),
    maxStreamsPerLink: check.integer(
      data.max_streams_per_link ?? EPS_DEFAULTS.maxStreamsPerLink,
      "max_streams_per_link",
      problems,
      1,
      65536,
    ),
    keepaliveIntervalMs: check.durationMs(
      data.keepalive_interval_ms ?? EPS_DEFAULTS.keepaliveIntervalMs,
      "keepalive_interval_ms",
      problems,
    ),
    handshakeTimeoutMs: check.durationMs(
      data.handshake_timeout_ms ?? EPS_DEFAULTS.handshakeTimeoutMs,
      "handshake_timeout_ms",
      problems,
    ),
  };
  if (data.listen !== undefined) s.listen = check.address(data.listen, "listen", problems);
  if (data.proxy_listen !== undefined) {
    s.proxyListen = check.address(data.proxy_listen, "proxy_listen", problems);
  }
  if (data.listen === undefined && data.proxy_listen === undefined) {
    problems.push(
      "listen: is required unless proxy_listen is set (the own proxy needs somewhere to attach)",
    );
  }
  checkReadable(s.certificateFile, "certificate_file", problems);
  checkReadable(s.keyFile, "key_file", problems);
  if (s.directoryDir !== "") {
    try {
      if (!Deno.statSync(s.directoryDir).isDirectory) {
        problems.push(`directory_dir: "${s.directoryDir}" is not a folder`);
      }
    } catch (err) {
      problems.push(
        `directory_dir: cannot read "${s.directoryDir}": ${
          err instanceof Error ? err.message : String(err)
        }`,
      );
    }
  }
  return s;
}

/** Loads and validates EPS settings from files and folders. */
export function loadEpsSettings(sources: readonly string[]): Promise<EpsSettings> {
  return loadSettings(sources, parseEpsSettings);
}
