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
