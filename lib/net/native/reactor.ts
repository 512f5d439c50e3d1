/**
 * The main thread's side of the native data path (issue 6): non-blocking libc sockets behind the
 * {@linkcode ByteConn} seam, woken by one epoll instance whose `epoll_wait` runs on Deno's
 * blocking thread pool (an FFI `nonblocking` call), so the event loop never blocks.
 *
 * This side carries the short set-up of a connection (accept, the ClientHello, a token, a
 * connect), where one wake-up costs about as much as a Deno socket op. Once two connections are
 * spliced, both sockets move to the {@linkcode DataPlane} worker, whose loop blocks in
 * `epoll_wait` and copies with synchronous `recv`/`send` through one shared buffer.
 * @module
 */
import { lookup } from "node:dns/promises";
import type { ByteConn } from "../conn.ts";
import { formatHostPort } from "../../role.ts";
import {
  AF_INET,
  AF_INET6,
  decodeSockaddr,
  EAGAIN,
  ECONNABORTED,
  EFD_CLOEXEC,
  EFD_NONBLOCK,
  EINPROGRESS,
  EINTR,
  encodeSockaddr,
  EPOLL_CTL_ADD,
  EPOLL_CTL_DEL,
  EPOLL_CTL_MOD,
  EPOLL_DATA_OFFSET,
  EPOLL_EVENT_BYTES,
  EPOLLERR,
  EPOLLHUP,
  EPOLLIN,
  EPOLLOUT,
  IPPROTO_TCP,
  Libc,
  MSG_NOSIGNAL,
  SHUT_WR,
  SO_ERROR,
  SO_REUSEADDR,
  SOCK_CLOEXEC,
  SOCK_NONBLOCK,
  SOCK_STREAM,
  socketError,
  SOL_SOCKET,
  TCP_DEFER_ACCEPT,
  TCP_NODELAY,
} from "./libc.ts";
import type { DataPlane } from "./data_plane.ts";

const MAX_EVENTS = 256;
/**
 * A batch at least this large suggests more is ready right away: look again synchronously (after
 * one event-loop turn). After a smaller one that look would mostly find nothing and cost a turn
 * on top of the blocking-pool wait (CPU profile of W1: about a tenth of the main thread).
 */
const SYNC_REPOLL_BATCH = 4;
const LISTEN_BACKLOG = 1024;

interface Watcher {
  onEvents(events: number): void;
}

/** One epoll instance for the main thread; its loop runs only while something is watched. */
export class Reactor {
  readonly libc: Libc;
  /** Where spliced pairs go; set by {@linkcode openNativeNet}. */
  dataPlane: DataPlane | undefined;
  readonly #ep: number;
  readonly #wake: number;
  readonly #watchers = new Map<number, Watcher>();
  /**
   * The tag of each watched fd's registration, kept in the upper half of `epoll_event.data`: an
   * event the pool thread took before its fd was closed and reused carries the old tag.
   */
  readonly #tags = new Map<number, number>();
  #tag = 0;
  readonly #events = new Uint8Array(MAX_EVENTS * EPOLL_EVENT_BYTES);
  readonly #view = new DataView(this.#events.buffer);
  readonly #ev = new Uint8Array(EPOLL_EVENT_BYTES);
  readonly #evView = new DataView(this.#ev.buffer);
  #loop: Promise<void> | null = null;
  #closed = false;

