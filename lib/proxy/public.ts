/**
 * The public proxy (DESIGN.md §4): routes a client's TLS connection by its SNI, without
 * terminating TLS, to the private proxy that announced the name.
 *
 * Public port, per connection: read the ClientHello under `hello_timeout_ms` (the deadline is
 * cleared once it is read), match an announcement, admit (pending caps), mint a token, park, send
 * the notice `<operator>.incomingConnection {domain, token, endpoint}` through the EPS, wait for the
 * dial-back, replay the hello to it, splice. Private port, per connection: read the 32-byte token
 * under `token_timeout_ms`, claim the pending entry once, hand the connection over.
 *
 * Pre-warmed dial-backs (dial_pool.ts): a token minted by `openPool` parks its connection idle
 * instead; a client of that operator and domain takes it (pool header + hello) and no notice is
 * sent. Without an idle connection the client takes the notice path above.
 *
 * With native sockets the data-plane worker accepts on the public port (its front door) and
 * keeps the idle pooled connections: a client whose ClientHello (read within `hello_timeout_ms`)
 * names a name with one is served there (pool header, hello, splice); every other client comes
 * back here with what was read. See {@linkcode DataPlane.front}.
 * @module
 */
import type { Logger } from "@logtape/logtape";
import { ProtocolError, RpcCode, RpcError } from "../errors.ts";
import { errorText, logger, RateLimitedCounter, redact } from "../log.ts";
import { formatHostPort, type HostPort, hostPortOf, makeHandle, type RoleHandle } from "../role.ts";
import { type ByteConn, remoteText, tryClose } from "../net/conn.ts";
import { DeadlineQueue, pause, readExact, withDeadline, writeAll } from "../net/io.ts";
import { BufferPool, setNoDelay, splice } from "../net/splice.ts";
import { type NetListener, openRoleNet } from "../net/net.ts";
import { NativeConn, NativeListener } from "../net/native/reactor.ts";
import type { SpliceResult } from "../net/splice.ts";
import type { DataPlane } from "../net/native/data_plane.ts";
import { connectEps, type EpsClient } from "../eps/client.ts";
import { domainAllowed, loadDirectory } from "../eps/directory.ts";
import type { PublicSettings } from "../settings/public.ts";
import {
  ALERT_DECODE_ERROR,
  ALERT_INTERNAL_ERROR,
  ALERT_UNRECOGNIZED_NAME,
  type ClientHelloInfo,
  readClientHello,
  tlsAlert,
} from "./client_hello.ts";
import {
  Announcements,
  parseAnnounceParams,
  parseWithdrawParams,
  viewOf,
} from "./announcements.ts";
import { openStore } from "./store.ts";
import { PendingExpiredError, PendingTable, TOKEN_BYTES, tokenText } from "./pending.ts";
import { encodePoolHeader, MAX_OPEN_COUNT, type PoolDropReason, PoolTable } from "./dial_pool.ts";

/** Counters of the public proxy, for tests and diagnostics. */
export interface PublicStats {
  /** Client connections accepted on the public port. */
  accepted: number;
  /** Refused because `max_connections` connections were open. */
  refusedConnections: number;
  /** Hellos that were malformed, too large or cut off. */
  badHellos: number;
  /** Hellos not complete within `hello_timeout_ms`. */
  helloTimeouts: number;
  /** Hellos without SNI or for a name nobody announced. */
  unknownNames: number;
  /** Refused by a pending cap (total, per operator, per client). */
  refusedPending: number;
  /** Notices that failed (operator unreachable, refused, deadline). */
  failedNotices: number;
  /** Pending connections whose dial-back did not come in time. */
  expired: number;
  /** Dial-backs refused: unknown, expired or reused token, short read or timeout. */
  badTokens: number;
  /** Connections spliced to a dial-back (by notice or from the pool). */
  spliced: number;
  /** Notices sent (one per client not served from the pool). */
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
}

/** The handle of a running public proxy. */
export interface PublicHandle extends RoleHandle<"public" | "private"> {
  readonly stats: Readonly<PublicStats>;
  /** The endpoint notices name. */
  readonly privateEndpoint: HostPort;
  readonly announcements: Announcements;
  /** The pre-warmed dial-backs (idle counts per operator). */
  readonly pool: PoolTable;
}

/** How long a refused client gets to read its alert before the socket is closed. */
const LINGER_MS = 1000;
const LINGER_BYTES = 64 * 1024;

