/**
 * Notices (docs/architecture.md, "The control plane"): when the data plane says a client waits
 * for a dial-back, the public proxy calls `<operator>.incomingConnection` through its EPS. A
 * burst is signalled in batches: up to {@linkcode MAX_IN_FLIGHT} calls per operator go at once,
 * and the clients that arrive meanwhile wait (in order) and go in one call of up to
 * {@linkcode MAX_BATCH} — `{endpoint, connections: [{domain, token, conn, source, destination}]}` — when a call
 * returns. A single waiting client goes in the original form `{domain, token, endpoint, conn}`.
 * `conn` is the client's connection id (docs/architecture.md, "Connection ids"); `source` and
 * `destination` (`ip:port`, in both forms) are the client's address and the one it connected to,
 * for the PROXY protocol header the private proxy may write (docs/architecture.md, "The PROXY
 * protocol").
 *
 * When a call fails, or the answer refuses a connection, no dial-back will come: the data plane
 * is told at once (`noticeFailed`) and refuses the client with alert internal_error instead of
 * holding it until its dial-back deadline — or, when the name has another private instance to
 * try, re-dispatches it there (`retry`; docs/architecture.md, "Re-dispatch").
 *
 * Several instances of one operator (docs/architecture.md, "Several private instances"): each
 * notice names one (`CallOptions.instance`): of the route's instances not marked absent, the one
 * with the fewest notices in flight plus live splices (ties: round robin); a re-dispatch prefers
 * one not tried yet for that client. Queues and batches are per (operator, instance). A call
 * answered -32003 (the instance is not attached) marks the instance absent until it announces
 * or opens a pool again; when every instance is absent they are tried anyway.
 * @module
 */
import type { Logger } from "@logtape/logtape";
import { RpcCode, RpcError } from "../errors.ts";
import { errorText } from "../log.ts";
import type { EpsClient } from "../eps/client.ts";
import type { DataEvent, DataPlane } from "../dataplane/mod.ts";
import type { Counters } from "./counters.ts";
import type { NoticeRequest } from "./public_events.ts";

/** Notice calls in flight per operator before clients are batched. */
export const MAX_IN_FLIGHT = 8;
/** Clients in one batched notice. */
export const MAX_BATCH = 256;
/** Instances marked absent per operator, at most (the oldest mark goes first). */
const MAX_ABSENT = 256;

/** One client in a notice's params (docs/architecture.md, "The PROXY protocol"). */
function entry(n: NoticeRequest): Record<string, string> {
  const e: Record<string, string> = { domain: n.domain, token: n.token, conn: n.connId };
  if (n.local !== undefined) {
    e.source = n.client;
    e.destination = n.local;
  }
  return e;
}

/** The notices of one (operator, instance): calls in flight and the clients queued behind them. */
interface Queue {
  readonly operator: string;
  /** Undefined: the operator's calls name no instance (the route names none). */
  readonly instance: string | undefined;
  inFlight: number;
  /** Clients in the calls in flight. */
  carried: number;
  waiting: Map<number, NoticeRequest>;
}

/** A waiting client's notices so far. */
interface Client {
  readonly operator: string;
  /**
   * The instance of each attempt whose notice was sent (index attempt - 1; a hole: an attempt
   * not sent, see `send`); undefined: none named.
   */
  readonly tried: (string | undefined)[];
  /** The latest attempt the data plane announced (its current token). */
  attempt: number;
  /** The attempt of the latest notice sent. */
  lastSent: number;
  /** The queue it waits in, until its call goes. */
  queued: Queue | undefined;
  /** The last failed notice's error (a re-dispatch's log line names it). */
  lastError: string | undefined;
  /**
   * Instances its current notice found not attached: nothing reached them, so the same notice
   * (same token, same attempt) went on to another instance without spending an attempt.
   */
  skipped: Set<string> | undefined;
}

/** Sends the notices of one public proxy. */
export class Notifier {
  #endpoint = "";
  #plane: DataPlane | undefined;
  #queues = new Map<string, Queue>();
  #clients = new Map<number, Client>();
  /** Instances a call found not attached (-32003), per operator. */
  #absent = new Map<string, Set<string>>();
  /** Live splices per (operator, instance), and each splice's key. */
  #splices = new Map<string, number>();
  #spliceOf = new Map<number, string>();
  #rr = new Map<string, number>();
  /** Notice calls sent, and how many clients they carried (for tests and the log). */
  calls = 0;
  /** Notices by result, one per client: "ok", the JSON-RPC error code, or "refused" (a batch's). */
  readonly results = new Map<string, number>();
  batched = 0;
  /** Re-dispatches by reason (`timer`, `failed`), for tests and the log. */
  readonly redispatches = new Map<string, number>();
  /** What a re-dispatch's log line says of the timer; a reload changes them. */
  redispatchAfterMs = 1000;
  /** Notices one client may get (`max_dispatches`): a failed last one is not retried. */
  maxDispatches = 1;

