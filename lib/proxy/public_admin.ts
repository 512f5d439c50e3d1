/**
 * The public proxy's metrics and `/status` (docs/architecture.md, "The admin endpoint";
 * README.md, "Metrics"). Everything here is read from the control plane at scrape time, except
 * the event counts {@linkcode ProxyMetrics} keeps.
 * @module
 */
import { counterOf, gaugeOf, ProxyMetrics, rowsOf } from "../admin/metrics.ts";
import { CallCounts } from "../admin/eps_calls.ts";
import type { AdminSource } from "../admin/server.ts";
import { type StatusTable, untilText } from "../admin/status.ts";
import { formatHostPort, type HostPort } from "../role.ts";
import type { EpsClient } from "../eps/client.ts";
import type { Announcements } from "./announcements.ts";
import type { PoolGrants } from "./public_pool.ts";
import type { PublicStats } from "./public_events.ts";
import { epsLinkMetrics, RoleAdmin } from "../admin/role_admin.ts";
import { type LiveConnections, liveTable } from "./live.ts";

/** The refusals that are a cap being hit, and the setting that sets the cap. */
const LIMIT_OF: Record<string, string> = {
  "connections": "max_connections",
  "dial-backs": "max_connections (dial-back share)",
  "pending-total": "max_pending",
  "pending-operator": "max_pending_per_operator",
  "pending-client": "max_pending_per_client",
  "pool-full": "max_pooled_per_operator",
  "hello-timeout": "hello_timeout_ms",
  "expired": "dial_back_timeout_ms",
  "client-connections": "limits.max_connections_per_client",
  "client-rate": "limits.client_rate",
  "name-pending": "limits.max_pending_per_name",
  "name-rate": "limits.name_rate",
  "denied": "allow / deny",
  "name-denied": "an announcement's allow",
  "bad-proxy-header": "accept_proxy_protocol",
};

export interface PublicAdminParts {
  operator: string;
  driver: string;
  stats: Readonly<PublicStats>;
  announcements: Announcements;
  grants: PoolGrants;
  eps: EpsClient;
  /** The notices sent, by result. */
  notices: { readonly results: ReadonlyMap<string, number> };
  /** The spliced connections, by connection id. */
  live: LiveConnections;
  addrs: { public: HostPort; private: HostPort };
  privateEndpoint: () => HostPort;
  /** The value of each limit a refusal reason stands for, as the settings say now. */
  limits: () => Record<string, number>;
}

/** The public proxy's admin: metrics fed by events, and the AdminSource of its endpoint. */
export class PublicAdmin extends RoleAdmin {
  readonly metrics: ProxyMetrics;
  readonly calls = new CallCounts();
  parts!: PublicAdminParts;

  /** Why the store keeps this replica from being ready (Redis unreachable). */
  readonly #storeProblems: () => string[];

  constructor(
    operator: string,
    announcements: Announcements,
    storeProblems: () => string[] = () => [],
  ) {
    super("public", operator);
    this.#storeProblems = storeProblems;
    this.metrics = new ProxyMetrics(
      this.registry,
      "public",
      (domain) => announcements.match(domain)?.domain,
    );
  }

  /** Registers the scrape-time metrics; call once the parts exist. */
  attach(parts: PublicAdminParts): void {
    this.parts = parts;
    this.info({ driver: parts.driver });
    const r = this.registry;
    const p = parts;
    epsLinkMetrics(r, p.eps, this.calls);
    gaugeOf(
      r,
      "tls_pass_announcements",
      "Live announcements per private operator",
      ["operator"],
      () => {
        const m = new Map<string, number>();
        for (const a of p.announcements.all()) m.set(a.operator, (m.get(a.operator) ?? 0) + 1);
        return rowsOf("operator", m);
      },
    );
    gaugeOf(r, "tls_pass_pool_idle", "Idle pooled dial-backs per private operator", [
      "operator",
    ], () => this.#poolOperators().map((op) => [{ operator: op }, p.grants.idle(op)] as const));
    gaugeOf(
      r,
      "tls_pass_pool_held",
      "Pool tokens not yet redeemed plus idle pooled dial-backs, per private operator (capped by max_pooled_per_operator)",
      ["operator"],
      () => this.#poolOperators().map((op) => [{ operator: op }, p.grants.held(op)] as const),
    );
    counterOf(r, "tls_pass_pool_tokens_total", "Pool tokens minted by openPool", [], () => [
      [{}, p.stats.poolTokens],
    ]);
    counterOf(
      r,
      "tls_pass_notices_total",
      "Notices sent, one per client, by result: ok, the JSON-RPC error code of a failed call, or refused (by the private proxy, in a batch's answer)",
      ["code"],
      () => rowsOf("code", p.notices.results),
    );
  }

  #poolOperators(): string[] {
    const ops = new Set<string>();
    for (const a of this.parts.announcements.all()) ops.add(a.operator);
    return [...ops];
  }

