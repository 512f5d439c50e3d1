/**
 * The worker's sockets (docs/architecture.md, "The drivers"): per-socket state, the descriptor
 * table, epoll interest, the write queue and the shared copy buffer of the native driver.
 *
 * Every epoll registration carries the descriptor in the low 32 bits of `epoll_event.data` and
 * the socket's generation in the high 32 bits. A descriptor closed while one `epoll_wait` batch
 * is handled can be reused by an accept or a connect of the same batch; a later event of that
 * batch then names the new socket's descriptor with the old generation, and
 * {@linkcode Socks.lookup} says it is stale.
 *
 * Bytes are copied with `recv` into one shared {@linkcode CHUNK} and `sendmsg` straight out
 * (the iovec and msghdr are prepared once, so a chunk costs no allocation and no BigInt); only
 * what a slow peer has not taken is kept, in that peer's queue, and the source is not read until
 * the queue is empty (backpressure).
 *
 * A bulk direction (worker.ts) moves its bytes with `splice(2)` through a kernel pipe of the
 * {@linkcode PipePool} instead; the pipe stays with the destination socket (`Sock.pipe`) only
 * while bytes sit in it, and counts as queued: the source is not read, the destination is watched
 * for `EPOLLOUT`, a half-close and a graceful close wait for it. A socket never has both a queue
 * and a pipe (its source is read only when it has neither).
 * @module
 */
import type { ListenAt } from "./ring.ts";
import { LISTEN_BACKLOG, type Port, type SockId } from "../core/io.ts";
import {
  AF_INET,
  AF_INET6,
  decodeSockaddr,
  EAGAIN,
  EINTR,
  encodeSockaddr,
  EPOLL_CTL_ADD,
  EPOLL_CTL_DEL,
  EPOLL_CTL_MOD,
  EPOLL_DATA_OFFSET,
  EPOLL_EVENT_BYTES,
  EPOLLIN,
  EPOLLOUT,
  errnoMessage,
  IPPROTO_TCP,
  type Libc,
  type LibcSymbols,
  MSG_NOSIGNAL,
  SHUT_WR,
  SO_REUSEADDR,
  SO_REUSEPORT,
  SOCK_CLOEXEC,
  SOCK_NONBLOCK,
  SOCK_STREAM,
  SOL_SOCKET,
  SPLICE_F_MOVE,
  SPLICE_F_NONBLOCK,
  TCP_DEFER_ACCEPT,
  TCP_NODELAY,
} from "./libc.ts";
import { type KernelPipe, PipePool } from "./pipes.ts";

/** Bytes one `recv` may take; one buffer shared by every socket of the worker. */
export const CHUNK = 256 * 1024;
const CHUNK_LEN = BigInt(CHUNK);
/** The flags of every splice: pages moved where the kernel can, never blocking on the pipe. */
export const SPLICE_FLAGS = SPLICE_F_MOVE | SPLICE_F_NONBLOCK;
/** Bytes one splice out of a pipe may take: anything the pipe holds (a pipe is at most 1 MiB). */
const PIPE_OUT_LEN = 1n << 30n;

/** A data socket of the worker. */
export class Sock {
  readonly kind = "sock";
  /** Events registered with epoll (0: not registered). */
  mask = 0;
  /** Its interest may have changed this turn: the loop applies it once, before it waits. */
  dirty = false;
  /** The core wants data, EOF and read errors reported. */
  reading = false;
  /** Piped to this socket: what is read goes there. */
  peer: Sock | null = null;
  /** A non-blocking connect is under way. */
  connecting = false;
  /** EOF (or a read error) was seen: never read again. */
  eof = false;
  /** A write failed: what is queued is dropped and nothing more is written. */
  broken = false;
  /** The core closed it gracefully: it only flushes its queue, then closes. */
  released = false;
  closed = false;
  /** Bytes to write, in order (views; the first may be partly written already). */
  readonly queue: Uint8Array[] = [];
  /** Half-close once the queue is flushed. */
  shutAfter = false;
  /** Bytes from the peer waiting in a kernel pipe (the splice path); never with a queue. */
  pipe: KernelPipe | null = null;
  /** Consecutive bulk reads of this socket (the splice path starts at a few). */
  bulk = 0;
  /** The TCP keepalive `tcp_keepalive_ms` set on it (0: none), set or inherited. */
  keepAliveMs = 0;
  /** The listener it was accepted on (it inherits its socket options), or null (dialled). */
  listener: Listener | null = null;

