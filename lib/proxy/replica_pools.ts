/**
 * The private proxy's dial-back pools towards one public operator, one per public replica
 * (docs/architecture.md, "Private instances and public replicas: the private side"). The first
 * pool is unbound: it calls `<op>.openPool` without an instance and dials the first of
 * `endpoints.<op>`. The answer's `instance`, `endpoint` and `replicas` bind it to the replica
 * that answered and start a pool for every other listed replica whose endpoint is allowed, each
 * calling openPool with `{instance}`. Every later answer (refills, ticket renewals) re-reads
 * `replicas`: a new replica gets a pool, a replica missing from two answers in a row (or whose
 * openPool says it is not attached) has its pool closed with its idle dial-backs. A public proxy
 * from before replicas answers none of them: the pool stays unbound, as before.
 * @module
 */
import type { Logger } from "@logtape/logtape";
import { RpcCode, RpcError } from "../errors.ts";
import { errorText, type RateLimitedLog } from "../log.ts";
import { formatHostPort, type HostPort } from "../role.ts";
import type { Command, DataEvent } from "../dataplane/mod.ts";
import { decodeToken, TOKEN_BYTES } from "../wire/token.ts";
import { DialPool, type DialPoolStats } from "./pool_sizing.ts";
import { PoolTicket } from "./pool_tickets.ts";
import { allowedEndpoint, allowedText } from "./notices.ts";

/** A pooled dial-back closed sooner than this after its token was refused, not idle-timed out. */
const QUICK_DROP_MS = 1000;
/** A replica missing from this many openPool answers in a row has its pool closed. */
export const ABSENT_ANSWERS = 2;
/**
 * How often the replicas are asked who they are (`openPool {count: 0}`): a replica that joins
 * while the pools need no refill (an idle pool lives on its ticket for minutes) gets its pool
 * within about this long.
 */
export const PROBE_MS = 10_000;
/** An instance name (docs/settings.md, `instance`). */
const INSTANCE = /^[A-Za-z0-9._-]{1,64}$/;

/** A public replica as an openPool answer names it. */
export interface ReplicaInfo {
  readonly instance: string;
  /** Its private port, `host:port`. */
  readonly endpoint: string;
}

/** An openPool answer, checked. */
export interface OpenPoolAnswer {
  tokens: string[];
  idleTimeoutMs: number;
  ticket: PoolTicket | null;
  /** The replica that answered (absent from a public proxy from before replicas). */
  instance?: string;
  endpoint?: string;
  /** Every replica of the operator (absent as above); malformed entries are left out. */
  replicas?: ReplicaInfo[];
  /** Entries of `replicas` left out, as JSON text. */
  badReplicas: string[];
}

/** Checks an openPool answer; throws RpcError (InternalError) naming `operator` when it is not one. */
export function parseOpenPoolAnswer(operator: string, v: unknown, now: number): OpenPoolAnswer {
  const r = (typeof v === "object" && v !== null ? v : {}) as Record<string, unknown>;
  const tokens = Array.isArray(r.tokens) ? r.tokens : [null];
  const ticket = r.ticket === undefined ? null : PoolTicket.parse(r.ticket, now);
  const badText = (what: string) =>
    new RpcError(`Cannot use the openPool answer of "${operator}": ${what}`, RpcCode.InternalError);
  if (
    tokens.some((x) => decodeToken(x) === null) || !Number.isInteger(r.idle_timeout_ms) ||
    (r.ticket !== undefined && ticket === null)
  ) {
    throw badText(
      `want {tokens: [${TOKEN_BYTES} bytes of base64], idle_timeout_ms, ticket?: {id, key, expires_in_ms, cap}}`,
    );
  }
  const out: OpenPoolAnswer = {
    tokens: tokens as string[],
    idleTimeoutMs: r.idle_timeout_ms as number,
    ticket,
    badReplicas: [],
  };
  if (r.instance !== undefined) {
    if (typeof r.instance !== "string" || !INSTANCE.test(r.instance)) {
      throw badText(
        `instance ${JSON.stringify(r.instance)} must be 1 to 64 characters of [A-Za-z0-9._-]`,
      );
    }
    if (typeof r.endpoint !== "string") {
      throw badText(`endpoint ${JSON.stringify(r.endpoint)} must be host:port`);
    }
    out.instance = r.instance;
    out.endpoint = r.endpoint;
  }
  if (Array.isArray(r.replicas)) {
    out.replicas = [];
    for (const x of r.replicas) {
      const e = (typeof x === "object" && x !== null ? x : {}) as Record<string, unknown>;
      if (
        typeof e.instance === "string" && INSTANCE.test(e.instance) &&
        typeof e.endpoint === "string"
      ) {
        out.replicas.push({ instance: e.instance, endpoint: e.endpoint });
      } else out.badReplicas.push(JSON.stringify(x) ?? String(x));
    }
  }
  return out;
}

