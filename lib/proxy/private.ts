/**
 * The private proxy's control plane (docs/architecture.md, "The control plane"): it listens on
 * nothing. It announces its domains to public operators through its EPS, checks each notice and
 * hands it to the data plane as a `dialBack` command, sizes the dial-back pools, counts and logs.
 * The data plane (lib/dataplane) dials, presents tokens, reads pool headers, connects the
 * internal servers and splices.
 * @module
 */
import type { Logger } from "@logtape/logtape";
import { errorText, logger, RateLimitedLog, redact } from "../log.ts";
import {
  formatHostPort,
  type HostPort,
  makeHandle,
  type Reloadable,
  type RoleHandle,
} from "../role.ts";
import { connectEps, type EpsClient, readEpsClientTls } from "../eps/client.ts";
import {
  type DataEvent,
  type DataPlane,
  type Limits,
  openDataPlane,
  type PrivateRoute,
  reasonText,
  type Snapshot,
} from "../dataplane/mod.ts";
import type { PrivateAnnouncement, PrivateSettings } from "../settings/private.ts";
import { withInstance } from "../settings/public.ts";
import { Announcer } from "./announcer.ts";
import { allowedEndpoint, checkNotice } from "./notices.ts";
import type { DialPoolStats } from "./pool_sizing.ts";
import { ReplicaPools } from "./replica_pools.ts";
import { Resolver } from "./targets.ts";
import { drainAndClose, untilStopped } from "./lifecycle.ts";
import { countEnded } from "./counters.ts";
import { LiveConnections } from "./live.ts";
import { isConnId } from "../wire/conn_id.ts";
import {
  afterEvent,
  type AnnouncementStatus,
  AnnouncementTable,
  type DrainOptions,
  type DrainResult,
  servingChanged,
} from "./drain.ts";
import { privateReloader } from "./private_reload.ts";
import { withReload } from "../settings/diff.ts";

export type { AnnouncementState, AnnouncementStatus, DrainOptions, DrainResult } from "./drain.ts";
import { type Budget, privateBudget, softFdLimit } from "./budget.ts";
import type { PrivateAdmin } from "./private_admin.ts";
import type { ProxyMetrics } from "../admin/metrics.ts";
import { countCalls } from "../admin/eps_calls.ts";
import { matchName } from "../wire/names.ts";

/** Counters of the private proxy, for tests and diagnostics. */
export interface PrivateStats {
  /** Notices accepted (answered ok). */
  notices: number;
  /** Notices refused (caller, domain, endpoint, token or cap). */
  refusedNotices: number;
  /** Dial-backs or internal connects that failed. */
  failedConnections: number;
  /** Connections spliced. */
  spliced: number;
  /** Announcements acknowledged (one per public operator and round). */
  announced: number;
  /** Clients that came on a pooled connection for a name not announced here (closed). */
  refusedPooled: number;
  /** Splices that ended (any reason). */
  ended: number;
  /** Splices closed by `idle_timeout_ms`. */
  idleTimeouts: number;
  /** Splices whose peer answered no TCP keepalive probe. */
  vanishedPeers: number;
}

