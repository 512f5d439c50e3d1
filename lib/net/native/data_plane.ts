/**
 * The main thread's handle on the data-plane worker (data_plane_worker.ts): hands a spliced pair
 * of native sockets over, and resolves the splice when the worker reports its end.
 * @module
 */
import type { SpliceOptions, SpliceResult } from "../splice.ts";
import { errnoText, socketError } from "./libc.ts";
import {
  HEAD,
  OP_KILL,
  OP_SPLICE,
  OP_STOP,
  R_ABORTED,
  R_EOF,
  R_READ,
  R_WATCH,
  REPORT_BYTES,
  REPORT_INTS,
  reportAt,
  RHEAD,
  RING_BYTES,
  RING_SLOTS,
  RTAIL,
  SLEEPING,
  slotAt,
  TAIL,
  type WorkerInit,
} from "./data_plane_layout.ts";
import type { NativeConn, Reactor } from "./reactor.ts";

interface Live {
  names: readonly [string, string];
  resolve(r: SpliceResult): void;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
}

const DEFAULT_NAMES: readonly [string, string] = ["a", "b"];
/** Splice ids are positive int32s (the command ring holds them) and wrap after this one. */
const MAX_ID = 0x7fff_fff0;

/**
 * The id for the next splice, from `next` on: one still `live` (a connection that outlived 2^31
 * splices) is skipped, else both splices would share a report and one promise never resolved.
 */
export function nextSpliceId(next: number, live: { has(id: number): boolean }): number {
  let id = next > MAX_ID ? 1 : next;
  while (live.has(id)) id = id >= MAX_ID ? 1 : id + 1;
  return id;
}

/** How often ends of splices are collected when the reactor has nothing to do. */
const POLL_MS = 50;

/** One worker thread that copies the bytes of every spliced pair of a role. */
export class DataPlane {
  readonly #worker: Worker;
  readonly #ring: Int32Array;
  readonly #rhdr: Int32Array;
  readonly #rdata: Float64Array;
  #pollTimer: ReturnType<typeof setInterval> | undefined;
  readonly #reactor: Reactor;
  readonly #wakeFd: number;
  readonly #live = new Map<number, Live>();
  readonly #wakeBuf = new BigUint64Array([1n]);
  #overflow: number[] = [];
  #overflowTimer: ReturnType<typeof setTimeout> | undefined;
  #nextId = 1;
  #stopped: Promise<void>;
  #closed = false;
  /** The worker died: splices are refused (ended at once). */
  #failed = false;

  private constructor(
    reactor: Reactor,
    worker: Worker,
    ring: Int32Array,
    reports: SharedArrayBuffer,
    wakeFd: number,
  ) {
    this.#reactor = reactor;
    this.#worker = worker;
    this.#ring = ring;
    this.#rhdr = new Int32Array(reports, 0, 2);
    this.#rdata = new Float64Array(reports);
    this.#wakeFd = wakeFd;
    let stopped!: () => void;
    this.#stopped = new Promise((resolve) => (stopped = resolve));
    worker.onmessage = (e: MessageEvent) => {
      const m = e.data as { type: string; reports?: number[]; error?: string };
      if (m.type === "done") this.#settle(m.reports!);
      else if (m.type === "stopped" || m.type === "failed") {
        this.poll();
        if (m.type === "failed") {
          this.#failed = true; // nobody reads the ring any more: later splices end at once
          this.#failAll(`data plane failed: ${m.error}`);
        }
        stopped();
      }
    };
    worker.onerror = (e: ErrorEvent) => {
      e.preventDefault();
      this.#failed = true;
      this.#failAll(`data plane failed: ${e.message}`);
      stopped();
    };
  }

  /** Starts the worker; resolves once its loop runs. */
  static async start(reactor: Reactor): Promise<DataPlane> {
    const libc = reactor.libc;
    const wakeFd = libc.sym.eventfd(0, 0o4000 | 0o2000000);
    if (wakeFd < 0) throw socketError(libc.errno(), "Cannot create an eventfd");
    const sab = new SharedArrayBuffer(RING_BYTES);
    const reports = new SharedArrayBuffer(REPORT_BYTES);
    const worker = new Worker(new URL("./data_plane_worker.ts", import.meta.url), {
      type: "module",
    });
    const ready = new Promise<void>((resolve, reject) => {
      worker.onmessage = (e: MessageEvent) => {
        const m = e.data as { type: string; error?: string };
        if (m.type === "ready") resolve();
        else reject(new Error(`Cannot start the data plane: ${m.error ?? m.type}`));
      };
      worker.onerror = (e: ErrorEvent) => {
        e.preventDefault();
        reject(new Error(`Cannot start the data plane: ${e.message}`));
      };
    });
    worker.postMessage({ sab, reports, wakeFd } satisfies WorkerInit);
    try {
      await ready;
    } catch (err) {
      worker.terminate();
      libc.sym.close(wakeFd);
      throw err;
    }
    return new DataPlane(reactor, worker, new Int32Array(sab), reports, wakeFd);
  }

  /** Pairs whose splice has not ended yet. */
  get live(): number {
    return this.#live.size;
  }

