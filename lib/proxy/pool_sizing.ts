/**
 * The private half of the dial-back pool (docs/architecture.md, "Pre-warmed dial-backs"): how
 * many idle pooled dial-backs to keep towards one public operator, and the refills. A refill asks
 * the public proxy for tokens (`<public>.openPool`) and hands them to the data plane
 * (`openPooled`), which dials, presents each token and keeps the connection idle until a client
 * comes on it; its events (`poolIdle`, `poolUsed`, `poolDropped`) keep the counts here.
 * @module
 */
import type { Logger } from "@logtape/logtape";
import { RpcCode, RpcError } from "../errors.ts";
import { errorText } from "../log.ts";
import type { DataEvent } from "../dataplane/mod.ts";
import { Backoff } from "../backoff.ts";

/** Most tokens one `openPool` call may ask for (the public proxy's cap). */
export const MAX_OPEN_COUNT = 64;

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
 * The busy floor while refills come from the pool ticket (no openPool call, so their number does
 * not matter). Clients do not arrive one by one: on W1 (ab, 25 clients that each reconnect at
 * once, about 500 per second) a refill measured at 1.9 ms gave a target of 16, and 10–13 % of the
 * clients found no idle dial-back and took a notice (an EPS round trip through four processes);
 * with 32, 0.5 %.
 */
export const TICKET_BUSY_TARGET = 32;

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
 *
 * `busyTarget` replaces BUSY_TARGET as the floor (the pool passes {@linkcode TICKET_BUSY_TARGET}
 * while it refills from its ticket).
 */
export function poolTarget(
  ratePerSecond: number,
  refillMs: number,
  idleTimeoutMs: number,
  min: number,
  max: number,
  busyTarget = BUSY_TARGET,
): number {
  const perIdleTimeout = ratePerSecond * idleTimeoutMs / 1000;
  if (perIdleTimeout < 1) return Math.min(min, max);
  const need = Math.ceil(HEADROOM * ratePerSecond * refillMs / 1000);
  const busy = perIdleTimeout >= 4 * BUSY_TARGET ? busyTarget : 0;
  return Math.min(max, Math.max(min, need, busy));
}

// ---------------------------------------------------------------------------------------------
// Private side: the pool towards one public operator

