/**
 * What the public proxy's control plane makes of the data plane's events: its counters
 * ({@linkcode PublicStats}), its log lines, the pool accounting, and the notices (a client
 * waiting for a dial-back). See docs/architecture.md, "The snapshot/event contract".
 * @module
 */
import type { Logger } from "@logtape/logtape";
import { type DataEvent, reasonText } from "../dataplane/mod.ts";
import { redact } from "../log.ts";
import { countEnded, Counters } from "./counters.ts";

/** Counters of the public proxy, for tests and diagnostics. */
export interface PublicStats {
  /** Client connections accepted on the public port. */
  accepted: number;
  /** Refused because `max_connections` connections were open. */
  refusedConnections: number;
  /** Dial-backs refused because the dial-back budget was reached. */
  refusedDialBacks: number;
  /** Hellos that were malformed, too large or cut off. */
  badHellos: number;
  /** `accept_proxy_protocol`: clients without a valid PROXY header (none, malformed, cut off). */
  badProxyHeaders: number;
  /** `accept_proxy_protocol`: a load balancer's health checks (LOCAL), accepted and closed. */
  healthChecks: number;
  /** Hellos not complete within `hello_timeout_ms`. */
  helloTimeouts: number;
  /** Hellos without SNI or for a name nobody announced. */
  unknownNames: number;
  /** Refused by a pending cap (total, per operator, per client). */
  refusedPending: number;
  /** Refused at accept by the deny or allow list (docs/architecture.md, "Admission"). */
  denied: number;
  /** Refused after routing: outside the announcement's `allow`. */
  nameDenied: number;
  /** Refused at accept: `limits.max_connections_per_client`. */
  refusedClientConnections: number;
  /** Refused at accept: `limits.client_rate`. */
  refusedClientRate: number;
  /** Refused after routing: `limits.max_pending_per_name`. */
  refusedNamePending: number;
  /** Refused after routing: `limits.name_rate`. */
  refusedNameRate: number;
  /** Notices that failed (operator unreachable, refused, deadline). */
  failedNotices: number;
  /** Pending connections whose dial-back did not come in time. */
  expired: number;
  /** Dial-backs refused: unknown, expired or reused token, short read or timeout. */
  badTokens: number;
  /** Connections spliced to a dial-back (by notice or from the pool). */
  spliced: number;
  /** Notices sent (one per client not served from the pool, one more per re-dispatch). */
  notices: number;
  /** Pool tokens minted by openPool. */
  poolTokens: number;
  /** openPool calls refused: the operator's `max_pooled_per_operator` was reached, or pooling is off. */
  refusedPool: number;
  /** Connections that redeemed a pool token and went idle. */
  pooled: number;
  /** Clients served from the pool (no notice). */
  poolHits: number;
  /** Idle pooled connections dropped (EOF, reset, stray bytes, idle timeout). */
  poolDropped: number;
  /** Splices that ended (any reason). */
  ended: number;
  /** Splices closed by `idle_timeout_ms`. */
  idleTimeouts: number;
  /** Splices whose peer answered no TCP keepalive probe. */
  vanishedPeers: number;
}

export function newPublicStats(): PublicStats {
  return {
    accepted: 0,
    refusedConnections: 0,
    refusedDialBacks: 0,
    badHellos: 0,
    badProxyHeaders: 0,
    healthChecks: 0,
    helloTimeouts: 0,
    unknownNames: 0,
    refusedPending: 0,
    denied: 0,
    nameDenied: 0,
    refusedClientConnections: 0,
    refusedClientRate: 0,
    refusedNamePending: 0,
    refusedNameRate: 0,
    failedNotices: 0,
    expired: 0,
    badTokens: 0,
    spliced: 0,
    notices: 0,
    poolTokens: 0,
    refusedPool: 0,
    pooled: 0,
    poolHits: 0,
    poolDropped: 0,
    ended: 0,
    idleTimeouts: 0,
    vanishedPeers: 0,
  };
}

