/**
 * Splice: copies bytes both ways between two connections with half-close (a helper for tests and benchmarks; the proxies splice in their data plane).
 *
 * Each direction is a `read()`/`write()` loop: a write is awaited before the next read
 * (backpressure), EOF on one side becomes `closeWrite()` on the other, and both connections are
 * closed once both directions ended or one failed. Not `readable.pipeTo()`: that closes the socket
 * on EOF and pins four 64 KiB buffers per connection.
 *
 * Memory (issue 6): an idle connection always has a read pending in each direction, and the
 * buffer of a pending read stays pinned. So each direction reads into a small buffer
 * (`smallBytes`, 1 KiB by default) and switches to a large one from a shared {@linkcode BufferPool}
 * only while reads fill the buffer (data is flowing faster than one read takes); the first read
 * that comes back short returns the large buffer to the pool.
 * @module
 */
import type { ByteConn } from "./conn.ts";
import { tryClose } from "./conn.ts";
import { errorText } from "../log.ts";

/**
 * Default size of the read buffer each direction keeps while idle. Measured on one relay process
 * holding 2,000 idle spliced connections (Deno 2.9.6, RSS per connection, both sockets):
 * 64 B → 19.3 KiB, 512 B → 19.8, 1 KiB → 21.7, 2 KiB → 24.5, 4 KiB → 28.1, 16 KiB → 51.1.
 * About 19 KiB is the runtime's own cost of two sockets with a read pending on each (each pending
 * read alone keeps 2.2 KiB of JS heap, whatever its buffer). 512 B would save 1.3 KiB per
 * connection but doubles the CPU of a 700-byte record (two reads: 60.7 vs 31.1 µs per round trip
 * in bench/splice_bench.ts), so 1 KiB: one read for a typical small request or response.
 */
export const SMALL_READ_BYTES = 1024;
/** Default size of the buffers a direction borrows while data flows. */
export const LARGE_READ_BYTES = 64 * 1024;

/**
 * A bounded free list of large read buffers, shared by the splices of one role (created in
 * `start<Role>`, never module-level). Buffers beyond `maxIdle` are left to the garbage collector.
 */
