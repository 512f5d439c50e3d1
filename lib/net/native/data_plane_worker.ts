/**
 * The data-plane worker (issue 6): one thread that copies the bytes of every spliced pair of a
 * role. Its loop blocks in `epoll_wait` (synchronous FFI: no promise, no op, no thread hop per
 * event) and moves each readable chunk with `recv` into one shared buffer and `send` straight
 * out, so an idle connection holds no buffer at all; only bytes a slow receiver has not taken
 * yet are kept, and reading that direction stops until they are gone (backpressure).
 *
 * Commands come from the main thread through a SharedArrayBuffer ring plus an eventfd (the worker
 * never returns to its event loop, so it cannot take messages); results go back by postMessage.
 * The layout is in data_plane.ts.
 * @module
 */
import {
  EAGAIN,
  EINTR,
  EPOLL_CTL_ADD,
  EPOLL_CTL_DEL,
  EPOLL_CTL_MOD,
  EPOLL_DATA_OFFSET,
  EPOLL_EVENT_BYTES,
  EPOLLIN,
  EPOLLOUT,
  Libc,
  MSG_NOSIGNAL,
  SHUT_WR,
  SOCK_CLOEXEC,
} from "./libc.ts";
import {
  HEAD,
  OP_KILL,
  OP_SPLICE,
  OP_STOP,
  R_ABORTED,
  R_EOF,
  R_READ,
  R_WATCH,
  R_WRITE,
  REPORT_SLOTS,
  reportAt,
  RHEAD,
  RTAIL,
  SLEEPING,
  slotAt,
  TAIL,
  type WorkerInit,
} from "./data_plane_layout.ts";

/** The worker's global scope (the project's lib types are the main thread's). */
const scope = self as unknown as {
  onmessage: ((e: MessageEvent<WorkerInit>) => void) | null;
  postMessage(message: unknown): void;
};

/** Bytes one `recv` may take; shared by all connections. */
const CHUNK = 256 * 1024;
/** Reads per readiness event before other sockets get their turn. */
const READS_PER_EVENT = 4;
const MAX_EVENTS = 512;

class Side {
  /** Bytes read from this socket. */
  bytes = 0;
  /** Bytes read from the peer that this socket has not taken yet. */
  pending: Uint8Array | null = null;
  /** This socket sent EOF. */
  eof = false;
  /** Events this socket is registered for (0: not registered). */
  mask = 0;
  peer!: Side;
  constructor(readonly fd: number, readonly pair: Pair, readonly index: 0 | 1) {}
}

class Pair {
  readonly a: Side;
  readonly b: Side;
  done = false;
  constructor(readonly id: number, fdA: number, fdB: number) {
    this.a = new Side(fdA, this, 0);
    this.b = new Side(fdB, this, 1);
    this.a.peer = this.b;
    this.b.peer = this.a;
  }
}