/** A client waiting for its dial-back: the notice to send. */
export interface NoticeRequest {
  conn: number;
  /** The connection id the notice carries (docs/architecture.md, "Connection ids"). */
  connId: string;
  operator: string;
  domain: string;
  token: string;
  client: string;
  /** The address the client connected to (`ip:port`), when the data plane knew it. */
  local?: string;
  /** 1 for the first notice, more for a re-dispatch (docs/architecture.md, "Re-dispatch"). */
  attempt?: number;
  /** A re-dispatch's cause. */
  why?: "timer" | "failed" | "pooled";
  /** The route's private instances; absent: the notice names none. */
  instances?: readonly string[];
}

/** Counts and logs one event of the public data plane; returns a notice to send, if any. */
export function onPublicEvent(
  e: DataEvent,
  stats: PublicStats,
  log: Logger,
  counters: Counters,
  settings: {
    dialBackTimeoutMs: number;
    maxConnections: number;
    maxDialBacks: number;
    tokenTimeoutMs: number;
  },
): NoticeRequest | undefined {
  switch (e.type) {
    case "needDialBack":
      if (e.attempt <= 1) stats.accepted++; // a re-dispatch is the same client
      stats.notices++;
      log.debug("conn {conn}: Parked {client} for {domain} of {operator} as {token}", {
        conn: e.connId,
        client: e.client,
        domain: e.domain,
        operator: e.operator,
        token: redact(e.token),
      });
      return e;
    case "piped":
      stats.spliced++;
      // a re-dispatch that took a pooled dial-back (attempt): the client was counted at its notice
      if (e.via === "pool" && e.attempt === undefined) {
        stats.accepted++;
        stats.poolHits++;
        log.debug("conn {conn}: Took a pooled connection of {operator} for {client} ({domain})", {
          conn: e.connId,
          operator: e.operator,
          client: e.client,
          domain: e.domain,
        });
      }
      return;
    case "ended":
      countEnded(stats, e.reason);
      log.info(
        "conn {conn}: Closed {client} for {domain} via {operator}: {up} bytes up, {down} down, {ms} ms, ALPN {alpnText}, {reason}",
        {
          conn: e.connId,
          client: e.client,
          domain: e.domain,
          operator: e.operator,
          via: e.via,
          // the protocols the client offered (docs/architecture.md, "ALPN")
          alpn: e.alpn ?? [],
          alpnText: e.alpn === undefined || e.alpn.length === 0 ? "none" : e.alpn.join(","),
          up: e.up,
          down: e.down,
          ms: Math.round(e.phases.ended - e.phases.accepted),
          reason: reasonText(e.reason),
        },
      );
      return;
    case "refused":
      onRefused(e, stats, log, counters, settings);
      return;
    case "poolIdle":
      stats.pooled++;
      return;
    case "poolDropped":
      stats.poolDropped++;
      if (e.conn === undefined) {
        log.debug("Dropped an idle pooled connection of {operator}: {why}", e);
        return;
      }
      // taken for a client, it closed before answering (docs/architecture.md, "Pooled dial-backs
      // that close unanswered"): the private side closed it as it was taken
      log.info(
        "conn {conn}: The pooled connection of {operator} (instance {instance}) taken for {client} ({domain}) closed before answering ({why}{detailText}): {then}",
        {
          conn: e.connId,
          operator: e.operator,
          instance: e.instance ?? "-",
          client: e.client,
          domain: e.domain,
          why: e.why,
          detail: e.detail,
          detailText: e.detail !== undefined ? ` ${e.detail}` : "",
          then: e.retry === true
            ? "trying another dial-back with its ClientHello"
            : "not tried again, refused (the refusal says why)",
        },
      );
      return;
    case "acceptFailed":
      counters.warn("accept", "Cannot accept connections ({count} since last report): {error}", {
        error: e.error,
      });
      return;
  }
}

