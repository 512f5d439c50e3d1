/**
 * The private proxy's metrics and `/status` (docs/architecture.md, "The admin endpoint";
 * README.md, "Metrics"). Read from the control plane at scrape time, except the event counts
 * {@linkcode ProxyMetrics} keeps.
 * @module
 */
import { counterOf, gaugeOf, ProxyMetrics } from "../admin/metrics.ts";
import { CallCounts } from "../admin/eps_calls.ts";
import type { AdminSource } from "../admin/server.ts";
import { type StatusTable, untilText } from "../admin/status.ts";
import type { EpsClient } from "../eps/client.ts";
import type { ReplicaPools } from "./replica_pools.ts";
import type { PrivateStats } from "./private.ts";
import type { AnnouncementStatus } from "./drain.ts";
import { type LiveConnections, liveTable } from "./live.ts";
import { epsLinkMetrics, RoleAdmin } from "../admin/role_admin.ts";

export interface PrivateAdminParts {
  driver: string;
  stats: Readonly<PrivateStats>;
  eps: EpsClient;
  pools: ReadonlyMap<string, ReplicaPools>;
  announceTo: readonly string[];
  /** The announcements and their state now. */
  announcements(): readonly AnnouncementStatus[];
  /** Whether every operator of announce_to acknowledged a first announcement. */
  announced(): boolean;
  /** Live connections now. */
  live(): number;
  /** The spliced connections, by connection id. */
  liveConnections: LiveConnections;
  maxConnections: number;
  drain?(domain: string, wait: boolean): Promise<unknown>;
  undrain?(domain: string): Promise<unknown>;
}

export class PrivateAdmin extends RoleAdmin {
  readonly metrics: ProxyMetrics;
  readonly calls = new CallCounts();
  parts!: PrivateAdminParts;

  constructor(operator: string, nameOf: (domain: string) => string | undefined) {
    super("private", operator);
    this.metrics = new ProxyMetrics(this.registry, "private", nameOf);
  }

  attach(parts: PrivateAdminParts): void {
    this.parts = parts;
    this.info({ driver: parts.driver });
    const r = this.registry;
    const p = parts;
    epsLinkMetrics(r, p.eps, this.calls);
    gaugeOf(
      r,
      "tls_pass_announcements",
      "This proxy's announcements by state (announced, draining, drained, pending)",
      ["state"],
      () => {
        const m = new Map<string, number>();
        for (const a of p.announcements()) m.set(a.state, (m.get(a.state) ?? 0) + 1);
        return [...m].map(([state, v]) => [{ state }, v] as const);
      },
    );
    const pools = (f: (pool: ReplicaPools) => number) => () =>
      [...p.pools].map(([operator, pool]) => [{ operator }, f(pool)] as const);
    gaugeOf(
      r,
      "tls_pass_pool_idle",
      "Idle pooled dial-backs per public operator",
      ["operator"],
      pools((x) => x.idle),
    );
    gaugeOf(
      r,
      "tls_pass_pool_target",
      "The pool size aimed for now (from the arrival rate), per public operator",
      ["operator"],
      pools((x) => x.target()),
    );
    counterOf(
      r,
      "tls_pass_pool_hits_total",
      "Clients that came on a pooled dial-back, per public operator",
      ["operator"],
      pools((x) => x.stats.used),
    );
    counterOf(
      r,
      "tls_pass_pool_dropped_total",
      "Idle pooled dial-backs that ended without a client, per public operator",
      ["operator"],
      pools((x) => x.stats.dropped),
    );
    counterOf(
      r,
      "tls_pass_notices_total",
      "Notices received, by result (ok, refused)",
      ["code"],
      () => [[{ code: "ok" }, p.stats.notices], [{ code: "refused" }, p.stats.refusedNotices]],
    );
  }

  ready(): { ready: boolean; problems: string[] } {
    const problems: string[] = [];
    if (this.parts === undefined) problems.push("starting");
    else {
      if (!this.parts.eps.attached) problems.push("no link to its EPS");
      if (!this.parts.announced()) problems.push("first announcement not acknowledged yet");
    }
    return { ready: problems.length === 0, problems };
  }

  status(): Record<string, unknown> {
    // the endpoint is up before the data plane: until then, only that it starts
    if (this.parts === undefined) return this.document(this.ready(), {}, [], {});
    const p = this.parts;
    const m = this.metrics;
    const announcements = p.announcements();
    // one row per public replica (docs/architecture.md, "Private instances and public replicas:
    // the private side"); replica null: a pool not bound to one yet (or an older public proxy)
    const pools = [...p.pools].flatMap(([operator, all]) =>
      [...all.replicas.values()].map((r) => ({
        operator,
        replica: r.instance ?? null,
        pool: r.pool,
      }))
    ).map(({ operator, replica, pool: x }) => ({
      operator,
      replica,
      idle: x.idle,
      opening: x.opening,
      target: x.target(),
      hits: x.stats.used,
      dropped: x.stats.dropped,
      failedRefills: x.stats.failedRefills,
    }));
    const links = [{ peer: "eps", up: p.eps.attached }];
    const tables: StatusTable[] = [
      {
        title: "Announcements",
        columns: ["domain", "internal", "state", "live", "acknowledged by", "expires in"],
        rows: announcements.map((a) => [
          a.domain,
          a.internal,
          a.state,
          a.live,
          a.acknowledged.map((x) => x.operator).join(", "),
          a.expiresAt === undefined ? "-" : untilText(Date.parse(a.expiresAt)),
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
        columns: [
          "operator",
          "replica",
          "idle",
          "opening",
          "target",
          "hits",
          "dropped",
          "failed refills",
        ],
        rows: pools.map((x) => [
          x.operator,
          x.replica ?? "any",
          x.idle,
          x.opening,
          x.target,
          x.hits,
          x.dropped,
          x.failedRefills,
        ]),
        empty: "pool off",
      },
      liveTable(p.liveConnections),
      {
        title: "Refusals since start, by reason",
        columns: ["reason", "count"],
        rows: [...m.refused].sort((a, b) => b[1] - a[1]),
        empty: "no refusal",
      },
    ];
    const summary = {
      driver: p.driver,
      "announce to": p.announceTo.join(", "),
      notices: p.stats.notices,
      "live connections": p.live(),
      "max connections": p.maxConnections,
    };
    return this.document(this.ready(), summary, tables, {
      driver: p.driver,
      announcements,
      links,
      pools,
      connections: {
        live: p.live(),
        spliced: m.piped,
        byName: Object.fromEntries(p.liveConnections.countsByDomain()),
        recent: p.liveConnections.list(),
      },
      limits: [{ limit: "max_connections", value: p.maxConnections }],
      refusals: Object.fromEntries(m.refused),
      counters: { ...p.stats },
    });
  }

  source(): AdminSource {
    const src: AdminSource = {
      role: "private",
      registry: this.registry,
      status: () => this.status(),
      ready: () => this.ready(),
      drain: (domain, wait) => {
        if (!this.parts?.drain) throw new Error("drain is not available yet");
        return this.parts.drain(domain, wait);
      },
      undrain: (domain) => {
        if (!this.parts?.undrain) throw new Error("undrain is not available yet");
        return this.parts.undrain(domain);
      },
    };
    return src;
  }
}
