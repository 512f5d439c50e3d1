/**
 * Settings of the private proxy (`tls-pass run private`); reference in docs/settings.md.
 *
 * ```yaml
 * operator: private-proxy-1
 * eps: {address: 127.0.0.1:7776, certificate_file: …, key_file: …, ca_certificate_files: […]}
 * announce_to: [public-proxy-1]                 # public operators
 * endpoints: {public-proxy-1: 127.0.0.1:9999}   # the only address (or list) dialled for that operator
 * announcements:
 *   - {domain: test.internal-server.local, internal: 127.0.0.1:8888}
 * pool: {enabled: true, min_idle: 0, max_idle: 32, idle_timeout_ms: 30000}   # pre-warmed dial-backs
 * ```
 * @module
 */
import type { HostPort } from "../role.ts";
import * as check from "./check.ts";
import { loadSettings } from "./loader.ts";
import { checkSplice, SPLICE_SHAPE } from "./splice.ts";
import {
  epsKey,
  instanceKey,
  operatorName,
  proxyOperatorKey,
  socketsKey,
  zeroCopyKey,
} from "./public.ts";
import { cidrList, MAX_CIDRS } from "./limits.ts";
import type { ProxyProtocolVersion } from "../wire/proxy_protocol.ts";
import { ADMIN_SHAPE } from "./admin.ts";
import {
  address,
  block,
  boolean,
  defaultsOf,
  duration,
  type Field,
  type Infer,
  integer,
  list,
  operatorName as operatorNameField,
  optional,
  parseBlock,
  raw,
  required,
  withDefault,
} from "./schema.ts";

const MAX_EXPIRY_MS = 7 * 86_400_000;

/** The most announcements one private proxy may list (sent in pages of 5,000 or fewer). */
export const MAX_ANNOUNCEMENTS = 100_000;

const PROXY_PROTOCOL_VERSIONS: readonly ProxyProtocolVersion[] = ["v1", "v2"];

const proxyProtocol: Field<ProxyProtocolVersion> = {
  parse: (v, path, problems) => {
    if (PROXY_PROTOCOL_VERSIONS.includes(v as ProxyProtocolVersion)) {
      return v as ProxyProtocolVersion;
    }
    problems.push(
      `${path}: ${JSON.stringify(v)} must be v1 or v2 (or absent: no PROXY protocol header)`,
    );
    return "v1";
  },
  empty: "v1",
  type: "`v1` or `v2`",
  range: "`v1`, `v2`",
  schema: { type: "string", enum: [...PROXY_PROTOCOL_VERSIONS] },
};

/** An announcement's `allow`: CIDRs, at least one when present. */
const nameAllow: Field<string[]> = {
  parse: (v, path, problems) => {
    const out = cidrList(v, path, problems);
    if (out.length === 0) problems.push(`${path}: must list at least one CIDR (or be left out)`);
    return out;
  },
  empty: [],
  type: "list of CIDRs",
  range: "",
  schema: {
    type: "array",
    items: { type: "string", minLength: 1 },
    minItems: 1,
    maxItems: MAX_CIDRS,
  },
};

const domain: Field<string> = {
  parse: (v, path, problems) => check.hostName(v, path, problems, true),
  empty: "",
  type: "string",
  range: "host name or `*.name`",
  schema: { type: "string", minLength: 1, maxLength: 255 },
};

/** The declaration of one element of `announcements` (docs/settings.md, "Private proxy"). */
export const ANNOUNCEMENT_SHAPE = {
  domain: required(
    domain,
    "The name clients send as SNI: a host name, or `*.name` for any one label under `name`. Lower-cased, trailing dot removed. The public proxy accepts it only if the directory's `allowed_domains` for this operator allow it.",
  ),
  internal: required(address, "The internal server the client's connection is spliced to."),
  expiresInMs: raw(
    duration(1, MAX_EXPIRY_MS),
    "Lifetime of each announcement. When set, it must be greater than `reannounce_interval_ms`, or the announcement would lapse between renewals.",
    {
      type: "integer (ms)",
      defaultDoc: "3 × `reannounce_interval_ms`, at most 604 800 000",
      range: "1 – 604 800 000 (7 days)",
    },
  ),
  allow: optional(
    nameAllow,
    "Only clients from these ranges may reach this name: sent with the announcement, checked by the public proxy after the SNI is known; a client outside it is refused `name-denied` with the TLS alert `unrecognized_name` (as for an unknown name). IPv4 and IPv6, at most 1 000, at least one when present. A change is announced again on reload.",
    { defaultDoc: "none (everyone the public port admits)" },
  ),
  proxyProtocol: optional(
    proxyProtocol,
    "A PROXY protocol header written to the internal server before the ClientHello, with the client's real address and the address it connected to on the public proxy (TCP over IPv4 or IPv6): `v1` the text line, `v2` the binary header with the client's SNI as a `PP2_TYPE_AUTHORITY` TLV. The internal server must expect it (nginx `listen … ssl proxy_protocol;`, HAProxy `accept-proxy`) or it sees garbage before the hello. Through a public proxy from before this key's addresses: `PROXY UNKNOWN` (v1) or the `LOCAL` command (v2). Applies to new connections on a reload. See docs/architecture.md, \"The PROXY protocol\".",
    { defaultDoc: "absent (none)" },
  ),
} as const;