/** The handle of a running private proxy; it listens on nothing. */
export interface PrivateHandle extends RoleHandle<never>, Reloadable<PrivateSettings> {
  /**
   * Drains one announcement (docs/architecture.md, "Drain"): withdrawn at every operator, no new
   * connection for it, its splices get `grace_ms`, then the rest are closed. Resolves once
   * drained (or at once with `{wait: false}`); throws RangeError for a domain not announced here.
   */
  drain(domain: string, options?: DrainOptions): Promise<DrainResult>;
  /** Announces a drained one again; resolves once acknowledged (or after 10 s, or at once with `{wait: false}`). */
  undrain(
    domain: string,
    options?: { wait?: boolean; timeoutMs?: number },
  ): Promise<AnnouncementStatus>;
  /** Each announcement's state, live connections and acknowledgements (for /status; cheap). */
  announcementStatus(): AnnouncementStatus[];
  /** Resolves once every operator in `announce_to` acknowledged an announcement; rejects (AbortError) on a stop before that. */
  readonly ready: Promise<void>;
  readonly stats: Readonly<PrivateStats>;
  /**
   * The dial-back pools' counters per public operator, summed over its replicas (empty when the
   * pool is off); `replicas` has each replica's pool (docs/architecture.md, "Private instances
   * and public replicas: the private side").
   */
  readonly pools: ReadonlyMap<
    string,
    {
      readonly stats: Readonly<DialPoolStats>;
      readonly idle: number;
      readonly replicas: ReadonlyMap<
        string,
        {
          readonly instance: string | undefined;
          readonly pool: { readonly stats: Readonly<DialPoolStats>; readonly idle: number };
        }
      >;
    }
  >;
  /** Which data-plane driver runs. */
  readonly driver: DataPlane["driver"];
  /** Metrics and status, when `admin_listen` is set. */
  readonly admin: PrivateAdmin | undefined;
  /** The spliced connections now, by connection id (for /status). */
  readonly live: LiveConnections;
}

function privateLimits(s: PrivateSettings, budget: Budget): Limits {
  return {
    maxConnections: budget.maxConnections,
    maxDialBacks: budget.maxDialBacks,
    maxPooled: 0,
    helloTimeoutMs: 10_000,
    maxClientHelloBytes: 16_384,
    tokenTimeoutMs: s.dialTimeoutMs,
    dialBackTimeoutMs: s.dialTimeoutMs,
    maxPending: 0,
    maxPendingPerOperator: 0,
    maxPendingPerClient: 0,
    dialTimeoutMs: s.dialTimeoutMs,
    connectTimeoutMs: s.connectTimeoutMs,
    idleTimeoutMs: s.idleTimeoutMs,
    tcpKeepAliveMs: s.tcpKeepAliveMs,
    lingerMs: 1000,
  };
}

/** What the private proxy's control plane keeps while it runs. */
class PrivateControl {
  readonly stats: PrivateStats = {
    notices: 0,
    refusedNotices: 0,
    failedConnections: 0,
    spliced: 0,
    announced: 0,
    refusedPooled: 0,
    ended: 0,
    idleTimeouts: 0,
    vanishedPeers: 0,
  };
  /** The dial-back pools, per public operator (each one pool per replica). */
  readonly pools = new Map<string, ReplicaPools>();
  readonly resolver = new Resolver();
  readonly refusals: RateLimitedLog;
  /** Connections set up or spliced now (notices accepted, pooled clients, until they end). */
  live = 0;
  /** The admin endpoint's event counts, when it is on. */
  metrics: ProxyMetrics | undefined;
  /** The spliced ones, by connection id (for /status). */
  readonly liveTable = new LiveConnections();
  #version = 0;
  plane!: DataPlane;
  announcer!: Announcer;
  /** Each announcement's state and live connections (docs/architecture.md, "Drain"). */
  readonly table: AnnouncementTable;
  eps!: EpsClient;

  readonly budget: Budget;

  constructor(public settings: PrivateSettings, readonly log: Logger) {
    this.budget = privateBudget(settings.maxConnections, softFdLimit());
    this.refusals = new RateLimitedLog(log);
    this.table = new AnnouncementTable(settings.announcements, settings.announceTo, {
      withdraw: (domains) => this.announcer.withdraw(domains),
      changed: () => servingChanged(this),
      close: (conns) => this.plane.send({ type: "close", conns }),
      announce: () => this.announcer.wake(),
      graceMs: () => this.settings.graceMs,
    });
  }

  /** The announcements that take connections now, by domain (drained ones are left out). */
  get byDomain(): ReadonlyMap<string, PrivateAnnouncement> {
    return this.table.serving;
  }

  snapshot(): Snapshot {
    const routes: [string, PrivateRoute][] = [];
    for (const a of this.table.serving.values()) {
      const internal = this.resolver.get(a.internal);
      if (internal === undefined) continue;
      routes.push([
        a.domain,
        a.proxyProtocol === undefined ? { internal } : { internal, proxyProtocol: a.proxyProtocol },
      ]);
    }
    return {
      version: ++this.#version,
      limits: privateLimits(this.settings, this.budget),
      publicRoutes: [],
      privateRoutes: routes,
    };
  }

