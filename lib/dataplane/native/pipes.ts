/**
 * The kernel pipes of the native driver's splice path (docs/architecture.md, "The drivers"): a
 * small, bounded pool. A bulk direction takes a pipe for one readiness event, moves bytes
 * `socket → pipe → socket` with `splice(2)`, and gives it back once it is empty; a pipe stays
 * with its destination socket only while bytes sit in it (the peer did not take them yet). At most
 * {@linkcode PipePool.max} pipes exist at once (two descriptors each, within the descriptors the
 * budget keeps for the process itself: lib/proxy/budget.ts); when none is free the direction
 * copies as before. The free ones are closed when the worker rests.
 * @module
 */
import { F_SETPIPE_SZ, type Libc, O_CLOEXEC, O_NONBLOCK } from "./libc.ts";

/** One kernel pipe: bytes written into `w` are read from `r`. */
export class KernelPipe {
  /** Bytes in the pipe now. */
  bytes = 0;
  constructor(readonly r: number, readonly w: number) {}
}

/** A bounded pool of non-blocking pipes. */
export class PipePool {
  readonly #free: KernelPipe[] = [];
  readonly #fds = new Int32Array(2);
  /** Pipes open now: free or taken. */
  open = 0;

  /**
   * `max`: pipes at once (0: none, the splice path is off); `size`: the capacity asked with
   * F_SETPIPE_SZ (the kernel's default of 64 KiB stays where that fails).
   */
  constructor(readonly libc: Libc, readonly max: number, readonly size: number) {}

  /** A free pipe, a new one, or null when the pool is at its bound or pipe2 failed. */
  take(): KernelPipe | null {
    const p = this.#free.pop();
    if (p !== undefined) return p;
    if (this.open >= this.max) return null;
    const s = this.libc.sym;
    if (s.pipe2(this.#fds, O_NONBLOCK | O_CLOEXEC) !== 0) return null; // EMFILE: copy instead
    const q = new KernelPipe(this.#fds[0]!, this.#fds[1]!);
    if (this.size !== 65536) s.fcntl(q.w, F_SETPIPE_SZ, this.size); // best effort
    this.open++;
    return q;
  }

  /** Gives `p` back: kept for reuse when empty, else closed (its bytes are dropped). */
  give(p: KernelPipe): void {
    if (p.bytes === 0) this.#free.push(p);
    else this.drop(p);
  }

  /** Closes `p` (a socket that failed or closed with bytes still in it). */
  drop(p: KernelPipe): void {
    this.libc.sym.close(p.r);
    this.libc.sym.close(p.w);
    p.bytes = 0;
    this.open--;
  }

  /** Closes the free pipes (the worker's rest, its exit). */
  trim(): void {
    for (const p of this.#free) this.drop(p);
    this.#free.length = 0;
  }
}
