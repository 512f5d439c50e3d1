/**
 * The native worker's socket options and tuning (docs/architecture.md, "The drivers"): TCP
 * keepalive with the timings of lib/dataplane/keepalive.ts, the non-blocking connect, and the
 * loop's per-event budgets. Kept apart from worker.ts, which is the loop.
 * @module
 */
import {
  AF_INET,
  AF_INET6,
  EINPROGRESS,
  EINTR,
  IPPROTO_TCP,
  type Libc,
  SO_KEEPALIVE,
  SOCK_CLOEXEC,
  SOCK_NONBLOCK,
  SOCK_STREAM,
  SOL_SOCKET,
  TCP_KEEPCNT,
  TCP_KEEPIDLE,
  TCP_KEEPINTVL,
  TCP_NODELAY,
  TCP_USER_TIMEOUT,
} from "./libc.ts";
import { keepAliveBoundMs, keepAliveTimings } from "../keepalive.ts";
import type { Sock } from "./socks.ts";

export const MAX_EVENTS = 512;
/** Chunks copied per readiness event of a piped socket before other sockets get their turn. */
export const READS_PER_EVENT = 4;
/**
 * A read of at least this many bytes is a bulk read; after {@linkcode BULK_READS} of them in a row
 * a direction moves by splice(2), and one smaller read takes it back to copying.
 */
export const BULK_READ = 32 * 1024;
export const BULK_READS = 2;
/** Pipe fills spliced per readiness event of a bulk direction before other sockets get a turn. */
export const SPLICES_PER_EVENT = 8;
/** Connections taken from a listener per readiness event before other sockets get their turn. */
export const ACCEPTS_PER_EVENT = 64;
/** How long a listener is not watched after a failed accept (EMFILE and the like). */
export const ACCEPT_PAUSE_MS = 100;
export const MAX_WAIT_MS = 0x7fff_ffff;
/**
 * How long events nothing waits on may gather before they are posted: one message for several
 * turns, so fewer wake-ups of the main thread under load (docs/architecture.md, "The drivers").
 */
export const POST_GATHER_MS = 2;
/** Events the control plane acts on at once: posted with their turn. */
export const URGENT_EVENTS: ReadonlySet<string> = new Set([
  "needDialBack", // a client waits for its notice
  "connectFailed", // a drain counts its set-ups down; the warning is logged at once
  "drained", // a stop waits for it
  "acceptFailed",
]);
/**
 * How long a dialled socket is spliced before it gets its keepalive (docs/architecture.md, "Idle
 * splices"): a short connection, most of them, never pays the five setsockopt calls.
 */
export const KEEPALIVE_AFTER_MS = 1000;
/**
 * The keepalive of spliced sockets (docs/architecture.md, "Idle splices"): an accepted socket's
 * is its listener's, set once (later sockets inherit it: no setsockopt of their own); a dialled
 * socket gets its own {@linkcode KEEPALIVE_AFTER_MS} after its splice began, if still open.
 */
export class KeepAlives {
  readonly #int = new Int32Array(1);
  /** Dialled sockets due their keepalive at `at`, in that order. */
  #q: { x: Sock; ms: number; at: number }[] = [];
  #head = 0;

  constructor(readonly libc: Libc) {}

  /** When the first dialled socket is due (the loop's wait ends then); Infinity with none. */
  get next(): number {
    return this.#q[this.#head]?.at ?? Infinity;
  }

  /** Spliced socket `x` is to have keepalive `ms` (0: none). */
  spliced(x: Sock, ms: number, now: number): void {
    const l = x.listener;
    if (l === null) {
      this.#q.push({ x, ms, at: now + KEEPALIVE_AFTER_MS });
      return;
    }
    this.#set(x, ms);
    if (!l.closed && l.keepAliveMs !== ms) {
      setKeepAlive(this.libc, l.fd, ms, this.#int);
      l.keepAliveMs = ms;
    }
  }

  /** Sets the keepalive of the dialled sockets due by `now` that are still open. */
  due(now: number): void {
    const q = this.#q;
    let i = this.#head;
    for (; i < q.length && q[i]!.at <= now; i++) {
      const { x, ms } = q[i]!;
      if (!x.closed && x.keepAliveMs !== ms) this.#set(x, ms);
    }
    if (i === q.length) {
      q.length = 0;
      i = 0;
    } else if (i > 1024 && i * 2 > q.length) {
      q.splice(0, i);
      i = 0;
    }
    this.#head = i;
  }

  #set(x: Sock, ms: number): void {
    setKeepAlive(this.libc, x.fd, ms, this.#int);
    x.keepAliveMs = ms;
  }
}

/** Quiet time after activity before the worker gives back what it no longer uses. */
export const QUIET_MS = 1000;
/** Heap growth since the last rest's collection that makes the next rest collect (bytes). */
export const REST_GROWTH = 2 << 20;

/**
 * SO_KEEPALIVE with the timings of lib/dataplane/keepalive.ts, or off with `ms` 0 (best effort:
 * a failure is harmless).
 */
export function setKeepAlive(
  libc: Libc,
  fd: number,
  ms: number,
  int: Int32Array<ArrayBuffer>,
): void {
  const s = libc.sym;
  if (ms <= 0) {
    int[0] = 0;
    s.setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, int, 4);
    s.setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, int, 4);
    return;
  }
  const t = keepAliveTimings(ms);
  for (
    const [level, name, v] of [
      [SOL_SOCKET, SO_KEEPALIVE, 1],
      [IPPROTO_TCP, TCP_KEEPIDLE, t.idleS],
      [IPPROTO_TCP, TCP_KEEPINTVL, t.intervalS],
      [IPPROTO_TCP, TCP_KEEPCNT, t.count],
      // data in flight to a vanished peer holds off the probes: bound that wait the same way
      [IPPROTO_TCP, TCP_USER_TIMEOUT, keepAliveBoundMs(ms)],
    ] as const
  ) {
    int[0] = v;
    s.setsockopt(fd, level, name, int, 4);
  }
}

/** A non-blocking TCP socket for `sa` with TCP_NODELAY; the descriptor, or −errno. */
export function openStream(libc: Libc, sa: Uint8Array, int: Int32Array<ArrayBuffer>): number {
  const s = libc.sym;
  const fd = s.socket(
    sa.length === 16 ? AF_INET : AF_INET6,
    SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
    0,
  );
  if (fd < 0) return -libc.errno();
  int[0] = 1;
  s.setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, int, 4);
  return fd;
}

/** Starts the connect of `fd` to `sa`: 0 when under way (it completes with EPOLLOUT), or errno. */
export function startConnect(libc: Libc, fd: number, sa: Uint8Array): number {
  if (libc.sym.connect(fd, sa, sa.length) === 0) return 0;
  const e = libc.errno();
  return e === EINPROGRESS || e === EINTR ? 0 : e;
}
