/**
 * Pre-warmed dial-backs (issue 6 item 3): idle, already authenticated data connections from a
 * private proxy to a public proxy's private port, so that a new client skips the notice round trip
 * (public → EPS → EPS → private proxy) and the dial-back connect.
 *
 * The protocol, on top of the dial-back of DESIGN.md §4:
 * 1. The private proxy calls `<public>.openPool {domains, count, idle_timeout_ms}` through its EPS
 *    (authenticated: the EPS stamps the caller). The public proxy checks that the caller holds an
 *    announcement for every domain named, grants at most its `max_pooled_per_operator` (tokens not
 *    yet redeemed count, as do idle connections) and answers `{tokens, idle_timeout_ms}`: one-time
 *    32-byte tokens, each valid for `dial_back_timeout_ms`.
 * 2. The private proxy dials the private port and writes one token, exactly as a dial-back does.
 *    The public proxy finds it in its {@linkcode PoolTable} (not the pending table), and keeps the
 *    connection idle, for that operator and those domains only, for at most `idle_timeout_ms`.
 * 3. A client whose SNI matches an announcement of that operator for one of those domains takes
 *    the most recently parked idle connection: the public proxy writes the pool header (type 1,
 *    one length byte, the SNI in ASCII) and the buffered ClientHello, then splices. No notice.
 * 4. The private proxy reads the header, checks the name against its own announcements, connects
 *    the internal server, splices, and refills its pool.
 *
 * While a connection is idle neither side sends anything, so each side keeps one small read
 * pending on it: EOF, a reset or an unexpected byte drops it there. The public side expires an
 * idle connection at `idle_timeout_ms`; the private side closes it {@linkcode IDLE_SLACK_MS}
 * later, so the public side never hands out a connection the private side is about to close.
 *
 * Taking the newest idle connection first (a stack) lets the surplus of a shrinking pool age
 * out at the bottom instead of being kept alive by rotation.
 * @module
 */
import type { Logger } from "@logtape/logtape";
import { ProtocolError, RpcCode, RpcError } from "../errors.ts";
import { errorText } from "../log.ts";
import { type ByteConn, tryClose } from "../net/conn.ts";
import { NativeConn } from "../net/native/reactor.ts";
import type { Parked } from "../net/native/data_plane.ts";
import { TOKEN_BYTES, tokenText } from "./pending.ts";
import { decodePoolHeader } from "./pool_header.ts";

export { decodePoolHeader, encodePoolHeader, POOL_HEADER_TYPE } from "./pool_header.ts";

/** Longest a public proxy keeps an idle pooled connection, whatever the private proxy asks. */
export const MAX_POOL_IDLE_MS = 600_000;
/** Shortest idle timeout a private proxy may ask for. */
export const MIN_POOL_IDLE_MS = 1000;
/** Most tokens one `openPool` call may ask for. */
export const MAX_OPEN_COUNT = 64;
/** How much later than the public side the private side gives up an idle connection. */
export const IDLE_SLACK_MS = 2000;
/** Size of the read kept pending on an idle connection (also the first read after it is taken). */
const PROBE_BYTES = 1024;
/**
 * Size of the buffer the private side reads the pool header into (header ≤ 257 bytes). The
 * header and the ClientHello come in one write, so a typical hello (under 2 KiB, post-quantum key
 * shares included) reaches the internal server in one write too. Pending only while idle.
 */
const HEADER_READ_BYTES = 2048;

/**
 * Reads a pool header from `conn`: the name and the bytes that came after it in the same reads
 * (the start of the ClientHello), or null on EOF before the first byte.
 */
export async function readPoolHeader(
  conn: Pick<ByteConn, "read">,
): Promise<{ name: string; rest: Uint8Array } | null> {
  const buf = new Uint8Array(HEADER_READ_BYTES);
  let got = 0;
  for (;;) {
    const n = await conn.read(buf.subarray(got));
    if (n === null) {
      if (got === 0) return null;
      throw new ProtocolError(`Cannot read pool header: connection ended after ${got} bytes`);
    }
    got += n;
    const h = decodePoolHeader(buf.subarray(0, got));
    if (h !== null) return { name: h.name, rest: buf.slice(h.length, got) };
  }
}

