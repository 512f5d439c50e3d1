/**
 * The public proxy's control plane (docs/architecture.md, "The control plane"): announcements
 * and their store, the EPS calls, pool tokens, notices, counters and logs. It never touches a
 * data socket: the data plane (lib/dataplane) accepts on both ports, reads each ClientHello,
 * routes it from the snapshot this module pushes, serves it from an idle pooled dial-back or asks
 * for a notice (`needDialBack`), and splices.
 * @module
 */
import type { Logger } from "@logtape/logtape";
import { errorText, logger } from "../log.ts";
import {
  formatHostPort,
  type HostPort,
  makeHandle,
  type Reloadable,
  type RoleHandle,
} from "../role.ts";
import { connectEps, type EpsClient, readEpsClientTls } from "../eps/client.ts";
import { type Directory, domainAllowed, loadDirectory } from "../eps/directory.ts";
import {
  type Admission,
  type DataEvent,
  type DataPlane,
  type Limits,
  NO_ADMISSION,
  openDataPlane,
  type Snapshot,
} from "../dataplane/mod.ts";
import { type PublicSettings, withInstance } from "../settings/public.ts";
import { Announcements } from "./announcements.ts";
import { openStore } from "./store.ts";
import { Counters } from "./counters.ts";
import { PoolGrants } from "./public_pool.ts";
import { newPublicStats, onPublicEvent, type PublicStats } from "./public_events.ts";
import { Notifier } from "./public_notices.ts";
import { drainAndClose, untilStopped } from "./lifecycle.ts";
import { servePublicCalls } from "./public_rpc.ts";
import { LiveConnections } from "./live.ts";
import { type Budget, publicBudget, softFdLimit } from "./budget.ts";
import type { PublicAdmin } from "./public_admin.ts";
import { countCalls } from "../admin/eps_calls.ts";
import type { AdminServer } from "../admin/server.ts";
import { privateEndpointOf, type PublicLive, publicReloader } from "./public_reload.ts";
import { withReload } from "../settings/diff.ts";

export type { PublicStats } from "./public_events.ts";

/** The handle of a running public proxy; `reload` re-reads settings and directory (SIGHUP). */
export interface PublicHandle extends RoleHandle<"public" | "private">, Reloadable<PublicSettings> {
  readonly stats: Readonly<PublicStats>;
  /** The endpoint notices name (a reload may change it). */
  readonly privateEndpoint: HostPort;
  readonly announcements: Announcements;
  /** The pre-warmed dial-backs (idle counts per operator). */
  readonly pool: PoolGrants;
  /** Which data-plane driver runs. */
  readonly driver: DataPlane["driver"];
  /** Metrics and status, when `admin_listen` is set. */
  readonly admin: PublicAdmin | undefined;
  /** The spliced connections now, by connection id (for /status). */
  readonly live: LiveConnections;
}

/** The data plane's limits from the settings. */
export function publicLimits(s: PublicSettings, budget: Budget): Limits {
  return {
    maxConnections: budget.maxConnections,
    maxDialBacks: budget.maxDialBacks,
    maxPooled: budget.maxDialBacks - budget.maxConnections,
    helloTimeoutMs: s.helloTimeoutMs,
    maxClientHelloBytes: s.maxClientHelloBytes,
    tokenTimeoutMs: s.tokenTimeoutMs,
    // a pool token waits for its connection as long as a client waits for its dial-back
    dialBackTimeoutMs: s.dialBackTimeoutMs,
    maxPending: s.maxPending,
    maxPendingPerOperator: s.maxPendingPerOperator,
    maxPendingPerClient: s.maxPendingPerClient,
    dialTimeoutMs: s.dialBackTimeoutMs,
    connectTimeoutMs: s.dialBackTimeoutMs,
    idleTimeoutMs: s.idleTimeoutMs,
    tcpKeepAliveMs: s.tcpKeepAliveMs,
    lingerMs: 1000,
    acceptProxyProtocol: s.acceptProxyProtocol,
    proxyProtocolFrom: s.proxyProtocolFrom,
    admission: admissionOf(s),
    // docs/architecture.md, "Re-dispatch"
    redispatchAfterMs: s.redispatchAfterMs,
    maxDispatches: s.maxDispatches,
  };
}

/** The snapshot's admission policy (docs/architecture.md, "Admission"); none when all is off. */
function admissionOf(s: PublicSettings): Admission {
  const l = s.limits;
  const off = s.allow.length === 0 && s.deny.length === 0 &&
    Object.values(l).every((v) => v === 0);
  return off ? NO_ADMISSION : { ...l, allow: s.allow, deny: s.deny };
}

