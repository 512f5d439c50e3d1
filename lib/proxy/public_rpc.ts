/**
 * The calls the public proxy serves through its EPS (docs/architecture.md, "The control plane"):
 * `announceConnections`, `withdrawConnections`, `getAnnouncements` and `openPool`.
 * @module
 */
import type { Logger } from "@logtape/logtape";
import { RpcCode, RpcError } from "../errors.ts";
import { errorText } from "../log.ts";
import type { EpsClient } from "../eps/client.ts";
import {
  type Announcements,
  MAX_PAGE,
  parseAnnounceParams,
  parseWithdrawParams,
  viewOf,
} from "./announcements.ts";
import type { Counters } from "./counters.ts";
import { MAX_OPEN_COUNT, type PoolGrants, type TicketGrant } from "./public_pool.ts";
import type { PublicStats } from "./public_events.ts";
import type { Replica } from "./store.ts";

export interface PublicRpcParts {
  eps: EpsClient;
  announcements: Announcements;
  grants: PoolGrants;
  stats: PublicStats;
  log: Logger;
  counters: Counters;
  maxPooledPerOperator: number;
  /** The announcements changed (or may have): push a new snapshot. */
  changed(): void;
  /** The live public replicas of this operator (docs/architecture.md, "Public replicas and the Redis store"). */
  replicas(): Replica[];
  /** This replica's instance name. */
  instance: string;
  /** This replica's private endpoint, `host:port`. */
  endpoint(): string;
  /** A private instance announced or opened a pool: it is attached (the notices' absent marks). */
  instancePresent(operator: string, instance: string | undefined): void;
}

/** What answers that name replicas carry: this replica and every live one. */
export function replicasOf(
  p: PublicRpcParts,
): { instance: string; endpoint: string; replicas: Replica[] } {
  return { instance: p.instance, endpoint: p.endpoint(), replicas: p.replicas() };
}

/** Serves the public proxy's calls on `p.eps`. */
export function servePublicCalls(p: PublicRpcParts): void {
  const { eps, announcements, log } = p;
  eps.serve("announceConnections", async (params, ctx) => {
    const requests = parseAnnounceParams(params, Date.now());
    p.instancePresent(ctx.caller, ctx.callerInstance);
    try {
      const added = await announcements.announce(ctx.caller, requests, ctx.callerInstance ?? "");
      log.info("Accepted announcement of {domains} from {operator}", {
        operator: ctx.caller,
        domains: added.map((a) => a.domain),
      });
      return { connections: viewOf(added), ...replicasOf(p) };
    } catch (err) {
      log.warn("Refused announcement from {operator}: {error}", {
        operator: ctx.caller,
        error: errorText(err),
      });
      throw err;
    } finally {
      p.changed(); // also after a failed store write: the table may have changed
    }
  });
  eps.serve("withdrawConnections", async (params, ctx) => {
    let withdrawn: string[];
    try {
      withdrawn = await announcements.withdraw(
        ctx.caller,
        parseWithdrawParams(params),
        ctx.callerInstance,
      );
    } finally {
      p.changed();
    }
    log.info("Withdrew {domains} of {operator}", { operator: ctx.caller, domains: withdrawn });
    return { withdrawn };
  });
  eps.serve("openPool", (params, ctx) => {
    p.instancePresent(ctx.caller, ctx.callerInstance);
    return { ...openPool(p, params, ctx.caller, ctx.callerInstance), ...replicasOf(p) };
  });
  eps.serve("getAnnouncements", (_params, ctx) => ({
    connections: viewOf(announcements.list(ctx.caller)),
  }));
}

