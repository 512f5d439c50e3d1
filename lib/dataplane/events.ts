/**
 * The data plane's side of the contract (docs/architecture.md, "The snapshot/event contract"):
 * the typed events it emits, and the typed reasons a connection ends or is refused. A reason is
 * a value, never a string to parse; {@linkcode reasonText} renders one for a log line.
 * @module
 */

/** Which socket of a connection. */
export type SideName = "client" | "dial-back" | "internal";

/** Why a connection ended. */
export type EndReason =
  /** Both directions finished (EOF each way). */
  | { readonly kind: "done" }
  /** A socket failed. `code` is the errno name (ECONNRESET) or the driver's error name. */
  | {
    readonly kind: "error";
    readonly side: SideName;
    readonly op: "read" | "write" | "connect";
    readonly code: string;
  }
  /** A deadline passed. */
  | { readonly kind: "timeout"; readonly phase: "connect" | "idle"; readonly side: SideName }
  /** The role stopped it (kill after the grace period). */
  | { readonly kind: "stopped" };

/** Why the data plane refused a connection (no splice was set up). */
export type Refusal =
  /** Public port: `max_connections` reached. */
  | "connections"
  /** Private port: the dial-back budget reached (docs/architecture.md, "The descriptor budget"). */
  | "dial-backs"
  /**
   * Public port, at accept (docs/architecture.md, "Admission"): the address is in `deny`, or
   * not in a non-empty `allow`.
   */
  | "denied"
  /** Public port, at accept: `limits.max_connections_per_client` open from this address. */
  | "client-connections"
  /** Public port, at accept: this address's `limits.client_rate` bucket is empty. */
  | "client-rate"
  /** Public port, after routing: the name's announcement `allow` does not hold the client. */
  | "name-denied"
  /** Public port, after routing: `limits.max_pending_per_name` clients wait for this name. */
  | "name-pending"
  /** Public port, after routing: this name's `limits.name_rate` bucket is empty. */
  | "name-rate"
  /** Public port: the ClientHello was malformed, too large, or cut off by EOF. */
  | "bad-hello"
  /**
   * Public port (`accept_proxy_protocol`): no valid PROXY protocol header before the ClientHello
   * (none, malformed, too large, or cut off by EOF).
   */
  | "bad-proxy-header"
  /**
   * Public port (`accept_proxy_protocol`): not an error — a load balancer's health check (a v2
   * LOCAL header, or v1 UNKNOWN), accepted and closed.
   */
  | "health-check"
  /** Public port: no complete ClientHello (or PROXY header) within `hello_timeout_ms`. */
  | "hello-timeout"
  /** Public port: no SNI, or no route for it. */
  | "unknown-name"
  /** Public port: a pending cap (`max_pending`, per operator, per client). */
  | "pending-total"
  | "pending-operator"
  | "pending-client"
  /** Public port: the notice failed. */
  | "notice-failed"
  /**
   * Public port: the pooled dial-back taken for the client closed before answering, with no
   * dispatch left (`max_dispatches`; docs/architecture.md, "Pooled dial-backs that close unanswered").
   */
  | "dial-back-closed"
  /** Public port: no dial-back within `dial_back_timeout_ms`. */
  | "expired"
  /** Private port: unknown, expired or reused token; EOF or bytes before 32 came. */
  | "bad-token"
  /** Private port: no token within `token_timeout_ms`. */
  | "token-timeout"
  /** Private port: a ticket's dial-back while its operator holds the ticket's cap of idle ones. */
  | "pool-full"
  /** Private proxy: a pooled client for a name not announced here, or a bad pool header. */
  | "unknown-pooled-name";

/** Monotonic times (ms) of a connection's phases; 0: the phase did not happen. */
export interface Phases {
  /**
   * Public: the client accepted. Private: the notice taken (notice) or the pool header read
   * (pool: the time a dial-back sat idle in the pool is no part of the connection).
   */
  readonly accepted: number;
  /** Public: the ClientHello complete. */
  readonly hello: number;
  /** The dial-back there (claimed, taken from the pool, or connected and token written). */
  readonly dialBack: number;
  /** Private: the internal server connected. */
  readonly internal: number;
  /** Bytes flow both ways. */
  readonly piped: number;
  readonly ended: number;
}