// ---------------------------------------------------------------------------------------------
// Public side

export interface PoolTableLimits {
  /** Idle connections plus unredeemed tokens per operator; 0 turns pooling off. */
  maxPerOperator: number;
  /** How long a minted token may wait for its connection. */
  tokenTimeoutMs: number;
}

/** Why an idle pooled connection was dropped. */
export type PoolDropReason = "eof" | "data" | "reset" | "timeout" | "stopping";

interface TokenEntry {
  operator: string;
  domains: ReadonlySet<string>;
  idleTimeoutMs: number;
  timer: ReturnType<typeof setTimeout>;
}

interface IdleEntry {
  conn: ByteConn;
  operator: string;
  domains: ReadonlySet<string>;
  idle: boolean;
  /** Kept in the data-plane worker for its front door (not taken here); else the probe read. */
  parked: Parked | undefined;
  probe: Promise<number | null> | undefined;
  buf: Uint8Array | undefined;
  timer: ReturnType<typeof setTimeout>;
  done(taken: boolean): void;
}

/**
 * Keeps an idle connection in the data-plane worker, whose front door serves clients from it
 * (DataPlane.pool); null: keep it here. `bucket` names the operator and the names it is for.
 */
export type PoolParker = (conn: ByteConn, bucket: number, operator: string) => Parked | null;

/** The result of `mint()`: the tokens (base64; never log them), or why none were granted. */
export type MintResult =
  | { ok: true; tokens: string[]; idleTimeoutMs: number }
  | { ok: false; why: "off" | "cap" };

/**
 * The public proxy's pool: one-time pool tokens and the idle connections that redeemed them,
 * per operator. Created per public proxy; never module-level.
 */
export class PoolTable {
  #tokens = new Map<string, TokenEntry>();
  /** Idle connections per operator, oldest first. */
  #idle = new Map<string, IdleEntry[]>();
  /** Unredeemed tokens plus idle connections, per operator: what the cap counts. */
  #held = new Map<string, number>();
  #closed = false;
  /** One number per operator and set of names idle connections were opened for. */
  #buckets = new Map<string, { id: number; operator: string; domains: ReadonlySet<string> }>();
  /** Set by a public proxy with native sockets: idle connections wait in the worker. */
  parker: PoolParker | undefined;
  /** Called when a new bucket appears (the front door's routes must name it). */
  onBucket: (() => void) | undefined;

  constructor(
    readonly limits: PoolTableLimits,
    readonly onDrop: (operator: string, why: PoolDropReason) => void = () => {},
  ) {}

  /** The bucket of `operator`'s connections opened for `domains` (created on first use). */
  bucketOf(operator: string, domains: ReadonlySet<string>): number {
    const key = `${operator}\n${[...domains].sort().join("\n")}`;
    let b = this.#buckets.get(key);
    if (b === undefined) {
      this.#buckets.set(key, b = { id: this.#buckets.size, operator, domains });
      this.onBucket?.();
    }
    return b.id;
  }

  /** The buckets whose connections may serve `operator`'s announcement of `domain`. */
  bucketsFor(operator: string, domain: string): number[] {
    const out: number[] = [];
    for (const b of this.#buckets.values()) {
      if (b.operator === operator && b.domains.has(domain)) out.push(b.id);
    }
    return out;
  }

  /** Tokens and idle connections held for `operator`. */
  held(operator: string): number {
    return this.#held.get(operator) ?? 0;
  }