/** Sends a TLS alert, half-closes, drains what the client still sends (bounded), then closes. */
async function alertAndClose(conn: ByteConn, description: number, signal: AbortSignal) {
  try {
    await writeAll(conn, tlsAlert(description));
    await conn.closeWrite();
    // closing with unread input would send RST, which can discard the alert at the client
    await withDeadline(LINGER_MS, signal, () => tryClose(conn), async () => {
      const buf = new Uint8Array(4096);
      let total = 0;
      for (let n; total < LINGER_BYTES && (n = await conn.read(buf)) !== null;) total += n;
    });
  } catch {
    // the client is gone or too slow: nothing more to tell it
  } finally {
    tryClose(conn);
  }
}

/** The bytes written first to a dial-back, in one write: [pool header], hello, extra. */
function replayOf(
  header: Uint8Array | undefined,
  hello: Uint8Array,
  extra: Uint8Array,
): { bytes: Uint8Array | undefined; replayed: number } {
  const replayed = hello.length + extra.length;
  if (header === undefined && extra.length === 0) return { bytes: hello, replayed };
  const h = header?.length ?? 0;
  const bytes = new Uint8Array(h + replayed);
  if (header !== undefined) bytes.set(header);
  bytes.set(hello, h);
  bytes.set(extra, h + hello.length);
  return { bytes, replayed };
}

function isTimeout(err: unknown): boolean {
  return err instanceof DOMException && err.name === "TimeoutError";
}

class Counters {
  #counters = new Map<string, RateLimitedCounter>();
  constructor(readonly log: Logger) {}
  /** Counts an event and logs a warning at most once per interval with the count since. */
  warn(kind: string, message: string, props: Record<string, unknown>): void {
    let c = this.#counters.get(kind);
    if (!c) this.#counters.set(kind, c = new RateLimitedCounter());
    const n = c.hit();
    if (n !== undefined) this.log.warn(message, { ...props, count: n });
  }
}

