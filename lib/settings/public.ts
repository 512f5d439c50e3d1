/**
 * Settings of the public proxy (`tls-pass run public`); reference in docs/settings.md.
 *
 * ```yaml
 * operator: public-proxy-1
 * public_listen: 127.0.0.1:4433      # clients' TLS
 * private_listen: 127.0.0.1:9999     # dial-backs from private proxies
 * private_endpoint: 127.0.0.1:9999   # what notices tell private proxies (default: the directory's
 *                                    # proxy.private_endpoint, else private_listen's bound address)
 * eps: {address: 127.0.0.1:5556, certificate_file: …, key_file: …, ca_certificate_files: […]}
 * directory_dir: ../../directory
 * store: file                        # or memory; file needs store_path
 * store_path: ../../../../.state/public-proxy-1/announcements.jsonl
 * ```
 * @module
 */
import type { HostPort } from "../role.ts";
/** Which data-plane driver: native (libc over FFI, a worker thread), deno (portable), or auto. */
export type SocketsChoice = "auto" | "native" | "deno";
/** Where the public proxy keeps its announcements: in memory (tests) or an append-only file. */
export type StoreSettings = { kind: "memory" } | { kind: "file"; path: string };
import { type EpsClientSettings, parseEpsClientSettings } from "./eps_client.ts";
import * as check from "./check.ts";
import { loadSettings } from "./loader.ts";
import { cidrList, LIMITS_DEFAULTS, type LimitsSettings, parseLimits } from "./limits.ts";
import { ADMIN_KEYS, type AdminSettings, parseAdminSettings } from "./admin.ts";
import {
  parseSpliceSettings,
  SPLICE_DEFAULTS,
  SPLICE_KEYS,
  type SpliceSettings,
} from "./splice.ts";

export interface PublicSettings extends SpliceSettings, AdminSettings {
  /** This operator (the public proxy attaches to its EPS as it). */
  operator: string;
  publicListen: HostPort;
  privateListen: HostPort;
  /** The private port as private proxies dial it; see the module doc for the default. */
  privateEndpoint?: HostPort;
  eps: EpsClientSettings;
  directoryDir: string;
  store: StoreSettings;
  helloTimeoutMs: number;
  maxClientHelloBytes: number;
  dialBackTimeoutMs: number;
  tokenTimeoutMs: number;
  maxPending: number;
  maxPendingPerOperator: number;
  maxPendingPerClient: number;
  /** Admission limits per client address and per name (docs/settings.md, "limits"). */
  limits: LimitsSettings;
  /** CIDRs; non-empty: only clients from them may connect to the public port. */
  allow: string[];
  /** CIDRs whose clients are refused at accept (wins over `allow`). */
  deny: string[];
  /** Deadline of the notice call. */
  noticeTimeoutMs: number;
  /** Connections at once; absent: planned from the open-file limit at start (lib/proxy/budget.ts). */
  maxConnections?: number;
  /** On a graceful stop, how long live splices may go on. */
  graceMs: number;
  /** Data sockets: "native" (libc over FFI, spliced in a worker thread), "deno", or "auto". */
  sockets: SocketsChoice;
  /**
   * Pre-warmed dial-backs (docs/architecture.md, "Pre-warmed dial-backs"): idle pooled connections plus unredeemed pool
   * tokens one private operator may hold; 0 refuses every openPool call.
   */
  maxPooledPerOperator: number;
  /** Domains one private operator may hold; a page of announcements over it is refused alone. */
  maxAnnouncementsPerOperator: number;
  /**
   * Every client on the public port starts with a PROXY protocol header (v1 or v2) from a load
   * balancer in front (docs/settings.md, `accept_proxy_protocol`).
   */
  acceptProxyProtocol: boolean;
}

export const PUBLIC_DEFAULTS = {
  ...SPLICE_DEFAULTS,
  helloTimeoutMs: 10_000,
  maxClientHelloBytes: 65_536,
  dialBackTimeoutMs: 10_000,
  tokenTimeoutMs: 5000,
  // a burst of 2,000 clients behind one NAT is legitimate: these caps bound memory, not abuse
  maxPending: 4096,
  maxPendingPerOperator: 4096,
  maxPendingPerClient: 4096,
  limits: LIMITS_DEFAULTS,
  allow: [] as string[],
  deny: [] as string[],
  noticeTimeoutMs: 5000,
  graceMs: 5000,
  sockets: "auto",
  maxPooledPerOperator: 64,
  maxAnnouncementsPerOperator: 100_000,
  acceptProxyProtocol: false,
} as const;

const KEYS = [
  "operator",
  "public_listen",
  "private_listen",
  "private_endpoint",
  "eps",
  "directory_dir",
  "store",
  "store_path",
  "hello_timeout_ms",
  "max_client_hello_bytes",
  "dial_back_timeout_ms",
  "token_timeout_ms",
  "max_pending",
  "max_pending_per_operator",
  "max_pending_per_client",
  "limits",
  "allow",
  "deny",
  "notice_timeout_ms",
  "max_connections",
  "grace_ms",
  "sockets",
  "max_pooled_per_operator",
  "max_announcements_per_operator",
  "accept_proxy_protocol",
  ...SPLICE_KEYS,
  ...ADMIN_KEYS,
] as const;