  /** Resolves the host names of the settings; logs what cannot be resolved. */
  async resolve(): Promise<void> {
    const s = this.settings;
    const problems = await this.resolver.refresh([
      ...[...this.table.serving.values()].map((a) => a.internal),
      ...Object.values(s.endpoints).flat(),
    ]);
    for (const p of problems) this.log.warn("Cannot resolve {problem}", { problem: p });
  }

  onEvents(events: readonly DataEvent[]): void {
    for (const e of events) {
      this.#onEvent(e);
      afterEvent(this, e);
    }
  }

  #onEvent(e: DataEvent): void {
    const log = this.log;
    switch (e.type) {
      case "piped":
        this.stats.spliced++;
        this.liveTable.onEvent(e);
        return;
      case "ended":
        this.live--;
        this.liveTable.onEvent(e);
        countEnded(this.stats, e.reason);
        log.info(
          "conn {conn}: Closed {domain} from {operator} to {internal}: {up} bytes up, {down} down, {ms} ms, {reason}",
          {
            conn: e.connId,
            domain: e.domain,
            operator: e.operator,
            via: e.via,
            internal: this.#internalText(e.domain),
            up: e.up,
            down: e.down,
            ms: Math.round(e.phases.ended - e.phases.accepted),
            reason: reasonText(e.reason),
          },
        );
        return;
      case "connectFailed":
        this.live--;
        this.stats.failedConnections++;
        if (e.side === "internal") {
          log.warn("conn {conn}: Cannot connect internal server {internal} for {domain}: {error}", {
            conn: e.connId,
            internal: e.target,
            domain: e.domain,
            error: reasonText(e.reason),
          });
        } else {
          log.warn("conn {conn}: Cannot dial back {endpoint} for {domain} of {operator}: {error}", {
            conn: e.connId,
            endpoint: e.target,
            domain: e.domain,
            operator: e.operator,
            error: reasonText(e.reason),
          });
        }
        return;
      case "refused":
        this.stats.refusedPooled++;
        log.warn("conn {conn}: Refused a pooled client from {operator}: {why}", {
          conn: e.connId ?? "-", // a header too bad to name its connection
          operator: e.operator,
          why: e.detail,
        });
        this.pools.get(e.operator ?? "")?.onEvent(e);
        return;
      case "poolUsed":
        this.live++;
        this.pools.get(e.operator)?.onEvent(e);
        return;
      case "poolDropped":
      case "poolIdle":
        this.pools.get(e.operator)?.onEvent(e);
        return;
    }
  }

  /** One line per pool (a public operator's replica): what it did over the role's life. */
  logPools(): void {
    for (const [operator, pools] of this.pools) {
      for (const r of pools.replicas.values()) {
        const p = r.pool;
        this.log.info(
          "Dial-back pool for {operator} at {replica}: {pooled} opened, {used} used, {dropped} dropped, {failed} failed refills, {refills} refills of {refillMs} ms",
          {
            operator,
            replica: r.label,
            pooled: p.stats.pooled,
            used: p.stats.used,
            dropped: p.stats.dropped,
            failed: p.stats.failedRefills,
            refills: p.stats.refills,
            refillMs: Math.round(p.refillMs * 10) / 10,
          },
        );
      }
    }
  }

  #internalText(domain: string): string {
    const a = this.table.find(domain);
    return a === undefined ? "?" : formatHostPort(a.internal);
  }

  /** Checks one notice and hands it to the data plane; throws the RpcError to answer. */
  #accept(params: Record<string, unknown>, caller: string, stop: AbortSignal): void {
    let cmd;
    try {
      cmd = checkNotice(params, caller, {
        settings: this.settings,
        byDomain: this.byDomain,
        resolve: (a) => this.resolver.get(a),
        live: () => this.live,
        maxConnections: this.budget.maxConnections,
        stopping: () => stop.aborted,
      });
    } catch (err) {
      this.stats.refusedNotices++;
      this.metrics?.noticeRefused();
      this.refusals.warn(
        `notice ${caller}`,
        "Refused {count} notices from {caller}, last conn {conn}: {why}",
        { caller, conn: isConnId(params.conn) ? params.conn : "-", why: errorText(err) },
      );
      throw err;
    }
    this.stats.notices++;
    this.live++;
    this.log.debug("conn {conn}: Notice from {operator} for {domain} (token {tokenHint})", {
      conn: cmd.conn ?? "-",
      operator: cmd.operator,
      domain: cmd.domain,
      tokenHint: redact(cmd.token),
    });
    this.plane.send(cmd);
    this.table.opened(cmd.domain);
    const pools = this.pools.get(caller);
    pools?.arrival(allowedEndpoint(params.endpoint, pools.o.endpoints));
  }
  /**
   * Serves notices: one client, or a batch of them (a burst):
   * `{endpoint, connections: [{domain, token, conn, source, destination}]}`.
   */
  serveNotices(eps: EpsClient, stop: AbortSignal): void {
    eps.serve("incomingConnection", (params, ctx) => {
      if (!Array.isArray(params.connections)) {
        this.#accept(params, ctx.caller, stop);
        return { ok: true };
      }
      const results = params.connections.map((entry: unknown) => {
        const o = typeof entry === "object" && entry !== null
          ? entry as Record<string, unknown>
          : {};
        try {
          this.#accept(
            {
              domain: o.domain,
              token: o.token,
              endpoint: params.endpoint,
              conn: o.conn,
              source: o.source,
              destination: o.destination,
            },
            ctx.caller,
            stop,
          );
          return { ok: true };
        } catch (err) {
          return { ok: false, error: err instanceof Error ? err.message : String(err) };
        }
      });
      return { ok: true, results };
    });
  }

  /**
   * The dial-back pools: per public operator, one per replica (docs/architecture.md, "Private
   * instances and public replicas: the private side").
   */
  openPools(eps: EpsClient, signal: AbortSignal): void {
    const s = this.settings;
    if (!s.pool.enabled) return;
    const room = () => {
      let n = this.budget.maxConnections - this.live;
      for (const p of this.pools.values()) n -= p.idle + p.opening;
      return n;
    };
    for (const operator of s.announceTo) {
      this.pools.set(
        operator,
        new ReplicaPools({
          operator,
          endpoints: s.endpoints[operator]!,
          sizes: () => ({ ...this.settings.pool, retryMs: this.settings.retryMs }),
          signal,
          log: this.log,
          refusals: this.refusals,
          room,
          call: (params, o) => eps.call(`${operator}.openPool`, params, o),
          resolve: (a) => this.resolver.get(a),
          send: (cmd) => this.plane.send(cmd),
        }),
      );
    }
  }
}