export class BufferPool {
  #free: Uint8Array[] = [];
  constructor(readonly bufferBytes = LARGE_READ_BYTES, readonly maxIdle = 64) {
    if (!Number.isInteger(bufferBytes) || bufferBytes < 1) {
      throw new RangeError(
        `Cannot create buffer pool: bufferBytes is ${bufferBytes}, expected > 0`,
      );
    }
  }
  /** A buffer of `bufferBytes`, from the free list or new. */
  take(): Uint8Array {
    return this.#free.pop() ?? new Uint8Array(this.bufferBytes);
  }
  /** Returns a buffer taken from this pool. */
  give(buf: Uint8Array): void {
    if (buf.length === this.bufferBytes && this.#free.length < this.maxIdle) this.#free.push(buf);
  }
  /** Buffers currently idle in the pool. */
  get idle(): number {
    return this.#free.length;
  }
}

export interface SpliceOptions {
  /** Closes both connections when aborted; the result's reason is then "aborted". */
  signal?: AbortSignal;
  /** Large buffers for flowing data; without one each direction allocates its own when needed. */
  pool?: BufferPool;
  /** Size of the idle read buffer of each direction (default {@linkcode SMALL_READ_BYTES}). */
  smallBytes?: number;
  /** Names of the two sides for the close reason, e.g. "client" and "dial-back". */
  names?: [string, string];
}

export interface SpliceResult {
  /** Bytes read from a and written to b. */
  aToB: number;
  /** Bytes read from b and written to a. */
  bToA: number;
  /** "eof" when both directions ended cleanly, "aborted", or which side failed and why. */
  reason: string;
}

/** Turns off Nagle's algorithm where the connection supports it (Deno.TcpConn). */
export function setNoDelay(conn: unknown): void {
  const c = conn as { setNoDelay?: (on?: boolean) => void };
  if (typeof c.setNoDelay !== "function") return;
  try {
    c.setNoDelay(true);
  } catch {
    // not a TCP socket or already closed: nothing to tune
  }
}

class SideError extends Error {
  constructor(readonly side: string, readonly op: string, readonly inner: unknown) {
    super(`${side} ${op} failed: ${errorText(inner)}`);
  }
}

const DEFAULT_NAMES: readonly [string, string] = Object.freeze(["a", "b"]);

/**
 * The state of one splice, shared by its two directions. One object instead of closures: a held
 * connection keeps this, two pump frames and the runtime's two pending reads (issue 6, W4).
 * It is also the abort listener (`handleEvent`), so listening costs no extra function.
 */
class Splice {
  readonly result: SpliceResult = { aToB: 0, bToA: 0, reason: "eof" };
  failed: string | undefined = undefined;
  constructor(
    readonly a: ByteConn,
    readonly b: ByteConn,
    readonly names: readonly [string, string],
    readonly pool: BufferPool | undefined,
    readonly smallBytes: number,
  ) {}
  closeBoth(): void {
    tryClose(this.a);
    tryClose(this.b);
  }
  fail(reason: string): void {
    this.failed ??= reason;
    this.closeBoth();
  }
  /** The abort listener. */
  handleEvent(): void {
    this.fail("aborted");
  }
}

/** Copies one direction until EOF (then half-closes) or a failure (then closes both). */
async function pump(s: Splice, aToB: boolean): Promise<void> {
  const from = aToB ? s.a : s.b;
  const to = aToB ? s.b : s.a;
  const pool = s.pool;
  const small = new Uint8Array(s.smallBytes);
  let large: Uint8Array | null = null;
  let total = 0;
  let op = "read";
  try {
    for (;;) {
      const buf: Uint8Array = large ?? small;
      op = "read";
      const n = await from.read(buf); // a buffer in a cancelled op is not reused: a failure ends
      if (n === null) break;
      op = "write";
      for (let off = 0; off < n;) {
        off += await to.write(off === 0 && n === buf.length ? buf : buf.subarray(off, n));
      }
      total += n;
      if (n === buf.length) {
        large ??= pool ? pool.take() : new Uint8Array(LARGE_READ_BYTES);
      } else if (large !== null) {
        pool?.give(large);
        large = null;
      }
    }
    if (large !== null) pool?.give(large);
    large = null;
    op = "close-write";
    await to.closeWrite();
  } catch (err) {
    const side = s.names[(op === "read") === aToB ? 0 : 1]!;
    s.fail(new SideError(side, op, err).message);
  } finally {
    if (aToB) s.result.aToB += total;
    else s.result.bToA += total;
  }
}

/**
 * Copies bytes both ways between `a` and `b` until both directions ended or one failed, then
 * closes both. Never rejects: failures end up in `reason`.
 */
export async function splice(
  a: ByteConn,
  b: ByteConn,
  options: SpliceOptions = {},
): Promise<SpliceResult> {
  const signal = options.signal;
  const smallBytes = options.smallBytes ?? SMALL_READ_BYTES;
  if (!Number.isInteger(smallBytes) || smallBytes < 1) {
    throw new RangeError(`Cannot splice: smallBytes is ${smallBytes}, expected > 0`);
  }
  setNoDelay(a);
  setNoDelay(b);
  const s = new Splice(a, b, options.names ?? DEFAULT_NAMES, options.pool, smallBytes);
  if (signal?.aborted) s.handleEvent();
  signal?.addEventListener("abort", s, { once: true });
  try {
    await Promise.all([pump(s, true), pump(s, false)]);
  } finally {
    signal?.removeEventListener("abort", s);
    s.closeBoth();
  }
  if (s.failed !== undefined) s.result.reason = s.failed;
  return s.result;
}
