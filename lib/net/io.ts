/**
 * Exact reads and whole writes over a ByteConn.
 * @module
 */
import type { ByteConn } from "./conn.ts";

/** Writes every byte of `data`, awaiting each partial write (backpressure). */
export async function writeAll(conn: Pick<ByteConn, "write">, data: Uint8Array): Promise<void> {
  for (let off = 0; off < data.length;) off += await conn.write(data.subarray(off));
}

/** Reads exactly `buf.length` bytes; resolves to false on EOF before the first byte, throws on EOF mid-way. */
export async function readExact(conn: Pick<ByteConn, "read">, buf: Uint8Array): Promise<boolean> {
  let off = 0;
  while (off < buf.length) {
    const n = await conn.read(buf.subarray(off));
    if (n === null) {
      if (off === 0) return false;
      throw new Deno.errors.UnexpectedEof(
        `Cannot read ${buf.length} bytes: connection ended after ${off}`,
      );
    }
    off += n;
  }
  return true;
}

/** Reads to EOF, refusing more than `maxBytes`. */
export async function readAll(
  conn: Pick<ByteConn, "read">,
  maxBytes = 64 * 1024 * 1024,
): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  let total = 0;
  const buf = new Uint8Array(16 * 1024);
  for (let n; (n = await conn.read(buf)) !== null;) {
    total += n;
    if (total > maxBytes) throw new RangeError(`Cannot read to end: more than ${maxBytes} bytes`);
    chunks.push(buf.slice(0, n));
  }
  const out = new Uint8Array(total);
  let off = 0;
  for (const c of chunks) {
    out.set(c, off);
    off += c.length;
  }
  return out;
}

/**
 * Runs `fn` with a signal that aborts at `ms` or when `parent` aborts; on abort `onAbort` is called
 * (typically closing the connection, which wakes a pending read). Rethrows the abort reason
 * (a TimeoutError DOMException on timeout) instead of the BadResource error the close caused.
 * The timer is cleared when `fn` settles: unlike `AbortSignal.any([parent,
 * AbortSignal.timeout(ms)])`, which keeps about 1.6 KiB per call alive until `ms` passes, nothing
 * is left behind (issue 6: held connections).
 */
export async function withDeadline<T>(
  ms: number,
  parent: AbortSignal | undefined,
  onAbort: () => void,
  fn: (signal: AbortSignal) => Promise<T>,
): Promise<T> {
  const ctl = new AbortController();
  const signal = ctl.signal;
  const onParentAbort = () => ctl.abort(parent!.reason);
  if (parent?.aborted) ctl.abort(parent.reason);
  else parent?.addEventListener("abort", onParentAbort, { once: true });
  const timer = signal.aborted ? undefined : setTimeout(
    () => ctl.abort(new DOMException("Signal timed out.", "TimeoutError")),
    ms,
  );
  try {
    if (signal.aborted) {
      onAbort();
      signal.throwIfAborted();
    }
    signal.addEventListener("abort", onAbort, { once: true });
    try {
      return await fn(signal);
    } catch (err) {
      signal.throwIfAborted();
      throw err;
    } finally {
      signal.removeEventListener("abort", onAbort);
    }
  } finally {
    clearTimeout(timer);
    parent?.removeEventListener("abort", onParentAbort);
  }
}

/** Resolves after `ms`, or early (without throwing) when `signal` aborts. */
export function pause(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const t = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
    function done() {
      clearTimeout(t);
      signal.removeEventListener("abort", done);
      resolve();
    }
  });
}

interface DeadlineEntry {
  at: number;
  onExpire: () => void;
  fired: unknown;
  done: boolean;
}

/**
 * Deadlines that all have the same length (a role's hello or token timeout), on one timer: they
 * end in the order they start, so a FIFO queue with one timer for its oldest live entry is
 * enough. {@linkcode withDeadline} costs an AbortController, two listeners and a timer per call
 * (about a tenth of the public proxy's main-thread CPU per W1 request, issue 6); this costs an
 * array slot.
 */
export class DeadlineQueue {
  #q: DeadlineEntry[] = [];
  #head = 0;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #abortReason: unknown = undefined;
  constructor(readonly ms: number) {}

  /**
   * Runs `fn`; when it has not settled within `ms` (or {@linkcode abortAll} runs), `onExpire`
   * is called (typically closing the connection, which ends a pending read) and the result
   * rejects with a TimeoutError DOMException (or the abort reason).
   */
  async run<T>(onExpire: () => void, fn: () => Promise<T>): Promise<T> {
    if (this.#abortReason !== undefined) {
      onExpire();
      throw this.#abortReason;
    }
    const e: DeadlineEntry = {
      at: performance.now() + this.ms,
      onExpire,
      fired: undefined,
      done: false,
    };
    this.#q.push(e);
    if (this.#timer === undefined) this.#arm(e.at);
    try {
      const result = await fn();
      if (e.fired !== undefined) throw e.fired;
      return result;
    } catch (err) {
      throw e.fired ?? err;
    } finally {
      e.done = true;
    }
  }

  #arm(at: number): void {
    this.#timer = setTimeout(() => this.#sweep(), Math.max(0, at - performance.now()));
  }

  #sweep(): void {
    this.#timer = undefined;
    const now = performance.now();
    const q = this.#q;
    while (this.#head < q.length) {
      const e = q[this.#head]!;
      if (!e.done) {
        if (e.at > now) break;
        e.fired = new DOMException("Signal timed out.", "TimeoutError");
        e.onExpire();
      }
      this.#head++;
    }
    if (this.#head > 1024 && this.#head * 2 > q.length) {
      q.splice(0, this.#head);
      this.#head = 0;
    }
    // skip entries already done so the next timer is for a live one
    while (this.#head < q.length && q[this.#head]!.done) this.#head++;
    if (this.#head < q.length) this.#arm(q[this.#head]!.at);
    else {
      q.length = 0;
      this.#head = 0;
    }
  }

  /** Ends every live deadline now with `reason`; later runs end at once the same way. */
  abortAll(reason: unknown): void {
    this.#abortReason = reason;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    for (let i = this.#head; i < this.#q.length; i++) {
      const e = this.#q[i]!;
      if (e.done || e.fired !== undefined) continue;
      e.fired = reason;
      e.onExpire();
    }
    this.#q = [];
    this.#head = 0;
  }

  /** Live deadlines (for tests). */
  get size(): number {
    let n = 0;
    for (let i = this.#head; i < this.#q.length; i++) if (!this.#q[i]!.done) n++;
    return n;
  }
}