  ready(): { ready: boolean; problems: string[] } {
    const problems: string[] = [];
    if (this.parts === undefined) problems.push("starting");
    else if (!this.parts.eps.attached) problems.push("no link to its EPS");
    problems.push(...this.#storeProblems());
    return { ready: problems.length === 0, problems };
  }

  status(): Record<string, unknown> {
    // the endpoint is up before the data plane: until then, only that it starts
    if (this.parts === undefined) return this.document(this.ready(), {}, [], {});
    const p = this.parts;
    const m = this.metrics;
    const now = Date.now();
    const all = p.announcements.all();
    const liveByName = new Map<string, number>();
    for (const [domain, n] of p.live.countsByDomain()) {
      const name = p.announcements.match(domain)?.domain ?? domain;
      liveByName.set(name, (liveByName.get(name) ?? 0) + n);
    }
    const announcements = all.map((a) => ({
      domain: a.domain,
      operator: a.operator,
      // the announcing instances of its operator ("" stands for one that named none)
      instances: a.instances,
      expiresAt: new Date(a.expiresAt).toISOString(),
      live: liveByName.get(a.domain) ?? 0,
      spliced: m.perName.get(a.domain) ?? 0,
    }));
    const operators = this.#poolOperators();
    const pools = operators.map((op) => ({
      operator: op,
      idle: p.grants.idle(op),
      held: p.grants.held(op),
      cap: p.grants.maxPerOperator,
      hits: m.poolHits.get(op) ?? 0,
      misses: m.poolMisses.get(op) ?? 0,
    }));
    const refusals = Object.fromEntries(m.refused);
    const limitValues = p.limits();
    const limits = Object.entries(LIMIT_OF).map(([why, key]) => ({
      limit: key,
      reason: why,
      value: limitValues[why] ?? null,
      hits: m.refused.get(why) ?? m.dialBacksRefused.get(why) ?? 0,
    }));
    const links = [{ peer: "eps", up: p.eps.attached }];
    const tables: StatusTable[] = [
      {
        title: "Announcements",
        columns: ["domain", "operator", "instances", "expires in", "live", "spliced"],
        rows: announcements.map((
          a,
        ) => [
          a.domain,
          a.operator,
          a.instances.filter((i) => i !== "").join(", ") || "-",
          untilText(Date.parse(a.expiresAt), now),
          a.live,
          a.spliced,
        ]),
        empty: "no announcement",
      },
      {
        title: "Links",
        columns: ["peer", "state"],
        rows: links.map((l) => [l.peer, l.up ? "up" : "down"]),
      },
      {
        title: "Pools",
        columns: ["operator", "idle", "held", "cap", "hits", "misses"],
        rows: pools.map((x) => [x.operator, x.idle, x.held, x.cap, x.hits, x.misses]),
        empty: "no private operator announced",
      },
      liveTable(p.live),
      {
        title: "Limits hit",
        columns: ["limit", "value", "refused"],
        rows: limits.filter((l) => l.hits > 0).map((l) => [l.limit, l.value ?? "", l.hits]),
        empty: "no limit hit",
      },
      {
        title: "Refusals since start, by reason",
        columns: ["reason", "count"],
        rows: [
          ...[...m.refused].sort((a, b) => b[1] - a[1]),
          ...[...m.dialBacksRefused].map(([why, n]) => [`dial-back ${why}`, n]),
        ],
        empty: "no refusal",
      },
    ];
    const summary = {
      driver: p.driver,
      public: formatHostPort(p.addrs.public),
      private: formatHostPort(p.addrs.private),
      "notices name": formatHostPort(p.privateEndpoint()),
      accepted: m.accepted,
      "live connections": p.live.size,
      announcements: all.length,
    };
    return this.document(this.ready(), summary, tables, {
      driver: p.driver,
      addrs: { public: formatHostPort(p.addrs.public), private: formatHostPort(p.addrs.private) },
      announcements,
      links,
      pools,
      connections: {
        accepted: m.accepted,
        live: p.live.size,
        byName: Object.fromEntries(liveByName),
        spliced: Object.fromEntries(m.perName),
        recent: p.live.list(),
      },
      limits,
      refusals,
      dialBackRefusals: Object.fromEntries(m.dialBacksRefused),
      counters: { ...p.stats },
    });
  }

  source(): AdminSource {
    return {
      role: "public",
      registry: this.registry,
      status: () => this.status(),
      ready: () => this.ready(),
    };
  }
}