/** The pool sizes of the settings (`pool:` and `retry_ms`), read for each new pool. */
export interface PoolSizes {
  minIdle: number;
  maxIdle: number;
  idleTimeoutMs: number;
  retryMs: number;
}

/** What the pools towards one public operator need from the private proxy. */
export interface ReplicaPoolsOptions {
  /** The public operator. */
  operator: string;
  /** Its `endpoints.<operator>` (the only private ports dialled). */
  endpoints: readonly HostPort[];
  sizes(): PoolSizes;
  signal: AbortSignal;
  log: Logger;
  /** Rate-limited warnings (a ticket renewal failing). */
  refusals: RateLimitedLog;
  /** How many more connections the proxy may open now. */
  room(): number;
  /** `<operator>.openPool` with `params`, delivered to `instance` when it is given. */
  call(
    params: Record<string, unknown>,
    options: { instance?: string; signal: AbortSignal },
  ): Promise<unknown>;
  /** The IP literal of a host name (resolved on the control plane), or undefined. */
  resolve(a: HostPort): HostPort | undefined;
  /** Hands a command to the data plane (`openPooled`, `close`). */
  send(cmd: Command): void;
}

/** One public replica and the pool of dial-backs kept at it. */
export class Replica {
  /** The replica's instance name; undefined while the pool is unbound. */
  instance: string | undefined;
  /** Its private port (one of `endpoints.<operator>`). */
  endpoint: HostPort;
  /** Its pool ticket (docs/architecture.md, "Pool tickets"). */
  ticket: PoolTicket | undefined;
  /** openPool answers in a row that did not list it. */
  absent = 0;
  readonly stop = new AbortController();
  pool!: DialPool;

  constructor(instance: string | undefined, endpoint: HostPort) {
    this.instance = instance;
    this.endpoint = endpoint;
  }

  /** Its key among the operator's replicas: the instance, "" while unbound. */
  get key(): string {
    return this.instance ?? "";
  }

  /** The replica for logs and /status. */
  get label(): string {
    return this.instance ?? "any replica";
  }
}

function sameAddress(a: HostPort, b: HostPort): boolean {
  return a.hostname === b.hostname && a.port === b.port;
}

function addStats(into: DialPoolStats, s: Readonly<DialPoolStats>): void {
  for (const k of Object.keys(into) as (keyof DialPoolStats)[]) into[k] += s[k];
}

/**
 * The pools of dial-backs towards one public operator, one per replica; the sums over them (the
 * per-operator view of /metrics and the handle's `pools`), the pause of a drain, the reload.
 */