/**
 * One announced domain (a host name or `*.name`, normalised) and the internal server behind it;
 * `expiresInMs` defaults to 3 × reannounce_interval_ms, at most 7 days; `allow`: only clients from
 * these CIDRs may reach the name at the public proxy (docs/architecture.md, "Admission");
 * `proxyProtocol`: the PROXY protocol header written to the internal server first.
 */
export interface PrivateAnnouncement extends Infer<typeof ANNOUNCEMENT_SHAPE> {
  expiresInMs: number;
}

/** 0 stands for "not set" until the role's parse step knows reannounce_interval_ms. */
const announcement = block(
  ANNOUNCEMENT_SHAPE,
  (v, rawValues): PrivateAnnouncement => ({
    ...v,
    expiresInMs: (rawValues.expiresInMs as number | undefined) ?? 0,
  }),
);

/** The declaration of the `pool:` block (docs/architecture.md, "Pre-warmed dial-backs"). */
export const POOL_SHAPE = {
  enabled: withDefault(
    boolean,
    true,
    "Keep a pool at all. `false`: every client takes the notice path (the behaviour before the pool).",
  ),
  minIdle: withDefault(
    integer(0, 64),
    0,
    "The pool never aims below this many connections (idle or being dialled), even without traffic. Per public replica when the operator has several (each has its own pool).",
    { range: "0 – 64, ≤ max_idle" },
  ),
  maxIdle: withDefault(
    integer(1, 1024),
    32,
    "Nor above this many per public operator (per replica when it has several). The public proxy's `max_pooled_per_operator` caps it too.",
  ),
  idleTimeoutMs: withDefault(
    integer(1000, 600_000, "duration"),
    30_000,
    "The public proxy closes an idle pooled connection after this long (it caps it at 600 000); the private proxy gives up 2 s later. An expired connection is replaced only if the target still wants it.",
  ),
} as const;

/** Pre-warmed dial-backs (docs/architecture.md, "Pre-warmed dial-backs"), per public operator. */
export type PrivatePoolSettings = Infer<typeof POOL_SHAPE>;

export const POOL_DEFAULTS: PrivatePoolSettings = defaultsOf(POOL_SHAPE);

const pool = block(POOL_SHAPE, (p, _raw, path, problems) => {
  if (p.minIdle > p.maxIdle) {
    problems.push(
      `${check.join(path, "min_idle")}: ${p.minIdle} exceeds ${
        check.join(path, "max_idle")
      } (${p.maxIdle})`,
    );
  }
  return p;
});

/** The most private ports one public operator may list (its replicas). */
export const MAX_ENDPOINTS = 64;

/**
 * Per public operator, the private ports it may be dialled at: one `host:port`, or a list of them
 * (one per public replica; docs/architecture.md, "Private instances and public replicas: the
 * private side"). Parsed to a list either way.
 */
const endpoints: Field<Record<string, HostPort[]>> = {
  parse: (v, path, problems) => {
    const out: Record<string, HostPort[]> = {};
    for (const [name, a] of Object.entries(check.mapping(v, path, problems))) {
      const at = check.join(path, name);
      operatorName(name, at, problems);
      if (!Array.isArray(a)) {
        out[name] = [check.address(a, at, problems)];
        continue;
      }
      if (a.length === 0 || a.length > MAX_ENDPOINTS) {
        problems.push(
          `${at}: must list 1 to ${MAX_ENDPOINTS} addresses, got ${a.length} (or be one address)`,
        );
      }
      const list: HostPort[] = [];
      a.forEach((x, i) => {
        const hp = check.address(x, `${at}[${i}]`, problems);
        if (list.some((y) => y.hostname === hp.hostname && y.port === hp.port)) {
          problems.push(`${at}[${i}]: ${JSON.stringify(x)} is listed twice`);
        }
        list.push(hp);
      });
      out[name] = list;
    }
    return out;
  },
  empty: {},
  type: "mapping: operator name → address or list of addresses",
  range: `addresses (at most ${MAX_ENDPOINTS} per operator)`,
  schema: {
    type: "object",
    additionalProperties: {
      oneOf: [
        address.schema,
        { type: "array", items: address.schema, minItems: 1, maxItems: MAX_ENDPOINTS },
      ],
    },
  },
};

const ms = duration();

