/**
 * TCP keepalive timings of a splice's sockets (docs/architecture.md, "Idle splices"): from the
 * one setting `tcp_keepalive_ms`, the first probe after that much idleness, then `count` probes
 * `intervalS` apart; a peer that answers none is gone and the socket fails with ETIMEDOUT. The
 * native driver also sets TCP_USER_TIMEOUT to the same bound, so that data still unacknowledged
 * when the peer vanished (which holds the probes off) is bounded alike.
 * @module
 */

export interface KeepAliveTimings {
  /** TCP_KEEPIDLE: seconds of idleness before the first probe. */
  readonly idleS: number;
  /** TCP_KEEPINTVL: seconds between probes. */
  readonly intervalS: number;
  /** TCP_KEEPCNT: unanswered probes after which the connection is dropped. */
  readonly count: number;
}

/** Probes a sixth of the idle time apart (1 s to 75 s, Linux's default interval), three of them. */
export function keepAliveTimings(ms: number): KeepAliveTimings {
  const idleS = Math.max(1, Math.ceil(ms / 1000));
  return { idleS, intervalS: Math.min(75, Math.max(1, Math.ceil(idleS / 6))), count: 3 };
}

/** The longest a vanished, idle peer is held by keepalive alone, in ms. */
export function keepAliveBoundMs(ms: number): number {
  const t = keepAliveTimings(ms);
  return (t.idleS + t.intervalS * t.count) * 1000;
}