/** The descriptor budget from the settings and the open-file limit, logged at start. */
function planBudget(settings: PublicSettings, log: Logger): Budget {
  const budget = publicBudget(settings.maxConnections, softFdLimit());
  log.info(
    "Descriptor budget: {clients} clients and {dialBacks} dial-backs at once (max_connections from the {from}, open-file limit {limit})",
    {
      clients: budget.maxConnections,
      dialBacks: budget.maxDialBacks,
      from: budget.from,
      limit: budget.limit ?? "unknown",
    },
  );
  return budget;
}

/** Runs until the stop (or a fault of the data plane), then `cleanUp()` and one summary line. */
async function runUntilStopped(
  stop: AbortController,
  dp: DataPlane,
  log: Logger,
  stats: PublicStats,
  cleanUp: () => Promise<void>,
): Promise<void> {
  try {
    await untilStopped(stop.signal, dp);
  } catch (err) {
    log.error("Stopping: {error}", { error: errorText(err) });
    stop.abort();
    throw err;
  } finally {
    await cleanUp();
    log.info(
      "Stopped: {poolHits} clients served from the pool, {notices} by notice; {tokens} pool tokens, {pooled} redeemed, {dropped} dropped",
      {
        poolHits: stats.poolHits,
        notices: stats.notices,
        tokens: stats.poolTokens,
        pooled: stats.pooled,
        dropped: stats.poolDropped,
      },
    );
  }
}

/** Builds snapshots from the announcements; re-pushes at the next expiry. */
class PublicSnapshots {
  #version = 0;
  #timer: ReturnType<typeof setTimeout> | undefined;
  constructor(
    readonly announcements: Announcements,
    /** For new connections; a reload replaces them and pushes a snapshot. */
    public limits: Limits,
    readonly push: (s: Snapshot) => void,
  ) {}