/** The declaration of every private proxy key (docs/settings.md, "Private proxy"). */
export const PRIVATE_SHAPE = {
  operator: proxyOperatorKey,
  instance: instanceKey,
  eps: epsKey,
  announceTo: required(
    list(operatorNameField, "list of operator names", { minItems: 1 }),
    "The public operators to announce to. Notices are accepted only from them.",
    { range: "at least one" },
  ),
  endpoints: withDefault(
    endpoints,
    {},
    "Per public operator, the only addresses this proxy dials back to: one `host:port`, or a list of them, one per public replica (each replica's `private_endpoint`). A notice whose `endpoint` is not exactly one of them is refused; a replica an `openPool` answer names at another address gets no pool (a warning). Every key must be in `announce_to`, and every `announce_to` operator needs an entry.",
    { defaultDoc: "required for each `announce_to` operator" },
  ),
  announcements: required(
    list(announcement, "list of mappings", { maxItems: MAX_ANNOUNCEMENTS }),
    "The domains announced, each with its internal server (keys below). Sent in pages of 2,000; a page the public proxy refuses (conflict, not allowed, over its cap) is logged and retried at the next round, the others are served.",
    { range: "at most 100 000 entries, no domain twice" },
  ),
  reannounceIntervalMs: withDefault(
    ms,
    600_000,
    "How often the announcements are renewed (also after the EPS link comes back).",
    { defaultDoc: "`600000` (10 min)" },
  ),
  retryMs: withDefault(
    ms,
    200,
    "First retry delay while an announcement is not acknowledged; doubles up to 20 000.",
  ),
  dialTimeoutMs: withDefault(
    ms,
    5000,
    "Deadline of the dial-back connect to the public proxy (and of writing the token).",
  ),
  connectTimeoutMs: withDefault(ms, 5000, "Deadline of the connect to the internal server."),
  maxConnections: optional(
    integer(1, 1_000_000),
    "Connections set up or spliced at once (two descriptors each); a notice over it is refused. Absent: (soft open-file limit − 64) / 2, logged at start.",
    { defaultDoc: "from the open-file limit" },
  ),
  graceMs: withDefault(
    duration(0, 3_600_000),
    5000,
    "On SIGINT/SIGTERM, and for a drain of one announcement, how long live splices may go on (withdrawing is bounded by the call deadline).",
  ),
  sockets: socketsKey,
  zeroCopy: zeroCopyKey,
  pool: withDefault(pool, {}, "Pre-warmed dial-backs; keys below.", {
    defaultDoc: "all defaults (on)",
    range: "see below",
  }),
  ...SPLICE_SHAPE,
  ...ADMIN_SHAPE,
} as const;

/** The private proxy's settings: every key of PRIVATE_SHAPE, whose docs say what each means. */
export type PrivateSettings = Infer<typeof PRIVATE_SHAPE>;

export const PRIVATE_DEFAULTS = defaultsOf(PRIVATE_SHAPE);

/**
 * Validates merged private proxy settings, reporting every problem
 * (docs/settings.md, "Validation").
 */
export function parsePrivateSettings(
  data: Record<string, unknown>,
  problems: check.Problems,
): PrivateSettings {
  const [s] = parseBlock(PRIVATE_SHAPE, data, "", problems);
  if (data.announce_to !== undefined && data.announce_to !== null && s.announceTo.length === 0) {
    problems.push("announce_to: must name at least one public operator");
  }
  for (const name of Object.keys(s.endpoints)) {
    if (!s.announceTo.includes(name)) {
      problems.push(`${check.join("endpoints", name)}: operator "${name}" is not in announce_to`);
    }
  }
  for (const name of s.announceTo) {
    if (name !== "" && s.endpoints[name] === undefined) {
      problems.push(
        `endpoints.${name}: is required (the private port this proxy may dial for "${name}")`,
      );
    }
  }
  const every = s.reannounceIntervalMs;
  s.announcements.forEach((a, i) => {
    if (a.expiresInMs === 0) {
      a.expiresInMs = Math.min(3 * every, MAX_EXPIRY_MS);
    } else if (a.expiresInMs <= every) {
      problems.push(
        `announcements[${i}].expires_in_ms: ${a.expiresInMs} must exceed reannounce_interval_ms (${every}), or the announcement lapses between renewals`,
      );
    }
  });
  if (s.announcements.length > MAX_ANNOUNCEMENTS) {
    problems.push(
      `announcements: ${s.announcements.length} entries, at most ${MAX_ANNOUNCEMENTS} (the public proxy's default max_announcements_per_operator)`,
    );
  }
  const seen = new Set<string>();
  s.announcements.forEach((a, i) => {
    if (a.domain !== "" && seen.has(a.domain)) {
      problems.push(`announcements[${i}].domain: "${a.domain}" is announced twice`);
    }
    seen.add(a.domain);
  });
  checkSplice(s, problems);
  return s;
}

/** Loads and validates private proxy settings from files and folders. */
export function loadPrivateSettings(sources: readonly string[]): Promise<PrivateSettings> {
  return loadSettings(sources, parsePrivateSettings);
}