function run(init: WorkerInit): void {
  const libc = Libc.get();
  const s = libc.sym;
  const ring = new Int32Array(init.sab);
  const ep = s.epollCreate1(SOCK_CLOEXEC);
  const events = new Uint8Array(MAX_EVENTS * EPOLL_EVENT_BYTES);
  const view = new DataView(events.buffer);
  const ev = new Uint8Array(EPOLL_EVENT_BYTES);
  const evView = new DataView(ev.buffer);
  const chunk = new Uint8Array(CHUNK);
  const chunkBytes = BigInt(CHUNK);
  // `sendmsg` from `chunk` with one iovec whose length is set per call: no BigInt per send
  const iov = new Uint8Array(16);
  const iovView = new DataView(iov.buffer);
  iovView.setBigUint64(0, BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(chunk))), true);
  const msg = new Uint8Array(56); // struct msghdr: name, namelen, iov, iovlen, control, ...
  const msgView = new DataView(msg.buffer);
  msgView.setBigUint64(16, BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(iov))), true);
  msgView.setBigUint64(24, 1n, true);
  /** Sends the first `n` bytes of `chunk`. */
  function sendChunk(fd: number, n: number): number {
    iovView.setUint32(8, n, true); // the high half of iov_len stays 0
    return s.sendmsg(fd, msg, MSG_NOSIGNAL);
  }
  const drain = new Uint8Array(8);
  const sides: (Side | undefined)[] = [];
  const pairs = new Map<number, Pair>();
  let reports: number[] = []; // only when the report ring is full
  const rhdr = new Int32Array(init.reports, 0, 2);
  const rdata = new Float64Array(init.reports);
  let stopping = false;

  /** Registers, changes or removes a watch; false when the kernel refused (errno set). */
  function ctl(op: number, fd: number, mask: number): boolean {
    evView.setUint32(0, mask, true);
    evView.setInt32(EPOLL_DATA_OFFSET, fd, true);
    return s.epollCtl(ep, op, fd, ev) === 0 || op === EPOLL_CTL_DEL;
  }
  ctl(EPOLL_CTL_ADD, init.wakeFd, EPOLLIN);

  function finish(p: Pair, code: number, side: number, errno: number): void {
    if (p.done) return;
    p.done = true;
    for (const x of [p.a, p.b]) {
      if (x.mask !== 0) ctl(EPOLL_CTL_DEL, x.fd, 0);
      x.mask = 0;
      sides[x.fd] = undefined;
      s.close(x.fd);
    }
    pairs.delete(p.id);
    const head = Atomics.load(rhdr, RHEAD);
    if (((head - Atomics.load(rhdr, RTAIL)) | 0) < REPORT_SLOTS) {
      const at = reportAt(head);
      rdata[at] = p.id;
      rdata[at + 1] = p.a.bytes;
      rdata[at + 2] = p.b.bytes;
      rdata[at + 3] = code;
      rdata[at + 4] = side;
      rdata[at + 5] = errno;
      Atomics.store(rhdr, RHEAD, (head + 1) | 0); // publishes the slot
    } else {
      reports.push(p.id, p.a.bytes, p.b.bytes, code, side, errno);
    }
  }

  /** Registers `x` for what it waits for now; an unregistered socket reports nothing (no HUP). */
  function rewatch(x: Side): void {
    if (x.pair.done) return;
    const want = (!x.eof && x.peer.pending === null ? EPOLLIN : 0) |
      (x.pending !== null ? EPOLLOUT : 0);
    if (want === x.mask) return;
    const op = x.mask === 0 ? EPOLL_CTL_ADD : want === 0 ? EPOLL_CTL_DEL : EPOLL_CTL_MOD;
    if (!ctl(op, x.fd, want)) {
      // e.g. ENOSPC (fs.epoll.max_user_watches) or ENOMEM: a pair nobody watches would hang
      finish(x.pair, R_WATCH, x.index, libc.errno());
      return;
    }
    x.mask = want;
  }

  function shutWrite(x: Side): void {
    s.shutdown(x.fd, SHUT_WR); // ENOTCONN after a reset: the next event reports the reset
  }

  /** Copies what `x` has to its peer; false when the pair ended. */
  function pump(x: Side): boolean {
    const y = x.peer;
    for (let i = 0; i < READS_PER_EVENT; i++) {
      const n = s.recv(x.fd, chunk, chunkBytes, 0);
      if (n > 0) {
        x.bytes += n;
        let m = sendChunk(y.fd, n);
        if (m < 0) {
          const e = libc.errno();
          if (e !== EAGAIN && e !== EINTR) {
            finish(x.pair, R_WRITE, y.index, e);
            return false;
          }
          m = 0;
        }
        if (m < n) {
          y.pending = chunk.slice(m, n);
          return true;
        }
        if (n < CHUNK) return true;
      } else if (n === 0) {
        x.eof = true;
        shutWrite(y);
        return true;
      } else {
        const e = libc.errno();
        if (e === EAGAIN || e === EINTR) return true;
        finish(x.pair, R_READ, x.index, e);
        return false;
      }
    }
    return true;
  }

  /** Sends what `x` has pending; false when the pair ended. */
  function flush(x: Side): boolean {
    const data = x.pending!;
    const m = s.send(x.fd, data, BigInt(data.length), MSG_NOSIGNAL); // rare: backpressure
    if (m < 0) {
      const e = libc.errno();
      if (e === EAGAIN || e === EINTR) return true;
      finish(x.pair, R_WRITE, x.index, e);
      return false;
    }
    if (m < data.length) {
      x.pending = data.subarray(m);
      return true;
    }
    x.pending = null;
    if (x.peer.eof) shutWrite(x);
    return true;
  }

  function onEvents(x: Side, events: number): void {
    // OUT is registered only while something is pending, IN only while x may be read
    if (x.pending !== null && !flush(x)) return;
    if (
      (x.mask & EPOLLIN) !== 0 && x.peer.pending === null && (events & ~EPOLLOUT) !== 0 &&
      !pump(x)
    ) return;
    const p = x.pair;
    if (p.a.eof && p.b.eof && p.a.pending === null && p.b.pending === null) {
      finish(p, R_EOF, 0, 0);
      return;
    }
    rewatch(x);
    rewatch(x.peer);
  }

  function commands(): void {
    let tail = Atomics.load(ring, TAIL);
    const head = Atomics.load(ring, HEAD);
    while (tail !== head) {
      const at = slotAt(tail);
      const op = ring[at]!;
      const id = ring[at + 1]!;
      if (op === OP_SPLICE) {
        const p = new Pair(id, ring[at + 2]!, ring[at + 3]!);
        pairs.set(id, p);
        sides[p.a.fd] = p.a;
        sides[p.b.fd] = p.b;
        rewatch(p.a);
        rewatch(p.b);
      } else if (op === OP_KILL) {
        const p = pairs.get(id);
        if (p) finish(p, R_ABORTED, 0, 0);
      } else if (op === OP_STOP) {
        stopping = true;
      }
      tail = (tail + 1) | 0;
      Atomics.store(ring, TAIL, tail);
    }
  }

  /**
   * One turn: commands, reports, one epoll_wait and its events; false once told to stop. A
   * function of its own, called from a trivial loop: V8 then optimizes it as any hot function.
   * With the whole loop inline, `run` never returned and V8 kept recompiling it for on-stack
   * replacement (71 compiles in 3 s, a sixth of the process's CPU on compiler threads).
   */
  function step(): boolean {
    commands();
    if (stopping) return false;
    if (reports.length > 0) {
      scope.postMessage({ type: "done", reports });
      reports = [];
    }
    Atomics.store(ring, SLEEPING, 1);
    if (Atomics.load(ring, HEAD) !== Atomics.load(ring, TAIL)) {
      Atomics.store(ring, SLEEPING, 0);
      return true;
    }
    const n = s.epollWait(ep, events, MAX_EVENTS, -1);
    Atomics.store(ring, SLEEPING, 0);
    for (let i = 0; i < n; i++) {
      const off = i * EPOLL_EVENT_BYTES;
      const mask = view.getUint32(off, true);
      const fd = view.getInt32(off + EPOLL_DATA_OFFSET, true);
      if (fd === init.wakeFd) {
        s.read(fd, drain, 8n);
        continue;
      }
      const x = sides[fd];
      if (x !== undefined) onEvents(x, mask);
    }
    return true;
  }

  scope.postMessage({ type: "ready" });
  while (step());
  for (const p of [...pairs.values()]) finish(p, R_ABORTED, 0, 0);
  s.close(ep);
  scope.postMessage({ type: "done", reports });
  scope.postMessage({ type: "stopped" });
}

scope.onmessage = (e: MessageEvent<WorkerInit>) => {
  scope.onmessage = null;
  try {
    run(e.data);
  } catch (err) {
    scope.postMessage({ type: "failed", error: err instanceof Error ? err.message : String(err) });
  }
};