  constructor(readonly fd: number, readonly id: SockId, readonly gen: number) {}
}

/** A listening socket of the worker. */
export class Listener {
  readonly kind = "listener";
  /** Unwatched until then after a failed accept (ms, the driver's clock); 0: watched. */
  pausedUntil = 0;
  closed = false;
  /**
   * The address accepted sockets have on this side (what a PROXY protocol header names as the
   * destination): the bound one, or null when bound to a wildcard (then asked per accept).
   */
  local: { hostname: string; port: number } | null = null;
  /**
   * The TCP keepalive set on the listener (0: none), which accepted sockets inherit with their
   * other options (Linux copies SO_KEEPALIVE, TCP_KEEPIDLE/INTVL/CNT and TCP_USER_TIMEOUT at
   * accept): set at the first splice of one of its sockets, so that later ones need no
   * setsockopt.
   */
  keepAliveMs = 0;
  constructor(readonly fd: number, readonly port: Port, readonly gen: number) {}
}

/** The eventfd the main thread wakes the worker with. */
export class Wake {
  readonly kind = "wake";
  constructor(readonly fd: number, readonly gen: number) {}
}

/** What a descriptor of the worker is. */
export type Owner = Sock | Listener | Wake;

/** The descriptor table, epoll interest and syscalls of one worker. */
export class Socks {
  readonly s: LibcSymbols;
  /** By descriptor: what owns it now. */
  readonly byFd: (Owner | undefined)[] = [];
  /** By the core's socket id. */
  readonly byId = new Map<SockId, Sock>();
  /** Sockets whose interest is applied at the end of the turn. */
  readonly #marked: Sock[] = [];
  readonly #local = new Uint8Array(28);
  readonly #localLen = new Uint32Array(1);
  /** The shared copy buffer: recv into it, send from it. */
  readonly chunk = new Uint8Array(CHUNK);
  readonly #ev = new Uint8Array(EPOLL_EVENT_BYTES);
  readonly #evView = new DataView(this.#ev.buffer);
  readonly #iovView: DataView;
  readonly #msg = new Uint8Array(56); // struct msghdr: name, namelen, iov, iovlen, control, …
  /** Generations of registrations (never 0). */
  #gen = 0;
  /** The pipes of the splice path (max 0: off). */
  readonly pipes: PipePool;