  constructor(
    readonly eps: EpsClient,
    /** Deadline of a notice call; a reload changes it for the calls from then on. */
    public timeoutMs: number,
    readonly signal: AbortSignal,
    readonly counters: Counters,
    readonly log?: Logger,
    /**
     * A call found `instance` of `operator` not attached (docs/architecture.md, "Several private
     * instances"): the public proxy may drop the announcements it left behind.
     */
    readonly onGone?: (operator: string, instance: string) => void,
  ) {}

  /** The endpoint notices name, and the data plane to tell of failed ones (again on a reload). */
  start(endpoint: string, plane: DataPlane): void {
    this.#endpoint = endpoint;
    this.#plane = plane;
  }

  /** A reload changed the endpoint: notices from now on name it. */
  setEndpoint(endpoint: string): void {
    this.#endpoint = endpoint;
  }

  /** `instance` of `operator` announced or opened a pool: it is there again. */
  present(operator: string, instance: string | undefined): void {
    if (instance === undefined) return;
    const absent = this.#absent.get(operator);
    absent?.delete(instance);
    if (absent?.size === 0) this.#absent.delete(operator);
  }

  /** Whether a call found `instance` of `operator` not attached (it is probably gone). */
  isAbsent(operator: string, instance: string): boolean {
    return this.#absent.get(operator)?.has(instance) ?? false;
  }

  /** Live splices of `operator`'s `instance` (by notice or from its pool). */
  splicesOf(operator: string, instance: string): number {
    return this.#splices.get(key(operator, instance)) ?? 0;
  }

