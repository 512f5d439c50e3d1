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
 * holding it until its dial-back deadline.
 * @module
 */
import { RpcError } from "../errors.ts";
import { errorText } from "../log.ts";
import type { EpsClient } from "../eps/client.ts";
import type { DataPlane } from "../dataplane/mod.ts";
import type { Counters } from "./counters.ts";
import type { NoticeRequest } from "./public_events.ts";

/** Notice calls in flight per operator before clients are batched. */
export const MAX_IN_FLIGHT = 8;
/** Clients in one batched notice. */
export const MAX_BATCH = 256;

/** One client in a notice's params (docs/architecture.md, "The PROXY protocol"). */
function entry(n: NoticeRequest): Record<string, string> {
  const e: Record<string, string> = { domain: n.domain, token: n.token, conn: n.connId };
  if (n.local !== undefined) {
    e.source = n.client;
    e.destination = n.local;
  }
  return e;
}

interface OperatorQueue {
  inFlight: number;
  waiting: Map<number, NoticeRequest>;
}

/** Sends the notices of one public proxy. */
export class Notifier {
  #endpoint = "";
  #plane: DataPlane | undefined;
  #queues = new Map<string, OperatorQueue>();
  /** Notice calls sent, and how many clients they carried (for tests and the log). */
  calls = 0;
  /** Notices by result, one per client: "ok", the JSON-RPC error code, or "refused" (a batch's). */
  readonly results = new Map<string, number>();
  batched = 0;

  constructor(
    readonly eps: EpsClient,
    /** Deadline of a notice call; a reload changes it for the calls from then on. */
    public timeoutMs: number,
    readonly signal: AbortSignal,
    readonly counters: Counters,
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

  /** A client waits for its dial-back: notify its operator now, or with the next batch. */
  send(n: NoticeRequest): void {
    let q = this.#queues.get(n.operator);
    if (q === undefined) this.#queues.set(n.operator, q = { inFlight: 0, waiting: new Map() });
    if (q.inFlight >= MAX_IN_FLIGHT) {
      q.waiting.set(n.conn, n);
      return;
    }
    this.#call(n.operator, q, [n]);
  }

  /** The client is gone (refused, expired): no notice for it any more. */
  forget(conn: number, operator: string | undefined): void {
    if (operator !== undefined) this.#queues.get(operator)?.waiting.delete(conn);
  }

  #call(operator: string, q: OperatorQueue, batch: NoticeRequest[]): void {
    q.inFlight++;
    this.calls++;
    if (batch.length > 1) this.batched += batch.length;
    const params = batch.length === 1
      ? { ...entry(batch[0]!), endpoint: this.#endpoint }
      : { endpoint: this.#endpoint, connections: batch.map(entry) };
    this.eps.call<{ results?: unknown }>(`${operator}.incomingConnection`, params, {
      timeoutMs: this.timeoutMs,
      signal: this.signal,
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
      for (const n of batch) this.#failed(n, err);
    }).finally(() => {
      q.inFlight--;
      this.#next(operator, q);
    });
  }

  #count(result: string, n = 1): void {
    this.results.set(result, (this.results.get(result) ?? 0) + n);
  }

  /** A call returned: the clients that waited meanwhile go in one call. */
  #next(operator: string, q: OperatorQueue): void {
    if (this.signal.aborted || q.waiting.size === 0) return;
    const batch: NoticeRequest[] = [];
    for (const [conn, n] of q.waiting) {
      batch.push(n);
      q.waiting.delete(conn);
      if (batch.length === MAX_BATCH) break;
    }
    this.#call(operator, q, batch);
  }

  #failed(n: NoticeRequest, err: unknown): void {
    // no dial-back will come: let the client go now, not at the dial-back deadline
    this.#plane?.send({ type: "noticeFailed", conn: n.conn });
    if (this.signal.aborted) return;
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
