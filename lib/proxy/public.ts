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
import { formatHostPort, type HostPort, makeHandle, type RoleHandle } from "../role.ts";
import { connectEps, type EpsClient } from "../eps/client.ts";
import { domainAllowed, loadDirectory } from "../eps/directory.ts";
import {
  type DataEvent,
  type DataPlane,
  type Limits,
  openDataPlane,
  type Snapshot,
} from "../dataplane/mod.ts";
import type { PublicSettings } from "../settings/public.ts";
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

export type { PublicStats } from "./public_events.ts";

/** The handle of a running public proxy. */
export interface PublicHandle extends RoleHandle<"public" | "private"> {
  readonly stats: Readonly<PublicStats>;
  /** The endpoint notices name. */
  readonly privateEndpoint: HostPort;
  readonly announcements: Announcements;
  /** The pre-warmed dial-backs (idle counts per operator). */
  readonly pool: PoolGrants;
  /** Which data-plane driver runs. */
  readonly driver: DataPlane["driver"];
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
  };
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
    readonly limits: Limits,
    readonly push: (s: Snapshot) => void,
  ) {}

  make(): Snapshot {
    const all = this.announcements.all();
    clearTimeout(this.#timer);
    let next = Infinity;
    for (const a of all) if (a.expiresAt < next) next = a.expiresAt;
    if (next !== Infinity) {
      // setTimeout holds at most 2^31-1 ms; a later expiry re-arms on the way
      const ms = Math.min(Math.max(0, next - Date.now()) + 1, 2 ** 31 - 1);
      this.#timer = setTimeout(() => this.push(this.make()), ms);
    }
    return {
      version: ++this.#version,
      limits: this.limits,
      publicRoutes: all.map((a) => [a.domain, { operator: a.operator }] as const),
      privateRoutes: [],
    };
  }

  close(): void {
    clearTimeout(this.#timer);
  }
}

/**
 * Starts the public proxy: loads the directory and the announcement store, opens the data plane
 * on both ports, attaches to the EPS (in the background: it retries until the EPS is up), serves.
 */
export async function startPublic(
  settings: PublicSettings,
  signal?: AbortSignal,
): Promise<PublicHandle> {
  const log = logger("proxy", "public");
  const directory = await loadDirectory([settings.directoryDir]);
  const store = await openStore(settings.store);
  const announcements = new Announcements(
    store,
    (operator, domain) => domainAllowed(directory, operator, domain),
    Date.now,
    settings.maxAnnouncementsPerOperator,
  );
  const budget = planBudget(settings, log);
  const stats = newPublicStats();
  const counters = new Counters(log);
  const live = new LiveConnections();
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
  const client: EpsClient = connectEps(settings.eps, stop.signal);
  const notifier = new Notifier(client, settings.noticeTimeoutMs, stop.signal, counters);
  const onEvents = (events: readonly DataEvent[]) => {
    for (const e of events) {
      grants.onEvent(e);
      live.onEvent(e);
      const notice = onPublicEvent(e, stats, log, counters, limits);
      if (notice !== undefined) notifier.send(notice);
      else if (e.type === "refused" && e.conn !== undefined) notifier.forget(e.conn, e.operator);
    }
  };
  try {
    plane = await openDataPlane(
      settings.sockets,
      {
        role: "public",
        listen: { public: settings.publicListen, private: settings.privateListen },
        snapshot: snapshots.make(),
        onEvents,
      },
      (problem) =>
        log.warn("Native sockets are not available ({problem}): using Deno's", { problem }),
    );
  } catch (err) {
    snapshots.close();
    counters.close();
    stop.abort();
    await client.close().catch(() => {});
    await store.close();
    throw err;
  }
  const dp = plane;
  log.info("Data plane: {driver}", { driver: dp.driver });
  const addrs = { public: dp.addrs.public!, private: dp.addrs.private! };
  const privateEndpoint = settings.privateEndpoint ??
    directory.operators.get(settings.operator)?.proxy.privateEndpoint ?? addrs.private;
  const endpointText = formatHostPort(privateEndpoint);
  notifier.start(endpointText, dp);

  servePublicCalls({
    eps: client,
    announcements,
    grants,
    stats,
    log,
    counters,
    maxPooledPerOperator: settings.maxPooledPerOperator,
    changed: () => dp.send({ type: "snapshot", snapshot: snapshots.make() }),
  });

  log.info("Listening on {public} (public) and {private} (private), notices name {endpoint}", {
    public: formatHostPort(addrs.public),
    private: formatHostPort(addrs.private),
    endpoint: endpointText,
  });

  const finished = runUntilStopped(stop, dp, log, stats, async () => {
    grants.close();
    await drainAndClose(dp, settings.graceMs);
    snapshots.close();
    counters.close();
    await client.close().catch(() => {});
    await store.close();
  });

  const handle = makeHandle(addrs, finished, () => stop.abort(), signal);
  return Object.assign(handle, {
    stats,
    privateEndpoint,
    announcements,
    pool: grants,
    driver: dp.driver,
    live,
  });
}
