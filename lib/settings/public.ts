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
/** Which data-plane driver: native (libc over FFI, a worker thread), deno (portable), or auto. */
export type SocketsChoice = "auto" | "native" | "deno";
/**
 * Where the public proxy keeps its announcements: in memory (tests), an append-only file, or a
 * Redis every replica shares (docs/architecture.md, "Public replicas and the Redis store").
 */
export type StoreSettings =
  | { kind: "memory" }
  | { kind: "file"; path: string }
  | { kind: "redis"; url: RedisUrl; prefix: string };

/** A parsed `redis_url`: `redis://[user:pass@]host:port[/db]`. */
export interface RedisUrl {
  hostname: string;
  port: number;
  username?: string;
  /** Not enumerable: never in a log line or a settings diff. */
  password?: string;
  db: number;
}

/** Parses `redis://[user:pass@]host:port[/db]`; pushes `path: problem` when it is not one. */
export function parseRedisUrl(v: unknown, path: string, problems: check.Problems): RedisUrl {
  const bad = (why: string): RedisUrl => {
    problems.push(
      `${path}: must be redis://[user:pass@]host:port[/db] (${why}), got ${
        typeof v === "string" ? JSON.stringify(v.replace(/\/\/[^@/]*@/, "//…@")) : JSON.stringify(v)
      }`,
    );
    return { hostname: "", port: 0, db: 0 };
  };
  if (typeof v !== "string") return bad("a string");
  let u: URL;
  try {
    u = new URL(v);
  } catch {
    return bad("not a URL");
  }
  if (u.protocol !== "redis:") return bad(`scheme "${u.protocol.replace(/:$/, "")}"`);
  if (u.hostname === "") return bad("no host");
  if (u.port === "") return bad("no port");
  if (u.search !== "" || u.hash !== "") return bad("no query or fragment");
  const dbText = u.pathname.replace(/^\//, "");
  const db = dbText === "" ? 0 : Number(dbText);
  if (!/^\d{0,2}$/.test(dbText) || !Number.isInteger(db) || db > 15) return bad("db 0 to 15");
  const out: RedisUrl = {
    hostname: u.hostname.replace(/^\[(.*)\]$/, "$1"),
    port: Number(u.port),
    ...(u.username !== "" ? { username: decodeURIComponent(u.username) } : {}),
    db,
  };
  if (u.password !== "") {
    Object.defineProperty(out, "password", { value: decodeURIComponent(u.password) });
  }
  return out;
}

const redisUrlField: Field<RedisUrl> = {
  parse: parseRedisUrl,
  empty: { hostname: "", port: 0, db: 0 },
  type: "string",
  range: "`redis://[user:pass@]host:port[/db]`",
  schema: { type: "string", pattern: "^redis://([^@/]*@)?[^/:@]+(:[0-9]{1,5})(/[0-9]{1,2})?$" },
};
import { epsClientBlock } from "./eps_client.ts";
import * as check from "./check.ts";
import { loadSettings } from "./loader.ts";
import { cidrs, limitsBlock } from "./limits.ts";
import { ADMIN_SHAPE } from "./admin.ts";
import { checkSplice, SPLICE_SHAPE } from "./splice.ts";
import {
  address,
  boolean,
  defaultInstanceName,
  defaultsOf,
  duration,
  existingDir,
  type Field,
  type Infer,
  instanceName,
  integer,
  oneOf,
  operatorName as operatorNameField,
  optional,
  parseBlock,
  path,
  raw,
  required,
  size,
  string,
  withDefault,
} from "./schema.ts";

export const SOCKETS: readonly SocketsChoice[] = ["auto", "native", "deno"];

/** The `sockets` key both proxies share. */
export const socketsKey = withDefault(
  oneOf(SOCKETS),
  "auto",
  "Where the data sockets come from. `native`: libc sockets through FFI, and every spliced pair is copied by one worker thread with `epoll` and synchronous `recv`/`send`, bulk flows moved by `splice(2)` (`zero_copy`) (Linux x86_64/aarch64; about HAProxy's CPU per request, a few KiB per held connection). `deno`: Deno's own sockets. `auto`: `native` where it can be used, else `deno` with a warning at start-up.",
  { type: "`auto`, `native` or `deno`", range: "–" },
);

/** The `zero_copy` key both proxies share. */
export const zeroCopyKey = withDefault(
  boolean,
  true,
  "Native sockets: a bulk direction of a splice (a download, an upload: reads of 32 KiB and more in a row) moves its bytes inside the kernel with `splice(2)` through a small pool of pipes, instead of copying them through the worker; small flows always copy. `false`: every byte is copied (as does `TLS_PASS_SPLICE=off` in the environment). No effect with `sockets: deno`. Restart-only.",
  { range: "`true` or `false`" },
);

/** The `operator` key both proxies share. */
export const proxyOperatorKey = required(
  operatorNameField,
  "This operator. The proxy attaches to its EPS as this operator: at start, `eps.certificate_file` must name it (CN and DNS SAN).",
);

/** The `instance` key both proxies share (docs/architecture.md, "Instances"). */
export const instanceKey = optional(
  instanceName,
  "This proxy's name among the instances of its operator on the EPS: calls to the operator are spread over the instances attached, and a call can name one. Two proxies of one operator need distinct names (the same name attaching again replaces the older link). The default is stable across restarts (a restarted proxy takes its own place) and differs for two proxies with their own settings folders on one host. Restart-only.",
  { defaultDoc: "`<hostname>-<6 hex digits of the settings' paths>`" },
);

/**
 * Fills in the default `instance` of parsed proxy settings ({@linkcode defaultInstanceName}: the
 * host name, tagged by `sources`, the settings' paths, when they came from files).
 */
export function withInstance<T extends { instance?: string }>(
  s: T,
  sources?: readonly string[],
): T & { instance: string } {
  return { ...s, instance: s.instance ?? defaultInstanceName(sources) };
}

/** The `eps` key both proxies share. */
export const epsKey = required(epsClientBlock, "The link to this operator's own EPS server.", {
  range: "see [the `eps:` block](#the-eps-block-of-both-proxies)",
});

const count = integer(1, 1_000_000);

/** The declaration of every public proxy key (docs/settings.md, "Public proxy"). */
export const PUBLIC_SHAPE = {
  operator: proxyOperatorKey,
  instance: instanceKey,
  publicListen: required(address, "Where clients' TLS connections arrive (never terminated)."),
  privateListen: required(
    address,
    "Where private proxies dial back (token, then spliced bytes).",
  ),
  privateEndpoint: optional(
    address,
    "The private port as private proxies reach it; sent in every notice. Each private proxy dials it only if it equals, exactly, its own `endpoints.<operator>`.",
    {
      defaultDoc:
        "the directory's `operators.<operator>.proxy.private_endpoint`, else the address `private_listen` is bound to",
    },
  ),
  reusePort: withDefault(
    boolean,
    false,
    "Sets `SO_REUSEPORT` on the public port before it is bound, so that several replicas of this operator on one machine listen on the same `public_listen` and the kernel spreads new clients over them; each needs its own `private_listen` (the private port never gets it). Every process on the port must set it. With `sockets: deno` it needs Deno's `--unstable-net` (on in this repository's deno.json). Restart-only.",
    { range: "`true` or `false`" },
  ),
  eps: epsKey,
  directoryDir: required(
    existingDir,
    "The directory folder (operators, pins, CA files); used for `allowed_domains` and the `private_endpoint` default.",
  ),
  store: raw(
    oneOf(["file", "memory", "redis"] as const),
    "Where announcements are kept: `file` (an fsynced JSON-lines file, compacted on start, survives a restart), `memory` (lost on stop) or `redis` (shared by every replica of this operator, see [Public replicas](#public-replicas-and-the-redis-store)).",
    { value: "file", defaultDoc: "`file`" },
  ),
  storePath: raw(
    path,
    "The announcements file. Its folder is created if missing. Setting it with another `store` is an error.",
    { defaultDoc: "required when `store` is `file` (so required by default)" },
  ),
  redisUrl: raw(
    redisUrlField,
    "With `store: redis`: the Redis every replica of this operator shares. Its password, if any, is never logged. Setting it with another `store` is an error.",
    { defaultDoc: "required when `store` is `redis`" },
  ),
  redisPrefix: raw(
    string,
    "With `store: redis`: the prefix of every Redis key and channel of this operator's replicas (several operators may share one Redis under different prefixes).",
    { defaultDoc: "`tls-pass:<operator>:`" },
  ),
  helloTimeoutMs: withDefault(
    duration(),
    10_000,
    "Time allowed to read the whole ClientHello; cleared once it is read.",
  ),
  maxClientHelloBytes: withDefault(
    size(512, 65_536),
    65_536,
    "Largest ClientHello accepted (the TLS records read before the SNI is known); a hello larger than one record (post-quantum key shares, many extensions) is read across records.",
  ),
  dialBackTimeoutMs: withDefault(
    duration(),
    10_000,
    "How long a client connection stays pending waiting for the private proxy's dial-back.",
  ),
  redispatchAfterMs: withDefault(
    duration(),
    1000,
    'A waiting client whose dial-back has not come this long after its notice is sent to another private instance of the name (a new notice, its ClientHello replayed: the client cannot tell; docs/architecture.md, "Re-dispatch"). A failed notice re-dispatches at once when the name has another instance to try. Below `dial_back_timeout_ms`, which still bounds the whole wait. Applied on reload.',
  ),
  maxDispatches: withDefault(
    integer(1, 16),
    3,
    'Dispatches one client may get in all: its notices (the first and its re-dispatches) and the pooled dial-backs taken for it that closed before answering (docs/architecture.md, "Pooled dial-backs that close unanswered"); 1: no second try. Applied on reload.',
  ),
  tokenTimeoutMs: withDefault(
    duration(),
    5000,
    "Time allowed, on the private port, to read the 32-byte token.",
  ),
  // a burst of 2,000 clients behind one NAT is legitimate: these caps bound memory, not abuse
  maxPending: withDefault(
    count,
    4096,
    "Pending connections (clients waiting for a dial-back) in total; over it a new client is closed at once. Bounds memory; the default serves a burst of thousands of new clients.",
  ),
  maxPendingPerOperator: withDefault(
    count,
    4096,
    "Pending connections for one private operator.",
  ),
  maxPendingPerClient: withDefault(
    count,
    4096,
    "Pending connections from one client IP address. Not an abuse limit (many clients share one NAT address): the default equals `max_pending`.",
  ),
  limits: withDefault(
    limitsBlock,
    {},
    "Admission limits per client address and per name, checked by the data plane before any notice; keys in [the `limits:` block](#the-limits-block-of-the-public-proxy). Applied on reload.",
    { defaultDoc: "every limit off" },
  ),
  allow: withDefault(
    cidrs,
    [],
    "When non-empty, only clients from these ranges are accepted on the public port (refused `denied` at accept, a plain close, before any byte is read). IPv4 (`10.0.0.0/8`) and IPv6 (`::1/128`); a bare address is one address; an IPv4 range also matches IPv4-mapped IPv6. Applied on reload.",
    { defaultDoc: "`[]` (everyone)" },
  ),
  deny: withDefault(
    cidrs,
    [],
    "Clients from these ranges are refused at accept (`denied`). Wins over `allow`. Applied on reload.",
    { range: "as `allow`" },
  ),
  noticeTimeoutMs: withDefault(
    duration(),
    5000,
    "Deadline of the `incomingConnection` call to the private operator.",
  ),
  maxConnections: optional(
    count,
    "Clients open at once on the public port (reading a hello, pending, spliced); over it a new one is closed at once and counted. Absent: planned from the soft open-file limit at start and logged (limit − 64 reserved, an eighth of it kept for dial-backs, half of the rest for clients: each client needs its dial-back). Dial-backs have their own budget (clients + the allowance), so a flood of clients can never take the descriptors the dial-backs they wait for need.",
    { defaultDoc: "from the open-file limit" },
  ),
  graceMs: withDefault(
    duration(0, 3_600_000),
    5000,
    "On SIGINT/SIGTERM, how long live splices may go on after the listeners close.",
  ),
  sockets: socketsKey,
  zeroCopy: zeroCopyKey,
  maxPooledPerOperator: withDefault(
    integer(0, 100_000),
    64,
    "Pre-warmed dial-backs: idle pooled connections plus unredeemed pool tokens one private operator may hold. An `openPool` call beyond it is refused (counted). `0` refuses every `openPool`: clients always take the notice path.",
  ),
  maxAnnouncementsPerOperator: withDefault(
    integer(1, 10_000_000),
    100_000,
    "Domains one private operator may hold. Announcements come in pages (at most 5,000 per call; the private proxy sends 2,000); a page that would take the operator over this cap is refused alone (InvalidParams, the message names this key), the operator keeps serving the pages that fit.",
  ),
  acceptProxyProtocol: withDefault(
    boolean,
    false,
    "Every client on the public port starts with a PROXY protocol header (v1 or v2) from a load balancer in front, read before its ClientHello within `hello_timeout_ms`; its source address is the client's address from then on (pending caps, logs, events, what is forwarded). A connection without a valid header is refused; a `LOCAL` one (a health check) is closed. See the notes.",
    { range: "`true` or `false`" },
  ),
  proxyProtocolFrom: withDefault(
    cidrs,
    [],
    "With `accept_proxy_protocol`: the load balancers whose PROXY headers are believed; a peer outside these ranges is refused `denied` at accept, before any byte is read (a header is otherwise trusted as it comes: without this list, only the balancer may reach the port). Applied on reload.",
    { defaultDoc: "`[]` (any peer)", range: "as `allow`" },
  ),
  ...SPLICE_SHAPE,
  ...ADMIN_SHAPE,
} as const;

/**
 * The public proxy's settings: every key of PUBLIC_SHAPE (whose docs say what each means), with
 * `store` and `store_path` as one `store`.
 */
export interface PublicSettings extends Infer<typeof PUBLIC_SHAPE> {
  store: StoreSettings;
}

export const PUBLIC_DEFAULTS = defaultsOf(PUBLIC_SHAPE);

/** An operator name: a lower-case host name, as in the directory. */
export function operatorName(v: unknown, path: string, problems: check.Problems): string {
  if (!check.required(v, path, problems)) return "";
  return operatorNameField.parse(v, path, problems);
}

/**
 * Validates merged public proxy settings, reporting every problem (docs/settings.md, "Validation").
 */
export function parsePublicSettings(
  data: Record<string, unknown>,
  problems: check.Problems,
): PublicSettings {
  const [parsed, rawValues] = parseBlock(PUBLIC_SHAPE, data, "", problems);
  const kind = rawValues.store as "file" | "memory" | "redis";
  let store: StoreSettings = { kind: "memory" };
  if (kind === "file") {
    if (rawValues.storePath === undefined) problems.push("store_path: is required");
    store = { kind: "file", path: (rawValues.storePath as string | undefined) ?? "" };
  } else if (rawValues.storePath !== undefined) {
    problems.push('store_path: is only used with store "file"');
  }
  if (kind === "redis") {
    if (rawValues.redisUrl === undefined) {
      problems.push('redis_url: is required with store "redis"');
    }
    store = {
      kind: "redis",
      url: (rawValues.redisUrl as RedisUrl | undefined) ?? redisUrlField.empty,
      prefix: (rawValues.redisPrefix as string | undefined) ?? `tls-pass:${parsed.operator}:`,
    };
  } else {
    for (const k of ["redis_url", "redis_prefix"] as const) {
      if (data[k] !== undefined && data[k] !== null) {
        problems.push(`${k}: is only used with store "redis"`);
      }
    }
  }
  checkSplice(parsed, problems);
  if (parsed.redispatchAfterMs >= parsed.dialBackTimeoutMs) {
    problems.push(
      `redispatch_after_ms: ${parsed.redispatchAfterMs} must be below dial_back_timeout_ms (${parsed.dialBackTimeoutMs}): a re-dispatch must come before the client's wait ends`,
    );
  }
  return { ...parsed, store };
}

/** Loads and validates public proxy settings from files and folders. */
export function loadPublicSettings(sources: readonly string[]): Promise<PublicSettings> {
  return loadSettings(sources, parsePublicSettings);
}