/** What the private proxy's pool towards one public operator needs from the proxy. */
export interface DialPoolOptions {
  /** The public operator (for logs). */
  operator: string;
  /**
   * The public replica the pool is at, for logs: its instance, or "any replica" while unbound
   * (docs/architecture.md, "Private instances and public replicas: the private side").
   */
  replica?: string;
  minIdle: number;
  maxIdle: number;
  idleTimeoutMs: number;
  /** First delay after a failed refill; doubles up to {@linkcode MAX_BACKOFF_MS}. */
  retryMs: number;
  /**
   * Asks for `count` tokens (base64): made from the pool ticket, or granted by an openPool call
   * (`fromTicket` says which).
   */
  open(count: number): Promise<{ tokens: string[]; idleTimeoutMs: number; fromTicket?: boolean }>;
  /**
   * Whether the next `open()` makes its tokens from the pool ticket, without an openPool call:
   * such a refill costs no EPS call, so the pool tops up sooner (at three quarters of its target
   * instead of half). Absent: every refill is a call.
   */
  fromTicket?(now: number): boolean;
  /** Hands tokens to the data plane, which opens one idle pooled dial-back per token. */
  dial(tokens: string[], idleTimeoutMs: number): void;
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
  /** Refills started (an openPool call, or tokens made from the pool ticket). */
  refills: number;
  /** Refills whose tokens came from the pool ticket, without an openPool call. */
  ticketRefills: number;
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
    ticketRefills: 0,
  };
  readonly rate = new ArrivalRate();
  /** Idle connections (waiting for a client). */
  idle = 0;
  /** Tokens asked for or being dialled. */
  opening = 0;
  #refillMs = INITIAL_REFILL_MS;
  #calling = false;
  #backoff: Backoff;
  #blockedUntil = 0;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #tasks = new Set<Promise<void>>();
  #refusedLogged = false;
  /** When the refills whose tokens are being dialled started, oldest first. */
  #started: number[] = [];
  #paused = false;

  constructor(readonly o: DialPoolOptions) {
    this.#backoff = new Backoff(o.retryMs, MAX_BACKOFF_MS, false);
    o.signal.addEventListener("abort", () => clearTimeout(this.#timer), { once: true });
  }

  /**
   * True while the pool is stopped because no name is announced (docs/architecture.md,
   * "Drain"): it asks for no tokens, and idle ones that still open are closed by the proxy.
   */
  get paused(): boolean {
    return this.#paused;
  }

  /** Stops refilling (every announcement drained). */
  pause(): void {
    this.#paused = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  /** Refills again (an announcement serves again). */
  resume(): void {
    if (!this.#paused) return;
    this.#paused = false;
    this.refill();
  }

  /** New sizes and idle timeout (a reload); the next refill uses them. */
  reconfigure(
    o: { minIdle: number; maxIdle: number; idleTimeoutMs: number; retryMs: number },
  ): void {
    this.o.minIdle = o.minIdle;
    this.o.maxIdle = o.maxIdle;
    this.o.idleTimeoutMs = o.idleTimeoutMs;
    if (this.o.retryMs !== o.retryMs) {
      this.o.retryMs = o.retryMs;
      this.#backoff = new Backoff(o.retryMs, MAX_BACKOFF_MS, false);
    }
    this.refill();
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
      this.o.fromTicket?.(now) ? TICKET_BUSY_TARGET : BUSY_TARGET,
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
   * call costs about what a notice costs, so a call per client would save nothing. A refill made
   * from the pool ticket costs no call: it starts at three quarters of the target, so that a
   * burst finds the pool fuller (on W1, 25 clients at once at about 500 per second, refilling at
   * half the target of 32 sent 12.6 % of the clients by notice, each one an EPS round trip).
   */
  refill(): void {
    if (this.o.signal.aborted || this.#paused || this.#calling) return;
    const now = performance.now();
    if (now < this.#blockedUntil) {
      this.#timer ??= setTimeout(() => {
        this.#timer = undefined;
        this.refill();
      }, this.#blockedUntil - now);
      return;
    }
    const cheap = this.o.fromTicket?.(now) ?? false;
    const target = this.target(now);
    const have = this.idle + this.opening;
    if (have > (cheap ? target * 3 / 4 : target / 2)) return;
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
    let granted: { tokens: string[]; idleTimeoutMs: number; fromTicket?: boolean };
    try {
      granted = await this.o.open(want);
      if (granted.fromTicket) this.stats.ticketRefills++;
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
    if (this.o.signal.aborted || this.#paused) {
      this.opening -= tokens.length;
      return;
    }
    for (let i = 0; i < tokens.length; i++) this.#started.push(started);
    this.o.dial(tokens, this.o.idleTimeoutMs);
    // more may be needed already (arrivals while the call was under way)
    this.refill();
  }

  /** Follows the data plane's events about this operator's pooled dial-backs. */
  onEvent(e: DataEvent, now = performance.now()): void {
    switch (e.type) {
      case "poolIdle": {
        this.opening--;
        this.idle++;
        this.stats.pooled++;
        // a moving average of how long one refill takes (call + connect + token), to when the
        // data plane saw it idle: the event's own way here (up to 2 ms gathered) is not part of it
        const at = e.at ?? now;
        const started = this.#started.shift() ?? at;
        this.#refillMs = 0.8 * this.#refillMs + 0.2 * Math.max(0, at - started);
        this.#backoff.reset();
        this.#refusedLogged = false;
        return;
      }
      case "poolUsed":
        this.idle--;
        this.stats.used++;
        this.rate.hit(now);
        return this.refill(); // before serving: the replacement's round trip overlaps this client
      case "poolDropped":
        if (e.why === "failed") {
          this.opening--;
          this.#started.shift();
          if (!this.o.signal.aborted) this.#failed(`dial failed: ${e.detail ?? "?"}`);
          return;
        }
        this.idle--;
        if (this.o.signal.aborted || this.#paused) return;
        this.stats.dropped++;
        this.o.log.debug("Dropped idle pooled connection to {operator} at {replica}: {why}", {
          operator: this.o.operator,
          replica: this.o.replica ?? "any replica",
          why: e.detail ?? e.why,
        });
        return this.refill();
      case "refused":
        // a pooled client for a name not announced here: the connection is gone
        this.idle--;
        return this.refill();
    }
  }

  #failed(why: string, longest = false): void {
    this.stats.failedRefills++;
    if (longest) this.#backoff.longest();
    const ms = this.#backoff.next();
    this.#blockedUntil = performance.now() + ms;
    const props = { operator: this.o.operator, replica: this.o.replica ?? "any replica", why, ms };
    if (!this.#refusedLogged) {
      this.#refusedLogged = true;
      this.o.log.warn(
        "Cannot refill the dial-back pool for {operator} at {replica}: {why}; retrying in {ms} ms",
        props,
      );
    } else {
      this.o.log.debug(
        "Cannot refill the dial-back pool for {operator} at {replica}: {why}",
        props,
      );
    }
    this.refill(); // schedules the retry when the target still wants connections
  }

  #track(p: Promise<void>): void {
    const t = p.catch((err) => {
      this.o.log.error("Dial-back pool task failed: {error}", { error: errorText(err) });
    }).finally(() => this.#tasks.delete(t));
    this.#tasks.add(t);
  }
}