  /** Idle connections of `operator`, or of all operators. */
  idle(operator?: string): number {
    if (operator !== undefined) return this.#idle.get(operator)?.length ?? 0;
    let n = 0;
    for (const list of this.#idle.values()) n += list.length;
    return n;
  }

  /**
   * Mints up to `count` tokens for `operator`, usable for `domains` (announcement names), within
   * the per-operator cap. Grants fewer when the cap leaves less room; none → `{ok: false}`.
   */
  mint(
    operator: string,
    domains: readonly string[],
    count: number,
    idleTimeoutMs: number,
  ): MintResult {
    if (this.limits.maxPerOperator === 0 || this.#closed) return { ok: false, why: "off" };
    const n = Math.min(count, this.limits.maxPerOperator - this.held(operator));
    if (n <= 0) return { ok: false, why: "cap" };
    const set = new Set(domains);
    const ms = Math.min(Math.max(idleTimeoutMs, MIN_POOL_IDLE_MS), MAX_POOL_IDLE_MS);
    const tokens: string[] = [];
    const raw = new Uint8Array(TOKEN_BYTES);
    for (let i = 0; i < n; i++) {
      let token: string;
      do {
        crypto.getRandomValues(raw);
        token = tokenText(raw);
      } while (this.#tokens.has(token));
      const timer = setTimeout(() => {
        if (this.#tokens.delete(token)) bump(this.#held, operator, -1);
      }, this.limits.tokenTimeoutMs);
      this.#tokens.set(token, { operator, domains: set, idleTimeoutMs: ms, timer });
      tokens.push(token);
    }
    bump(this.#held, operator, n);
    return { ok: true, tokens, idleTimeoutMs: ms };
  }

  /** True when `token` (base64) is an unredeemed pool token. */
  has(token: string): boolean {
    return this.#tokens.has(token);
  }

  /**
   * Redeems `token` with the connection that presented it and keeps the connection idle. Returns
   * null when the token is unknown, expired or used; else a promise that resolves true when a
   * client took the connection (it owns it now), false when it was dropped (and closed).
   * Returns the operator too, for logs.
   */
  redeem(token: string, conn: ByteConn): { operator: string; done: Promise<boolean> } | null {
    const t = this.#tokens.get(token);
    if (t === undefined) return null;
    this.#tokens.delete(token);
    clearTimeout(t.timer);
    if (this.#closed) {
      bump(this.#held, t.operator, -1);
      return { operator: t.operator, done: Promise.resolve(false) };
    }
    let done!: (taken: boolean) => void;
    const taken = new Promise<boolean>((resolve) => done = resolve);
    // kept in the data-plane worker when it can: it says when a client took it (null) or why it
    // ended (a PoolDropReason); else watched here, with a probe read that ends it on any byte
    const parked = this.parker?.(conn, this.bucketOf(t.operator, t.domains), t.operator) ?? null;
    const buf = parked === null ? new Uint8Array(PROBE_BYTES) : undefined;
    const e: IdleEntry = {
      conn,
      operator: t.operator,
      domains: t.domains,
      idle: true,
      parked: parked ?? undefined,
      probe: undefined,
      buf,
      timer: setTimeout(() => this.#drop(e, "timeout"), t.idleTimeoutMs),
      done,
    };
    if (parked !== null) {
      parked.result.then((why) => {
        if (!e.idle) return;
        this.#remove(e, this.#idle.get(e.operator)!.indexOf(e));
        e.done(why === null);
        if (why !== null) this.onDrop(e.operator, why as PoolDropReason);
      });
    } else {
      // A native socket is watched without a read in flight, so taking it needs no PrimedConn
      // and its splice can move to the data-plane worker. Once taken (idle false) nothing is read.
      e.probe = conn instanceof NativeConn
        ? conn.waitReadable().then(() => (e.idle ? conn.read(buf!) : 0))
        : conn.read(buf!);
      e.probe.then(
        (n) => this.#drop(e, n === null ? "eof" : "data"),
        () => this.#drop(e, "reset"),
      );
    }
    let list = this.#idle.get(t.operator);
    if (list === undefined) this.#idle.set(t.operator, list = []);
    list.push(e);
    return { operator: t.operator, done: taken };
  }

  /**
   * Takes the newest idle connection of `operator` opened for `domain` (an announcement name), or
   * undefined. The caller writes the pool header and the ClientHello to it, then splices.
   */
  take(operator: string, domain: string): ByteConn | undefined {
    const list = this.#idle.get(operator);
    if (list === undefined) return undefined;
    for (let i = list.length - 1; i >= 0; i--) {
      const e = list[i]!;
      // one kept in the worker is the front door's to take (it has the clients that fit)
      if (!e.domains.has(domain) || e.parked !== undefined) continue;
      this.#remove(e, i);
      e.done(true);
      if (e.conn instanceof NativeConn) {
        e.conn.cancelWait();
        return e.conn;
      }
      return new PrimedConn(e.conn, e.probe!, e.buf!);
    }
    return undefined;
  }

  /** Drops every idle connection and forgets every token; later mints are refused. */
  closeAll(): void {
    this.#closed = true;
    for (const list of [...this.#idle.values()]) {
      for (const e of [...list]) this.#drop(e, "stopping");
    }
    for (const [token, t] of this.#tokens) {
      clearTimeout(t.timer);
      this.#tokens.delete(token);
      bump(this.#held, t.operator, -1);
    }
  }

  #drop(e: IdleEntry, why: PoolDropReason): void {
    if (!e.idle) return;
    if (e.parked !== undefined) {
      e.parked.unpark(why); // the worker closes it; its result does the rest
      return;
    }
    const list = this.#idle.get(e.operator)!;
    this.#remove(e, list.indexOf(e));
    tryClose(e.conn);
    e.done(false);
    this.onDrop(e.operator, why);
  }

  #remove(e: IdleEntry, index: number): void {
    e.idle = false;
    clearTimeout(e.timer);
    const list = this.#idle.get(e.operator)!;
    list.splice(index, 1);
    if (list.length === 0) this.#idle.delete(e.operator);
    bump(this.#held, e.operator, -1);
  }
}

/**
 * A taken pooled connection: its first read is the probe read that was pending while it was
 * idle (a read in flight cannot be taken back), later reads go to the socket.
 */
class PrimedConn implements ByteConn {
  #probe: Promise<number | null> | null;
  /** The probe's buffer until its bytes are read: a held connection does not keep it (W4). */
  #buf: Uint8Array | null;
  #rest: Uint8Array | null = null;
  constructor(readonly inner: ByteConn, probe: Promise<number | null>, buf: Uint8Array) {
    this.#probe = probe;
    this.#buf = buf;
  }
  get remoteAddr(): Deno.Addr {
    return this.inner.remoteAddr;
  }
  async read(buf: Uint8Array): Promise<number | null> {
    if (this.#probe !== null) {
      const probe = this.#probe;
      this.#probe = null;
      const n = await probe;
      const probed = this.#buf!;
      this.#buf = null;
      if (n === null) return null;
      this.#rest = probed.subarray(0, n);
    }
    if (this.#rest !== null) {
      const n = Math.min(buf.length, this.#rest.length);
      buf.set(this.#rest.subarray(0, n));
      this.#rest = n === this.#rest.length ? null : this.#rest.subarray(n);
      return n;
    }
    return await this.inner.read(buf);
  }
  write(buf: Uint8Array): Promise<number> {
    return this.inner.write(buf);
  }
  closeWrite(): Promise<void> {
    return this.inner.closeWrite();
  }
  close(): void {
    this.inner.close();
  }
}

function bump(m: Map<string, number>, key: string, by: number): void {
  const n = (m.get(key) ?? 0) + by;
  if (n <= 0) m.delete(key);
  else m.set(key, n);
}

// ---------------------------------------------------------------------------------------------
// Private side: the adaptive size

/**
 * Arrivals per second as an exponentially decaying count: each arrival adds 1/τ, and the sum
 * decays by e^(−Δt/τ). Under a steady rate λ it converges to λ within a few τ, and it falls
 * towards 0 once arrivals stop.
 */
export class ArrivalRate {
  #rate = 0;
  #at = 0;
  constructor(readonly windowMs = 1000) {}
  /** Records one arrival at `now` (ms, monotonic). */
  hit(now: number): void {
    this.#rate = this.perSecond(now) + 1000 / this.windowMs;
    this.#at = now;
  }
  /** The estimate at `now`. */
  perSecond(now: number): number {
    if (this.#rate === 0) return 0;
    return this.#rate * Math.exp(-Math.max(0, now - this.#at) / this.windowMs);
  }
}

/** How many connections beyond the expected need the pool keeps, as a factor. */
const HEADROOM = 8;
/**
 * The least the pool aims for while traffic would use that many connections within a quarter of
 * the idle timeout: a refill then carries at least half of it, so one openPool call serves at
 * least 8 clients.
 */
const BUSY_TARGET = 16;

/**
 * The pool size a private proxy aims for (idle plus being dialled):
 *
 *     target = clamp(max(ceil(HEADROOM · λ · T), busy), min, max)   when λ · L ≥ 1
 *     target = min                                                  otherwise
 *     busy   = BUSY_TARGET when λ · L ≥ 4 · BUSY_TARGET, else 0
 *
 * λ = arrivals per second (notices and pooled clients, {@linkcode ArrivalRate}), T = seconds one
 * refill takes (the openPool call, the connect and the token; a moving average), L = the idle
 * timeout in seconds. While one refill is under way about λ·T clients arrive (Little's law), so
 * that many idle connections cover the gap. The pool refills at half its target, so HEADROOM = 8
 * keeps 4·λ·T in hand when a refill starts (bursts: at λ·T = 1, more than 4 arrivals in one
 * refill time have a probability under 0.5 %) and makes each refill carry at least 4·λ·T tokens.
 *
 * One openPool call costs about what one notice costs (JSON-RPC through two EPS servers and both
 * proxies), so calls must be rare. HEADROOM alone is not enough when a refill is quick: on W5
 * (sequential handshakes, λ ≈ 150/s, T ≈ 2 ms) it gave 1–3 tokens per call, 0.56 calls per
 * client, and the four processes spent 3.8 ms of CPU per handshake on two cores. The `busy`
 * floor keeps calls to at most one per 8 clients whenever the connections would be used well
 * before they expire. When fewer than one client is expected per idle timeout, a pooled
 * connection would most likely expire unused, so the pool falls back to `min`.
 */
export function poolTarget(
  ratePerSecond: number,
  refillMs: number,
  idleTimeoutMs: number,
  min: number,
  max: number,
): number {
  const perIdleTimeout = ratePerSecond * idleTimeoutMs / 1000;
  if (perIdleTimeout < 1) return Math.min(min, max);
  const need = Math.ceil(HEADROOM * ratePerSecond * refillMs / 1000);
  const busy = perIdleTimeout >= 4 * BUSY_TARGET ? BUSY_TARGET : 0;
  return Math.min(max, Math.max(min, need, busy));
}

// ---------------------------------------------------------------------------------------------
// Private side: the pool towards one public operator

/** What the private proxy's pool towards one public operator needs from the proxy. */
export interface DialPoolOptions {
  /** The public operator (for logs). */
  operator: string;
  minIdle: number;
  maxIdle: number;
  idleTimeoutMs: number;
  /** First delay after a failed refill; doubles up to {@linkcode MAX_BACKOFF_MS}. */
  retryMs: number;
  /** Asks for `count` tokens (the openPool call); resolves to the raw tokens granted. */
  open(count: number): Promise<{ tokens: Uint8Array[]; idleTimeoutMs: number }>;
  /** Connects the private port and writes `token`. */
  dial(token: Uint8Array): Promise<ByteConn>;
  /** A client came on a pooled connection: the proxy owns `conn` now. */
  serve(conn: ByteConn, name: string, rest: Uint8Array): void;
  /**
   * Hands an idle connection to the native data plane, which waits for its client there and
   * serves it without this thread when it can (the proxy hears of it through its own handlers);
   * null: the pool waits here and calls {@linkcode serve}. See DataPlane.park().
   */
  park?(conn: ByteConn): Parked | null;
  /** How many more connections the proxy may open now (its max_connections). */
  room(): number;
  signal: AbortSignal;
  log: Logger;
}

/** Counters of one pool, for tests and diagnostics. */
export interface DialPoolStats {
  /** Connections that redeemed a token and went idle. */
  pooled: number;
  /** Clients that came on a pooled connection. */
  used: number;
  /** Idle connections that ended (public side expired or closed them, reset, bad header). */
  dropped: number;
  /** Refills that failed (openPool refused or failed, dial failed). */
  failedRefills: number;
  /** openPool calls made. */
  refills: number;
}

/** Longest wait after failed refills. */
export const MAX_BACKOFF_MS = 20_000;
/** The refill time assumed before one was measured. */
const INITIAL_REFILL_MS = 10;

/**
 * The private proxy's pool of pre-warmed dial-backs towards one public operator. It refills
 * itself to {@linkcode poolTarget}: after each arrival, each drop, and after a failure's backoff.
 */
export class DialPool {
  readonly stats: DialPoolStats = {
    pooled: 0,
    used: 0,
    dropped: 0,
    failedRefills: 0,
    refills: 0,
  };
  readonly rate = new ArrivalRate();
  /** Idle connections (waiting for a client). */
  idle = 0;
  /** Tokens asked for or being dialled. */
  opening = 0;
  #refillMs = INITIAL_REFILL_MS;
  #calling = false;
  #backoffMs = 0;
  #blockedUntil = 0;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #conns = new Set<ByteConn>();
  #parked = new Set<Parked>();
  #tasks = new Set<Promise<void>>();
  #refusedLogged = false;

  constructor(readonly o: DialPoolOptions) {
    o.signal.addEventListener("abort", () => this.#stop(), { once: true });
  }

  /** The moving average of one refill's duration (ms). */
  get refillMs(): number {
    return this.#refillMs;
  }

  /** The size aimed for now. */
  target(now = performance.now()): number {
    return poolTarget(
      this.rate.perSecond(now),
      this.#refillMs,
      this.o.idleTimeoutMs,
      this.o.minIdle,
      this.o.maxIdle,
    );
  }

  /** Records a new client (by notice or pooled) and refills. */
  arrival(now = performance.now()): void {
    this.rate.hit(now);
    this.refill();
  }

  /**
   * Starts a refill once the pool (idle plus being dialled) is down to half its target, and
   * fills it to the target: one openPool call at a time, each for at least half the target. A
   * call costs about what a notice costs, so a call per client would save nothing (measured: with
   * calls of 1–2 tokens the EPS servers spent more CPU per client than without the pool).
   */
  refill(): void {
    if (this.o.signal.aborted || this.#calling) return;
    const now = performance.now();
    if (now < this.#blockedUntil) {
      this.#timer ??= setTimeout(() => {
        this.#timer = undefined;
        this.refill();
      }, this.#blockedUntil - now);
      return;
    }
    const target = this.target(now);
    const have = this.idle + this.opening;
    if (have > target / 2) return;
    const want = Math.min(target - have, this.o.room() - this.opening, MAX_OPEN_COUNT);
    if (want <= 0) return;
    this.#calling = true;
    this.stats.refills++;
    this.opening += want;
    this.#track(this.#open(want, now));
  }

  /** Resolves when every task of the pool ended (after the signal aborted). */
  async settled(): Promise<void> {
    while (this.#tasks.size > 0) await Promise.all(this.#tasks);
  }

  async #open(want: number, started: number): Promise<void> {
    let granted: { tokens: Uint8Array[]; idleTimeoutMs: number };
    try {
      granted = await this.o.open(want);
      if (granted.tokens.length === 0) throw new RangeError("no tokens granted");
    } catch (err) {
      this.opening -= want;
      this.#calling = false;
      // not permitted by the directory, or a public proxy without pools: no point in hurrying
      const refused = err instanceof RpcError &&
        (err.code === RpcCode.NotPermitted || err.code === RpcCode.MethodNotFound);
      if (!this.o.signal.aborted) this.#failed(`openPool failed: ${errorText(err)}`, refused);
      return;
    }
    const tokens = granted.tokens.slice(0, want);
    this.opening -= want - tokens.length;
    this.#calling = false;
    for (const token of tokens) this.#track(this.#dialOne(token, started));
    // more may be needed already (arrivals while the call was under way)
    this.refill();
  }

  async #dialOne(token: Uint8Array, started: number): Promise<void> {
    let conn: ByteConn;
    try {
      if (this.o.signal.aborted) throw this.o.signal.reason;
      conn = await this.o.dial(token);
    } catch (err) {
      this.opening--;
      if (!this.o.signal.aborted) this.#failed(`dial failed: ${errorText(err)}`);
      return;
    }
    this.opening--;
    if (this.o.signal.aborted) {
      tryClose(conn);
      return;
    }
    // a moving average of how long one refill takes (call + connect + token)
    this.#refillMs = 0.8 * this.#refillMs + 0.2 * (performance.now() - started);
    this.#backoffMs = 0;
    this.#refusedLogged = false;
    this.idle++;
    this.stats.pooled++;
    const parked = this.o.park?.(conn) ?? null;
    if (parked !== null) return await this.#waitParked(parked);
    this.#conns.add(conn);
    let header: { name: string; rest: Uint8Array } | null = null;
    let why = "ended";
    // a plain timer, not withDeadline(): one per idle connection, and the stop closes #conns
    let expired = false;
    const timer = setTimeout(() => {
      expired = true;
      tryClose(conn);
    }, this.o.idleTimeoutMs + IDLE_SLACK_MS);
    try {
      header = await readPoolHeader(conn);
    } catch (err) {
      why = expired ? `idle for ${this.o.idleTimeoutMs + IDLE_SLACK_MS} ms` : errorText(err);
    } finally {
      clearTimeout(timer);
      this.idle--;
      this.#conns.delete(conn);
    }
    if (header === null || this.o.signal.aborted) {
      tryClose(conn);
      this.#ended(why);
      return;
    }
    this.#ended(null); // before serving: the replacement's round trip overlaps this client
    this.o.serve(conn, header.name, header.rest);
  }

  /** An idle connection was taken by a client (`why` null) or dropped: count it and refill. */
  #ended(why: string | null): void {
    if (this.o.signal.aborted) return;
    if (why !== null) {
      this.stats.dropped++;
      this.o.log.debug("Dropped idle pooled connection to {operator}: {why}", {
        operator: this.o.operator,
        why,
      });
    } else {
      this.stats.used++;
      this.rate.hit(performance.now());
    }
    this.refill();
  }

  /** An idle connection parked in the data plane: the same accounting as a waiting read. */
  async #waitParked(parked: Parked): Promise<void> {
    this.#parked.add(parked);
    const idleMs = this.o.idleTimeoutMs + IDLE_SLACK_MS;
    const timer = setTimeout(() => parked.unpark(`idle for ${idleMs} ms`), idleMs);
    let why: string | null;
    try {
      why = await parked.result;
    } finally {
      clearTimeout(timer);
      this.idle--;
      this.#parked.delete(parked);
    }
    this.#ended(why); // null: the client is served (by the data plane, or handed to serve())
  }

  #failed(why: string, longest = false): void {
    this.stats.failedRefills++;
    this.#backoffMs = longest
      ? MAX_BACKOFF_MS
      : Math.min(Math.max(this.#backoffMs * 2, this.o.retryMs), MAX_BACKOFF_MS);
    this.#blockedUntil = performance.now() + this.#backoffMs;
    const props = { operator: this.o.operator, why, ms: this.#backoffMs };
    if (!this.#refusedLogged) {
      this.#refusedLogged = true;
      this.o.log.warn(
        "Cannot refill the dial-back pool for {operator}: {why}; retrying in {ms} ms",
        props,
      );
    } else {
      this.o.log.debug("Cannot refill the dial-back pool for {operator}: {why}", props);
    }
    this.refill(); // schedules the retry when the target still wants connections
  }

  #track(p: Promise<void>): void {
    const t = p.catch((err) => {
      this.o.log.error("Dial-back pool task failed: {error}", { error: errorText(err) });
    }).finally(() => this.#tasks.delete(t));
    this.#tasks.add(t);
  }

  #stop(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    for (const conn of this.#conns) tryClose(conn);
    for (const parked of this.#parked) parked.unpark("stopping");
  }
}
