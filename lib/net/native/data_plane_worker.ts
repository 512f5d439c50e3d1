/**
 * The data-plane worker (issue 6): one thread that copies the bytes of every spliced pair of a
 * role. Its loop blocks in `epoll_wait` (synchronous FFI: no promise, no op, no thread hop per
 * event) and moves each readable chunk with `recv` into one shared buffer and `send` straight
 * out, so an idle connection holds no buffer at all; only bytes a slow receiver has not taken
 * yet are kept, and reading that direction stops until they are gone (backpressure).
 *
 * Commands come from the main thread through a SharedArrayBuffer ring plus an eventfd (the worker
 * never returns to its event loop, so it cannot take messages); results go back through a report
 * ring (postMessage when it is full). The layout is in data_plane_layout.ts.
 *
 * A private proxy also parks its idle pooled dial-backs here ({@linkcode OP_PARK}): when a client
 * comes on one, the worker reads the pool header, and for a name it has a route for it connects
 * the internal server, writes the ClientHello and splices, all in the one wake-up of its
 * `epoll_wait`. On the main thread the same steps cost two thread wake-ups (the blocking pool's
 * and the event loop's) before any JavaScript runs, then a third to hand the pair over here: the
 * private proxy's share of a new connection's latency (pool header in, ClientHello out to the
 * internal server, loopback timestamps) went from a median of 0.7–0.9 ms to about 0.3 ms (W5).
 *
 * A public proxy likewise hands over its public port and its idle pooled connections (the front
 * door, {@linkcode OP_FRONT}): a client whose ClientHello names a routed name is served from the
 * newest idle pooled connection in the wake-up that completes the hello (hello in to hello out: a
 * median of 0.65–0.78 ms on the main thread, about 0.27 ms here); a hello in pieces is read on
 * here under the hello timeout; any other client goes back to the main thread with the bytes read.
 * @module
 */
import { ClientHelloReader } from "../../proxy/client_hello.ts";
import { decodePoolHeader, POOL_HEADER_TYPE } from "../../proxy/pool_header.ts";
import {
  AF_INET,
  AF_INET6,
  decodeSockaddr,
  EAGAIN,
  ECONNABORTED,
  EINPROGRESS,
  EINTR,
  EPOLL_CTL_ADD,
  EPOLL_CTL_DEL,
  EPOLL_CTL_MOD,
  EPOLL_DATA_OFFSET,
  EPOLL_EVENT_BYTES,
  EPOLLIN,
  EPOLLOUT,
  IPPROTO_TCP,
  Libc,
  MSG_NOSIGNAL,
  SHUT_WR,
  SO_ERROR,
  SOCK_CLOEXEC,
  SOCK_NONBLOCK,
  SOCK_STREAM,
  SOL_SOCKET,
  TCP_NODELAY,
} from "./libc.ts";
import {
  HEAD,
  MAIL_BUSY,
  OP_FRONT,
  OP_FRONT_CLOSE,
  OP_KILL,
  OP_PARK,
  OP_POOL,
  OP_ROUTES,
  OP_SPLICE,
  OP_STOP,
  OP_UNPARK,
  P_ABORTED,
  P_BAD_HEADER,
  P_DATA,
  P_EOF,
  P_READ,
  P_WATCH,
  R_ABORTED,
  R_CONNECT,
  R_EOF,
  R_IDLE_END,
  R_READ,
  R_TAKEN,
  R_WATCH,
  R_WRITE,
  REPORT_SLOTS,
  reportAt,
  RHEAD,
  RINFLIGHT,
  RNUDGE,
  type RouteMail,
  RROOM,
  RTAIL,
  SLEEPING,
  slotAt,
  TAIL,
  type WorkerInit,
} from "./data_plane_layout.ts";

/** The worker's global scope (the project's lib types are the main thread's). */
const scope = self as unknown as {
  onmessage: ((e: MessageEvent<WorkerInit>) => void) | null;
  postMessage(message: unknown, transfer?: Transferable[]): void;
};

