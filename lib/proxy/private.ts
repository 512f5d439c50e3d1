/**
 * The private proxy (DESIGN.md §4): listens on nothing. It announces its domains to public
 * operators through its EPS, and on each notice dials the public proxy's private port, sends the
 * token, connects the internal server and splices.
 *
 * A notice is accepted only from an operator in `announce_to`, only for an announced domain
 * (exact, then `*.parent`), and only for the endpoint the settings allow for that operator: an
 * address from the network is never dialled unchecked.
 *
 * Pre-warmed dial-backs (dial_pool.ts, `pool` settings): per public operator, a pool of idle
 * dial-backs opened with tokens from `<public>.openPool`, sized from the arrival rate. A client
 * that comes on one (pool header: its SNI) is checked against the announcements like a notice,
 * then spliced to the internal server.
 * @module
 */
import { RpcCode, RpcError } from "../errors.ts";
import { errorText, logger, redact } from "../log.ts";
import { formatHostPort, type HostPort, makeHandle, type RoleHandle } from "../role.ts";
import { type ByteConn, tryClose } from "../net/conn.ts";
import { withDeadline, writeAll } from "../net/io.ts";
import { BufferPool, setNoDelay, splice } from "../net/splice.ts";
import { type Net, openRoleNet } from "../net/net.ts";
import { NativeConn } from "../net/native/reactor.ts";
import type { DataPlane, Parked } from "../net/native/data_plane.ts";
import type { SpliceResult } from "../net/splice.ts";
import { connectEps, type EpsClient } from "../eps/client.ts";
import { address, normalizeHostName } from "../settings/check.ts";
import type { PrivateAnnouncement, PrivateSettings } from "../settings/private.ts";
import { TOKEN_BYTES } from "./pending.ts";
import { DialPool, type DialPoolStats } from "./dial_pool.ts";

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
}

/** The handle of a running private proxy; it listens on nothing. */
export interface PrivateHandle extends RoleHandle<never> {
  /** Resolves once every operator in `announce_to` acknowledged an announcement; rejects (AbortError) on a stop before that. */
  readonly ready: Promise<void>;
  readonly stats: Readonly<PrivateStats>;
  /** The dial-back pool's counters per public operator (empty when the pool is off). */
  readonly pools: ReadonlyMap<
    string,
    { readonly stats: Readonly<DialPoolStats>; readonly idle: number }
  >;
}

const EMPTY = new Uint8Array(0);

/** Longest wait between two announcement attempts while the EPS or the public side is not there. */
const MAX_RETRY_MS = 20_000;
/** Longest a withdrawal may hold up a graceful stop. */
const WITHDRAW_TIMEOUT_MS = 2000;

/** Connects to `to` within `ms`; the deadline and `signal` only concern the connect itself. */
async function connectWithin(
  net: Net,
  to: HostPort,
  ms: number,
  signal: AbortSignal,
): Promise<ByteConn> {
  const ctl = new AbortController();
  const onAbort = () => ctl.abort(signal.reason);
  signal.addEventListener("abort", onAbort, { once: true });
  const timer = setTimeout(
    () =>
      ctl.abort(
        new DOMException(
          `Cannot connect to ${formatHostPort(to)}: no answer within ${ms} ms`,
          "TimeoutError",
        ),
      ),
    ms,
  );
  try {
    signal.throwIfAborted();
    return await net.connect({ hostname: to.hostname, port: to.port, signal: ctl.signal });
  } catch (err) {
    if (ctl.signal.aborted) throw ctl.signal.reason;
    throw err;
  } finally {
    clearTimeout(timer);
    signal.removeEventListener("abort", onAbort);
  }
}

/** Waits `ms`, or until `wake` is called or `signal` aborts; never rejects. */
function pause(ms: number, signal: AbortSignal, wakers: Set<() => void>): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      wakers.delete(done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
    wakers.add(done);
  });
}

function decodeToken(v: unknown): Uint8Array | null {
  if (typeof v !== "string") return null;
  try {
    const s = atob(v);
    if (s.length !== TOKEN_BYTES) return null;
    return Uint8Array.from(s, (c) => c.charCodeAt(0));
  } catch {
    return null;
  }
}