/** How a public client got its dial-back. */
export type Via = "pool" | "notice";

/**
 * An event of the data plane. `conn` names one connection for its whole life inside this data
 * plane (the number `noticeFailed` takes); `connId` is its id across both proxies
 * (docs/architecture.md, "Connection ids"), what the logs and /status show.
 */
export type DataEvent =
  /** Public: a routed client waits for a dial-back; send the notice with `token` (base64). */
  | {
    readonly type: "needDialBack";
    readonly conn: number;
    readonly connId: string;
    readonly operator: string;
    readonly domain: string;
    readonly token: string;
    readonly client: string;
    /**
     * The address the client connected to (`ip:port`, the public listener's as the client saw
     * it), when the driver reported it: the PROXY protocol's destination.
     */
    readonly local?: string;
    /** 1 for the first notice; more for a re-dispatch (docs/architecture.md, "Re-dispatch"). */
    readonly attempt: number;
    /**
     * A re-dispatch's cause: no dial-back within `redispatch_after_ms` (`timer`), the
     * previous notice failed (`failed`), or a pooled dial-back taken for the client closed before
     * answering (`pooled`; then also on attempt 1). Absent on a client's first dispatch.
     */
    readonly why?: "timer" | "failed" | "pooled";
    /** The route's instances (`PublicRoute.instances`) when it names them. */
    readonly instances?: readonly string[];
  }
  /** A connection was refused before any splice; `client` is the peer's address. */
  | {
    readonly type: "refused";
    readonly why: Refusal;
    /** The connection, once it had one (a client that read its hello; a decoded pool header). */
    readonly conn?: number;
    readonly connId?: string;
    readonly client: string;
    readonly domain?: string;
    readonly operator?: string;
    /** Private: the public replica a refused pooled client came through (its `openPooled`'s). */
    readonly instance?: string;
    /** Public: the ALPN protocols of the client's ClientHello, once it was read. */
    readonly alpn?: readonly string[];
    readonly detail?: string;
    /** Public, `dial-back-closed`: the notices the client had (counted at its first), if any. */
    readonly attempt?: number;
  }
  /** A splice was set up (public: client ↔ dial-back; private: dial-back ↔ internal). */
  | {
    readonly type: "piped";
    readonly conn: number;
    readonly connId: string;
    readonly via: Via;
    readonly operator: string;
    readonly domain: string;
    readonly client: string;
    /** Public: the ALPN protocols the client offered (empty: none; docs/architecture.md, "ALPN"). */
    readonly alpn?: readonly string[];
    /** The set-up's stamps (`ended` is 0): the metrics observe them now, not at the end. */
    readonly phases: Phases;
    /** Public, via pool: the private instance whose pooled dial-back it took, when known. */
    readonly instance?: string;
    /**
     * Public, a client that had a notice (docs/architecture.md, "Re-dispatch"): via notice, the
     * notice (its `needDialBack.attempt`) whose token the dial-back presented (which instance
     * came); via pool, a re-dispatch took an idle pooled dial-back after this many notices.
     * Present: the client was counted at its first `needDialBack`.
     */
    readonly attempt?: number;
  }
  /** A spliced connection ended. `up`: bytes towards the internal server; `down`: back. */
  | {
    readonly type: "ended";
    readonly conn: number;
    readonly connId: string;
    readonly via: Via;
    readonly operator: string;
    readonly domain: string;
    readonly client: string;
    /** Public: the ALPN protocols the client offered (empty: none). */
    readonly alpn?: readonly string[];
    readonly up: number;
    readonly down: number;
    readonly reason: EndReason;
    readonly phases: Phases;
    /** Public, via pool: the private instance of the dial-back, when known. */
    readonly instance?: string;
  }
  /** Private: a connect for a connection failed before its splice (dial-back or internal). */
  | {
    readonly type: "connectFailed";
    readonly conn: number;
    readonly connId: string;
    readonly via: Via;
    readonly side: "dial-back" | "internal";
    readonly operator: string;
    readonly domain: string;
    readonly target: string;
    readonly reason: EndReason;
  }
  /**
   * Public: a dial-back redeemed a pool token (`ticket` false) or presented a ticket token
   * (`ticket` true) and waits idle. Private: a pooled one is open.
   */
  | {
    readonly type: "poolIdle";
    readonly operator: string;
    readonly ticket?: boolean;
    /**
     * Public: the private instance it belongs to (its grant's or ticket's), when known. Private:
     * the public replica it is pooled at (its `openPooled`'s `instance`).
     */
    readonly instance?: string;
    /**
     * Private: when it went idle, on the data plane's clock (the control plane's, see "The
     * drivers"), so that the refill time measured does not include the event's way there.
     */
    readonly at?: number;
  }
  /**
   * An idle pooled dial-back ended without a client; or (public, `conn` set) one taken for a
   * client closed before answering it (docs/architecture.md, "Pooled dial-backs that close
   * unanswered").
   */
  | {
    readonly type: "poolDropped";
    readonly operator: string;
    /**
     * Public: the private instance it belonged to, when known. Private: the public replica it
     * was pooled at (its `openPooled`'s `instance`).
     */
    readonly instance?: string;
    readonly why: "eof" | "data" | "error" | "timeout" | "stopping" | "failed";
    readonly detail?: string;
    /** Private: how long it was idle before an EOF or error (a public proxy refusing its token at once shows as a short one). */
    readonly idleMs?: number;
    /** Public, taken for a client: that client (its connection, id, address and SNI). */
    readonly conn?: number;
    readonly connId?: string;
    readonly client?: string;
    readonly domain?: string;
    /** Public, taken for a client: it goes to another dial-back (else it is refused). */
    readonly retry?: boolean;
  }
  /** Public: pool tokens that were never redeemed expired. */
  | {
    readonly type: "poolTokensExpired";
    readonly operator: string;
    readonly count: number;
    /** The private instance they were granted to, when known. */
    readonly instance?: string;
  }
  /** Private: a client came on an idle pooled dial-back (its header named `domain`). */
  | {
    readonly type: "poolUsed";
    readonly conn: number;
    readonly connId: string;
    readonly operator: string;
    /** The public replica it was pooled at (its `openPooled`'s `instance`). */
    readonly instance?: string;
    readonly domain: string;
  }
  /** A listening port could not accept (EMFILE and the like); it pauses briefly and goes on. */
  | { readonly type: "acceptFailed"; readonly port: "public" | "private"; readonly error: string }
  /** The data plane holds no socket any more after a stop. */
  | { readonly type: "drained" };

/** Whether a splice was reaped idle: by `idle_timeout_ms`, or by TCP keepalive (peer vanished). */
export function reapedBy(r: EndReason): "idle-timeout" | "keepalive" | null {
  if (r.kind === "timeout" && r.phase === "idle") return "idle-timeout";
  if (r.kind === "error" && r.code === "ETIMEDOUT" && r.op !== "connect") return "keepalive";
  return null;
}

/** A reason as log text: `done`, `client read failed: ECONNRESET`, `idle timeout (internal)`. */
export function reasonText(r: EndReason): string {
  switch (r.kind) {
    case "done":
      return "done";
    case "error":
      // a socket with TCP keepalive on fails so when its peer answered no probe
      return reapedBy(r) === "keepalive"
        ? `${r.side} ${r.op} failed: ETIMEDOUT (peer vanished: TCP keepalive unanswered)`
        : `${r.side} ${r.op} failed: ${r.code}`;
    case "timeout":
      return r.phase === "idle"
        ? `idle timeout: no byte either way for idle_timeout_ms`
        : `${r.side} connect timed out`;
    case "stopped":
      return "stopped";
  }
}
