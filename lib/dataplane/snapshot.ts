/**
 * The control plane's side of the contract with the data plane (docs/architecture.md, "The
 * snapshot/event contract"): the versioned snapshot it pushes whole, and the few commands it
 * sends. Every value here is plain data (structured-clonable), so the same objects cross to the
 * native driver's worker thread unchanged.
 * @module
 */
import type { HostPort } from "../role.ts";
import type { ProxyProtocolVersion } from "../wire/proxy_protocol.ts";

/** Which proxy a data plane serves. */
export type PlaneRole = "public" | "private";

/** A route of the public proxy: who serves a name (exact, or `*.parent`). */
export interface PublicRoute {
  readonly operator: string;
  /**
   * The announcement's `allow` (CIDRs, docs/architecture.md, "Admission"): only clients from
   * these ranges may reach the name; absent or empty: everyone the port admits.
   */
  readonly allow?: readonly string[];
  /**
   * The private instances that announced the name (docs/architecture.md, "Several private
   * instances"), sorted; absent or empty: unknown (one instance, or announcements without
   * names). The core passes them on in `needDialBack`: the control plane picks one per notice.
   */
  readonly instances?: readonly string[];
}

/** A route of the private proxy: where the internal server of a name is (an IP literal). */
export interface PrivateRoute {
  readonly internal: HostPort;
  /**
   * The PROXY protocol header written to the internal server before the ClientHello (the
   * announcement's `proxy_protocol`, docs/settings.md); absent: none.
   */
  readonly proxyProtocol?: ProxyProtocolVersion;
}

/**
 * The public port's admission policy (docs/architecture.md, "Admission"; docs/settings.md,
 * "limits"): checked at accept (lists, per-address limits) and after routing (per-name limits).
 * A 0 turns its check off.
 */
export interface Admission {
  /** CIDRs; non-empty: only clients in one of them are accepted. */
  readonly allow: readonly string[];
  /** CIDRs; a client in one is refused (deny wins over allow). */
  readonly deny: readonly string[];
  /** Connections one client address may hold open at once. */
  readonly maxConnectionsPerClient: number;
  /** New connections a second from one client address (token bucket refill). */
  readonly clientRate: number;
  /** The bucket's size: new connections one client address may open at once. */
  readonly clientBurst: number;
  /** Clients of one name waiting for a dial-back at once. */
  readonly maxPendingPerName: number;
  /** New connections a second to one name (token bucket refill). */
  readonly nameRate: number;
  readonly nameBurst: number;
}

/** No admission check at all: the default. */
export const NO_ADMISSION: Admission = {
  allow: [],
  deny: [],
  maxConnectionsPerClient: 0,
  clientRate: 0,
  clientBurst: 0,
  maxPendingPerName: 0,
  nameRate: 0,
  nameBurst: 0,
};

/** The limits and deadlines the data plane applies to new connections. */
export interface Limits {
  /** Public port: the admission policy; absent: none. */
  readonly admission?: Admission;
  /**
   * Public port: clients open at once (reading a hello, waiting, spliced); over it a new one is
   * closed at once. Private proxy: connections set up or spliced at once.
   */
  readonly maxConnections: number;
  /**
   * Private port: dial-backs open at once (reading a token, idle pooled, spliced). Kept apart
   * from the clients' budget so that clients can never take the descriptors the dial-backs they
   * wait for need (docs/architecture.md, "The descriptor budget").
   */
  readonly maxDialBacks: number;
  /**
   * Public: idle pooled dial-backs of all operators at once (the part of `maxDialBacks` that is
   * not one per client), so that the pool can never take the dial-backs waiting clients need.
   */
  readonly maxPooled: number;
  readonly helloTimeoutMs: number;
  readonly maxClientHelloBytes: number;
  readonly tokenTimeoutMs: number;
  readonly dialBackTimeoutMs: number;
  readonly maxPending: number;
  readonly maxPendingPerOperator: number;
  readonly maxPendingPerClient: number;
  /** Connect to a public proxy's private port (private proxy). */
  readonly dialTimeoutMs: number;
  /** Connect to an internal server (private proxy). */
  readonly connectTimeoutMs: number;
  /** A splice with no byte either way for this long is closed; 0: never. */
  readonly idleTimeoutMs: number;
  /** TCP keepalive on both sockets of a splice after this much idleness; 0: off. */
  readonly tcpKeepAliveMs: number;
  /** How long a refused client may read its TLS alert before it is closed. */
  readonly lingerMs: number;
  /**
   * Public port: every client starts with a PROXY protocol header from a load balancer, read
   * before its ClientHello; its source is the client's address from then on (docs/architecture.md,
   * "PROXY protocol from a load balancer"). Absent: false.
   */
  readonly acceptProxyProtocol?: boolean;
  /** With `acceptProxyProtocol`: the CIDRs of the balancers believed; absent or empty: any peer. */
  readonly proxyProtocolFrom?: readonly string[];
  /**
   * Public port (docs/architecture.md, "Re-dispatch"): a waiting client whose dial-back has not
   * come this long after its last notice gets a new token and a new `needDialBack`; 0 or
   * absent: only a failed notice (`noticeFailed` with `retry`) re-dispatches.
   */
  readonly redispatchAfterMs?: number;
  /** Public port: notices one waiting client may get in all (1 or absent: no re-dispatch). */
  readonly maxDispatches?: number;
}