function onRefused(
  e: Extract<DataEvent, { type: "refused" }>,
  stats: PublicStats,
  log: Logger,
  counters: Counters,
  settings: {
    dialBackTimeoutMs: number;
    maxConnections: number;
    maxDialBacks: number;
    tokenTimeoutMs: number;
  },
): void {
  const client = e.client;
  const conn = e.connId ?? "-"; // a refusal before a connection (over the budget) has none
  switch (e.why) {
    case "connections":
      stats.refusedConnections++;
      counters.warn(
        "connections",
        "Refused connections: {max} open ({count} since last report), last from {peer}",
        { max: settings.maxConnections, peer: client },
      );
      return;
    case "dial-backs":
      stats.refusedDialBacks++;
      counters.warn(
        "dial-backs",
        "Refused dial-backs: the budget's {max} open ({count} since last report), last from {peer}",
        { max: settings.maxDialBacks, peer: client },
      );
      return;
    case "bad-hello":
      stats.accepted++;
      if (e.detail !== "EOF" && !e.detail?.includes("failed")) stats.badHellos++;
      log.debug("conn {conn}: Refused client {client}: {error}", { conn, client, error: e.detail });
      return;
    case "bad-proxy-header":
      stats.accepted++;
      stats.badProxyHeaders++;
      // a connection that bypasses the balancer, or a balancer not set to send the header
      counters.warn(
        "bad-proxy-header",
        "Refused clients without a valid PROXY protocol header (accept_proxy_protocol is on; {count} since last report), last conn {conn} from {client}: {why}",
        { conn, client, why: e.detail },
      );
      return;
    case "health-check":
      stats.accepted++;
      stats.healthChecks++;
      log.debug("conn {conn}: Health check from {client} ({what}): closed", {
        conn,
        client,
        what: e.detail,
      });
      return;
    case "hello-timeout":
      stats.accepted++;
      stats.helloTimeouts++;
      log.debug("conn {conn}: Dropped client {client}: no ClientHello in time", { conn, client });
      return;
    case "unknown-name":
      stats.accepted++;
      stats.unknownNames++;
      log.debug("conn {conn}: Refused client {client}: {why}", { conn, client, why: e.detail });
      return;
    case "pending-total":
    case "pending-operator":
    case "pending-client":
      stats.accepted++;
      stats.refusedPending++;
      counters.warn(
        e.why,
        "Refused clients: pending cap {cap} reached ({count} since last report), last conn {conn} from {client} for {domain}",
        { cap: e.why.slice("pending-".length), conn, client, domain: e.domain },
      );
      return;
    case "denied":
    case "client-connections":
    case "client-rate":
      if (e.why === "denied") stats.denied++;
      else if (e.why === "client-connections") stats.refusedClientConnections++;
      else stats.refusedClientRate++;
      counters.warn(
        e.why,
        "Refused clients at accept: {why} ({count} since last report), last from {client}: {detail}",
        { why: e.why, client, detail: e.detail },
      );
      return;
    case "name-denied":
    case "name-pending":
    case "name-rate":
      stats.accepted++;
      if (e.why === "name-denied") stats.nameDenied++;
      else if (e.why === "name-pending") stats.refusedNamePending++;
      else stats.refusedNameRate++;
      counters.warn(
        e.why,
        "Refused clients of a name: {why} ({count} since last report), last conn {conn} from {client} for {domain}: {detail}",
        { why: e.why, conn, client, domain: e.domain, detail: e.detail },
      );
      return;
    case "notice-failed":
      stats.failedNotices++;
      return;
    case "dial-back-closed":
      stats.failedNotices++;
      return; // logged with its poolDropped
    case "expired":
      if (e.detail === "stopping") return;
      stats.expired++;
      counters.warn(
        "expired",
        "Closed clients: no dial-back within {ms} ms ({count} since last report), last conn {conn} from {client} for {domain} of {operator}",
        { ms: settings.dialBackTimeoutMs, conn, client, domain: e.domain, operator: e.operator },
      );
      return;
    case "bad-token":
    case "token-timeout":
      stats.badTokens++;
      counters.warn(
        "token",
        "Refused dial-backs ({count} since last report), last from {peer}: {why}",
        { peer: client, why: e.detail },
      );
      return;
    case "pool-full":
      stats.refusedPool++;
      counters.warn(
        "pool-full",
        "Refused ticket dial-backs: pool full ({count} since last report), last from {peer}: {why}",
        { peer: client, why: e.detail },
      );
      return;
  }
}