  make(): Snapshot {
    const all = this.announcements.all();
    clearTimeout(this.#timer);
    // the earliest entry of any instance: its end may change a route's instances, not only the route
    const next = this.announcements.nextExpiry();
    if (next !== Infinity) {
      // setTimeout holds at most 2^31-1 ms; a later expiry re-arms on the way
      const ms = Math.min(Math.max(0, next - Date.now()) + 1, 2 ** 31 - 1);
      this.#timer = setTimeout(() => this.push(this.make()), ms);
    }
    return {
      version: ++this.#version,
      limits: this.limits,
      publicRoutes: all.map((a) => {
        // the instances that announced it (docs/architecture.md, "Several private instances")
        const instances = a.instances.filter((i) => i !== "");
        return [
          a.domain,
          {
            operator: a.operator,
            ...(a.allow !== undefined ? { allow: a.allow } : {}),
            ...(instances.length > 0 ? { instances } : {}),
          },
        ] as const;
      }),
      privateRoutes: [],
    };
  }

  close(): void {
    clearTimeout(this.#timer);
  }
}

/**
 * The EPS says `instance` of `operator` is not attached (docs/architecture.md, "Re-dispatch"): its
 * entries would send every later client's first notice to nobody, so this replica stops routing
 * to it — in its own table only: another replica may still hold the instance's warm pool, and the
 * shared store keeps the entries for it. Not while this replica holds an idle pooled dial-back or
 * a live splice of it (then it lives, and only its EPS link is away: the pool keeps serving, static
 * stability). The instance's next announcement (when its link is back) routes it again.
 */
function dropGone(
  p: { announcements: Announcements; grants: PoolGrants; notifier: Notifier; log: Logger },
  operator: string,
  instance: string,
  changed: () => void,
): void {
  if (p.grants.idleBy(operator, instance) > 0 || p.notifier.splicesOf(operator, instance) > 0) {
    return;
  }
  const domains = p.announcements.forget(operator, instance);
  if (domains.length === 0) return;
  changed();
  p.log.info(
    "Not routing to instance {instance} of {operator} any more ({domains}): its EPS says it is not attached; it announces again when it is back",
    { instance, operator, domains },
  );
}

/**
 * The checks `run public` makes before binding, also run by `tls-pass check public`: loads the
 * directory and checks that the `eps:` certificate is the operator's (docs/settings.md,
 * "`tls-pass check ROLE`"). Throws SettingsError naming the file and key of every problem.
 */
export async function preflightPublic(settings: PublicSettings): Promise<{ directory: Directory }> {
  const directory = await loadDirectory([settings.directoryDir]);
  readEpsClientTls(settings.eps, settings.operator);
  return { directory };
}

/**
 * Starts the public proxy: loads the directory and the announcement store, opens the data plane
 * on both ports, attaches to the EPS (in the background: it retries until the EPS is up), serves.
 */
export async function startPublic(
  given: PublicSettings,
  signal?: AbortSignal,
): Promise<PublicHandle> {
  const settings = withInstance(given); // the default name, as a reload from the files reads it
  const log = logger("proxy", "public");
  // what new connections and calls read; a reload replaces its fields (public_reload.ts)
  const live: PublicLive = {
    settings,
    directory: (await preflightPublic(settings)).directory,
    privateEndpoint: { hostname: "", port: 0 },
  };
  const instance = settings.instance;
  const store = await openStore(settings.store, {
    operator: settings.operator,
    instance,
    // read at each refresh of the replica registry: a reload may change it
    get endpoint() {
      return formatHostPort(live.privateEndpoint);
    },
  });
  const announcements = new Announcements(
    store,
    (operator, domain) => domainAllowed(live.directory, operator, domain),
    Date.now,
    settings.maxAnnouncementsPerOperator,
  );
  const budget = planBudget(settings, log);
  const stats = newPublicStats();
  const counters = new Counters(log);
  const liveConns = new LiveConnections();
  const stop = new AbortController();
  let plane: DataPlane | undefined;
  const snapshots = new PublicSnapshots(
    announcements,
    publicLimits(settings, budget),
    (snapshot) => plane?.send({ type: "snapshot", snapshot }),
  );
  const grants = new PoolGrants(
    settings.maxPooledPerOperator,
    (cmd) => plane?.send(cmd),
    undefined,
    budget.maxDialBacks - budget.maxConnections,
  );
  const limits = {
    ...settings,
    maxConnections: budget.maxConnections,
    maxDialBacks: budget.maxDialBacks,
  };
  // before the data plane: its first events may come as soon as its ports are bound
  // the admin endpoint's modules (prom-client) are loaded only when it is on: 3-6 MiB of RSS
  // (docs/architecture.md, "Memory")
  const admin: PublicAdmin | undefined = settings.adminListen
    ? new (await import("./public_admin.ts")).PublicAdmin(
      settings.operator,
      announcements,
      () => store.problems(),
    )
    : undefined;
  const epsClient = connectEps(settings.eps, stop.signal, settings.instance);
  const client: EpsClient = admin ? countCalls(epsClient, admin.calls) : epsClient;
  const notifier: Notifier = new Notifier(
    client,
    settings.noticeTimeoutMs,
    stop.signal,
    counters,
    log,
    (operator, instance) =>
      dropGone({ announcements, grants, notifier, log }, operator, instance, () => {
        plane?.send({ type: "snapshot", snapshot: snapshots.make() });
      }),
  );
  notifier.redispatchAfterMs = settings.redispatchAfterMs;
  notifier.maxDispatches = settings.maxDispatches;
  const onEvents = (events: readonly DataEvent[]) => {
    for (const e of events) {
      admin?.metrics.onEvent(e);
      grants.onEvent(e);
      liveConns.onEvent(e);
      notifier.onEvent(e);
      const notice = onPublicEvent(e, stats, log, counters, limits);
      if (notice !== undefined) notifier.send(notice);
    }
  };
  let adminServer: AdminServer | undefined;
  try {
    if (admin) {
      const { openAdmin } = await import("../admin/role_admin.ts");
      adminServer = await openAdmin(settings.adminListen, admin.source());
    }
    plane = await openDataPlane(
      settings.sockets,
      {
        role: "public",
        listen: {
          public: settings.publicListen,
          private: settings.privateListen,
          reusePort: settings.reusePort,
          keys: { public: "public_listen", private: "private_listen" },
        },
        snapshot: snapshots.make(),
        ...(settings.zeroCopy ? {} : { splicePipes: 0 }),
        onEvents,
      },
      (problem) =>
        log.warn("Native sockets are not available ({problem}): using Deno's", { problem }),
    );
  } catch (err) {
    await adminServer?.close();
    snapshots.close();
    counters.close();
    stop.abort();
    await client.close().catch(() => {});
    await store.close();
    throw settings.reusePort ? err : withReusePortHint(err);
  }
  const dp = plane;
  log.info("Data plane: {driver}", { driver: dp.driver });
  const addrs = { public: dp.addrs.public!, private: dp.addrs.private! };
  live.privateEndpoint = privateEndpointOf(settings, live.directory, addrs.private);
  store.selfChanged(); // a shared store lists this replica at once, with its endpoint
  admin?.attach({
    operator: settings.operator,
    driver: dp.driver,
    stats,
    announcements,
    grants,
    eps: epsClient,
    notices: notifier,
    live: liveConns,
    addrs,
    privateEndpoint: () => live.privateEndpoint,
    limits: () => ({
      connections: budget.maxConnections,
      "pending-total": live.settings.maxPending,
      "pending-operator": live.settings.maxPendingPerOperator,
      "pending-client": live.settings.maxPendingPerClient,
      "pool-full": live.settings.maxPooledPerOperator,
      "hello-timeout": live.settings.helloTimeoutMs,
      expired: live.settings.dialBackTimeoutMs,
      "client-connections": live.settings.limits.maxConnectionsPerClient,
      "client-rate": live.settings.limits.clientRate,
      "name-pending": live.settings.limits.maxPendingPerName,
      "name-rate": live.settings.limits.nameRate,
    }),
  });
  const endpointText = formatHostPort(live.privateEndpoint);
  notifier.start(endpointText, dp);

  const rpc = { maxPooledPerOperator: settings.maxPooledPerOperator };
  servePublicCalls({
    eps: client,
    announcements,
    grants,
    stats,
    log,
    counters,
    get maxPooledPerOperator() {
      return rpc.maxPooledPerOperator;
    },
    changed: () => dp.send({ type: "snapshot", snapshot: snapshots.make() }),
    replicas: () => store.replicas(),
    instance,
    endpoint: () => formatHostPort(live.privateEndpoint),
    instancePresent: (operator, instance) => notifier.present(operator, instance),
  });
  // a peer replica's change (through the Redis store): the data plane routes it too
  const unwatch = announcements.onChange(() =>
    dp.send({ type: "snapshot", snapshot: snapshots.make() })
  );
  const reloader = publicReloader({
    live,
    boundPrivate: addrs.private,
    limitsOf: (s) => publicLimits(s, budget),
    pushLimits: (l) => {
      snapshots.limits = l;
      dp.send({ type: "snapshot", snapshot: snapshots.make() });
    },
    eps: client,
    notifier,
    grants,
    announcements,
    eventLimits: limits,
    rpc,
  });

  log.info("Listening on {public} (public) and {private} (private), notices name {endpoint}", {
    public: formatHostPort(addrs.public),
    private: formatHostPort(addrs.private),
    endpoint: endpointText,
  });

  const finished = runUntilStopped(stop, dp, log, stats, async () => {
    unwatch();
    grants.close();
    await drainAndClose(dp, live.settings.graceMs);
    snapshots.close();
    counters.close();
    await client.close().catch(() => {});
    await store.close();
    await adminServer?.close();
  });

  // the admin endpoint's address is in the ready line too (admin_listen may say port 0)
  const allAddrs = (adminServer ? { ...addrs, admin: adminServer.addr } : addrs) as typeof addrs;
  if (admin) admin.reloads = reloader;
  const handle = Object.defineProperty(
    Object.assign(makeHandle(allAddrs, finished, () => stop.abort(), signal), {
      stats,
      announcements,
      pool: grants,
      driver: dp.driver,
      admin,
      live: liveConns,
    }),
    "privateEndpoint",
    { get: () => live.privateEndpoint, enumerable: true },
  ) as RoleHandle<"public" | "private"> & Omit<PublicHandle, keyof Reloadable<PublicSettings>>;
  return withReload(handle, reloader);
}

/**
 * A public port in use (another process listens on it, e.g. a second replica on this machine):
 * the error names the setting that lets replicas share it (docs/settings.md, `reuse_port`).
 */
export function withReusePortHint(err: unknown): unknown {
  if (!(err instanceof Error)) return err;
  const text = err.message;
  if (!text.startsWith("Cannot listen on public_listen ") || !/in use/i.test(text)) return err;
  const hinted = `${text}; replicas that share the public port need reuse_port: true on each`;
  return err instanceof Deno.errors.AddrInUse
    ? new Deno.errors.AddrInUse(hinted, { cause: err })
    : new Error(hinted, { cause: err });
}