/** Bytes one `recv` may take; shared by all connections. */
const CHUNK = 256 * 1024;
/** Reads per readiness event before other sockets get their turn. */
const READS_PER_EVENT = 4;
const MAX_EVENTS = 512;
const ETIMEDOUT = 110;
/** Connections taken from a listener per readiness event before other sockets get their turn. */
const ACCEPTS_PER_EVENT = 64;
/** How long the front door stops accepting after a failed accept (EMFILE and the like). */
const ACCEPT_PAUSE_MS = 100;
/**
 * How long the main thread hears of the clients served here later, batched: its bookkeeping
 * (counters, logs, the pool's refill) then runs after the ClientHello's round trip through the
 * relays, not against it for the CPU (W5 on two cores), and in one message for all of them.
 */
const NOTIFY_DELAY_MS = 2;

class Side {
  /** Bytes read from this socket. */
  bytes = 0;
  /** Bytes read from the peer that this socket has not taken yet. */
  pending: Uint8Array | null = null;
  /** This socket sent EOF. */
  eof = false;
  /** Events this socket is registered for (0: not registered). */
  mask = 0;
  /** A non-blocking connect is under way (the internal side of a parked connection's client). */
  connecting = false;
  peer!: Side;
  constructor(readonly fd: number, readonly pair: Pair, readonly index: 0 | 1) {}
}

class Pair {
  readonly a: Side;
  readonly b: Side;
  done = false;
  /** While {@linkcode Side.connecting}: when the connect fails (performance.now()). */
  deadline = 0;
  constructor(readonly id: number, fdA: number, fdB: number) {
    this.a = new Side(fdA, this, 0);
    this.b = new Side(fdB, this, 1);
    this.a.peer = this.b;
    this.b.peer = this.a;
  }
}

/**
 * An idle pooled connection: a private proxy's, waiting for its client's pool header (bucket
 * -1), or a public proxy's, waiting in `bucket` for a client of the front door.
 */
class Parked {
  /** The start of a header that came in pieces (rare: it comes in one write with the hello). */
  got: Uint8Array | null = null;
  /** Order of arrival: the front door takes the newest idle connection first. */
  seq = 0;
  constructor(readonly id: number, readonly fd: number, readonly bucket = -1) {}
}

/** A client of the front door whose ClientHello is not complete yet. */
class Greeting {
  /** What was read so far, `buf[0, len)` (handed back or replayed whole); grows by doubling. */
  buf = new Uint8Array(0);
  len = 0;
  readonly reader: ClientHelloReader;
  constructor(
    readonly fd: number,
    readonly addr: Deno.NetAddr,
    readonly deadline: number,
    maxHelloBytes: number,
  ) {
    this.reader = new ClientHelloReader(maxHelloBytes);
  }

  append(bytes: Uint8Array): void {
    const want = this.len + bytes.length;
    if (want > this.buf.length) {
      const grown = new Uint8Array(Math.max(want, this.buf.length * 2, 1024));
      grown.set(this.buf.subarray(0, this.len));
      this.buf = grown;
    }
    this.buf.set(bytes, this.len);
    this.len = want;
  }

  /** A copy of what was read (to hand the client back with). */
  read(): Uint8Array {
    return this.buf.slice(0, this.len);
  }
}

/** A listening socket of the front door. */
class FrontListener {
  /** Not watched until then after a failed accept (performance.now()), else 0. */
  pausedUntil = 0;
  constructor(readonly fd: number) {}
}

interface FrontRoute {
  expiresAt: number;
  buckets: number[];
}