export class ReplicaPools {
  readonly replicas = new Map<string, Replica>();
  #retired: DialPoolStats = {
    pooled: 0,
    used: 0,
    dropped: 0,
    failedRefills: 0,
    refills: 0,
    ticketRefills: 0,
  };
  /** Pools of replicas closed whose tasks still run (their counts still move), with their end. */
  #closed = new Map<DialPool, Promise<void>>();
  #warned = new Set<string>();
  #paused = false;
  #probing = false;

  constructor(readonly o: ReplicaPoolsOptions, probeMs = PROBE_MS) {
    this.#add(undefined, o.endpoints[0]!);
    if (o.signal.aborted) return;
    const timer = setInterval(() => void this.probe(), probeMs);
    o.signal.addEventListener("abort", () => clearInterval(timer), { once: true });
  }

  /**
   * Asks any replica (the EPS picks one) for the replicas, without tokens (`openPool {count:
   * 0}`), and follows the answer as a refill's: a new replica gets a pool, one missing twice
   * closes. Only once a pool is bound (an unbound one learns them from its first refill), never
   * two at once, and never while paused (a drain).
   */
  async probe(): Promise<void> {
    if (this.#probing || this.#paused || this.o.signal.aborted) return;
    if (![...this.replicas.values()].some((r) => r.instance !== undefined)) return;
    this.#probing = true;
    try {
      const v = await this.o.call(
        { count: 0, idle_timeout_ms: this.o.sizes().idleTimeoutMs },
        { signal: this.o.signal },
      );
      const a = parseOpenPoolAnswer(this.o.operator, v, performance.now());
      if (a.instance === undefined || a.replicas === undefined) return;
      this.#sync(this.replicas.get(a.instance) ?? new Replica(a.instance, this.o.endpoints[0]!), a);
    } catch (err) {
      // an older public proxy refuses count 0: the refills' answers are all there is
      if (!this.o.signal.aborted) {
        this.o.log.debug("Cannot ask {operator} for its replicas: {error}", {
          operator: this.o.operator,
          error: errorText(err),
        });
      }
    } finally {
      this.#probing = false;
    }
  }

  get operator(): string {
    return this.o.operator;
  }

  /** Idle pooled dial-backs at every replica. */
  get idle(): number {
    let n = 0;
    for (const r of this.replicas.values()) n += r.pool.idle;
    return n;
  }

  /** Tokens asked for or being dialled, at every replica. */
  get opening(): number {
    let n = 0;
    for (const r of this.replicas.values()) n += r.pool.opening;
    return n;
  }

  /** The sum of the replicas' targets. */
  target(now = performance.now()): number {
    let n = 0;
    for (const r of this.replicas.values()) n += r.pool.target(now);
    return n;
  }

  /** The counters summed over the replicas, closed ones included. */
  get stats(): Readonly<DialPoolStats> {
    const s = { ...this.#retired };
    for (const r of this.replicas.values()) addStats(s, r.pool.stats);
    for (const p of this.#closed.keys()) addStats(s, p.stats);
    return s;
  }

  /** The moving average of one refill's duration over the replicas (ms). */
  get refillMs(): number {
    const all = [...this.replicas.values()];
    return all.reduce((n, r) => n + r.pool.refillMs, 0) / Math.max(1, all.length);
  }

  get paused(): boolean {
    return this.#paused;
  }

  pause(): void {
    this.#paused = true;
    for (const r of this.replicas.values()) r.pool.pause();
  }

  resume(): void {
    this.#paused = false;
    for (const r of this.replicas.values()) r.pool.resume();
  }

  refill(): void {
    for (const r of this.replicas.values()) r.pool.refill();
  }

  /** New sizes (a reload). */
  reconfigure(sizes: PoolSizes): void {
    for (const r of this.replicas.values()) r.pool.reconfigure(sizes);
  }

  /** A client came by notice through the replica whose private port is `endpoint`. */
  arrival(endpoint: HostPort | undefined): void {
    const all = [...this.replicas.values()];
    const r = (endpoint && all.find((x) => sameAddress(x.endpoint, endpoint))) ?? all[0];
    r?.pool.arrival();
  }

  /** Follows the data plane's events about this operator's pooled dial-backs. */
  onEvent(e: DataEvent): void {
    if (
      e.type !== "poolIdle" && e.type !== "poolUsed" && e.type !== "poolDropped" &&
      e.type !== "refused"
    ) return;
    const r = this.replicas.get(e.instance ?? "");
    if (r === undefined) {
      // one still being dialled when its replica's pool closed
      if (e.type === "poolIdle") this.#closeIdle(e.instance);
      return;
    }
    // closed at once after its token: the replica does not know the ticket (it restarted) or
    // its pool is full; the next refill asks openPool again
    if (e.type === "poolDropped" && e.why !== "failed" && (e.idleMs ?? Infinity) < QUICK_DROP_MS) {
      r.ticket = undefined;
    }
    r.pool.onEvent(e);
  }

  /** Resolves when every pool's tasks ended (after the signal aborted). */
  async settled(): Promise<void> {
    await Promise.all([...this.replicas.values()].map((r) => r.pool.settled()));
    await Promise.all(this.#closed.values());
  }

  #add(instance: string | undefined, endpoint: HostPort): Replica {
    const r = new Replica(instance, endpoint);
    const sizes = this.o.sizes();
    r.pool = new DialPool({
      operator: this.o.operator,
      replica: r.label,
      minIdle: sizes.minIdle,
      maxIdle: sizes.maxIdle,
      idleTimeoutMs: sizes.idleTimeoutMs,
      retryMs: sizes.retryMs,
      signal: AbortSignal.any([this.o.signal, r.stop.signal]),
      log: this.o.log,
      room: this.o.room,
      open: (count) => this.#open(r, count),
      fromTicket: (now) =>
        r.ticket !== undefined && r.ticket.usable(now) && !r.ticket.renewDue(now),
      dial: (tokens, idleTimeoutMs) => this.#dial(r, tokens, idleTimeoutMs),
    });
    if (this.#paused) r.pool.pause();
    this.replicas.set(r.key, r);
    return r;
  }

  #dial(r: Replica, tokens: string[], idleTimeoutMs: number): void {
    const operator = this.o.operator;
    const endpoint = this.o.resolve(r.endpoint);
    const instance = r.instance !== undefined ? { instance: r.instance } : {};
    if (endpoint === undefined) {
      for (const _ of tokens) {
        r.pool.onEvent({
          type: "poolDropped",
          operator,
          ...instance,
          why: "failed",
          detail: `cannot resolve ${formatHostPort(r.endpoint)}`,
        });
      }
      return;
    }
    this.o.send({ type: "openPooled", operator, ...instance, endpoint, tokens, idleTimeoutMs });
  }

  /**
   * Tokens for `count` pooled dial-backs at replica `r` (docs/architecture.md, "Pool tickets"):
   * made from its ticket while that is young, else from an openPool call (which also renews the
   * ticket and re-reads the replicas); when the call fails, from the ticket while it is valid.
   */
  async #open(
    r: Replica,
    count: number,
  ): Promise<{ tokens: string[]; idleTimeoutMs: number; fromTicket?: boolean }> {
    const operator = this.o.operator;
    const idle = this.o.sizes().idleTimeoutMs;
    const t = r.ticket;
    if (t !== undefined && t.usable(performance.now()) && !t.renewDue(performance.now())) {
      return { tokens: t.tokens(count), idleTimeoutMs: idle, fromTicket: true };
    }
    const signal = r.pool.o.signal;
    let v: unknown;
    try {
      v = await this.o.call(
        { count, idle_timeout_ms: idle, ticket: true },
        { ...(r.instance !== undefined ? { instance: r.instance } : {}), signal },
      );
    } catch (err) {
      if (signal.aborted) throw err;
      if (r.instance !== undefined && isGone(err)) {
        // the replica left the EPS: its ticket is no use at another one
        r.ticket = undefined;
        if (++r.absent >= ABSENT_ANSWERS) this.#gone(r, "not attached to the EPS any more");
        throw err;
      }
      if (t === undefined || !t.usable(performance.now())) throw err;
      this.o.refusals.warn(
        `ticket-${operator}@${r.label}`,
        "Cannot renew the pool ticket of {operator} at {replica} ({count} since last report): {error}; the pool refills with the old one until it expires",
        { operator, replica: r.label, error: errorText(err) },
      );
      return { tokens: t.tokens(count), idleTimeoutMs: idle, fromTicket: true };
    }
    const a = parseOpenPoolAnswer(operator, v, performance.now());
    const refused = this.#bind(r, a);
    r.absent = 0;
    this.#sync(r, a); // also when the answering replica is refused: the others may be allowed
    if (refused !== undefined) throw refused;
    if (a.ticket !== null) r.ticket = a.ticket;
    return { tokens: a.tokens, idleTimeoutMs: a.idleTimeoutMs };
  }

  /**
   * The answering replica: binds an unbound pool, follows a moved endpoint; returns the error to
   * fail the refill with when the answer cannot be used at `r`.
   */
  #bind(r: Replica, a: OpenPoolAnswer): RpcError | undefined {
    if (a.instance === undefined) return; // a public proxy from before replicas: stay unbound
    const operator = this.o.operator;
    if (r.instance !== undefined && r.instance !== a.instance) {
      return new RpcError(
        `Cannot use the openPool answer of "${operator}": it came from replica "${a.instance}", not "${r.instance}"`,
        RpcCode.InternalError,
      );
    }
    const endpoint = allowedEndpoint(a.endpoint, this.o.endpoints);
    if (endpoint === undefined) {
      this.#warnEndpoint(a.instance, a.endpoint!);
      return new RpcError(
        `Cannot pool at replica "${a.instance}" of "${operator}": its endpoint ${
          JSON.stringify(a.endpoint)
        } is not ${allowedText(this.o.endpoints)} (endpoints.${operator})`,
        RpcCode.NotPermitted,
      );
    }
    r.endpoint = endpoint;
    if (r.instance !== undefined) return;
    const older = this.replicas.get(a.instance);
    if (older !== undefined) this.#close(older, "a second pool bound to it");
    this.replicas.delete(r.key);
    r.instance = a.instance;
    r.pool.o.replica = r.label;
    this.replicas.set(r.key, r);
    this.o.log.info("Dial-back pool for {operator} bound to replica {replica} at {endpoint}", {
      operator,
      replica: r.instance,
      endpoint: formatHostPort(endpoint),
    });
  }

  /** Follows an answer's `replicas`: new ones get a pool, ones missing twice in a row close. */
  #sync(from: Replica, a: OpenPoolAnswer): void {
    const operator = this.o.operator;
    for (const bad of a.badReplicas) {
      this.o.refusals.warn(
        `replicas-${operator}`,
        "Ignoring a replica in the openPool answer of {operator} ({count} since last report): {entry} is not {instance, endpoint: host:port}",
        { operator, entry: bad },
      );
    }
    if (a.replicas === undefined) return;
    const listed = new Set(a.replicas.map((x) => x.instance));
    if (from.instance !== undefined) listed.add(from.instance);
    for (const x of a.replicas) {
      const known = this.replicas.get(x.instance);
      if (known !== undefined) {
        known.absent = 0;
        continue;
      }
      const endpoint = allowedEndpoint(x.endpoint, this.o.endpoints);
      if (endpoint === undefined) {
        this.#warnEndpoint(x.instance, x.endpoint);
        continue;
      }
      const r = this.#add(x.instance, endpoint);
      this.o.log.info("Dial-back pool for {operator} at new replica {replica} ({endpoint})", {
        operator,
        replica: x.instance,
        endpoint: formatHostPort(endpoint),
      });
      r.pool.refill();
    }
    for (const r of [...this.replicas.values()]) {
      if (r.instance === undefined || listed.has(r.instance)) continue;
      if (++r.absent >= ABSENT_ANSWERS) {
        this.#gone(r, `missing from ${ABSENT_ANSWERS} openPool answers in a row`);
      }
    }
  }

  /** One warning per replica whose endpoint is not allowed. */
  #warnEndpoint(instance: string, endpoint: string): void {
    const key = `${instance} ${endpoint}`;
    if (this.#warned.has(key)) return;
    this.#warned.add(key);
    this.o.log.warn(
      "No dial-back pool at replica {replica} of {operator}: its endpoint {endpoint} is not in endpoints.{operator} ({allowed})",
      {
        replica: instance,
        operator: this.o.operator,
        endpoint: JSON.stringify(endpoint),
        allowed: this.o.endpoints.map(formatHostPort).join(", "),
      },
    );
  }

  /**
   * A replica went away: its pool closes; the last one is replaced by an unbound pool (the only
   * way to learn the replicas again).
   */
  #gone(r: Replica, why: string): void {
    const last = [...this.replicas.values()].every((x) => x === r);
    this.#close(r, why);
    if (last) {
      const fresh = this.#add(undefined, this.o.endpoints[0]!);
      fresh.pool.refill();
    }
  }

  #close(r: Replica, why: string): void {
    if (this.replicas.get(r.key) !== r) return;
    this.replicas.delete(r.key);
    r.stop.abort();
    this.#closeIdle(r.instance);
    const pool = r.pool;
    this.#closed.set(
      pool,
      pool.settled().finally(() => {
        addStats(this.#retired, pool.stats);
        this.#closed.delete(pool);
      }),
    );
    this.o.log.info("Closed the dial-back pool for {operator} at replica {replica}: {why}", {
      operator: this.o.operator,
      replica: r.label,
      why,
    });
  }

  #closeIdle(instance: string | undefined): void {
    if (instance === undefined) return;
    this.o.send({ type: "close", conns: [], idleOf: [`${this.o.operator}@${instance}`] });
  }
}

/** Whether a call failed because the instance it named is not attached (contract: -32003). */
function isGone(err: unknown): boolean {
  return err instanceof RpcError && err.code === RpcCode.Unavailable &&
    err.message.includes("is not attached");
}