/** Limits for a role that uses only some of them (tests, the private proxy). */
export const DEFAULT_LIMITS: Limits = {
  maxConnections: 16_384,
  maxDialBacks: 17_408,
  maxPooled: 1024,
  helloTimeoutMs: 10_000,
  maxClientHelloBytes: 65_536,
  tokenTimeoutMs: 5000,
  dialBackTimeoutMs: 10_000,
  maxPending: 4096,
  maxPendingPerOperator: 4096,
  maxPendingPerClient: 4096,
  dialTimeoutMs: 5000,
  connectTimeoutMs: 5000,
  idleTimeoutMs: 0,
  tcpKeepAliveMs: 0,
  lingerMs: 1000,
};

/**
 * Everything the data plane looks up on the fast path, replaced whole between two turns of its
 * loop. Live connections keep what they resolved under the previous one.
 */
export interface Snapshot {
  /** Grows with every snapshot a control plane makes. */
  readonly version: number;
  readonly limits: Limits;
  /** Public proxy: domain (`name` or `*.parent`) → route. */
  readonly publicRoutes: readonly (readonly [string, PublicRoute])[];
  /** Private proxy: announced domain → route. */
  readonly privateRoutes: readonly (readonly [string, PrivateRoute])[];
}

/** A command of the control plane; the data plane applies it between two turns of its loop. */
export type Command =
  | { readonly type: "snapshot"; readonly snapshot: Snapshot }
  /**
   * Public: `tokens` (base64) may each open one idle pooled dial-back for `domains` (empty: for
   * every name of `operator`).
   */
  | {
    readonly type: "grantPool";
    readonly operator: string;
    readonly domains: readonly string[];
    readonly tokens: readonly string[];
    /** How long an idle pooled dial-back is kept. */
    readonly idleTimeoutMs: number;
    /** The private instance that asked (docs/architecture.md, "Several private instances"). */
    readonly instance?: string;
  }
  /**
   * Public: a pool ticket (docs/architecture.md, "Pool tickets"): dial-backs presenting a token
   * made with `key` (base64; never log it) for ticket `id` (hex) go idle for `operator`'s
   * `domains` (empty: every name), while it holds fewer than `cap` idle; valid for `ttlMs`.
   */
  | {
    readonly type: "grantTicket";
    readonly operator: string;
    readonly domains: readonly string[];
    readonly id: string;
    readonly key: string;
    readonly ttlMs: number;
    readonly cap: number;
    readonly idleTimeoutMs: number;
    /** The private instance that asked; its dial-backs go idle as that instance's. */
    readonly instance?: string;
  }
  /**
   * Public: the notice for a waiting client failed. `retry` (docs/architecture.md,
   * "Re-dispatch"): another instance may serve it — a new token and a new `needDialBack`
   * (attempt + 1) while attempts remain; else, or without `retry`, refuse it now (TLS alert
   * internal_error). `attempt`: the failed notice's (`needDialBack.attempt`); a failure of an
   * attempt older than the client's last is ignored (a newer notice is in flight).
   */
  | {
    readonly type: "noticeFailed";
    readonly conn: number;
    readonly retry?: boolean;
    readonly attempt?: number;
  }
  /**
   * Private: a notice came; dial `endpoint`, present `token`, connect `internal`, splice. `conn`:
   * the connection id the notice carried (absent from a peer without ids: the data plane names
   * the connection itself).
   */
  | {
    readonly type: "dialBack";
    readonly conn?: string;
    readonly operator: string;
    readonly domain: string;
    readonly endpoint: HostPort;
    readonly token: string;
    readonly internal: HostPort;
    /** The header to write to the internal server first (the route's `proxyProtocol`). */
    readonly proxyProtocol?: ProxyProtocolVersion;
    /** The client's address and the one it connected to (absent from an older public proxy). */
    readonly source?: HostPort;
    readonly destination?: HostPort;
  }
  /**
   * Private: open one idle pooled dial-back per token (base64) to `endpoint`. `instance`: the
   * public replica that granted the tokens (docs/architecture.md, "Private instances and public
   * replicas: the private side"); its events name it.
   */
  | {
    readonly type: "openPooled";
    readonly operator: string;
    readonly instance?: string;
    readonly endpoint: HostPort;
    readonly tokens: readonly string[];
    /** The private side gives an idle one up this long after it opened it. */
    readonly idleTimeoutMs: number;
  }
  /**
   * Close the connections `conns` now (docs/architecture.md, "Drain"): a splice ends with the
   * reason `stopped`, one being set up fails with it; unknown or ended ones are skipped.
   * `idleOf` (private): the idle pooled dial-backs of these operators close too (`poolDropped`
   * with `stopping`); an entry `operator@instance` closes only those pooled at that replica.
   */
  | {
    readonly type: "close";
    readonly conns: readonly number[];
    readonly idleOf?: readonly string[];
  }
  /** Stop: no new connections; waiting clients and idle pooled dial-backs end. Splices go on. */
  | { readonly type: "stop" }
  /** Every connection ends now. */
  | { readonly type: "kill" };

/** An empty snapshot (version 0) with `limits`. */
export function emptySnapshot(limits: Limits = DEFAULT_LIMITS): Snapshot {
  return { version: 0, limits, publicRoutes: [], privateRoutes: [] };
}