/**
 * The checks `run private` makes before binding, also run by `tls-pass check private`: the
 * `eps:` certificate must be the operator's (docs/settings.md, "`tls-pass check ROLE`"). The
 * private proxy reads no directory. Throws SettingsError naming the file and key.
 */
export function preflightPrivate(settings: PrivateSettings): Promise<void> {
  readEpsClientTls(settings.eps, settings.operator);
  return Promise.resolve();
}

/**
 * Starts the private proxy. Resolves once its data plane runs, whether or not its peers are up
 * (roles may start in any order); `ready` resolves once its first announcements are
 * acknowledged. Until then it retries and logs that it waits.
 */
export async function startPrivate(
  given: PrivateSettings,
  signal?: AbortSignal,
): Promise<PrivateHandle> {
  const settings = withInstance(given); // the default name, as a reload from the files reads it
  await preflightPrivate(settings);
  const log = logger("proxy", "private");
  const c = new PrivateControl(settings, log);
  log.info(
    "Descriptor budget: {connections} connections at once (max_connections from the {from}, open-file limit {limit})",
    {
      connections: c.budget.maxConnections,
      from: c.budget.from,
      limit: c.budget.limit ?? "unknown",
    },
  );
  await c.resolve();
  // the admin endpoint's modules (prom-client) are loaded only when it is on: 3-6 MiB of RSS
  // (docs/architecture.md, "Memory")
  const admin: PrivateAdmin | undefined = settings.adminListen
    ? new (await import("./private_admin.ts")).PrivateAdmin(
      settings.operator,
      (d) => matchName(d, c.byDomain)?.domain,
    )
    : undefined;
  c.metrics = admin?.metrics;
  const adminServer = admin
    ? await (await import("../admin/role_admin.ts")).openAdmin(settings.adminListen, admin.source())
    : undefined;
  c.plane = await openDataPlane(
    settings.sockets,
    {
      role: "private",
      snapshot: c.snapshot(),
      ...(settings.zeroCopy ? {} : { splicePipes: 0 }),
      onEvents: (events) => {
        if (admin) { for (const e of events) admin.metrics.onEvent(e); }
        c.onEvents(events);
      },
    },
    (problem) =>
      log.warn("Native sockets are not available ({problem}): using Deno's", { problem }),
  ).catch(async (err) => {
    await adminServer?.close();
    throw err;
  });
  const plane = c.plane;
  log.info("Data plane: {driver}", { driver: plane.driver });
  const stop = new AbortController(); // no new notices, announcing ends
  const epsStop = new AbortController(); // the EPS client, closed last (after the withdrawal)
  const epsClient = connectEps(settings.eps, epsStop.signal, settings.instance);
  const eps = admin ? countCalls(epsClient, admin.calls) : epsClient;

  c.serveNotices(eps, stop.signal);
  c.openPools(eps, stop.signal);
  const announcer = new Announcer(eps, settings, log, stop.signal, async (operator, acked) => {
    c.stats.announced = announcer.announced;
    c.table.acknowledged(operator, acked);
    await c.resolve(); // host names may have moved: the next connections use the new address
    plane.send({ type: "snapshot", snapshot: c.snapshot() });
    c.pools.get(operator)?.refill(); // min_idle: the pool may open once its names are held
  }, () => [...c.table.serving.values()]);
  c.announcer = announcer;
  c.eps = eps;
  const reloader = privateReloader(c);

  const finished = (async () => {
    await untilStopped(stop.signal, plane).catch((err) => {
      log.error("Stopping: {error}", { error: errorText(err) });
      stop.abort();
    });
    await announcer.stopped();
    c.table.close();
    await Promise.all([...c.pools.values()].map((p) => p.settled()));
    const drained = drainAndClose(plane, c.settings.graceMs);
    c.logPools();
    await announcer.withdraw(c.table.domains());
    await drained;
    c.refusals.close();
    epsStop.abort();
    await eps.close().catch(() => {});
    await adminServer?.close();
    log.info("Stopped");
  })();

  let announcedAll = false;
  announcer.ready.then(() => announcedAll = true, () => {});
  admin?.attach({
    driver: plane.driver,
    stats: c.stats,
    eps: epsClient,
    pools: c.pools,
    announceTo: settings.announceTo,
    announcements: () => c.table.status(),
    announced: () => announcedAll,
    live: () => c.live,
    liveConnections: c.liveTable,
    maxConnections: c.budget.maxConnections,
    drain: (domain, wait) => c.table.drain(domain, { wait }),
    undrain: (domain) => c.table.undrain(domain),
  });
  if (admin) admin.reloads = reloader;
  // the admin endpoint's address is in the ready line (admin_listen may say port 0)
  const addrs = (adminServer ? { admin: adminServer.addr } : {}) as Record<never, HostPort>;
  const handle = withReload(makeHandle(addrs, finished, () => stop.abort(), signal), reloader);
  return Object.assign(handle, {
    ready: announcer.ready,
    stats: c.stats,
    pools: c.pools,
    driver: plane.driver,
    admin,
    live: c.liveTable,
    drain: (domain: string, options?: DrainOptions) => c.table.drain(domain, options),
    undrain: (domain: string, options?: { wait?: boolean; timeoutMs?: number }) =>
      c.table.undrain(domain, options),
    announcementStatus: () => c.table.status(),
  });
}