/**
 * Starts the public proxy: loads the directory and the announcement store, binds both ports,
 * attaches to the EPS (in the background: it retries until the EPS is up) and serves.
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
  );
  let publicListener: NetListener;
  let privateListener: NetListener;
  const net = await openRoleNet(settings.sockets, log);
  try {
    // both kinds of peers speak first (a ClientHello, a token): accept them once they did
    publicListener = await net.listen({ ...settings.publicListen, deferAccept: true });
    try {
      privateListener = await net.listen({ ...settings.privateListen, deferAccept: true });
    } catch (err) {
      tryClose(publicListener);
      throw err;
    }
  } catch (err) {
    await net.close();
    await store.close();
    throw err;
  }
  const addrs = {
    public: hostPortOf(publicListener.addr),
    private: hostPortOf(privateListener.addr),
  };
  const privateEndpoint = settings.privateEndpoint ??
    directory.operators.get(settings.operator)?.proxy.privateEndpoint ?? addrs.private;
  const endpointText = formatHostPort(privateEndpoint);

  const stop = new AbortController(); // no new work; waits (hello, token, dial-back) end
  const helloDeadlines = new DeadlineQueue(settings.helloTimeoutMs);
  const tokenDeadlines = new DeadlineQueue(settings.tokenTimeoutMs);
  stop.signal.addEventListener("abort", () => {
    helloDeadlines.abortAll(stop.signal.reason);
    tokenDeadlines.abortAll(stop.signal.reason);
  }, { once: true });
  const kill = new AbortController(); // live splices end (after grace_ms)
  const stats: PublicStats = {
    accepted: 0,
    refusedConnections: 0,
    badHellos: 0,
    helloTimeouts: 0,
    unknownNames: 0,
    refusedPending: 0,
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
  };
  const counters = new Counters(log);
  const pending = new PendingTable({
    maxTotal: settings.maxPending,
    maxPerOperator: settings.maxPendingPerOperator,
    maxPerClient: settings.maxPendingPerClient,
    timeoutMs: settings.dialBackTimeoutMs,
  });
  const pool = new BufferPool();
  const dialPool = new PoolTable(
    { maxPerOperator: settings.maxPooledPerOperator, tokenTimeoutMs: settings.dialBackTimeoutMs },
    (operator: string, why: PoolDropReason) => {
      stats.poolDropped++;
      log.debug("Dropped an idle pooled connection of {operator}: {why}", { operator, why });
    },
  );
  const eps: EpsClient = connectEps(settings.eps, stop.signal);

  eps.serve("announceConnections", async (params, ctx) => {
    const requests = parseAnnounceParams(params, Date.now());
    try {
      const added = await announcements.announce(ctx.caller, requests);
      log.info("Accepted announcement of {domains} from {operator}", {
        operator: ctx.caller,
        domains: added.map((a) => a.domain),
      });
      return { connections: viewOf(added) };
    } catch (err) {
      log.warn("Refused announcement from {operator}: {error}", {
        operator: ctx.caller,
        error: errorText(err),
      });
      throw err;
    } finally {
      updateFrontRoutes(); // also after a failed store write: the table may have changed
    }
  });
  eps.serve("withdrawConnections", async (params, ctx) => {
    let withdrawn: string[];
    try {
      withdrawn = await announcements.withdraw(ctx.caller, parseWithdrawParams(params));
    } finally {
      updateFrontRoutes(); // also after a failed store write: the table may have changed
    }
    log.info("Withdrew {domains} of {operator}", { operator: ctx.caller, domains: withdrawn });
    return { withdrawn };
  });
  eps.serve("openPool", (params, ctx) => {
    const operator = ctx.caller;
    const count = params.count;
    const idleMs = params.idle_timeout_ms;
    const domains = params.domains;
    if (
      !Number.isInteger(count) || (count as number) < 1 || (count as number) > MAX_OPEN_COUNT ||
      !Number.isInteger(idleMs) || (idleMs as number) < 1 ||
      !Array.isArray(domains) || domains.length < 1 || domains.length > 1000 ||
      !domains.every((d) => typeof d === "string")
    ) {
      throw new RpcError(
        `Cannot open pool for "${operator}": want {domains: [1 to 1000 names], count: 1 to ${MAX_OPEN_COUNT}, idle_timeout_ms: > 0}`,
        RpcCode.InvalidParams,
      );
    }
    // only names this operator holds now: a pooled connection serves nothing else
    const held = new Set(announcements.list(operator).map((a) => a.domain));
    const foreign = (domains as string[]).filter((d) => !held.has(d));
    if (foreign.length > 0) {
      counters.warn(
        "pool-domains",
        "Refused pools: domains not announced by the caller ({count} since last report), last {operator} for {domains}",
        { operator, domains: foreign },
      );
      throw new RpcError(
        `Cannot open pool for "${operator}": ${JSON.stringify(foreign)} not announced by it`,
        RpcCode.DomainNotAllowed,
      );
    }
    const minted = dialPool.mint(operator, domains as string[], count as number, idleMs as number);
    if (!minted.ok) {
      stats.refusedPool++;
      counters.warn(
        `pool-${minted.why}`,
        "Refused pool tokens: {why} ({count} since last report), last for {operator}",
        {
          operator,
          why: minted.why === "off"
            ? "pooling is off"
            : `max_pooled_per_operator ${settings.maxPooledPerOperator} reached`,
        },
      );
      throw new RpcError(
        minted.why === "off"
          ? `Cannot open pool for "${operator}": pooling is off`
          : `Cannot open pool for "${operator}": ${settings.maxPooledPerOperator} connections or tokens held`,
        RpcCode.Unavailable,
      );
    }
    stats.poolTokens += minted.tokens.length;
    log.debug("Minted {n} pool tokens for {operator}", { n: minted.tokens.length, operator });
    return { tokens: minted.tokens, idle_timeout_ms: minted.idleTimeoutMs };
  });
  eps.serve("getAnnouncements", (_params, ctx) => ({
    connections: viewOf(announcements.list(ctx.caller)),
  }));

  /** Live per-connection tasks and their client connections. */
  const live = new Map<Promise<void>, ByteConn | null>();

  // Native sockets: the data-plane worker accepts on the public port itself (the front door) and
  // keeps the idle pooled connections; a client whose ClientHello names a name with an idle pooled
  // connection is served there in the wake-up that completes the hello (pool header, hello,
  // splice). Every other client comes back to handleClient() with what was read.
  // On the main thread the same steps cost two thread wake-ups before any JavaScript ran (W5).
  const plane = publicListener instanceof NativeListener
    ? publicListener.reactor.dataPlane
    : undefined;
  let closeFront: (() => void) | undefined;
  if (plane !== undefined) {
    dialPool.parker = (conn, bucket, operator) =>
      conn instanceof NativeConn ? plane.pool(conn, bucket, { operator }) : null;
    dialPool.onBucket = () => queueMicrotask(updateFrontRoutes);
  }

  /** Tells the front door which names it may serve from which buckets (announcements changed). */
  function updateFrontRoutes(): void {
    if (plane === undefined) return;
    const routes = [];
    for (const a of announcements.all()) {
      const buckets = dialPool.bucketsFor(a.operator, a.domain);
      if (buckets.length > 0) routes.push({ name: a.domain, expiresAt: a.expiresAt, buckets });
    }
    plane.setFrontRoutes(routes);
  }

  /** How many more clients the front door may take before this thread counts them. */
  function updateRoom(): void {
    plane?.setFrontRoom(settings.maxConnections - live.size);
  }

  /** A client the front door served from the pool: counted and logged as relay() does. */
  async function servedByFront(
    operator: string,
    domain: string,
    client: string,
    ended: Promise<SpliceResult>,
  ): Promise<void> {
    const started = performance.now();
    logClosed(await ended, 0, { started, client, domain, operator });
  }

  function logClosed(
    result: SpliceResult,
    replayed: number,
    about: { started: number; client: string; domain: string; operator: string },
  ): void {
    log.info(
      "Closed {client} for {domain} via {operator}: {up} bytes up, {down} down, {ms} ms, {reason}",
      {
        client: about.client,
        domain: about.domain,
        operator: about.operator,
        up: result.aToB + replayed,
        down: result.bToA,
        ms: Math.round(performance.now() - about.started),
        reason: result.reason,
      },
    );
  }

  async function handleClient(conn: ByteConn, pre?: Uint8Array): Promise<void> {
    const started = performance.now();
    const client = remoteText(conn);
    const clientHost = (conn.remoteAddr as Deno.NetAddr).hostname;
    setNoDelay(conn);
    let hello: ClientHelloInfo | undefined;
    let extra: Uint8Array | undefined;
    try {
      ({ hello, extra } = await helloDeadlines.run(
        () => tryClose(conn),
        () => readClientHello(conn, settings.maxClientHelloBytes, pre),
      ));
    } catch (err) {
      if (err instanceof ProtocolError) {
        stats.badHellos++;
        log.debug("Refused client {client}: {error}", { client, error: err.message });
        await alertAndClose(conn, ALERT_DECODE_ERROR, stop.signal);
      } else if (isTimeout(err)) {
        stats.helloTimeouts++;
        log.debug("Dropped client {client}: no ClientHello within {ms} ms", {
          client,
          ms: settings.helloTimeoutMs,
        });
      } else if (!stop.signal.aborted) {
        log.debug("Dropped client {client}: {error}", { client, error: errorText(err) });
      }
      return;
    }
    // the hello deadline is over: from here on the connection lives as long as its splice
    const domain = hello.serverName;
    const announcement = domain === null ? undefined : announcements.match(domain);
    if (domain === null || announcement === undefined) {
      stats.unknownNames++;
      log.debug("Refused client {client}: {why}", {
        client,
        why: domain === null ? "no SNI" : `no announcement for "${domain}"`,
      });
      await alertAndClose(conn, ALERT_UNRECOGNIZED_NAME, stop.signal);
      return;
    }
    const operator = announcement.operator;
    const pooled = dialPool.take(operator, announcement.domain);
    if (pooled !== undefined) {
      stats.poolHits++;
      log.debug("Took a pooled connection of {operator} for {client} ({domain})", {
        client,
        domain,
        operator,
      });
      const replay = replayOf(encodePoolHeader(domain), hello.bytes, extra);
      // a held connection keeps only the splice's small buffers, not the hello (issue 6)
      hello = extra = undefined;
      await relay(conn, pooled, replay, { started, client, domain, operator });
      return;
    }
    const parked = pending.park(operator, clientHost);
    if (!parked.ok) {
      stats.refusedPending++;
      counters.warn(
        `pending-${parked.cap}`,
        "Refused clients: pending cap {cap} reached ({count} since last report), last {client} for {domain}",
        { cap: parked.cap, client, domain },
      );
      tryClose(conn);
      return;
    }
    const { token } = parked.parked;
    log.debug("Parked {client} for {domain} of {operator} as {token}", {
      client,
      domain,
      operator,
      token: redact(token),
    });
    stats.notices++;
    eps.call(
      `${operator}.incomingConnection`,
      { domain, token, endpoint: endpointText },
      { timeoutMs: settings.noticeTimeoutMs, signal: stop.signal },
    ).catch((err) => {
      // no dial-back will come: let the client go now, not at the dial-back deadline
      parked.parked.release(
        new RpcError(
          `Cannot notify "${operator}" of a connection for "${domain}": ${errorText(err)}`,
          err instanceof RpcError ? err.code : -32603,
          undefined,
          { cause: err },
        ),
      );
    });
    let dialBack: ByteConn;
    try {
      dialBack = await parked.parked.dialBack;
    } catch (err) {
      if (err instanceof PendingExpiredError) {
        if (!stop.signal.aborted) {
          stats.expired++;
          counters.warn(
            "expired",
            "Closed clients: no dial-back within {ms} ms ({count} since last report), last {client} for {domain} of {operator}",
            { ms: settings.dialBackTimeoutMs, client, domain, operator },
          );
        }
      } else {
        stats.failedNotices++;
        counters.warn(
          "notice",
          "Closed clients: notice failed ({count} since last report), last {client}: {error}",
          { client, error: errorText(err) },
        );
      }
      await alertAndClose(conn, ALERT_INTERNAL_ERROR, stop.signal);
      return;
    }
    const replay = replayOf(undefined, hello.bytes, extra);
    hello = extra = undefined;
    await relay(conn, dialBack, replay, { started, client, domain, operator });
  }

  /** Writes the replay (pool header, hello, what followed it) to the dial-back, splices, logs. */
  async function relay(
    conn: ByteConn,
    dialBack: ByteConn,
    replay: { bytes: Uint8Array | undefined; replayed: number },
    about: { started: number; client: string; domain: string; operator: string },
  ): Promise<void> {
    stats.spliced++;
    const { replayed } = replay;
    let result;
    try {
      await writeAll(dialBack, replay.bytes!);
      replay.bytes = undefined;
      result = await splice(conn, dialBack, {
        signal: kill.signal,
        pool,
        names: ["client", "dial-back"],
      });
    } catch (err) {
      result = { aToB: 0, bToA: 0, reason: `dial-back write failed: ${errorText(err)}` };
    } finally {
      tryClose(dialBack);
    }
    logClosed(result, replayed, about);
  }

  async function handleDialBack(conn: ByteConn): Promise<boolean> {
    const peer = remoteText(conn);
    setNoDelay(conn);
    const buf = new Uint8Array(TOKEN_BYTES);
    let why: string;
    try {
      const ok = await tokenDeadlines.run(() => tryClose(conn), () => readExact(conn, buf));
      if (ok) {
        const token = tokenText(buf);
        const operator = pending.claim(token, conn);
        if (operator !== null) {
          log.debug("Dial-back from {peer} for {operator}", { peer, operator });
          return true; // the client's task owns the connection now
        }
        const pooled = dialPool.redeem(token, conn);
        if (pooled !== null) {
          stats.pooled++;
          log.debug("Pooled dial-back from {peer} for {operator}", {
            peer,
            operator: pooled.operator,
          });
          // idle until a client takes it (its task owns it then) or it is dropped (closed)
          return await pooled.done;
        }
        why = "unknown, expired or reused token";
      } else {
        why = "closed before sending a token";
      }
    } catch (err) {
      if (stop.signal.aborted) return false;
      why = isTimeout(err)
        ? `no token within ${settings.tokenTimeoutMs} ms`
        : `token read failed: ${errorText(err)}`;
    }
    stats.badTokens++;
    counters.warn(
      "token",
      "Refused dial-backs ({count} since last report), last from {peer}: {why}",
      { peer, why },
    );
    return false;
  }

  function track(conn: ByteConn, task: () => Promise<boolean | void>): void {
    const p: Promise<void> = task()
      .then((keep) => {
        if (keep !== true) tryClose(conn);
      }, (err) => {
        log.warn("Dropped {peer}: {error}", { peer: remoteText(conn), error: errorText(err) });
        tryClose(conn);
      })
      .finally(() => {
        live.delete(p);
        updateRoom();
      });
    live.set(p, conn);
    updateRoom();
  }

  async function acceptLoop(
    listener: NetListener,
    onConn: (conn: ByteConn) => void,
  ): Promise<void> {
    // A failed accept (e.g. "Too many open files") is one refused client, never a fault of the
    // role: count it, back off a little so the loop does not spin, and go on accepting.
    while (!stop.signal.aborted) {
      let conn: ByteConn;
      try {
        conn = await listener.accept();
      } catch (err) {
        if (
          stop.signal.aborted || err instanceof Deno.errors.BadResource ||
          err instanceof Deno.errors.Interrupted
        ) return;
        counters.warn("accept", "Cannot accept connections ({count} since last report): {error}", {
          error: errorText(err),
        });
        await pause(100, stop.signal);
        continue;
      }
      onConn(conn);
    }
  }

  /** Serves the public port through the data plane's front door until the stop. */
  function frontDoor(plane: DataPlane): Promise<void> {
    updateRoom();
    updateFrontRoutes();
    closeFront = plane.front(publicListener as NativeListener, {
      maxHelloBytes: settings.maxClientHelloBytes,
      helloTimeoutMs: settings.helloTimeoutMs,
      signal: kill.signal,
      onServed: ({ name, remoteAddr, info }, ended) => {
        const operator = (info as { operator: string }).operator;
        const client = formatHostPort(remoteAddr);
        stats.accepted++;
        stats.poolHits++;
        stats.spliced++;
        log.debug("Took a pooled connection of {operator} for {client} ({domain})", {
          client,
          domain: name,
          operator,
        });
        const p: Promise<void> = servedByFront(operator, name, client, ended)
          .catch((err) => log.error("Connection task failed: {error}", { error: errorText(err) }))
          .finally(() => {
            live.delete(p);
            updateRoom();
          });
        live.set(p, null);
        updateRoom();
      },
      onClient: (conn, pre) => {
        stats.accepted++;
        if (admitted(conn)) track(conn, () => handleClient(conn, pre));
      },
      onHelloTimeouts: (n, last) => {
        stats.accepted += n;
        stats.helloTimeouts += n;
        log.debug("Dropped {n} clients, last {client}: no ClientHello within {ms} ms", {
          n,
          client: formatHostPort(last),
          ms: settings.helloTimeoutMs,
        });
      },
      onAcceptFailed: (err) => {
        counters.warn("accept", "Cannot accept connections ({count} since last report): {error}", {
          error: errorText(err),
        });
      },
      // nothing accepts on the public port any more: stop with the error (a supervisor restarts)
      onFailed: (err) => failFront(err),
    });
    let failFront!: (err: Error) => void;
    return new Promise<void>((resolve, reject) => {
      failFront = (err) => {
        log.error("Stopping: {error}", { error: err.message });
        reject(err);
      };
      if (stop.signal.aborted) resolve();
      else stop.signal.addEventListener("abort", () => resolve(), { once: true });
    });
  }

  /** The connection cap over both ports: over it, a new connection is closed at once. */
  function admitted(conn: ByteConn): boolean {
    if (live.size < settings.maxConnections) return true;
    stats.refusedConnections++;
    counters.warn(
      "connections",
      "Refused connections: {max} open ({count} since last report), last from {peer}",
      { max: settings.maxConnections, peer: remoteText(conn) },
    );
    tryClose(conn);
    return false;
  }

  log.info("Listening on {public} (public) and {private} (private), notices name {endpoint}", {
    public: formatHostPort(addrs.public),
    private: formatHostPort(addrs.private),
    endpoint: endpointText,
  });

  const finished = (async () => {
    try {
      await Promise.all([
        plane === undefined
          ? acceptLoop(publicListener, (conn) => {
            stats.accepted++;
            if (admitted(conn)) track(conn, () => handleClient(conn));
          })
          : frontDoor(plane),
        acceptLoop(privateListener, (conn) => {
          if (admitted(conn)) track(conn, () => handleDialBack(conn));
        }),
      ]);
    } finally {
      // listeners are closed: end the waits, give live splices their grace, then cut them
      stop.abort();
      closeFront?.();
      tryClose(publicListener);
      tryClose(privateListener);
      pending.releaseAll(new PendingExpiredError("Cannot complete pending connection: stopping"));
      dialPool.closeAll();
      const grace = setTimeout(() => kill.abort(), settings.graceMs);
      try {
        while (live.size > 0) await Promise.all(live.keys());
      } finally {
        clearTimeout(grace);
        kill.abort();
        await eps.close().catch(() => {});
        await net.close();
        await store.close();
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
  })();

  const handle = makeHandle(addrs, finished, () => {
    stop.abort();
    closeFront?.();
    tryClose(publicListener);
    tryClose(privateListener);
  }, signal);
  return Object.assign(handle, { stats, privateEndpoint, announcements, pool: dialPool });
}
