/**
 * Settings of the private proxy (`tls-pass run private`); reference in docs/settings.md.
 *
 * ```yaml
 * operator: private-proxy-1
 * eps: {address: 127.0.0.1:7776, certificate_file: …, key_file: …, ca_certificate_files: […]}
 * announce_to: [public-proxy-1]                 # public operators
 * endpoints: {public-proxy-1: 127.0.0.1:9999}   # the only address dialled for that operator
 * announcements:
 *   - {domain: test.internal-server.local, internal: 127.0.0.1:8888}
 * pool: {enabled: true, min_idle: 0, max_idle: 32, idle_timeout_ms: 30000}   # pre-warmed dial-backs
 * ```
 * @module
 */
import type { HostPort } from "../role.ts";
import type { SocketsChoice } from "./public.ts";
import { type EpsClientSettings, parseEpsClientSettings } from "./eps_client.ts";
import * as check from "./check.ts";
import { loadSettings } from "./loader.ts";
import {
  parseSpliceSettings,
  SPLICE_DEFAULTS,
  SPLICE_KEYS,
  type SpliceSettings,
} from "./splice.ts";
import { operatorName } from "./public.ts";
import { cidrList } from "./limits.ts";
import type { ProxyProtocolVersion } from "../wire/proxy_protocol.ts";
import { ADMIN_KEYS, type AdminSettings, parseAdminSettings } from "./admin.ts";

/** One announced domain and the internal server behind it. */
export interface PrivateAnnouncement {
  /** A host name or `*.name`, normalised. */
  domain: string;
  internal: HostPort;
  /** Lifetime of each announcement; default 3 × reannounce_interval_ms, at most 7 days. */
  expiresInMs: number;
  /**
   * CIDRs: only clients from these may reach the name at the public proxy (docs/architecture.md,
   * "Admission"); absent: everyone its public port admits.
   */
  allow?: string[];
  /** The PROXY protocol header written to the internal server first; absent: none. */
  proxyProtocol?: ProxyProtocolVersion;
}

/** Pre-warmed dial-backs (docs/architecture.md, "Pre-warmed dial-backs"), per public operator. */
export interface PrivatePoolSettings {
  enabled: boolean;
  /** The pool never aims below this many connections (idle or being dialled). */
  minIdle: number;
  /** Nor above this many; the size in between follows the arrival rate. */
  maxIdle: number;
  /** The public proxy drops an idle pooled connection after this long (capped at 10 min there). */
  idleTimeoutMs: number;
}

export interface PrivateSettings extends SpliceSettings, AdminSettings {
  operator: string;
  eps: EpsClientSettings;
  /** The public operators to announce to; notices are accepted only from them. */
  announceTo: string[];
  /** Per public operator, the private port it may be dialled at. */
  endpoints: Record<string, HostPort>;
  announcements: PrivateAnnouncement[];
  reannounceIntervalMs: number;
  /** First retry delay while an announcement is not acknowledged; doubles up to 20 s. */
  retryMs: number;
  /** Deadline of the dial-back connect (and of writing the token). */
  dialTimeoutMs: number;
  /** Deadline of the connect to the internal server. */
  connectTimeoutMs: number;
  /** Connections at once; absent: planned from the open-file limit at start (lib/proxy/budget.ts). */
  maxConnections?: number;
  /** On a graceful stop, how long live splices may go on (withdrawing is bounded by the call deadline). */
  graceMs: number;
  /** Data sockets: "native" (libc over FFI, spliced in a worker thread), "deno", or "auto". */
  sockets: SocketsChoice;
  pool: PrivatePoolSettings;
}

export const POOL_DEFAULTS: PrivatePoolSettings = {
  enabled: true,
  minIdle: 0,
  maxIdle: 32,
  idleTimeoutMs: 30_000,
};

export const PRIVATE_DEFAULTS = {
  ...SPLICE_DEFAULTS,
  reannounceIntervalMs: 600_000,
  retryMs: 200,
  dialTimeoutMs: 5000,
  connectTimeoutMs: 5000,
  graceMs: 5000,
  sockets: "auto",
  pool: POOL_DEFAULTS,
} as const;

const MAX_EXPIRY_MS = 7 * 86_400_000;

const KEYS = [
  "operator",
  "eps",
  "announce_to",
  "endpoints",
  "announcements",
  "reannounce_interval_ms",
  "retry_ms",
  "dial_timeout_ms",
  "connect_timeout_ms",
  "max_connections",
  "grace_ms",
  "sockets",
  "pool",
  ...SPLICE_KEYS,
  ...ADMIN_KEYS,
] as const;
/** The most announcements one private proxy may list (sent in pages of 5,000 or fewer). */
export const MAX_ANNOUNCEMENTS = 100_000;

const POOL_KEYS = ["enabled", "min_idle", "max_idle", "idle_timeout_ms"] as const;
const ANNOUNCEMENT_KEYS = [
  "domain",
  "internal",
  "expires_in_ms",
  "allow",
  "proxy_protocol",
] as const;
const PROXY_PROTOCOL_VERSIONS: readonly ProxyProtocolVersion[] = ["v1", "v2"];

/**
 * Validates merged private proxy settings, reporting every problem
 * (docs/settings.md, "Validation").
 */