  constructor(readonly libc: Libc, readonly ep: number, pipes = 0, pipeSize = 65536) {
    this.s = libc.sym;
    this.pipes = new PipePool(libc, pipes, pipeSize);
    const iov = new Uint8Array(16); // struct iovec over `chunk`; its length is set per send
    this.#iovView = new DataView(iov.buffer);
    this.#iovView.setBigUint64(
      0,
      BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(this.chunk))),
      true,
    );
    const msgView = new DataView(this.#msg.buffer);
    msgView.setBigUint64(16, BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(iov))), true);
    msgView.setBigUint64(24, 1n, true);
    this.#keep = iov;
  }

  /** Keeps the iovec alive as long as the msghdr that points at it. */
  readonly #keep: Uint8Array;

  /** A new registration generation (never 0). */
  nextGen(): number {
    this.#gen = (this.#gen + 1) >>> 0;
    if (this.#gen === 0) this.#gen = 1;
    return this.#gen;
  }

  /** The owner of descriptor `fd` registered as `gen`, or undefined when that one is gone. */
  lookup(fd: number, gen: number): Owner | undefined {
    const x = this.byFd[fd];
    return x !== undefined && x.gen === gen ? x : undefined;
  }

  /** The owner of the event at byte `off` of an epoll_wait buffer, or undefined when stale. */
  lookupEvent(events: DataView, off: number): Owner | undefined {
    const fd = events.getInt32(off + EPOLL_DATA_OFFSET, true);
    return this.lookup(fd, events.getUint32(off + EPOLL_DATA_OFFSET + 4, true));
  }

  add(fd: number, id: SockId): Sock {
    const x = new Sock(fd, id, this.nextGen());
    this.byFd[fd] = x;
    this.byId.set(id, x);
    return x;
  }

  /** Registers the wake-up eventfd for EPOLLIN; the errno, or 0. */
  addWake(fd: number): number {
    const w = new Wake(fd, this.nextGen());
    this.byFd[fd] = w;
    return this.ctl(EPOLL_CTL_ADD, fd, w.gen, EPOLLIN);
  }

  /**
   * Binds a listener for `port` and watches it; what it is bound to. Throws (a clear message) when
   * it cannot be bound.
   */
  listen(
    at: ListenAt,
    port: Port,
  ): { listener: Listener; addr: { hostname: string; port: number } } {
    const { fd, local } = bindListener(this.libc, at, port === "public");
    const l = this.addListener(fd, port);
    const e = this.ctl(EPOLL_CTL_ADD, fd, l.gen, EPOLLIN);
    if (e !== 0) throw new Error(`Cannot listen on ${at.what}: ${errnoMessage(e)}`);
    const a = decodeSockaddr(local);
    if (a.hostname !== "0.0.0.0" && a.hostname !== "::") {
      l.local = { hostname: a.hostname, port: a.port };
    }
    return { listener: l, addr: { hostname: a.hostname, port: a.port } };
  }

  /** The local address of accepted socket `fd` (a listener on a wildcard address). */
  localOf(fd: number): { hostname: string; port: number } | undefined {
    this.#localLen[0] = this.#local.length;
    if (this.s.getsockname(fd, this.#local, this.#localLen) !== 0) return undefined;
    const a = decodeSockaddr(this.#local);
    return { hostname: a.hostname, port: a.port };
  }

  addListener(fd: number, port: Port): Listener {
    const l = new Listener(fd, port, this.nextGen());
    this.byFd[fd] = l;
    return l;
  }

  /** epoll_ctl with `fd` and `gen` in the event's data; the errno, or 0. */
  ctl(op: number, fd: number, gen: number, events: number): number {
    const v = this.#evView;
    v.setUint32(0, events, true);
    v.setInt32(EPOLL_DATA_OFFSET, fd, true);
    v.setUint32(EPOLL_DATA_OFFSET + 4, gen, true);
    return this.s.epollCtl(this.ep, op, fd, this.#ev) === 0 ? 0 : this.libc.errno();
  }

  /**
   * Marks `x`: its interest may have changed. {@linkcode applyMarked} registers it once, at the end
   * of the turn, so what a turn turns off and on again (a pooled dial-back taken: its idle watch,
   * then its answer watch) or a socket closed in the turn it saw EOF costs no epoll_ctl.
   */
  mark(x: Sock): void {
    if (x.dirty || x.closed) return;
    x.dirty = true;
    this.#marked.push(x);
  }

  /** {@linkcode watch} for every marked socket (also those `failed` marks); `failed` per errno. */
  applyMarked(failed: (x: Sock, errno: number) => void): void {
    const q = this.#marked;
    for (let i = 0; i < q.length; i++) {
      const x = q[i]!;
      x.dirty = false;
      const e = this.watch(x);
      if (e !== 0) failed(x, e);
    }
    q.length = 0;
  }

  /** Registers `x` for what it waits for now; the errno when epoll_ctl failed, or 0. */
  watch(x: Sock): number {
    if (x.closed) return 0;
    let want: number;
    if (x.connecting) want = EPOLLOUT;
    else {
      want = pending(x) ? EPOLLOUT : 0;
      const p = x.peer;
      if (!x.eof && !x.released && (p !== null ? !pending(p) : x.reading)) {
        want |= EPOLLIN;
      }
    }
    if (want === x.mask) return 0;
    const op = x.mask === 0 ? EPOLL_CTL_ADD : want === 0 ? EPOLL_CTL_DEL : EPOLL_CTL_MOD;
    const e = this.ctl(op, x.fd, x.gen, want);
    if (e === 0) x.mask = want;
    return e;
  }

  /** `recv` into {@linkcode chunk}: bytes, 0 at EOF, -1 with errno set. */
  recv(fd: number): number {
    return this.s.recv(fd, this.chunk, CHUNK_LEN, 0);
  }

  /** Sends the first `n` bytes of {@linkcode chunk}: bytes sent, or -1 with errno set. */
  sendChunk(fd: number, n: number): number {
    this.#iovView.setUint32(8, n, true); // the high half of iov_len stays 0
    return this.s.sendmsg(fd, this.#msg, MSG_NOSIGNAL);
  }

  /** Queues `bytes` for `x` and sends what it can now; the errno of a failed send, or 0. */
  write(x: Sock, bytes: Uint8Array): number {
    if (x.broken || x.closed || bytes.length === 0) return 0;
    if (x.queue.length > 0 || x.connecting) {
      x.queue.push(bytes);
      return 0;
    }
    const m = this.s.send(x.fd, bytes, BigInt(bytes.length), MSG_NOSIGNAL);
    if (m < 0) {
      const e = this.libc.errno();
      if (e !== EAGAIN && e !== EINTR) return this.broke(x, e);
      x.queue.push(bytes);
    } else if (m < bytes.length) x.queue.push(bytes.subarray(m));
    return 0;
  }

  /** Keeps only the bytes of `chunk[m, n)` for `x` (its peer read faster than it takes). */
  keepRest(x: Sock, m: number, n: number): void {
    x.queue.push(this.chunk.slice(m, n));
  }

  /**
   * Splices what the pipe of `x` holds into it; gives the pipe back once empty. The errno of a
   * failure (`x` is broken then), or 0 (EAGAIN included: the rest stays in the pipe).
   */
  drainPipe(x: Sock): number {
    const p = x.pipe!;
    while (p.bytes > 0) {
      const m = this.s.splice(p.r, null, x.fd, null, PIPE_OUT_LEN, SPLICE_FLAGS);
      if (m < 0) {
        const e = this.libc.errno();
        if (e === EAGAIN || e === EINTR) return 0;
        return this.broke(x, e);
      }
      p.bytes -= m;
    }
    x.pipe = null;
    this.pipes.give(p);
    return 0;
  }

  /** Sends what `x` has queued, then its half-close and close; the errno of a failure, or 0. */
  flush(x: Sock): number {
    if (x.pipe !== null) {
      const e = this.drainPipe(x);
      if (e !== 0 || x.pipe !== null) return e;
    }
    const q = x.queue;
    while (q.length > 0) {
      const b = q[0]!;
      const m = this.s.send(x.fd, b, BigInt(b.length), MSG_NOSIGNAL);
      if (m < 0) {
        const e = this.libc.errno();
        if (e === EAGAIN || e === EINTR) return 0;
        return this.broke(x, e);
      }
      if (m < b.length) {
        q[0] = b.subarray(m);
        return 0;
      }
      q.shift();
    }
    if (x.shutAfter) {
      x.shutAfter = false;
      this.s.shutdown(x.fd, SHUT_WR); // ENOTCONN after a reset: the next read reports the reset
    }
    if (x.released) this.release(x);
    return 0;
  }

  /** A write of `x` failed: drop what is queued, write nothing more; returns `errno`. */
  broke(x: Sock, errno = 0): number {
    x.broken = true;
    x.queue.length = 0;
    this.#dropPipe(x);
    x.shutAfter = false;
    return errno;
  }

  /** A half-close after what is queued. */
  shutdown(x: Sock): void {
    if (x.closed || x.broken) return;
    if (pending(x) || x.connecting) x.shutAfter = true;
    else this.s.shutdown(x.fd, SHUT_WR);
  }

  /** The core closed `x`: now when `abort` or nothing is queued, else once flushed. */
  close(x: Sock, abort: boolean): void {
    if (x.closed) return;
    this.#unpipe(x);
    x.reading = false;
    if (abort || !pending(x) || x.connecting || x.broken) return this.release(x);
    x.released = true;
  }

  /** Drops the bytes in the pipe of `x`, if any (it failed or closes without them). */
  #dropPipe(x: Sock): void {
    if (x.pipe === null) return;
    this.pipes.drop(x.pipe);
    x.pipe = null;
  }

  #unpipe(x: Sock): void {
    const p = x.peer;
    if (p !== null && p.peer === x) p.peer = null;
    x.peer = null;
  }

  /** Closes the descriptor of `x` now (its registration goes with it). */
  release(x: Sock): void {
    if (x.closed) return;
    x.closed = true;
    x.queue.length = 0; // unsent bytes go with it (a closed Sock may be held a while: KeepAlives)
    this.#unpipe(x);
    this.#dropPipe(x);
    if (this.byFd[x.fd] === x) this.byFd[x.fd] = undefined;
    if (this.byId.get(x.id) === x) this.byId.delete(x.id);
    this.s.close(x.fd);
  }

  /** Stops watching listener `l` and closes it. */
  closeListener(l: Listener): void {
    if (l.closed) return;
    l.closed = true;
    if (this.byFd[l.fd] === l) this.byFd[l.fd] = undefined;
    this.s.close(l.fd);
  }

  /** Closes every socket and listener (the worker's exit). */
  closeAll(): void {
    for (const x of this.byFd) {
      if (x === undefined) continue;
      if (x.kind === "sock") this.release(x);
      else if (x.kind === "listener") this.closeListener(x);
      else this.byFd[x.fd] = undefined; // the eventfd is the main thread's
    }
    this.pipes.trim();
  }
}

/** Bytes wait to be written to `x`: in its queue or in its pipe. */
export function pending(x: Sock): boolean {
  return x.queue.length > 0 || x.pipe !== null;
}

/**
 * A listening socket on `ip:port` (`what` names it in errors): SO_REUSEADDR, backlog 1024;
 * `reusePort`: SO_REUSEPORT too, set before the bind, so that several processes listen on the
 * port and the kernel spreads the connections over them (docs/architecture.md, "Private
 * instances and public replicas: the private side").
 */
export function openListener(
  libc: Libc,
  sa: Uint8Array,
  what: string,
  deferAccept: boolean,
  reusePort = false,
): { fd: number; local: Uint8Array } {
  const s = libc.sym;
  const fd = s.socket(
    sa.length === 16 ? AF_INET : AF_INET6,
    SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
    0,
  );
  if (fd < 0) throw new Error(`Cannot listen on ${what}: ${errnoMessage(libc.errno())}`);
  const one = new Int32Array([1]);
  s.setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, one, 4);
  if (reusePort && s.setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, one, 4) !== 0) {
    const e = libc.errno();
    s.close(fd);
    throw new Error(`Cannot listen on ${what}: cannot set SO_REUSEPORT: ${errnoMessage(e)}`);
  }
  // accepted sockets inherit it: no setsockopt per accept
  s.setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, one, 4);
  // a client is accepted once its first bytes are there (the ClientHello), so its first read
  // needs no wait; a silent one is still accepted, after about a second
  if (deferAccept) s.setsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, one, 4);
  if (s.bind(fd, sa, sa.length) !== 0 || s.listen(fd, LISTEN_BACKLOG) !== 0) {
    const e = libc.errno();
    s.close(fd);
    throw new Error(`Cannot listen on ${what}: ${errnoMessage(e)}`);
  }
  const local = new Uint8Array(28);
  s.getsockname(fd, local, new Uint32Array([local.length]));
  return { fd, local };
}

/** Whether `x` is to be read now: by the core, or piped with a peer that took everything. */
export function canRead(x: Sock): boolean {
  if (x.eof || x.released || x.closed) return false;
  const p = x.peer;
  return p !== null ? !pending(p) : x.reading;
}

/**
 * Opens the listener `at` names (`reusePort` on the public port only: docs/settings.md), with
 * errors naming its settings key; the descriptor and the bound local sockaddr.
 */
export function bindListener(
  libc: Libc,
  at: ListenAt,
  isPublic: boolean,
): { fd: number; local: Uint8Array } {
  let sa: Uint8Array | null;
  try {
    sa = encodeSockaddr(at.ip, at.port);
  } catch (err) {
    throw new Error(`Cannot listen on ${at.what}: ${(err as Error).message}`);
  }
  if (sa === null) throw new Error(`Cannot listen on ${at.what}: not an IP address`);
  return openListener(libc, sa, at.what, isPublic, at.reusePort === true);
}