/** An operator name: a lower-case host name, as in the directory. */
export function operatorName(v: unknown, path: string, problems: check.Problems): string {
  if (!check.required(v, path, problems)) return "";
  if (typeof v === "string" && check.normalizeHostName(v) === v) return v;
  problems.push(
    `${path}: must be a lower-case host name (an operator name), got ${JSON.stringify(v)}`,
  );
  return "";
}

/** Checks that `path` is an existing folder. */
export function existingDir(path: string, key: string, problems: check.Problems): void {
  if (path === "") return;
  try {
    if (!Deno.statSync(path).isDirectory) problems.push(`${key}: "${path}" is not a folder`);
  } catch (err) {
    problems.push(
      `${key}: cannot read "${path}": ${err instanceof Error ? err.message : String(err)}`,
    );
  }
}

/**
 * Validates merged public proxy settings, reporting every problem (docs/settings.md, "Validation").
 */
export function parsePublicSettings(
  data: Record<string, unknown>,
  problems: check.Problems,
): PublicSettings {
  check.onlyKeys(data, KEYS, "", problems);
  const req = (key: string) => check.required(data[key], key, problems);
  const ms = (key: string, fallback: number) =>
    check.durationMs(data[key] ?? fallback, key, problems);
  const count = (key: string, fallback: number, max = 1_000_000) =>
    check.integer(data[key] ?? fallback, key, problems, 1, max);
  const D = PUBLIC_DEFAULTS;
  const kind = check.oneOf(data.store ?? "file", ["file", "memory"] as const, "store", problems);
  let store: StoreSettings = { kind: "memory" };
  if (kind === "file") {
    store = {
      kind: "file",
      path: check.required(data.store_path, "store_path", problems)
        ? check.string(data.store_path, "store_path", problems)
        : "",
    };
  }
  const s: PublicSettings = {
    operator: operatorName(data.operator, "operator", problems),
    publicListen: req("public_listen")
      ? check.address(data.public_listen, "public_listen", problems)
      : { hostname: "", port: 0 },
    privateListen: req("private_listen")
      ? check.address(data.private_listen, "private_listen", problems)
      : { hostname: "", port: 0 },
    eps: parseEpsClientSettings(data.eps, "eps", problems),
    directoryDir: req("directory_dir")
      ? check.string(data.directory_dir, "directory_dir", problems)
      : "",
    store,
    helloTimeoutMs: ms("hello_timeout_ms", D.helloTimeoutMs),
    maxClientHelloBytes: check.bytes(
      data.max_client_hello_bytes ?? D.maxClientHelloBytes,
      "max_client_hello_bytes",
      problems,
      512,
      65_536,
    ),
    dialBackTimeoutMs: ms("dial_back_timeout_ms", D.dialBackTimeoutMs),
    tokenTimeoutMs: ms("token_timeout_ms", D.tokenTimeoutMs),
    maxPending: count("max_pending", D.maxPending),
    maxPendingPerOperator: count("max_pending_per_operator", D.maxPendingPerOperator),
    maxPendingPerClient: count("max_pending_per_client", D.maxPendingPerClient),
    limits: parseLimits(data.limits, "limits", problems),
    allow: cidrList(data.allow ?? D.allow, "allow", problems),
    deny: cidrList(data.deny ?? D.deny, "deny", problems),
    noticeTimeoutMs: ms("notice_timeout_ms", D.noticeTimeoutMs),
    graceMs: check.integer(data.grace_ms ?? D.graceMs, "grace_ms", problems, 0, 3_600_000),
    sockets: check.oneOf(
      data.sockets ?? D.sockets,
      ["auto", "native", "deno"] as const,
      "sockets",
      problems,
    ),
    maxPooledPerOperator: check.integer(
      data.max_pooled_per_operator ?? D.maxPooledPerOperator,
      "max_pooled_per_operator",
      problems,
      0,
      100_000,
    ),
    maxAnnouncementsPerOperator: count(
      "max_announcements_per_operator",
      D.maxAnnouncementsPerOperator,
      10_000_000,
    ),
    acceptProxyProtocol: check.boolean(
      data.accept_proxy_protocol ?? D.acceptProxyProtocol,
      "accept_proxy_protocol",
      problems,
    ),
    ...parseSpliceSettings(data, problems),
    ...parseAdminSettings(data, problems),
  };
  if (data.max_connections !== undefined) {
    s.maxConnections = count("max_connections", 1);
  }
  if (data.private_endpoint !== undefined) {
    s.privateEndpoint = check.address(data.private_endpoint, "private_endpoint", problems);
  }
  if (kind === "memory" && data.store_path !== undefined) {
    problems.push('store_path: is only used with store "file"');
  }
  existingDir(s.directoryDir, "directory_dir", problems);
  return s;
}

/** Loads and validates public proxy settings from files and folders. */
export function loadPublicSettings(sources: readonly string[]): Promise<PublicSettings> {
  return loadSettings(sources, parsePublicSettings);
}