export function parsePrivateSettings(
  data: Record<string, unknown>,
  problems: check.Problems,
): PrivateSettings {
  check.onlyKeys(data, KEYS, "", problems);
  const D = PRIVATE_DEFAULTS;
  const ms = (key: string, fallback: number) =>
    check.durationMs(data[key] ?? fallback, key, problems);
  const reannounceIntervalMs = ms("reannounce_interval_ms", D.reannounceIntervalMs);
  const announceTo = check.required(data.announce_to, "announce_to", problems)
    ? check.list(data.announce_to, "announce_to", problems, operatorName)
    : [];
  if (data.announce_to !== undefined && announceTo.length === 0) {
    problems.push("announce_to: must name at least one public operator");
  }
  const endpoints: Record<string, HostPort> = {};
  const rawEndpoints = check.mapping(data.endpoints, "endpoints", problems);
  for (const [name, v] of Object.entries(rawEndpoints)) {
    const path = check.join("endpoints", name);
    operatorName(name, path, problems);
    endpoints[name] = check.address(v, path, problems);
    if (!announceTo.includes(name)) {
      problems.push(`${path}: operator "${name}" is not in announce_to`);
    }
  }
  for (const name of announceTo) {
    if (name !== "" && endpoints[name] === undefined) {
      problems.push(
        `endpoints.${name}: is required (the private port this proxy may dial for "${name}")`,
      );
    }
  }
  const announcements = check.required(data.announcements, "announcements", problems)
    ? check.list(data.announcements, "announcements", problems, (v, path, pr) => {
      const m = check.mapping(v, path, pr);
      check.onlyKeys(m, ANNOUNCEMENT_KEYS, path, pr);
      const k = (key: string) => check.join(path, key);
      const a: PrivateAnnouncement = {
        domain: check.required(m.domain, k("domain"), pr)
          ? check.hostName(m.domain, k("domain"), pr, true)
          : "",
        internal: check.required(m.internal, k("internal"), pr)
          ? check.address(m.internal, k("internal"), pr)
          : { hostname: "", port: 0 },
        expiresInMs: check.integer(
          m.expires_in_ms ?? Math.min(3 * reannounceIntervalMs, MAX_EXPIRY_MS),
          k("expires_in_ms"),
          pr,
          1,
          MAX_EXPIRY_MS,
        ),
      };
      if (m.allow !== undefined) {
        a.allow = cidrList(m.allow, k("allow"), pr);
        if (a.allow.length === 0) {
          pr.push(`${k("allow")}: must list at least one CIDR (or be left out)`);
        }
      }
      if (m.proxy_protocol !== undefined) {
        if (PROXY_PROTOCOL_VERSIONS.includes(m.proxy_protocol as ProxyProtocolVersion)) {
          a.proxyProtocol = m.proxy_protocol as ProxyProtocolVersion;
        } else {
          pr.push(
            `${k("proxy_protocol")}: ${
              JSON.stringify(m.proxy_protocol)
            } must be v1 or v2 (or absent: no PROXY protocol header)`,
          );
        }
      }
      if (m.expires_in_ms !== undefined && a.expiresInMs <= reannounceIntervalMs) {
        pr.push(
          `${
            k("expires_in_ms")
          }: ${a.expiresInMs} must exceed reannounce_interval_ms (${reannounceIntervalMs}), or the announcement lapses between renewals`,
        );
      }
      return a;
    })
    : [];
  if (announcements.length > MAX_ANNOUNCEMENTS) {
    problems.push(
      `announcements: ${announcements.length} entries, at most ${MAX_ANNOUNCEMENTS} (the public proxy's default max_announcements_per_operator)`,
    );
  }
  const seen = new Set<string>();
  announcements.forEach((a, i) => {
    if (a.domain !== "" && seen.has(a.domain)) {
      problems.push(`announcements[${i}].domain: "${a.domain}" is announced twice`);
    }
    seen.add(a.domain);
  });
  const rawPool = check.mapping(data.pool, "pool", problems);
  check.onlyKeys(rawPool, POOL_KEYS, "pool", problems);
  const P = POOL_DEFAULTS;
  const pool: PrivatePoolSettings = {
    enabled: check.boolean(rawPool.enabled ?? P.enabled, "pool.enabled", problems),
    minIdle: check.integer(rawPool.min_idle ?? P.minIdle, "pool.min_idle", problems, 0, 64),
    maxIdle: check.integer(rawPool.max_idle ?? P.maxIdle, "pool.max_idle", problems, 1, 1024),
    idleTimeoutMs: check.integer(
      rawPool.idle_timeout_ms ?? P.idleTimeoutMs,
      "pool.idle_timeout_ms",
      problems,
      1000,
      600_000,
    ),
  };
  if (pool.minIdle > pool.maxIdle) {
    problems.push(`pool.min_idle: ${pool.minIdle} exceeds pool.max_idle (${pool.maxIdle})`);
  }
  return {
    operator: operatorName(data.operator, "operator", problems),
    eps: parseEpsClientSettings(data.eps, "eps", problems),
    announceTo,
    endpoints,
    announcements,
    reannounceIntervalMs,
    retryMs: ms("retry_ms", D.retryMs),
    dialTimeoutMs: ms("dial_timeout_ms", D.dialTimeoutMs),
    connectTimeoutMs: ms("connect_timeout_ms", D.connectTimeoutMs),
    graceMs: check.integer(data.grace_ms ?? D.graceMs, "grace_ms", problems, 0, 3_600_000),
    sockets: check.oneOf(
      data.sockets ?? D.sockets,
      ["auto", "native", "deno"] as const,
      "sockets",
      problems,
    ),
    pool,
    ...parseSpliceSettings(data, problems),
    ...parseAdminSettings(data, problems),
    ...(data.max_connections === undefined ? {} : {
      maxConnections: check.integer(
        data.max_connections,
        "max_connections",
        problems,
        1,
        1_000_000,
      ),
    }),
  };
}

/** Loads and validates private proxy settings from files and folders. */
export function loadPrivateSettings(sources: readonly string[]): Promise<PrivateSettings> {
  return loadSettings(sources, parsePrivateSettings);
}