function openPool(
  p: PublicRpcParts,
  params: Record<string, unknown>,
  operator: string,
  instance: string | undefined,
) {
  const { count, idle_timeout_ms: idleMs } = params;
  // ticket: true asks for a pool ticket too (docs/architecture.md, "Pool tickets"). count 0 asks
  // for no token: with a ticket, the ticket alone; without, only who the replicas are (a private
  // instance's probe for replicas that joined, docs/architecture.md, "Private instances and public
  // replicas: the private side")
  const wantTicket = params.ticket === true;
  // absent: every name the caller holds (any number of them); a list narrows the pool to those
  const domains = params.domains ?? [];
  if (
    !Number.isInteger(count) || (count as number) < 0 ||
    (count as number) > MAX_OPEN_COUNT ||
    !Number.isInteger(idleMs) || (idleMs as number) < 1 ||
    !Array.isArray(domains) || domains.length > MAX_PAGE ||
    !domains.every((d) => typeof d === "string") ||
    (params.ticket !== undefined && typeof params.ticket !== "boolean")
  ) {
    throw new RpcError(
      `Cannot open pool for "${operator}": want {count: 0 to ${MAX_OPEN_COUNT}, idle_timeout_ms: > 0, domains?: [at most ${MAX_PAGE} names], ticket?: boolean}`,
      RpcCode.InvalidParams,
    );
  }
  if (count === 0 && !wantTicket) return { tokens: [], idle_timeout_ms: idleMs };
  // only names this operator holds now: a pooled connection serves nothing else
  if (domains.length === 0 && p.announcements.count(operator) === 0) {
    throw new RpcError(
      `Cannot open pool for "${operator}": it holds no announcement`,
      RpcCode.DomainNotAllowed,
    );
  }
  const held = new Set(p.announcements.list(operator).map((a) => a.domain));
  const foreign = (domains as string[]).filter((d) => !held.has(d));
  if (foreign.length > 0) {
    p.counters.warn(
      "pool-domains",
      "Refused pools: domains not announced by the caller ({count} since last report), last {operator} for {domains}",
      { operator, domains: foreign },
    );
    throw new RpcError(
      `Cannot open pool for "${operator}": ${JSON.stringify(foreign)} not announced by it`,
      RpcCode.DomainNotAllowed,
    );
  }
  const ticket = wantTicket
    ? p.grants.ticket(operator, domains as string[], idleMs as number, instance)
    : null;
  if (ticket !== null && count === 0) {
    p.log.debug("Granted a pool ticket to {operator}", { operator });
    return { tokens: [], idle_timeout_ms: ticket.idleTimeoutMs, ticket: ticketJson(ticket) };
  }
  const minted = p.grants.mint(
    operator,
    domains as string[],
    count as number,
    idleMs as number,
    instance,
  );
  if (!minted.ok) {
    p.stats.refusedPool++;
    const max = p.maxPooledPerOperator;
    p.counters.warn(
      `pool-${minted.why}`,
      "Refused pool tokens: {why} ({count} since last report), last for {operator}",
      {
        operator,
        why: minted.why === "off" ? "pooling is off" : `max_pooled_per_operator ${max} reached`,
      },
    );
    // the ticket still serves once the pool has room again
    if (ticket !== null) {
      return {
        tokens: [],
        idle_timeout_ms: ticket.idleTimeoutMs,
        ticket: ticketJson(ticket),
      };
    }
    throw new RpcError(
      minted.why === "off"
        ? `Cannot open pool for "${operator}": pooling is off`
        : `Cannot open pool for "${operator}": ${max} connections or tokens held`,
      RpcCode.Unavailable,
    );
  }
  p.stats.poolTokens += minted.tokens.length;
  p.log.debug("Minted {n} pool tokens for {operator}", { n: minted.tokens.length, operator });
  return {
    tokens: minted.tokens,
    idle_timeout_ms: minted.idleTimeoutMs,
    ...(ticket === null ? {} : { ticket: ticketJson(ticket) }),
  };
}

function ticketJson(t: TicketGrant) {
  return { id: t.id, key: t.key, expires_in_ms: t.expiresInMs, cap: t.cap };
}