  #push(op: number, id: number, fdA: number, fdB: number): void {
    if (this.#overflow.length > 0 || !this.#put(op, id, fdA, fdB)) {
      this.#overflow.push(op, id, fdA, fdB);
      this.#overflowTimer ??= setTimeout(() => this.#retry(), 1);
    }
  }

  #put(op: number, id: number, fdA: number, fdB: number): boolean {
    const ring = this.#ring;
    const head = Atomics.load(ring, HEAD);
    if (((head - Atomics.load(ring, TAIL)) | 0) >= RING_SLOTS) return false;
    const at = slotAt(head);
    ring[at] = op;
    ring[at + 1] = id;
    ring[at + 2] = fdA;
    ring[at + 3] = fdB;
    Atomics.store(ring, HEAD, (head + 1) | 0);
    if (Atomics.load(ring, SLEEPING) === 1) {
      this.#reactor.libc.sym.write(this.#wakeFd, this.#wakeBuf, 8n);
    }
    return true;
  }

  #retry(): void {
    this.#overflowTimer = undefined;
    const q = this.#overflow;
    let i = 0;
    while (i < q.length && this.#put(q[i]!, q[i + 1]!, q[i + 2]!, q[i + 3]!)) i += 4;
    this.#overflow = q.slice(i);
    if (this.#overflow.length > 0) this.#overflowTimer = setTimeout(() => this.#retry(), 1);
  }

  #settle(reports: number[]): void {
    for (let i = 0; i + REPORT_INTS <= reports.length; i += REPORT_INTS) {
      this.#settleOne(
        reports[i]!,
        reports[i + 1]!,
        reports[i + 2]!,
        reports[i + 3]!,
        reports[i + 4]!,
        reports[i + 5]!,
      );
    }
  }

  #settleOne(id: number, aToB: number, bToA: number, code: number, side: number, errno: number) {
    const live = this.#live.get(id);
    if (!live) return;
    this.#live.delete(id);
    live.signal?.removeEventListener("abort", live.onAbort!);
    const name = live.names[side]!;
    const reason = code === R_EOF
      ? "eof"
      : code === R_ABORTED
      ? "aborted"
      : `${name} ${code === R_READ ? "read" : code === R_WATCH ? "watch" : "write"} failed: ${
        errnoText(errno)
      }`;
    live.resolve({ aToB, bToA, reason });
  }

  /**
   * Collects the ends of splices the worker reported. Called by the reactor after each batch of
   * events and by a timer while splices are live; cheap when there is nothing.
   */
  poll(): void {
    const hdr = this.#rhdr;
    let tail = Atomics.load(hdr, RTAIL);
    const head = Atomics.load(hdr, RHEAD);
    if (tail === head) {
      // the last ends may have come another way (postMessage when the ring was full, a failure)
      if (this.#live.size === 0) this.#stopPolling();
      return;
    }
    const d = this.#rdata;
    while (tail !== head) {
      const at = reportAt(tail);
      this.#settleOne(d[at]!, d[at + 1]!, d[at + 2]!, d[at + 3]!, d[at + 4]!, d[at + 5]!);
      tail = (tail + 1) | 0;
    }
    Atomics.store(hdr, RTAIL, tail);
    if (this.#live.size === 0) this.#stopPolling();
  }

  #stopPolling(): void {
    clearInterval(this.#pollTimer);
    this.#pollTimer = undefined;
  }

  #failAll(reason: string): void {
    for (const [id, live] of this.#live) {
      this.#live.delete(id);
      live.signal?.removeEventListener("abort", live.onAbort!);
      live.resolve({ aToB: 0, bToA: 0, reason });
    }
  }

  /**
   * Hands `a` and `b` to the worker (both become closed here) and resolves when their splice
   * ended; never rejects.
   */
  splice(a: NativeConn, b: NativeConn, options: SpliceOptions = {}): Promise<SpliceResult> {
    const signal = options.signal;
    if (this.#closed || this.#failed || signal?.aborted) {
      a.close(); // closing a NativeConn twice is a no-op
      b.close();
      return Promise.resolve({ aToB: 0, bToA: 0, reason: "aborted" });
    }
    a.setNoDelay(true);
    b.setNoDelay(true);
    // a closed or busy side ends the splice as a failed read would, with nothing left open
    const names = options.names ?? DEFAULT_NAMES;
    let fdA = -1;
    let fdB: number;
    try {
      fdA = a.detach();
      fdB = b.detach();
    } catch (err) {
      if (fdA >= 0) this.#reactor.libc.sym.close(fdA);
      a.close();
      b.close();
      const side = names[fdA >= 0 ? 1 : 0];
      const text = err instanceof Error ? err.message : String(err);
      return Promise.resolve({ aToB: 0, bToA: 0, reason: `${side} read failed: ${text}` });
    }
    const id = nextSpliceId(this.#nextId, this.#live);
    this.#nextId = id + 1;
    return new Promise<SpliceResult>((resolve) => {
      const onAbort = signal ? () => this.#push(OP_KILL, id, 0, 0) : undefined;
      this.#live.set(id, { names, resolve, signal, onAbort });
      this.#pollTimer ??= setInterval(() => this.poll(), POLL_MS);
      if (signal) signal.addEventListener("abort", onAbort!, { once: true });
      this.#push(OP_SPLICE, id, fdA, fdB);
    });
  }

  /** Ends every splice ("aborted"), stops the worker and releases its eventfd. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#overflowTimer);
    this.#retry();
    // what still does not fit will never run: close the sockets of queued splices here
    const q = this.#overflow;
    this.#overflow = [];
    for (let i = 0; i + 3 < q.length; i += 4) {
      if (q[i] !== OP_SPLICE) continue;
      this.#reactor.libc.sym.close(q[i + 2]!);
      this.#reactor.libc.sym.close(q[i + 3]!);
    }
    this.#push(OP_STOP, 0, 0, 0);
    await this.#stopped;
    this.poll();
    this.#stopPolling();
    clearTimeout(this.#overflowTimer);
    this.#worker.terminate();
    this.#failAll("aborted");
    this.#reactor.libc.sym.close(this.#wakeFd);
  }
}