  /** A client waits for its dial-back: notify an instance of its operator now, or with the next batch. */
  send(n: NoticeRequest): void {
    let c = this.#clients.get(n.conn);
    if (c === undefined) {
      this.#clients.set(
        n.conn,
        c = {
          operator: n.operator,
          tried: [],
          attempt: 1,
          lastSent: 0,
          queued: undefined,
          lastError: undefined,
          skipped: undefined,
        },
      );
    }
    const attempt = n.attempt ?? 1;
    const previous = c.tried[c.lastSent - 1];
    c.attempt = attempt;
    if (attempt > 1 && (n.why ?? "timer") === "timer" && !this.#untried(n, c)) {
      // no other instance: a second notice to the one that has it would only double the work of
      // a private side that is slow (overload), not serve the client sooner; it keeps waiting
      // for the dial-back already asked for (its token stays valid), or for its notice still
      // queued behind the calls in flight (a burst: found by tests/burst_test.ts)
      return;
    }
    if (c.queued !== undefined) {
      // re-dispatched before its notice went: that notice never goes
      c.queued.waiting.delete(n.conn);
      c.queued = undefined;
      this.#plane?.send({ type: "noticeFailed", conn: n.conn, attempt: attempt - 1 });
    }
    c.skipped = undefined;
    const instance = this.#pick(n, c);
    c.tried[attempt - 1] = instance;
    c.lastSent = attempt;
    if (attempt > 1) this.#redispatched(n, c, previous, instance);
    this.#enqueue(n, c, instance);
  }

  /** Sends `n`'s notice to `instance` now, or queues it behind that instance's calls in flight. */
  #enqueue(n: NoticeRequest, c: Client, instance: string | undefined): void {
    const k = key(n.operator, instance ?? "");
    let q = this.#queues.get(k);
    if (q === undefined) {
      this.#queues.set(
        k,
        q = { operator: n.operator, instance, inFlight: 0, carried: 0, waiting: new Map() },
      );
    }
    if (q.inFlight >= MAX_IN_FLIGHT) {
      q.waiting.set(n.conn, n);
      c.queued = q;
      return;
    }
    this.#call(q, [n]);
  }

  /**
   * The instance for a notice: of the route's, those not absent (all when every one is), and
   * on a re-dispatch those not tried for this client when any; the fewest notices in flight
   * plus live splices, ties in turn. Undefined when the route names none.
   */
  #pick(n: NoticeRequest, c: Client): string | undefined {
    const named = (n.instances ?? []).filter((i) => i !== "");
    if (named.length === 0) return undefined;
    const here = named.filter((i) => !this.isAbsent(n.operator, i) && !c.skipped?.has(i));
    let pool = here.length > 0 ? here : named;
    const untried = pool.filter((i) => !c.tried.includes(i));
    if (untried.length > 0 && c.tried.length > 0) pool = untried;
    const turn = this.#rr.get(n.operator) ?? 0;
    this.#rr.set(n.operator, turn + 1);
    let best: string | undefined;
    let bestLoad = Infinity;
    for (let j = 0; j < pool.length; j++) {
      const i = pool[(turn + j) % pool.length]!;
      const load = this.#inFlight(n.operator, i) + this.splicesOf(n.operator, i);
      if (load < bestLoad) {
        best = i;
        bestLoad = load;
      }
    }
    return best;
  }

  /** Whether the route has an instance neither absent nor tried for this client. */
  #untried(n: NoticeRequest, c: Client): boolean {
    return (n.instances ?? []).some((i) =>
      i !== "" && !this.isAbsent(n.operator, i) && !c.tried.includes(i)
    );
  }

  #inFlight(operator: string, instance: string): number {
    const q = this.#queues.get(key(operator, instance));
    return q === undefined ? 0 : q.carried + q.waiting.size;
  }

  /** One log line and one count per re-dispatch, naming both instances and the reason. */
  #redispatched(
    n: NoticeRequest,
    c: Client,
    from: string | undefined,
    to: string | undefined,
  ): void {
    const why = n.why ?? "timer";
    this.redispatches.set(why, (this.redispatches.get(why) ?? 0) + 1);
    this.log?.info(
      "conn {conn}: Re-dispatched {client} for {domain} of {operator} from instance {from} to {to} (notice {attempt}): {reason}",
      {
        conn: n.connId,
        client: n.client,
        domain: n.domain,
        operator: n.operator,
        from: from ?? "-",
        to: to ?? "-",
        attempt: n.attempt,
        reason: why === "timer"
          ? `no dial-back within redispatch_after_ms (${this.redispatchAfterMs} ms)`
          : why === "pooled"
          ? "a pooled dial-back taken for it closed before answering"
          : `the notice failed: ${c.lastError ?? "refused"}`,
      },
    );
  }

  /** Follows the data plane's events: splices per instance, and clients that are gone. */
  onEvent(e: DataEvent): void {
    switch (e.type) {
      case "piped": {
        const c = this.#clients.get(e.conn);
        this.#clients.delete(e.conn);
        // served (a re-dispatch may take a pooled dial-back): a queued notice of it never goes
        c?.queued?.waiting.delete(e.conn);
        const instance = e.via === "pool" ? e.instance : c?.tried[(e.attempt ?? 1) - 1];
        if (instance === undefined) return;
        const k = key(e.operator, instance);
        bump(this.#splices, k, 1);
        this.#spliceOf.set(e.conn, k);
        return;
      }
      case "ended": {
        const k = this.#spliceOf.get(e.conn);
        if (k === undefined) return;
        this.#spliceOf.delete(e.conn);
        bump(this.#splices, k, -1);
        return;
      }
      case "refused":
        if (e.conn !== undefined) this.forget(e.conn, e.operator);
        return;
    }
  }

  /** The client is gone (refused, expired): no notice for it any more. */
  forget(conn: number, _operator?: string | undefined): void {
    const c = this.#clients.get(conn);
    if (c === undefined) return;
    this.#clients.delete(conn);
    c.queued?.waiting.delete(conn);
  }

  #call(q: Queue, batch: NoticeRequest[]): void {
    q.inFlight++;
    q.carried += batch.length;
    this.calls++;
    if (batch.length > 1) this.batched += batch.length;
    for (const n of batch) {
      const c = this.#clients.get(n.conn);
      if (c !== undefined) c.queued = undefined;
    }
    const params = batch.length === 1
      ? { ...entry(batch[0]!), endpoint: this.#endpoint }
      : { endpoint: this.#endpoint, connections: batch.map(entry) };
    this.eps.call<{ results?: unknown }>(`${q.operator}.incomingConnection`, params, {
      timeoutMs: this.timeoutMs,
      signal: this.signal,
      ...(q.instance !== undefined ? { instance: q.instance } : {}),
    }).then((answer) => {
      const results = Array.isArray(answer?.results) ? answer.results : undefined;
      if (batch.length === 1 || results === undefined) return this.#count("ok", batch.length);
      batch.forEach((n, i) => {
        const r = results[i] as { ok?: unknown; error?: unknown } | undefined;
        if (r?.ok === true) return this.#count("ok");
        this.#count("refused");
        this.#failed(n, new Error(String(r?.error ?? "refused")));
      });
    }, (err) => {
      this.#count(err instanceof RpcError ? String(err.code) : "error", batch.length);
      if (q.instance !== undefined && notAttached(err, q.instance)) {
        // probably gone: no notice goes there until it announces or opens a pool again
        let absent = this.#absent.get(q.operator);
        if (absent === undefined) this.#absent.set(q.operator, absent = new Set());
        absent.add(q.instance);
        // bounded: an instance that never comes back (a new name per restart) is forgotten
        if (absent.size > MAX_ABSENT) absent.delete(absent.values().next().value!);
        this.onGone?.(q.operator, q.instance);
      }
      for (const n of batch) {
        if (q.instance === undefined || !notAttached(err, q.instance) || !this.#failover(n, q)) {
          this.#failed(n, err);
        }
      }
    }).finally(() => {
      q.inFlight--;
      q.carried -= batch.length;
      this.#next(q);
      // an idle queue goes (instance names come and go with restarts)
      if (q.inFlight === 0 && q.waiting.size === 0) {
        this.#queues.delete(key(q.operator, q.instance ?? ""));
      }
    });
  }

  /**
   * The notice reached no instance (the one named is not attached): the same notice goes to
   * another instance of the route that is neither absent nor tried for this client, without a
   * new token or attempt — bounded by the route's instances. False when there is none.
   */
  #failover(n: NoticeRequest, q: Queue): boolean {
    const c = this.#clients.get(n.conn);
    if (c === undefined || this.signal.aborted) return false;
    const attempt = n.attempt ?? 1;
    if (c.lastSent > attempt) return false; // a newer notice went meanwhile
    (c.skipped ??= new Set()).add(q.instance!);
    const named = (n.instances ?? []).filter((i) => i !== "");
    const open = named.filter((i) =>
      !this.isAbsent(n.operator, i) && !c.skipped!.has(i) && !c.tried.includes(i)
    );
    if (open.length === 0) return false;
    const next = this.#pick(n, c);
    if (next === undefined || c.skipped.has(next)) return false;
    c.tried[attempt - 1] = next;
    this.log?.debug(
      "conn {conn}: Notice for {domain} of {operator} goes to instance {to}: {from} is not attached",
      { conn: n.connId, domain: n.domain, operator: n.operator, from: q.instance, to: next },
    );
    this.#enqueue(n, c, next);
    return true;
  }

  #count(result: string, n = 1): void {
    this.results.set(result, (this.results.get(result) ?? 0) + n);
  }

  /** A call returned: the clients that waited meanwhile go in one call. */
  #next(q: Queue): void {
    if (this.signal.aborted || q.waiting.size === 0) return;
    const batch: NoticeRequest[] = [];
    for (const [conn, n] of q.waiting) {
      batch.push(n);
      q.waiting.delete(conn);
      if (batch.length === MAX_BATCH) break;
    }
    this.#call(q, batch);
  }

  #failed(n: NoticeRequest, err: unknown): void {
    const c = this.#clients.get(n.conn);
    const attempt = n.attempt ?? 1;
    // a newer notice went meanwhile (a timer re-dispatch): the data plane ignores this failure
    const superseded = c !== undefined && c.lastSent > attempt;
    // another instance to try: the data plane re-dispatches the client there
    const others = (n.instances ?? []).filter((i) => i !== "" && !(c?.tried.includes(i) ?? true));
    // the data plane's current attempt: later than this notice's when timer re-dispatches found
    // no other instance and sent nothing
    const current = superseded ? attempt : (c?.attempt ?? attempt);
    const retry = !superseded && others.length > 0 && current < this.maxDispatches;
    if (c !== undefined) c.lastError = errorText(err);
    // a superseded notice fails alone (its token goes; the newer notice still may serve the
    // client); the last notice sent fails with the attempts after it that were never sent, so
    // the data plane refuses the client at once, or re-dispatches it, unless an older notice may
    // still bring its dial-back
    for (let a = attempt; a < current; a++) {
      this.#plane?.send({ type: "noticeFailed", conn: n.conn, attempt: a });
    }
    this.#plane?.send({
      type: "noticeFailed",
      conn: n.conn,
      attempt: current,
      ...(retry ? { retry: true } : {}),
    });
    if (this.signal.aborted || retry || superseded) return;
    const why = new RpcError(
      `Cannot notify "${n.operator}" of a connection for "${n.domain}": ${errorText(err)}`,
      err instanceof RpcError ? err.code : -32603,
    );
    this.counters.warn(
      "notice",
      "Closed clients: notice failed ({count} since last report), last conn {conn} from {client}: {error}",
      { conn: n.connId, client: n.client, error: why.message },
    );
  }
}

/**
 * Whether the EPS answered that `instance` is not attached (-32003 naming it, docs/architecture.md,
 * "Several private instances"); the client's own -32003 (its link to the EPS down) names none.
 */
function notAttached(err: unknown, instance: string): boolean {
  return err instanceof RpcError && err.code === RpcCode.Unavailable &&
    err.message.includes(`instance "${instance}"`) && err.message.includes("not attached");
}

function key(operator: string, instance: string): string {
  return `${operator}\n${instance}`;
}

function bump(m: Map<string, number>, k: string, by: number): void {
  const n = (m.get(k) ?? 0) + by;
  if (n <= 0) m.delete(k);
  else m.set(k, n);
}