  constructor() {
    this.libc = Libc.get();
    const s = this.libc.sym;
    this.#ep = s.epollCreate1(SOCK_CLOEXEC);
    if (this.#ep < 0) throw socketError(this.libc.errno(), "Cannot create an epoll instance");
    this.#wake = s.eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (this.#wake < 0) {
      const e = this.libc.errno();
      s.close(this.#ep);
      throw socketError(e, "Cannot create an eventfd");
    }
    this.#ctl(EPOLL_CTL_ADD, this.#wake, EPOLLIN);
  }

  #ctl(op: number, fd: number, events: number, tag = 0): void {
    this.#evView.setUint32(0, events, true);
    this.#evView.setInt32(EPOLL_DATA_OFFSET, fd, true);
    this.#evView.setInt32(EPOLL_DATA_OFFSET + 4, tag, true);
    if (this.libc.sym.epollCtl(this.#ep, op, fd, this.#ev) !== 0 && op !== EPOLL_CTL_DEL) {
      throw socketError(this.libc.errno(), `Cannot watch socket ${fd}`);
    }
  }

  /** Sets the events `fd` is watched for (0: not watched). `was` is the previous set. */
  watch(fd: number, was: number, events: number, watcher: Watcher): void {
    if (this.#closed) {
      // a socket closed after its reactor (which released the epoll instance) only says goodbye
      if (events === 0) {
        this.#watchers.delete(fd);
        this.#tags.delete(fd);
        return;
      }
      throw new Deno.errors.BadResource("The reactor is closed");
    }
    if (events === was) return;
    if (was === 0) {
      const tag = this.#tag = (this.#tag + 1) | 0;
      this.#ctl(EPOLL_CTL_ADD, fd, events, tag);
      this.#watchers.set(fd, watcher);
      this.#tags.set(fd, tag);
      this.#loop ??= this.#run();
    } else if (events === 0) {
      this.#ctl(EPOLL_CTL_DEL, fd, 0);
      this.#watchers.delete(fd);
      this.#tags.delete(fd);
      if (this.#watchers.size === 0) this.#poke();
    } else {
      this.#ctl(EPOLL_CTL_MOD, fd, events, this.#tags.get(fd));
    }
  }

  #poke(): void {
    this.libc.sym.write(this.#wake, new BigUint64Array([1n]), 8n);
  }

  async #run(): Promise<void> {
    const s = this.libc.sym;
    const drain = new Uint8Array(8);
    // One turn of Deno's event loop (its own I/O and timers run) costs about 10 µs of CPU through
    // a MessageChannel; an epoll_wait on the blocking pool costs 30–50 µs (two thread wake-ups).
    // So after a batch of events the next one is looked for synchronously after one such turn,
    // and only when nothing is ready does the loop wait on the pool (measured on W1, issue 6).
    const turn = new MessageChannel();
    let next: () => void = () => {};
    turn.port1.onmessage = () => next();
    const oneTurn = () =>
      new Promise<void>((resolve) => {
        next = resolve;
        turn.port2.postMessage(null);
      });
    try {
      let n = 0;
      while (!this.#closed && this.#watchers.size > 0) {
        if (n >= SYNC_REPOLL_BATCH) {
          await oneTurn();
          if (this.#closed || this.#watchers.size === 0) break;
          n = s.epollWait(this.#ep, this.#events, MAX_EVENTS, 0);
        } else {
          n = 0;
        }
        // A failure on a pool thread leaves its errno there; with a valid epoll fd and buffer the
        // only failure is EINTR (a signal landed on that thread): wait again.
        if (n <= 0) n = await s.epollWaitAsync(this.#ep, this.#events, MAX_EVENTS, -1);
        for (let i = 0; i < n; i++) {
          const off = i * EPOLL_EVENT_BYTES;
          const events = this.#view.getUint32(off, true);
          const fd = this.#view.getInt32(off + EPOLL_DATA_OFFSET, true);
          if (fd === this.#wake) {
            s.read(this.#wake, drain, 8n);
            continue;
          }
          // a registration that is gone (its fd closed, maybe reused since): not this one's
          if (this.#tags.get(fd) !== this.#view.getInt32(off + EPOLL_DATA_OFFSET + 4, true)) {
            continue;
          }
          this.#watchers.get(fd)?.onEvents(events);
        }
        this.dataPlane?.poll();
      }
    } finally {
      turn.port1.close();
      turn.port2.close();
      this.#loop = null;
    }
  }

  /** Stops the loop and releases the epoll instance; watched sockets must be closed first. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#poke();
    await this.#loop;
    this.libc.sym.close(this.#ep);
    this.libc.sym.close(this.#wake);
  }
}

interface Waiter {
  resolve(): void;
  reject(err: unknown): void;
}

/** The connection's libc socket was handed over or closed: it is no longer this thread's. */
function closedError(): Error {
  return new Deno.errors.BadResource("The connection is closed");
}

/** A connected non-blocking libc TCP socket as a {@linkcode ByteConn}. */
export class NativeConn implements ByteConn, Watcher {
  #fd: number;
  #mask = 0;
  #reader: Waiter | null = null;
  #writer: Waiter | null = null;
  #noDelay = false;
  constructor(
    readonly reactor: Reactor,
    fd: number,
    readonly remoteAddr: Deno.NetAddr,
  ) {
    this.#fd = fd;
  }

  /** The socket, or -1 once closed or handed over. */
  get fd(): number {
    return this.#fd;
  }

  onEvents(events: number): void {
    const r = this.#reader;
    const w = this.#writer;
    if (r && (events & (EPOLLIN | EPOLLHUP | EPOLLERR))) {
      this.#reader = null;
      r.resolve();
    }
    if (w && (events & (EPOLLOUT | EPOLLHUP | EPOLLERR))) {
      this.#writer = null;
      w.resolve();
    }
    this.#rewatch();
  }

  #rewatch(): void {
    if (this.#fd < 0) return;
    const want = (this.#reader ? EPOLLIN : 0) | (this.#writer ? EPOLLOUT : 0);
    if (want !== this.#mask) {
      this.reactor.watch(this.#fd, this.#mask, want, this);
      this.#mask = want;
    }
  }

  #wait(write: boolean): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      if (write) {
        if (this.#writer) throw new Deno.errors.Busy("Another write is pending");
        this.#writer = { resolve, reject };
      } else {
        if (this.#reader) throw new Deno.errors.Busy("Another read is pending");
        this.#reader = { resolve, reject };
      }
      this.#rewatch();
    });
  }

  /**
   * Resolves once the socket is readable: data, EOF or an error waits (a pooled connection's
   * watch while idle, without a read buffer). {@linkcode cancelWait} ends the wait early.
   */
  waitReadable(): Promise<void> {
    if (this.#fd < 0) return Promise.reject(closedError());
    return this.#wait(false);
  }

  /** Resolves a pending {@linkcode waitReadable} or {@linkcode waitWritable} now. */
  cancelWait(): void {
    const r = this.#reader;
    const w = this.#writer;
    this.#reader = this.#writer = null;
    this.#rewatch();
    r?.resolve();
    w?.resolve();
  }

  /** Resolves once the socket is writable or failed (a non-blocking connect has finished). */
  waitWritable(): Promise<void> {
    if (this.#fd < 0) return Promise.reject(closedError());
    return this.#wait(true);
  }

  async read(buf: Uint8Array): Promise<number | null> {
    if (buf.length === 0) return 0;
    const libc = this.reactor.libc;
    for (;;) {
      if (this.#fd < 0) throw closedError();
      const n = libc.sym.recv(this.#fd, buf, BigInt(buf.length), 0);
      if (n > 0) return n;
      if (n === 0) return null;
      const e = libc.errno();
      if (e === EAGAIN) await this.#wait(false);
      else if (e !== EINTR) throw socketError(e, "Cannot read");
    }
  }

  async write(buf: Uint8Array): Promise<number> {
    if (buf.length === 0) return 0;
    const libc = this.reactor.libc;
    for (;;) {
      if (this.#fd < 0) throw closedError();
      const n = libc.sym.send(this.#fd, buf, BigInt(buf.length), MSG_NOSIGNAL);
      if (n >= 0) return n;
      const e = libc.errno();
      if (e === EAGAIN) await this.#wait(true);
      else if (e !== EINTR) throw socketError(e, "Cannot write");
    }
  }

  closeWrite(): Promise<void> {
    if (this.#fd < 0) return Promise.reject(closedError());
    if (this.reactor.libc.sym.shutdown(this.#fd, SHUT_WR) !== 0) {
      return Promise.reject(socketError(this.reactor.libc.errno(), "Cannot close for writing"));
    }
    return Promise.resolve();
  }

  /** Records that TCP_NODELAY is already on (inherited from a listener that has it). */
  markNoDelay(): void {
    this.#noDelay = true;
  }
  setNoDelay(on = true): void {
    if (this.#fd < 0 || this.#noDelay === on) return;
    setIntOption(this.reactor.libc, this.#fd, IPPROTO_TCP, TCP_NODELAY, on ? 1 : 0);
    this.#noDelay = on;
  }

  /** Stops watching and forgets the socket; returns it. */
  #release(): number {
    const fd = this.#fd;
    if (this.#mask !== 0) this.reactor.watch(fd, this.#mask, 0, this);
    this.#mask = 0;
    this.#fd = -1;
    return fd;
  }

  /** Stops watching and gives up the socket (for the data plane); the caller now owns `fd`. */
  detach(): number {
    if (this.#fd < 0) throw closedError();
    if (this.#reader || this.#writer) throw new Deno.errors.Busy("A read or write is pending");
    return this.#release();
  }

  /** Closes the socket; a no-op once closed or handed over (no error to build: issue 6, W1). */
  close(): void {
    if (this.#fd < 0) return;
    this.reactor.libc.sym.close(this.#release());
    const r = this.#reader;
    const w = this.#writer;
    this.#reader = this.#writer = null;
    r?.reject(closedError());
    w?.reject(closedError());
  }
}

function setIntOption(libc: Libc, fd: number, level: number, name: number, value: number): void {
  libc.sym.setsockopt(fd, level, name, new Int32Array([value]), 4);
}

/** A listening libc TCP socket; `accept()` and `for await` as a Deno.Listener. */
export class NativeListener implements AsyncIterable<NativeConn>, Watcher {
  #fd: number;
  #mask = 0;
  #waiter: Waiter | null = null;
  readonly #sa = new Uint8Array(28);
  readonly #len = new Uint32Array(1);
  constructor(readonly reactor: Reactor, fd: number, readonly addr: Deno.NetAddr) {
    this.#fd = fd;
  }

  onEvents(): void {
    const w = this.#waiter;
    this.#waiter = null;
    if (w) {
      // stay registered: an accept loop waits again right after draining the queue, and a
      // DEL/ADD pair per wake-up is two syscalls for nothing
      w.resolve();
    } else if (this.#fd >= 0) {
      // nobody accepts now: a level-triggered watch would report the queue again and again
      this.reactor.watch(this.#fd, this.#mask, 0, this);
      this.#mask = 0;
    }
  }

  async accept(): Promise<NativeConn> {
    const libc = this.reactor.libc;
    for (;;) {
      if (this.#fd < 0) throw new Deno.errors.BadResource("The listener is closed");
      this.#len[0] = this.#sa.length;
      const fd = libc.sym.accept4(this.#fd, this.#sa, this.#len, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd >= 0) {
        const conn = new NativeConn(this.reactor, fd, decodeSockaddr(this.#sa));
        conn.markNoDelay(); // Linux copies TCP_NODELAY from the listener to what it accepts
        return conn;
      }
      const e = libc.errno();
      if (e === EINTR || e === ECONNABORTED) continue;
      if (e !== EAGAIN) {
        throw socketError(e, `Cannot accept on ${this.addr.hostname}:${this.addr.port}`);
      }
      await new Promise<void>((resolve, reject) => {
        if (this.#waiter) throw new Deno.errors.Busy("Another accept is pending");
        this.#waiter = { resolve, reject };
        if (this.#mask !== EPOLLIN) {
          this.reactor.watch(this.#fd, this.#mask, EPOLLIN, this);
          this.#mask = EPOLLIN;
        }
      });
    }
  }

  async *[Symbol.asyncIterator](): AsyncIterator<NativeConn> {
    for (;;) {
      try {
        yield await this.accept();
      } catch (err) {
        if (err instanceof Deno.errors.BadResource) return;
        throw err;
      }
    }
  }

  /**
   * Stops watching and gives up the listening socket (to the data plane's front door); the
   * caller owns it now. A pending accept() fails as after close().
   */
  detach(): number {
    if (this.#fd < 0) throw new Deno.errors.BadResource("The listener is closed");
    const fd = this.#fd;
    if (this.#mask !== 0) this.reactor.watch(fd, this.#mask, 0, this);
    this.#mask = 0;
    this.#fd = -1;
    const w = this.#waiter;
    this.#waiter = null;
    w?.reject(new Deno.errors.BadResource("The listener is closed"));
    return fd;
  }

  close(): void {
    if (this.#fd < 0) throw new Deno.errors.BadResource("The listener is closed");
    const fd = this.#fd;
    if (this.#mask !== 0) this.reactor.watch(fd, this.#mask, 0, this);
    this.#mask = 0;
    this.#fd = -1;
    this.reactor.libc.sym.close(fd);
    const w = this.#waiter;
    this.#waiter = null;
    w?.reject(new Deno.errors.BadResource("The listener is closed"));
  }

  [Symbol.dispose](): void {
    try {
      this.close();
    } catch {
      // already closed
    }
  }
}

/** `host:port` for messages, with an IPv6 literal in brackets once (`[::1]:443`). */
function hostPortText(hostname: string, port: number): string {
  const bare = hostname.startsWith("[") && hostname.endsWith("]")
    ? hostname.slice(1, -1)
    : hostname;
  return formatHostPort({ hostname: bare, port });
}

/** The socket address of `hostname` (an IP literal or a name, resolved first). */
async function resolve(hostname: string, port: number): Promise<Uint8Array> {
  const literal = encodeSockaddr(hostname, port);
  if (literal) return literal;
  const { address } = await lookup(hostname);
  const sa = encodeSockaddr(address, port);
  if (!sa) throw new Error(`Cannot resolve ${hostname}: got "${address}"`);
  return sa;
}

function familyOf(sa: Uint8Array): number {
  return sa.length === 16 ? AF_INET : AF_INET6;
}

/** Opens a listening socket (SO_REUSEADDR, as Deno.listen). Throws Deno.errors.AddrInUse & co. */
export async function listenNative(
  reactor: Reactor,
  opts: { hostname?: string; port: number; deferAccept?: boolean },
): Promise<NativeListener> {
  const hostname = opts.hostname ?? "0.0.0.0";
  const sa = await resolve(hostname, opts.port);
  const libc = reactor.libc;
  const fd = libc.sym.socket(familyOf(sa), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  const where = hostPortText(hostname, opts.port);
  if (fd < 0) throw socketError(libc.errno(), `Cannot listen on ${where}`);
  try {
    setIntOption(libc, fd, SOL_SOCKET, SO_REUSEADDR, 1);
    setIntOption(libc, fd, IPPROTO_TCP, TCP_NODELAY, 1); // inherited: no setsockopt per accept
    // Hand over a connection only once its first bytes arrived (HAProxy's defer-accept): the
    // first read then needs no wait. A silent peer is still handed over, after about a second.
    if (opts.deferAccept) setIntOption(libc, fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, 1);
    if (libc.sym.bind(fd, sa, sa.length) !== 0 || libc.sym.listen(fd, LISTEN_BACKLOG) !== 0) {
      throw socketError(libc.errno(), `Cannot listen on ${where}`);
    }
    const out = new Uint8Array(28);
    const len = new Uint32Array([out.length]);
    libc.sym.getsockname(fd, out, len);
    return new NativeListener(reactor, fd, decodeSockaddr(out));
  } catch (err) {
    libc.sym.close(fd);
    throw err;
  }
}

/** Connects a non-blocking socket to `hostname:port`; `signal` abandons the attempt. */
export async function connectNative(
  reactor: Reactor,
  opts: { hostname: string; port: number; signal?: AbortSignal },
): Promise<NativeConn> {
  opts.signal?.throwIfAborted();
  const sa = await resolve(opts.hostname, opts.port);
  opts.signal?.throwIfAborted(); // aborted while resolving: the listener below would never fire
  const libc = reactor.libc;
  const fd = libc.sym.socket(familyOf(sa), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  const where = hostPortText(opts.hostname, opts.port);
  if (fd < 0) throw socketError(libc.errno(), `Cannot connect to ${where}`);
  const conn = new NativeConn(reactor, fd, decodeSockaddr(sa));
  try {
    if (libc.sym.connect(fd, sa, sa.length) !== 0) {
      const e = libc.errno();
      if (e !== EINPROGRESS && e !== EINTR) throw socketError(e, `Cannot connect to ${where}`);
      // On loopback (and a near peer) the handshake is often done by now: then there is nothing
      // to wait for, and the two thread wake-ups of a wait stay off the set-up path (W5).
      const errBuf = new Int32Array(1);
      const len = new Uint32Array([4]);
      const peer = new Uint8Array(28);
      if (libc.sym.getpeername(fd, peer, new Uint32Array([28])) === 0) return conn;
      libc.sym.getsockopt(fd, SOL_SOCKET, SO_ERROR, errBuf, len);
      if (errBuf[0] !== 0) throw socketError(errBuf[0]!, `Cannot connect to ${where}`);
      const signal = opts.signal;
      const onAbort = () => conn.close();
      signal?.addEventListener("abort", onAbort, { once: true });
      try {
        await conn.waitWritable();
      } catch (err) {
        if (signal?.aborted) throw signal.reason;
        throw err;
      } finally {
        signal?.removeEventListener("abort", onAbort);
      }
      libc.sym.getsockopt(fd, SOL_SOCKET, SO_ERROR, errBuf, len);
      if (errBuf[0] !== 0) throw socketError(errBuf[0]!, `Cannot connect to ${where}`);
    }
    return conn;
  } catch (err) {
    conn.close(); // a no-op when the abort closed it already
    throw err;
  }
}