/**
 * Starts the private proxy. Resolves once its data sockets are set up (the data-plane worker runs),
 * whether or not its peers are up (roles may start in any order); `ready` resolves once its first
 * announcements are acknowledged. Until then it retries and logs that it waits.
 */
export async function startPrivate(
  settings: PrivateSettings,
  signal?: AbortSignal,
): Promise<PrivateHandle> {
  const log = logger("proxy", "private");
  const net = await openRoleNet(settings.sockets, log);
  const stop = new AbortController(); // no new notices, announcing ends
  const kill = new AbortController(); // live splices end (after grace_ms)
  const epsStop = new AbortController(); // the EPS client, closed last (after the withdrawal)
  const stats: PrivateStats = {
    notices: 0,
    refusedNotices: 0,
    failedConnections: 0,
    spliced: 0,
    announced: 0,
    refusedPooled: 0,
  };
  const pool = new BufferPool();
  const byDomain = new Map<string, PrivateAnnouncement>(
    settings.announcements.map((a) => [a.domain, a]),
  );
  const eps: EpsClient = connectEps(settings.eps, epsStop.signal);
  const live = new Set<Promise<void>>();

  function matchDomain(name: string): PrivateAnnouncement | undefined {
    const exact = byDomain.get(name);
    if (exact) return exact;
    const dot = name.indexOf(".");
    return dot < 0 ? undefined : byDomain.get(`*${name.slice(dot)}`);
  }

  function refuse(message: string, code: number, props: Record<string, unknown>): never {
    stats.refusedNotices++;
    log.warn("Refused notice: {why}", { ...props, why: message });
    throw new RpcError(message, code);
  }

  eps.serve("incomingConnection", (params, ctx) => {
    const caller = ctx.caller;
    if (stop.signal.aborted) {
      refuse("Cannot accept notice: stopping", RpcCode.Unavailable, { caller });
    }
    if (!settings.announceTo.includes(caller)) {
      refuse(
        `Cannot accept notice from "${caller}": not an operator this proxy announces to`,
        RpcCode.NotPermitted,
        { caller },
      );
    }
    const domain = typeof params.domain === "string" ? normalizeHostName(params.domain) : null;
    const announcement = domain === null ? undefined : matchDomain(domain);
    if (domain === null || announcement === undefined) {
      refuse(
        `Cannot accept notice from "${caller}": domain ${
          JSON.stringify(params.domain)
        } is not announced here`,
        RpcCode.InvalidParams,
        { caller },
      );
    }
    const allowed = settings.endpoints[caller]!;
    const problems: string[] = [];
    const endpoint = address(params.endpoint, "endpoint", problems);
    if (
      problems.length > 0 || endpoint.port !== allowed.port ||
      endpoint.hostname !== allowed.hostname
    ) {
      refuse(
        `Cannot accept notice from "${caller}": endpoint ${
          JSON.stringify(params.endpoint)
        } is not the allowed "${formatHostPort(allowed)}"`,
        RpcCode.NotPermitted,
        { caller },
      );
    }
    const token = decodeToken(params.token);
    if (token === null) {
      refuse(
        `Cannot accept notice from "${caller}": token must be ${TOKEN_BYTES} bytes of base64`,
        RpcCode.InvalidParams,
        { caller },
      );
    }
    if (live.size >= settings.maxConnections) {
      refuse(
        `Cannot accept notice from "${caller}": ${settings.maxConnections} connections open`,
        RpcCode.Unavailable,
        { caller },
      );
    }
    stats.notices++;
    track(connect(caller, domain, announcement, allowed, token, params.token as string));
    pools.get(caller)?.arrival();
    return { ok: true };
  });

  function track(p: Promise<void>): void {
    const task = p
      .catch((err) => {
        log.error("Connection task failed: {error}", { error: errorText(err) });
      })
      .finally(() => live.delete(task));
    live.add(task);
  }

  // Native sockets: an idle pooled connection waits in the data-plane worker, which serves its
  // client there (pool header, connect, ClientHello, splice) for an exact name whose internal
  // server is an IP literal, and hands the others back to servePooled() (issue 6, W5).
  const parkRoutes = settings.announcements.map((a) => ({
    name: a.domain,
    hostname: a.internal.hostname,
    port: a.internal.port,
  }));
  let routed: DataPlane | undefined;
  function park(operator: string, conn: ByteConn): Parked | null {
    const plane = conn instanceof NativeConn ? conn.reactor.dataPlane : undefined;
    if (plane === undefined) return null;
    if (routed !== plane) {
      plane.setRoutes(parkRoutes, settings.connectTimeoutMs);
      routed = plane;
    }
    return plane.park(conn as NativeConn, {
      signal: kill.signal,
      names: ["dial-back", "internal"],
      onServed: (index, ended) =>
        track(servedByPlane(operator, settings.announcements[index]!, ended)),
      onHandback: (c, name, rest) => track(servePooled(operator, c, name, rest)),
    });
  }

  /** A pooled client the data plane serves: the same counters and logs as servePooled(). */
  async function servedByPlane(
    operator: string,
    announcement: PrivateAnnouncement,
    ended: Promise<SpliceResult>,
  ): Promise<void> {
    const started = performance.now();
    const result = await ended;
    if (result.reason.startsWith("internal connect failed")) {
      stats.failedConnections++;
      log.warn("Cannot connect internal server {internal} for {domain}: {error}", {
        internal: formatHostPort(announcement.internal),
        domain: announcement.domain,
        error: result.reason.slice("internal connect failed: ".length),
      });
      return;
    }
    stats.spliced++;
    logClosed(announcement.domain, operator, announcement, result, started);
  }
  // the dial-back pools, one per public operator
  const pools = new Map<string, DialPool>();
  if (settings.pool.enabled) {
    const domains = settings.announcements.map((a) => a.domain);
    const room = () => {
      let n = settings.maxConnections - live.size;
      for (const p of pools.values()) n -= p.idle;
      return n;
    };
    for (const operator of settings.announceTo) {
      const endpoint = settings.endpoints[operator]!;
      pools.set(
        operator,
        new DialPool({
          operator,
          minIdle: settings.pool.minIdle,
          maxIdle: settings.pool.maxIdle,
          idleTimeoutMs: settings.pool.idleTimeoutMs,
          retryMs: settings.retryMs,
          signal: stop.signal,
          log,
          room,
          open: async (count) => {
            const r = await eps.call<{ tokens?: unknown; idle_timeout_ms?: unknown }>(
              `${operator}.openPool`,
              { domains, count, idle_timeout_ms: settings.pool.idleTimeoutMs },
              { signal: stop.signal },
            );
            const tokens = Array.isArray(r?.tokens) ? r.tokens.map(decodeToken) : [null];
            if (tokens.some((t) => t === null) || !Number.isInteger(r.idle_timeout_ms)) {
              throw new RpcError(
                `Cannot use the openPool answer of "${operator}": want {tokens: [${TOKEN_BYTES} bytes of base64], idle_timeout_ms}`,
                RpcCode.InternalError,
              );
            }
            return { tokens: tokens as Uint8Array[], idleTimeoutMs: r.idle_timeout_ms as number };
          },
          dial: async (token) => {
            const conn = await connectWithin(net, endpoint, settings.dialTimeoutMs, stop.signal);
            try {
              setNoDelay(conn);
              // 32 bytes into the empty send buffer of a new connection: this write cannot block
              await writeAll(conn, token);
              return conn;
            } catch (err) {
              tryClose(conn);
              throw err;
            }
          },
          serve: (conn, name, rest) => track(servePooled(operator, conn, name, rest)),
          park: (conn) => park(operator, conn),
        }),
      );
    }
  }

  /** A client on a pooled dial-back: check the name, connect the internal server, splice. */
  async function servePooled(
    operator: string,
    dialBack: ByteConn,
    name: string,
    rest: Uint8Array,
  ): Promise<void> {
    const started = performance.now();
    const replayed = rest.length;
    let internal: ByteConn | undefined;
    try {
      const domain = normalizeHostName(name);
      const announcement = domain === null ? undefined : matchDomain(domain);
      if (domain === null || announcement === undefined) {
        stats.refusedPooled++;
        log.warn("Refused a pooled client from {operator}: {name} is not announced here", {
          operator,
          name: JSON.stringify(name),
        });
        return;
      }
      try {
        internal = await connectWithin(
          net,
          announcement.internal,
          settings.connectTimeoutMs,
          stop.signal,
        );
        if (rest.length > 0) await writeAll(internal, rest);
        rest = EMPTY; // a held connection keeps only the splice's small buffers (issue 6)
      } catch (err) {
        stats.failedConnections++;
        log.warn("Cannot connect internal server {internal} for {domain}: {error}", {
          internal: formatHostPort(announcement.internal),
          domain,
          error: errorText(err),
        });
        return;
      }
      stats.spliced++;
      const result = await splice(dialBack, internal, {
        signal: kill.signal,
        pool,
        names: ["dial-back", "internal"],
      });
      logClosed(domain, operator, announcement, result, started, replayed);
    } finally {
      tryClose(dialBack);
      if (internal) tryClose(internal);
    }
  }

  function logClosed(
    domain: string,
    operator: string,
    announcement: PrivateAnnouncement,
    result: { aToB: number; bToA: number; reason: string },
    started: number,
    extraUp = 0,
  ): void {
    log.info(
      "Closed {domain} from {operator} to {internal}: {up} bytes up, {down} down, {ms} ms, {reason}",
      {
        domain,
        operator,
        internal: formatHostPort(announcement.internal),
        up: result.aToB + extraUp,
        down: result.bToA,
        ms: Math.round(performance.now() - started),
        reason: result.reason,
      },
    );
  }

  async function connect(
    operator: string,
    domain: string,
    announcement: PrivateAnnouncement,
    endpoint: HostPort,
    token: Uint8Array,
    tokenText: string,
  ): Promise<void> {
    const started = performance.now();
    let dialBack: ByteConn | undefined;
    let internal: ByteConn | undefined;
    try {
      // both connects at once: the dial-back's round trip hides the internal one (W1 latency)
      const [dialed, connected] = await Promise.allSettled([
        (async () => {
          const conn = await connectWithin(net, endpoint, settings.dialTimeoutMs, stop.signal);
          dialBack = conn;
          setNoDelay(conn);
          await withDeadline(
            settings.dialTimeoutMs,
            stop.signal,
            () => tryClose(conn),
            () => writeAll(conn, token),
          );
        })(),
        connectWithin(net, announcement.internal, settings.connectTimeoutMs, stop.signal).then(
          (c) => {
            internal = c;
          },
        ),
      ]);
      if (dialed.status === "rejected") {
        stats.failedConnections++;
        log.warn("Cannot dial back {endpoint} for {domain} of {operator} ({tokenHint}): {error}", {
          endpoint: formatHostPort(endpoint),
          domain,
          operator,
          tokenHint: redact(tokenText),
          error: errorText(dialed.reason),
        });
        return;
      }
      if (connected.status === "rejected") {
        stats.failedConnections++;
        log.warn("Cannot connect internal server {internal} for {domain}: {error}", {
          internal: formatHostPort(announcement.internal),
          domain,
          error: errorText(connected.reason),
        });
        return;
      }
      if (dialBack === undefined || internal === undefined) return; // both settled fulfilled
      stats.spliced++;
      const result = await splice(dialBack, internal, {
        signal: kill.signal,
        pool,
        names: ["dial-back", "internal"],
      });
      logClosed(domain, operator, announcement, result, started);
    } finally {
      if (dialBack) tryClose(dialBack);
      if (internal) tryClose(internal);
    }
  }

  // announcing: at start, every reannounce_interval_ms, and whenever the EPS link comes back
  const wakers = new Set<() => void>();
  const unsubscribe = eps.onAttach(() => {
    for (const wake of [...wakers]) wake();
  });
  const acknowledged = new Set<string>();
  let resolveReady!: () => void;
  let rejectReady!: (err: unknown) => void;
  const ready = new Promise<void>((resolve, reject) => {
    resolveReady = resolve;
    rejectReady = reject;
  });
  ready.catch(() => {}); // nobody has to await it

  async function announceLoop(operator: string): Promise<void> {
    let retryMs = settings.retryMs;
    let waitingLogged = false;
    while (!stop.signal.aborted) {
      const now = Date.now();
      try {
        await eps.call(`${operator}.announceConnections`, {
          connections: settings.announcements.map((a) => ({
            domain: a.domain,
            expires_at: new Date(now + a.expiresInMs).toISOString(),
          })),
        }, { signal: stop.signal });
        stats.announced++;
        retryMs = settings.retryMs;
        waitingLogged = false;
        log.info("Announced {domains} to {operator}", {
          operator,
          domains: settings.announcements.map((a) => a.domain),
        });
        acknowledged.add(operator);
        if (acknowledged.size === settings.announceTo.length) resolveReady();
        pools.get(operator)?.refill(); // min_idle: the pool may open once its names are held
        await pause(settings.reannounceIntervalMs, stop.signal, wakers);
      } catch (err) {
        if (stop.signal.aborted) break;
        const refused = err instanceof RpcError &&
          (err.code === RpcCode.DomainNotAllowed || err.code === RpcCode.Conflict ||
            err.code === RpcCode.NotPermitted || err.code === RpcCode.InvalidParams);
        if (refused) {
          log.error("Announcement refused by {operator}: {error}; retrying in {ms} ms", {
            operator,
            error: errorText(err),
            ms: MAX_RETRY_MS,
          });
          retryMs = MAX_RETRY_MS;
        } else if (!waitingLogged) {
          log.info("Waiting for {operator} to acknowledge the announcement: {error}", {
            operator,
            error: errorText(err),
          });
          waitingLogged = true;
        } else {
          log.debug("Still waiting for {operator}: {error}", { operator, error: errorText(err) });
        }
        await pause(retryMs, stop.signal, wakers);
        retryMs = Math.min(retryMs * 2, MAX_RETRY_MS);
      }
    }
  }

  const loops = settings.announceTo.map((op) => announceLoop(op));

  const finished = (async () => {
    await new Promise<void>((resolve) => {
      if (stop.signal.aborted) resolve();
      else stop.signal.addEventListener("abort", () => resolve(), { once: true });
    });
    unsubscribe();
    // a stop before the first acknowledgement: whoever waits for ready must not wait forever
    rejectReady(
      new DOMException("Private proxy stopped before its first announcement", "AbortError"),
    );
    for (const wake of [...wakers]) wake();
    await Promise.all(loops);
    // the pools closed their idle connections on the stop; their tasks end now
    await Promise.all([...pools.values()].map((p) => p.settled()));
    for (const [operator, p] of pools) {
      log.info(
        "Dial-back pool for {operator}: {pooled} opened, {used} used, {dropped} dropped, {failed} failed refills, {refills} refills of {refillMs} ms",
        {
          operator,
          pooled: p.stats.pooled,
          used: p.stats.used,
          dropped: p.stats.dropped,
          failed: p.stats.failedRefills,
          refills: p.stats.refills,
          refillMs: Math.round(p.refillMs * 10) / 10,
        },
      );
    }
    // withdraw, bounded: a public proxy that is gone must not hold up the stop
    await Promise.all(settings.announceTo.map(async (operator) => {
      if (!eps.attached) return;
      try {
        await eps.call(`${operator}.withdrawConnections`, {
          domains: settings.announcements.map((a) => a.domain),
        }, { timeoutMs: WITHDRAW_TIMEOUT_MS });
        log.info("Withdrew announcements from {operator}", { operator });
      } catch (err) {
        log.warn("Cannot withdraw announcements from {operator}: {error}", {
          operator,
          error: errorText(err),
        });
      }
    }));
    const grace = setTimeout(() => kill.abort(), settings.graceMs);
    try {
      while (live.size > 0) await Promise.all(live);
    } finally {
      clearTimeout(grace);
      kill.abort();
      epsStop.abort();
      await eps.close().catch(() => {});
      await net.close();
      log.info("Stopped");
    }
  })();

  const handle = makeHandle({} as Record<never, HostPort>, finished, () => stop.abort(), signal);
  return Object.assign(handle, { ready, stats, pools });
}