interface Route {
  index: number;
  addr: Uint8Array;
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
  // the front door's replay: a pool header from `hdr`, then `chunk`, in one sendmsg
  const hdr = new Uint8Array(2 + 255);
  const iov2 = new Uint8Array(32);
  const iov2View = new DataView(iov2.buffer);
  iov2View.setBigUint64(0, BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(hdr))), true);
  iov2View.setBigUint64(16, BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(chunk))), true);
  const msg2 = new Uint8Array(56);
  const msg2View = new DataView(msg2.buffer);
  msg2View.setBigUint64(16, BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(iov2))), true);
  msg2View.setBigUint64(24, 2n, true);
  /** Sends the first `h` bytes of `hdr` and the first `n` of `chunk`. */
  function sendHeaderAndChunk(fd: number, h: number, n: number): number {
    iov2View.setUint32(8, h, true);
    iov2View.setUint32(24, n, true);
    return s.sendmsg(fd, msg2, MSG_NOSIGNAL);
  }
  const drain = new Uint8Array(8);
  const sides: (Side | undefined)[] = [];
  const pairs = new Map<number, Pair>();
  const parkedByFd: (Parked | undefined)[] = [];
  const parked = new Map<number, Parked>();
  /** Pairs whose internal side is connecting, for their deadlines. */
  const connecting = new Set<Pair>();
  let routes = new Map<string, Route>();
  let connectTimeoutMs = 10_000;
  // the front door (public side)
  const listeners: (FrontListener | undefined)[] = [];
  const paused = new Set<FrontListener>();
  let frontRoutes = new Map<string, FrontRoute>();
  let maxHelloBytes = 16_384;
  let helloTimeoutMs = 10_000;
  /** Clients waiting for the rest of their hello, by fd, in order of their deadlines. */
  const greetings = new Map<number, Greeting>();
  let helloTimeouts = 0;
  let lastTimeout: Deno.NetAddr | undefined;
  /** Idle pooled connections per bucket, newest last. */
  const buckets = new Map<number, Parked[]>();
  let seq = 0;
  const addrBuf = new Uint8Array(28);
  const addrLen = new Uint32Array(1);
  const mail = new Uint8Array(init.mail);
  const intBuf = new Int32Array(1);
  const intLen = new Uint32Array(1);
  const peerBuf = new Uint8Array(28);
  const peerLen = new Uint32Array(1);
  let reports: number[] = []; // only when the report ring is full
  const rhdr = new Int32Array(init.reports, 0, 6);
  const rdata = new Float64Array(init.reports);
  let stopping = false;

  /** Registers, changes or removes a watch; false when the kernel refused (errno set). */
  function ctl(op: number, fd: number, mask: number): boolean {
    evView.setUint32(0, mask, true);
    evView.setInt32(EPOLL_DATA_OFFSET, fd, true);
    return s.epollCtl(ep, op, fd, ev) === 0 || op === EPOLL_CTL_DEL;
  }
  ctl(EPOLL_CTL_ADD, init.wakeFd, EPOLLIN);

  /** Posts the reports that did not fit in the ring (after those in it, before anything newer). */
  function postReports(): void {
    if (reports.length === 0) return;
    Atomics.add(rhdr, RINFLIGHT, 1); // settled by the main thread, which then takes one off
    scope.postMessage({ type: "done", reports });
    reports = [];
  }

  /** Wakes the main thread to read the reports (one message on its way at a time). */
  function nudgeMain(): void {
    if (Atomics.compareExchange(rhdr, RNUDGE, 0, 1) === 0) scope.postMessage({ type: "nudge" });
  }

  // clients served here, told to the main thread NOTIFY_DELAY_MS after the first of a batch
  let notifyAt = 0;
  let nudgeLater = false;
  let taken: { id: number; name: string; host: string; port: number }[] = [];
  function notifyLater(): void {
    if (notifyAt === 0) notifyAt = performance.now() + NOTIFY_DELAY_MS;
  }
  function notify(): void {
    notifyAt = 0;
    postReports(); // the R_TAKEN of these clients first
    if (taken.length > 0) {
      scope.postMessage({ type: "taken", list: taken }); // after their reports: the ring is first
      taken = [];
    }
    if (helloTimeouts > 0) {
      const a = lastTimeout!;
      scope.postMessage({
        type: "helloTimeouts",
        n: helloTimeouts,
        host: a.hostname,
        port: a.port,
      });
      helloTimeouts = 0;
    }
    if (nudgeLater) {
      nudgeLater = false;
      nudgeMain();
    }
  }

  /** Writes one report; `nudge`: the main thread must see it soon (it may be asleep). */
  function report(
    id: number,
    x: number,
    y: number,
    code: number,
    side: number,
    errno: number,
    nudge: boolean,
  ): void {
    const head = Atomics.load(rhdr, RHEAD);
    // once one report waits for a message, the later ones wait too: the order is the meaning
    if (
      reports.length === 0 && Atomics.load(rhdr, RINFLIGHT) === 0 &&
      ((head - Atomics.load(rhdr, RTAIL)) | 0) < REPORT_SLOTS
    ) {
      const at = reportAt(head);
      rdata[at] = id;
      rdata[at + 1] = x;
      rdata[at + 2] = y;
      rdata[at + 3] = code;
      rdata[at + 4] = side;
      rdata[at + 5] = errno;
      Atomics.store(rhdr, RHEAD, (head + 1) | 0); // publishes the slot
      if (nudge) nudgeMain();
    } else {
      reports.push(id, x, y, code, side, errno); // posted at the end of this turn
    }
  }

  function release(x: Side): void {
    if (x.mask !== 0) ctl(EPOLL_CTL_DEL, x.fd, 0);
    x.mask = 0;
    sides[x.fd] = undefined;
    s.close(x.fd);
  }

  function finish(p: Pair, code: number, side: number, errno: number): void {
    if (p.done) return;
    p.done = true;
    release(p.a);
    release(p.b);
    pairs.delete(p.id);
    connecting.delete(p);
    // a connect that failed is the internal side's failure whatever the event said
    if (p.b.connecting && (code === R_READ || code === R_WRITE)) {
      code = R_CONNECT;
      side = 1;
    }
    report(p.id, p.a.bytes, p.b.bytes, code, side, errno, false);
  }

  /** Stops watching a parked connection and forgets it (the caller closes or uses it). */
  function unwatchParked(q: Parked): void {
    ctl(EPOLL_CTL_DEL, q.fd, 0);
    parked.delete(q.id);
    parkedByFd[q.fd] = undefined;
    if (q.bucket >= 0) {
      const list = buckets.get(q.bucket);
      const i = list?.indexOf(q) ?? -1;
      if (i >= 0) list!.splice(i, 1);
      if (list?.length === 0) buckets.delete(q.bucket);
    }
  }

  /** Ends a parked connection that no client took: closes it and tells the main thread why. */
  function dropParked(q: Parked, why: number, errno: number): void {
    unwatchParked(q);
    s.close(q.fd);
    report(q.id, 0, 0, R_IDLE_END, why, errno, true);
  }

  /** Anything on an idle pooled connection of the front door ends it (EOF, bytes, a reset). */
  function onPooled(q: Parked): void {
    const n = s.recv(q.fd, chunk, chunkBytes, 0); // all of it: a close with unread bytes resets
    if (n === 0) dropParked(q, P_EOF, 0);
    else if (n > 0) dropParked(q, P_DATA, 0);
    else {
      const e = libc.errno();
      if (e !== EAGAIN && e !== EINTR) dropParked(q, P_READ, e);
    }
  }

  /** Data (or EOF, or an error) on a parked connection: its client came, or it ended. */
  function onParked(q: Parked): void {
    if (q.bucket >= 0) return onPooled(q);
    let n = s.recv(q.fd, chunk, chunkBytes, 0);
    if (n === 0) return dropParked(q, P_EOF, 0);
    if (n < 0) {
      const e = libc.errno();
      if (e !== EAGAIN && e !== EINTR) dropParked(q, P_READ, e);
      return;
    }
    let data = chunk.subarray(0, n);
    if (q.got !== null) {
      const all = new Uint8Array(q.got.length + n);
      all.set(q.got);
      all.set(data, q.got.length);
      data = all;
      n = all.length;
    }
    let h: { name: string; length: number } | null;
    try {
      h = decodePoolHeader(data);
    } catch {
      return dropParked(q, P_BAD_HEADER, 0); // the main thread's reason is "not a pool header"
    }
    if (h === null) {
      q.got = data.slice();
      return;
    }
    const { name, length: headerLength } = h;
    unwatchParked(q);
    const rest = data.slice(headerLength, n);
    const route = routes.get(name);
    if (route === undefined) {
      // not a name served here (or not an IP literal): the main thread checks and serves it
      scope.postMessage({ type: "handback", id: q.id, fd: q.fd, name, rest }, [rest.buffer]);
      return;
    }
    report(q.id, route.index, 0, R_TAKEN, 0, 0, false);
    serveParked(q, route, rest);
    // the main thread refills the pool: woken a little later, not against this client (W5)
    nudgeLater = true;
    notifyLater();
  }

  /** Connects the route's internal server for the client on `q` and splices them. */
  function serveParked(q: Parked, route: Route, rest: Uint8Array): void {
    const family = route.addr.length === 16 ? AF_INET : AF_INET6;
    const fd = s.socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      const e = libc.errno();
      s.close(q.fd);
      report(q.id, rest.length, 0, R_CONNECT, 1, e, false);
      return;
    }
    intBuf[0] = 1;
    s.setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, intBuf, 4);
    const p = new Pair(q.id, q.fd, fd);
    p.a.bytes = rest.length;
    pairs.set(p.id, p);
    sides[p.a.fd] = p.a;
    sides[p.b.fd] = p.b;
    if (rest.length > 0) p.b.pending = rest;
    if (s.connect(fd, route.addr, route.addr.length) !== 0) {
      const e = libc.errno();
      if (e !== EINPROGRESS && e !== EINTR) {
        p.b.connecting = true; // reported as the connect's failure
        finish(p, R_CONNECT, 1, e);
        return;
      }
      // on loopback (and a near peer) the handshake is often done by now: nothing to wait for
      peerLen[0] = peerBuf.length;
      if (s.getpeername(fd, peerBuf, peerLen) !== 0) {
        p.b.connecting = true;
        p.deadline = performance.now() + connectTimeoutMs;
        connecting.add(p);
      }
    }
    if (!p.b.connecting && p.b.pending !== null && !flush(p.b)) return;
    rewatch(p.a);
    rewatch(p.b);
  }

  /** The connect of `x` (an internal side) finished: false when it failed (the pair ended). */
  function connected(x: Side): boolean {
    intBuf[0] = 0;
    intLen[0] = 4;
    s.getsockopt(x.fd, SOL_SOCKET, SO_ERROR, intBuf, intLen);
    if (intBuf[0] !== 0) {
      finish(x.pair, R_CONNECT, 1, intBuf[0]!);
      return false;
    }
    // no error and no peer yet: an event meant for the socket that had this fd before (closed
    // earlier in the same batch); the connect goes on, under its deadline
    peerLen[0] = peerBuf.length;
    if (s.getpeername(x.fd, peerBuf, peerLen) !== 0) return false;
    x.connecting = false;
    connecting.delete(x.pair);
    return true;
  }

  /** Ends the pairs whose connect took longer than the connect timeout. */
  function expire(now: number): void {
    for (const p of connecting) {
      if (p.deadline <= now) finish(p, R_CONNECT, 1, ETIMEDOUT);
    }
  }

  /** How long epoll_wait may block: until the nearest deadline, or for ever. */
  function waitMs(): number {
    if (connecting.size === 0 && paused.size === 0 && notifyAt === 0 && greetings.size === 0) {
      return -1;
    }
    let first = notifyAt === 0 ? Infinity : notifyAt;
    if (greetings.size > 0) {
      for (const g of greetings.values()) {
        first = Math.min(first, g.deadline); // the first is the earliest
        break;
      }
    }
    for (const p of connecting) first = Math.min(first, p.deadline);
    for (const l of paused) first = Math.min(first, l.pausedUntil);
    return Math.max(0, Math.ceil(first - performance.now()));
  }

  function readRoutes(length: number): void {
    try {
      const m = JSON.parse(new TextDecoder().decode(mail.slice(0, length))) as RouteMail;
      if (m.routes !== undefined) {
        const next = new Map<string, Route>();
        for (const r of m.routes) {
          next.set(r.name, { index: r.index, addr: new Uint8Array(r.addr) });
        }
        routes = next;
      }
      if (m.connectTimeoutMs !== undefined) connectTimeoutMs = m.connectTimeoutMs;
      if (m.front !== undefined) {
        const next = new Map<string, FrontRoute>();
        for (const r of m.front) next.set(r.name, { expiresAt: r.expiresAt, buckets: r.buckets });
        frontRoutes = next;
      }
    } finally {
      Atomics.store(ring, MAIL_BUSY, 0);
    }
  }

  // ---- the front door -----------------------------------------------------------------------

  /** The live route for `name` as the public proxy matches it: exact first, then `*.parent`. */
  function frontRoute(name: string, now: number): FrontRoute | undefined {
    const exact = frontRoutes.get(name);
    if (exact !== undefined && exact.expiresAt > now) return exact;
    const dot = name.indexOf(".");
    if (dot < 0) return undefined;
    const wild = frontRoutes.get(`*${name.slice(dot)}`);
    return wild !== undefined && wild.expiresAt > now ? wild : undefined;
  }

  /** The newest idle pooled connection that may serve `name`, or undefined. */
  function pooledFor(name: string): Parked | undefined {
    const r = frontRoute(name, Date.now());
    if (r === undefined) return undefined;
    let best: Parked | undefined;
    for (const b of r.buckets) {
      const list = buckets.get(b);
      const top = list?.[list.length - 1];
      if (top !== undefined && (best === undefined || top.seq > best.seq)) best = top;
    }
    return best;
  }

  /** The main thread takes over a client (no pooled connection for it, or anything unusual). */
  function handBack(fd: number, addr: Deno.NetAddr, bytes: Uint8Array): void {
    scope.postMessage(
      { type: "client", fd, host: addr.hostname, port: addr.port, bytes },
      [bytes.buffer as ArrayBuffer],
    );
  }

  /**
   * A client just accepted: with TCP_DEFER_ACCEPT its ClientHello is usually there already. A
   * whole hello for a name with an idle pooled connection is served here; else the main thread
   * gets the client and what was read (it reads the rest under its hello deadline, refuses, or
   * sends a notice).
   */
  function onClient(fd: number, addr: Deno.NetAddr): void {
    const n = s.recv(fd, chunk, chunkBytes, 0);
    if (n === 0 || (n < 0 && libc.errno() !== EAGAIN)) {
      return handBack(fd, addr, new Uint8Array(0)); // EOF or an error: the main thread says so
    }
    // a client waiting here for its hello holds a descriptor too: within max_connections only
    const room = Atomics.load(rhdr, RROOM) - greetings.size;
    if (n < 0) {
      // nothing yet (a silent client)
      return room > 0 ? greet(fd, addr, new Uint8Array(0)) : handBack(fd, addr, new Uint8Array(0));
    }
    let name: string | null;
    try {
      // parsed in place: the hello is sent from `chunk` below, so a client costs no copies
      const r = new ClientHelloReader(maxHelloBytes, true).push(chunk.subarray(0, n));
      if (!r.done) {
        // more to come (a long hello)
        return room > 0
          ? greet(fd, addr, chunk.slice(0, n))
          : handBack(fd, addr, chunk.slice(0, n));
      }
      name = r.hello.serverName;
    } catch {
      return handBack(fd, addr, chunk.slice(0, n)); // the main thread says why, sends the alert
    }
    serveClient(fd, addr, name, n);
  }

  /**
   * Serves a client whose hello (for `name`) and what followed it are the first `n` bytes of
   * `chunk`: from the newest idle pooled connection for the name, else by the main thread.
   */
  function serveClient(fd: number, addr: Deno.NetAddr, name: string | null, n: number): void {
    const q = name === null ? undefined : pooledFor(name);
    if (q === undefined || Atomics.load(rhdr, RROOM) <= 0) {
      return handBack(fd, addr, chunk.slice(0, n));
    }
    Atomics.sub(rhdr, RROOM, 1); // the main thread sets it right again when it counts the client
    unwatchParked(q);
    const p = new Pair(q.id, fd, q.fd);
    p.a.bytes = n;
    pairs.set(p.id, p);
    sides[fd] = p.a;
    sides[q.fd] = p.b;
    const h = 2 + name!.length;
    hdr[0] = POOL_HEADER_TYPE;
    hdr[1] = name!.length;
    for (let i = 0; i < name!.length; i++) hdr[2 + i] = name!.charCodeAt(i);
    report(p.id, 0, 0, R_TAKEN, 0, 0, false); // before any end of the pair
    // a fresh connection's send buffer is empty: the header and the hello go out in one segment
    let m = sendHeaderAndChunk(q.fd, h, n);
    if (m < 0) {
      const e = libc.errno();
      if (e !== EAGAIN && e !== EINTR) finish(p, R_WRITE, 1, e);
      m = 0;
    }
    if (!p.done && m < h + n) {
      const rest = new Uint8Array(h + n - m); // rare: kept until the pooled side takes it
      if (m < h) {
        rest.set(hdr.subarray(m, h));
        rest.set(chunk.subarray(0, n), h - m);
      } else rest.set(chunk.subarray(m - h, n));
      p.b.pending = rest;
    }
    rewatch(p.a);
    rewatch(p.b);
    taken.push({ id: p.id, name: name!, host: addr.hostname, port: addr.port });
    notifyLater();
  }

  /**
   * A client whose hello is not all there yet (more than one segment, or a slow client): read on
   * here until it is, within the hello timeout from its accept (then it is closed and counted,
   * as the main thread would), so that it can still be served from the pool.
   */
  function greet(fd: number, addr: Deno.NetAddr, bytes: Uint8Array): void {
    const g = new Greeting(fd, addr, performance.now() + helloTimeoutMs, maxHelloBytes);
    try {
      if (bytes.length > 0) g.reader.push(bytes); // incomplete: checked above
    } catch {
      return handBack(fd, addr, bytes);
    }
    g.append(bytes);
    if (!ctl(EPOLL_CTL_ADD, fd, EPOLLIN)) return handBack(fd, addr, bytes);
    greetings.set(fd, g);
  }

  function onGreeting(g: Greeting): void {
    const n = s.recv(g.fd, chunk, chunkBytes, 0);
    if (n < 0 && (libc.errno() === EAGAIN || libc.errno() === EINTR)) return;
    let name: string | null = null;
    let done = n <= 0; // EOF or an error: handed back, the main thread says so
    if (n > 0) {
      g.append(chunk.subarray(0, n));
      try {
        const r = g.reader.push(chunk.subarray(0, n));
        // not complete: it stays in `greetings` where it was, so the deadlines stay in order
        if (!r.done) return;
        name = r.hello.serverName;
      } catch {
        done = true; // not a hello: handed back, the main thread says why
      }
    }
    greetings.delete(g.fd);
    ctl(EPOLL_CTL_DEL, g.fd, 0);
    if (done || g.len > CHUNK) return handBack(g.fd, g.addr, g.read());
    chunk.set(g.buf.subarray(0, g.len)); // serveClient() sends from `chunk`
    serveClient(g.fd, g.addr, name, g.len);
  }

  /** Closes the clients whose hello did not come within the hello timeout. */
  function expireGreetings(now: number): void {
    for (const g of greetings.values()) {
      if (g.deadline > now) break; // in order of their deadlines
      greetings.delete(g.fd);
      ctl(EPOLL_CTL_DEL, g.fd, 0);
      s.close(g.fd);
      helloTimeouts++;
      lastTimeout = g.addr;
      notifyLater();
    }
  }

  function onListener(l: FrontListener): void {
    for (let i = 0; i < ACCEPTS_PER_EVENT; i++) {
      addrLen[0] = addrBuf.length;
      const fd = s.accept4(l.fd, addrBuf, addrLen, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd >= 0) {
        onClient(fd, decodeSockaddr(addrBuf));
        continue;
      }
      const e = libc.errno();
      if (e === EINTR || e === ECONNABORTED) continue;
      if (e === EAGAIN) return;
      // EMFILE and the like: one refused client; pause, or the queued one spins this loop
      ctl(EPOLL_CTL_DEL, l.fd, 0);
      l.pausedUntil = performance.now() + ACCEPT_PAUSE_MS;
      paused.add(l);
      scope.postMessage({ type: "acceptFailed", errno: e });
      return;
    }
  }

  function resume(now: number): void {
    for (const l of paused) {
      if (l.pausedUntil > now) continue;
      paused.delete(l);
      l.pausedUntil = 0;
      if (listeners[l.fd] === l) ctl(EPOLL_CTL_ADD, l.fd, EPOLLIN);
    }
  }

  /**
   * Registers `x` for what it waits for now; an unregistered socket reports nothing (no HUP). A
   * connecting side waits for OUT only, and its peer is not read until the connect is done.
   */
  function rewatch(x: Side): void {
    if (x.pair.done) return;
    const want = x.connecting
      ? EPOLLOUT
      : (!x.eof && x.peer.pending === null && !x.peer.connecting ? EPOLLIN : 0) |
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
    if (x.connecting && !connected(x)) return;
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
      } else if (op === OP_PARK || op === OP_POOL) {
        const fd = ring[at + 2]!;
        const q = new Parked(id, fd, op === OP_POOL ? ring[at + 3]! : -1);
        q.seq = ++seq;
        parked.set(id, q);
        parkedByFd[fd] = q;
        if (q.bucket >= 0) {
          let list = buckets.get(q.bucket);
          if (list === undefined) buckets.set(q.bucket, list = []);
          list.push(q);
        }
        if (!ctl(EPOLL_CTL_ADD, fd, EPOLLIN)) dropParked(q, P_WATCH, libc.errno());
      } else if (op === OP_FRONT) {
        const l = new FrontListener(ring[at + 2]!);
        helloTimeoutMs = id;
        maxHelloBytes = ring[at + 3]!;
        listeners[l.fd] = l;
        ctl(EPOLL_CTL_ADD, l.fd, EPOLLIN); // a listening socket: cannot fail but for ENOMEM
      } else if (op === OP_FRONT_CLOSE) {
        const fd = ring[at + 2]!;
        const l = listeners[fd];
        if (l !== undefined) {
          listeners[fd] = undefined;
          paused.delete(l);
          ctl(EPOLL_CTL_DEL, fd, 0);
          s.close(fd);
        }
      } else if (op === OP_KILL || op === OP_UNPARK) {
        const q = parked.get(id);
        if (q) dropParked(q, P_ABORTED, 0);
        const p = op === OP_KILL ? pairs.get(id) : undefined;
        if (p) finish(p, R_ABORTED, 0, 0);
      } else if (op === OP_ROUTES) {
        readRoutes(ring[at + 2]!);
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
    postReports();
    Atomics.store(ring, SLEEPING, 1);
    if (Atomics.load(ring, HEAD) !== Atomics.load(ring, TAIL)) {
      Atomics.store(ring, SLEEPING, 0);
      return true;
    }
    const n = s.epollWait(ep, events, MAX_EVENTS, waitMs());
    Atomics.store(ring, SLEEPING, 0);
    // what was asked before these events happened applies to them (routes before a client)
    if (n > 0) commands();
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
      else {
        const q = parkedByFd[fd];
        if (q !== undefined) onParked(q);
        else {
          const l = listeners[fd];
          if (l !== undefined) onListener(l);
          else {
            const g = greetings.get(fd);
            if (g !== undefined) onGreeting(g);
          }
        }
      }
    }
    if (connecting.size > 0) expire(performance.now());
    if (paused.size > 0) resume(performance.now());
    if (greetings.size > 0) expireGreetings(performance.now());
    if (notifyAt !== 0 && performance.now() >= notifyAt) notify();
    return true;
  }

  scope.postMessage({ type: "ready" });
  try {
    while (step());
  } finally {
    // stopped, or failed (a bug): either way nothing stays open behind the main thread's back
    notify();
    for (const p of [...pairs.values()]) finish(p, R_ABORTED, 0, 0);
    for (const q of [...parked.values()]) dropParked(q, P_ABORTED, 0);
    for (const l of listeners) {
      if (l !== undefined) s.close(l.fd);
    }
    for (const g of greetings.values()) s.close(g.fd);
    s.close(ep);
    postReports();
  }
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
