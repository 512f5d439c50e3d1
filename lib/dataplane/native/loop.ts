/**
 * The native worker's loop (docs/architecture.md, "The drivers"): one epoll instance and one
 * sans-IO core. Each wake-up applies the commands the main thread wrote into the ring (before the
 * socket events of the same wake-up), feeds the socket events to the core, fires the core's
 * deadlines, carries out what the core asks for, and posts the events (gathered over turns).
 * worker.ts is the thread's entry; socket options and the loop's budgets are in sockopts.ts.
 * Inputs are never fed to the core while its outputs are being carried out: a failure found
 * then (a write, a connect, an epoll_ctl) is kept and fed after them.
 * @module
 */
import type { HostPort } from "../../role.ts";
import { canRead } from "./socks.ts";
import { Engine } from "../core/engine.ts";
import type { Output, SockFailure, SockId } from "../core/io.ts";
import {
  decodeSockaddr,
  EAGAIN,
  ECONNABORTED,
  EINTR,
  encodeSockaddr,
  EPOLL_CTL_ADD,
  EPOLL_CTL_DEL,
  EPOLL_EVENT_BYTES,
  EPOLLERR,
  EPOLLHUP,
  EPOLLIN,
  EPOLLOUT,
  errnoMessage,
  errnoName,
  Libc,
  SO_ERROR,
  SOCK_CLOEXEC,
  SOCK_NONBLOCK,
  SOL_SOCKET,
} from "./libc.ts";
import {
  type ListenAt,
  type RingMessage,
  RingReader,
  SLEEPING,
  type WorkerInit,
  type WorkerMessage,
} from "./ring.ts";

import {
  ACCEPT_PAUSE_MS,
  ACCEPTS_PER_EVENT,
  BULK_READ,
  BULK_READS,
  KeepAlives,
  MAX_EVENTS,
  MAX_WAIT_MS,
  openStream,
  POST_GATHER_MS,
  QUIET_MS,
  READS_PER_EVENT,
  REST_GROWTH,
  SPLICES_PER_EVENT,
  startConnect,
  URGENT_EVENTS,
} from "./sockopts.ts";
import { CHUNK, type Listener, pending, type Sock, Socks, SPLICE_FLAGS } from "./socks.ts";

/** V8's collector, where `--expose-gc` exposes it (the shipped flags do: tools/v8_flags.ts). */
const gc = (globalThis as { gc?: (o: object) => void }).gc;

/** A failure found while outputs were carried out, fed to the core after them. */
interface Failure {
  readonly id: SockId;
  readonly failure: SockFailure;
}

/** The worker's loop over one epoll instance and one core. */
export class Loop {
  readonly libc: Libc;
  readonly ep: number;
  readonly socks: Socks;
  readonly engine: Engine;
  readonly reader: RingReader;
  readonly #events = new Uint8Array(MAX_EVENTS * EPOLL_EVENT_BYTES);
  readonly #view = new DataView(this.#events.buffer);
  readonly #listeners: Listener[] = [];
  readonly #failures: Failure[] = [];
  readonly #int = new Int32Array(1);
  readonly #intLen = new Uint32Array(1);
  readonly #addr = new Uint8Array(28);
  readonly #addrLen = new Uint32Array(1);
  readonly #drain = new Uint8Array(8);
  readonly #decoder = new TextDecoder();
  readonly #onMessage = (bytes: Uint8Array): void => this.#command(bytes);
  /** performance.now() of this thread + this = the main thread's performance.now(). */
  readonly #clockOffset: number;
  /** The time of the current turn (the core's clock). */
  #now = 0;
  #postBy = 0; // when the gathered events are to be posted (0: none gathered)
  #exit = false;
  #busy = false; // something happened since the last rest
  /** When something last happened (the core's clock). */
  #lastActive = 0;
  /** The heap's size after the last rest's collection. */
  #restedHeap = 0;
  /** Bytes one splice into a pipe asks for: its capacity. */
  readonly #spliceLen: bigint;
  readonly #keepAlives: KeepAlives;

  constructor(
    init: WorkerInit,
    /** Posts a message to the main thread (the worker's scope). */
    readonly post: (message: WorkerMessage) => void,
  ) {
    this.libc = Libc.get();
    this.ep = this.libc.sym.epollCreate1(SOCK_CLOEXEC); // EPOLL_CLOEXEC is O_CLOEXEC
    if (this.ep < 0) throw new Error(`Cannot create an epoll: ${errnoMessage(this.libc.errno())}`);
    const sp = init.splice;
    this.socks = new Socks(this.libc, this.ep, sp?.pipes ?? 0, sp?.pipeBytes ?? 65536);
    this.#keepAlives = new KeepAlives(this.libc);
    this.#spliceLen = BigInt(sp?.pipeBytes ?? 65536);
    const e = this.socks.addWake(init.wakeFd);
    if (e !== 0) throw new Error(`Cannot watch the wake-up eventfd: ${errnoMessage(e)}`);
    this.reader = new RingReader(init.sab, init.mailbox);
    this.engine = new Engine(init.role, (b) => crypto.getRandomValues(b), init.idPrefix);
    this.engine.setSnapshot(init.snapshot);
    this.#clockOffset = performance.timeOrigin - init.timeOrigin;
    this.#now = this.clock();
  }

  clock(): number {
    return performance.now() + this.#clockOffset;
  }

  /** Binds the public proxy's listeners; throws (a clear message) when one cannot be bound. */
  listen(at: WorkerInit["listen"]): { public?: HostPort; private?: HostPort } {
    if (at === undefined) return {};
    const pub = this.#bind(at.public, "public");
    const priv = this.#bind(at.private, "private");
    return { public: pub, private: priv };
  }

  #bind(at: ListenAt, port: "public" | "private"): HostPort {
    const { listener, addr } = this.socks.listen(at, port);
    this.#listeners.push(listener);
    return addr;
  }

  /**
   * The loop: one turn per wake-up, a function called from a trivial loop so that V8 optimizes
   * it (a loop inline in a function that never returns is recompiled for OSR again and again).
   */
  run(): void {
    this.#commands();
    this.#apply();
    this.#post();
    while (this.#turn());
  }

  #turn(): boolean {
    const n = this.#wait();
    this.#now = this.clock();
    if (n > 0) {
      this.#busy = true;
      this.#lastActive = this.#now;
    }
    this.#commands();
    if (this.#exit) return false;
    const view = this.#view;
    for (let i = 0; i < n; i++) {
      const off = i * EPOLL_EVENT_BYTES;
      const x = this.socks.lookupEvent(view, off);
      if (x === undefined) continue; // stale: its socket was closed in this batch
      if (x.kind === "sock") this.#onSock(x, view.getUint32(off, true));
      else if (x.kind === "listener") this.#accept(x);
      else this.libc.sym.read(x.fd, this.#drain, 8n);
    }
    this.#timers();
    this.#apply();
    this.#post();
    if (n === 0 && this.#busy && this.#now - this.#lastActive >= QUIET_MS) this.#rest();
    return true;
  }

  /**
   * After a quiet second, gives back what the last burst left (docs/architecture.md, "Memory":
   * why, what it costs, the figures): a full collection (with `--expose-gc`) when the heap grew by
   * {@linkcode REST_GROWTH} since the last one, and `malloc_trim` on every rest. Gathered events
   * (a deadline's, this turn) go first: they would wait behind the collection.
   */
  #rest(): void {
    this.#post(true);
    this.#busy = false;
    const heap = Deno.memoryUsage().heapTotal;
    if (gc !== undefined && heap >= this.#restedHeap + REST_GROWTH) {
      gc({ type: "major", execution: "sync", flavor: "last-resort" });
      this.#restedHeap = Deno.memoryUsage().heapTotal;
    }
    this.libc.sym.mallocTrim?.(0n);
    this.socks.pipes.trim();
  }

  /** Blocks until a socket event, a command, or the next deadline; the number of events. */
  #wait(): number {
    const timeout = this.#timeoutMs();
    const ctl = this.reader.ctl;
    Atomics.store(ctl, SLEEPING, 1);
    // checked after SLEEPING is set: a command written before it is not slept on
    if (this.reader.pending() || this.reader.wantsRoom()) {
      Atomics.store(ctl, SLEEPING, 0);
      return 0;
    }
    const n = this.libc.sym.epollWait(this.ep, this.#events, MAX_EVENTS, timeout);
    Atomics.store(ctl, SLEEPING, 0);
    if (n >= 0) return n;
    const e = this.libc.errno();
    if (e === EINTR) return 0;
    throw new Error(`epoll_wait failed: ${errnoMessage(e)}`);
  }

  #timeoutMs(): number {
    let at = this.engine.nextTimeout();
    if (this.#busy && this.#lastActive + QUIET_MS < at) at = this.#lastActive + QUIET_MS;
    if (this.#postBy > 0 && this.#postBy < at) at = this.#postBy;
    if (this.#keepAlives.next < at) at = this.#keepAlives.next;
    for (const l of this.#listeners) {
      if (l.pausedUntil > 0 && l.pausedUntil < at) at = l.pausedUntil;
    }
    if (at === Infinity) return -1;
    const ms = Math.ceil(at - this.clock());
    return ms <= 0 ? 0 : Math.min(ms, MAX_WAIT_MS);
  }

  /** Fires the core's deadlines that are due and resumes paused listeners. */
  #timers(): void {
    const now = this.#now = this.clock();
    this.#keepAlives.due(now);
    if (this.engine.nextTimeout() <= now) {
      this.engine.timeout(now);
      this.#settle();
    }
    for (const l of this.#listeners) {
      if (l.pausedUntil === 0 || l.pausedUntil > now) continue;
      l.pausedUntil = 0;
      if (!l.closed) this.socks.ctl(EPOLL_CTL_ADD, l.fd, l.gen, EPOLLIN);
    }
  }

  /** Posts the events in one message: now if one is urgent or `force`, else after a gather. */
  #post(force = false): void {
    const ev = this.engine.events;
    if (ev.length === 0) return;
    if (this.#postBy === 0) this.#postBy = this.#now + POST_GATHER_MS;
    if (!force && this.#now < this.#postBy && !ev.some((e) => URGENT_EVENTS.has(e.type))) return;
    this.post({ t: "events", events: ev }); // cloned here: the array may be reused
    ev.length = 0;
    this.#postBy = 0;
  }

  // -- commands --------------------------------------------------------------------------------

  #commands(): void {
    if (this.reader.read(this.#onMessage)) this.post({ t: "room" });
  }

  #command(bytes: Uint8Array): void {
    const msg = JSON.parse(this.#decoder.decode(bytes)) as RingMessage;
    this.#busy = true;
    this.#lastActive = this.#now;
    if (msg.type === "exit") {
      this.#exit = true;
      return;
    }
    if (this.#exit) return;
    if (msg.type === "stop" || msg.type === "kill") this.#closeListeners();
    this.engine.command(msg, this.#now);
    this.#settle();
  }

  #closeListeners(): void {
    for (const l of this.#listeners) this.socks.closeListener(l);
  }

  // -- socket events ---------------------------------------------------------------------------

  #onSock(x: Sock, events: number): void {
    if (x.connecting) return this.#connectDone(x, events);
    if (pending(x) && (events & ~EPOLLIN) !== 0) {
      const e = this.socks.flush(x);
      if (e !== 0) return this.#writeFailed(x, e);
      if (x.closed) return;
      if (x.peer !== null) this.socks.mark(x.peer); // its reads waited for this queue
    }
    if ((events & ~EPOLLOUT) !== 0 && canRead(x)) {
      if (x.peer !== null) this.#pump(x);
      else this.#readOnce(x);
    }
    this.socks.mark(x);
    this.#settle();
  }

  /** A write of `x` failed outside the outputs (a flush, a piped chunk). */
  #writeFailed(x: Sock, errno: number): void {
    if (x.released) return this.socks.release(x); // the core is done with it: nobody to tell
    this.engine.failed(x.id, { op: "write", code: errnoName(errno) }, this.#now);
    this.#settle();
  }

  /**
   * Copies what `x` has to its peer, chunk by chunk, until the peer cannot take more; a bulk
   * direction splices instead, while a pipe is free.
   */
  #pump(x: Sock): void {
    const y = x.peer!;
    const socks = this.socks;
    if (x.bulk >= BULK_READS) {
      const p = socks.pipes.take();
      if (p !== null) {
        y.pipe = p;
        return this.#splice(x, y);
      }
    }
    const engine = this.engine;
    for (let i = 0; i < READS_PER_EVENT; i++) {
      const n = socks.recv(x.fd);
      if (n > 0) {
        x.bulk = n >= BULK_READ ? x.bulk + 1 : 0;
        let m = socks.sendChunk(y.fd, n);
        if (m < 0) {
          const e = this.libc.errno();
          if (e !== EAGAIN && e !== EINTR) {
            socks.broke(y);
            return this.#writeFailed(y, e);
          }
          m = 0;
        }
        engine.moved(x.id, n, this.#now);
        if (m < n) {
          socks.keepRest(y, m, n); // backpressure: x is not read until y took it
          break;
        }
        if (n < CHUNK) break;
      } else if (n === 0) {
        x.eof = true;
        engine.eof(x.id, this.#now);
        break;
      } else {
        const e = this.libc.errno();
        if (e === EAGAIN || e === EINTR) break;
        x.eof = true;
        engine.failed(x.id, { op: "read", code: errnoName(e) }, this.#now);
        break;
      }
    }
    this.socks.mark(y);
  }

  /**
   * Moves what `x` has to `y` through the pipe `y` holds (empty), `socket → pipe → socket`, until
   * `y` cannot take more (the rest stays in the pipe, and `x` is not read until `y` took it), `x`
   * has nothing, or a smaller read says the flow went quiet. Bytes are counted as they leave the
   * pipe's source, as the copy path counts them, once the write side took them or kept them.
   */
  #splice(x: Sock, y: Sock): void {
    const socks = this.socks;
    const engine = this.engine;
    const s = this.libc.sym;
    for (let i = 0;;) {
      const p = y.pipe!;
      const n = s.splice(x.fd, null, p.w, null, this.#spliceLen, SPLICE_FLAGS);
      if (n > 0) {
        p.bytes = n;
        if (n < BULK_READ) x.bulk = 0; // quiet: copy from the next event on
        const e = socks.drainPipe(y); // gives the pipe back once empty
        if (e !== 0) return this.#writeFailed(y, e); // the pipe and its bytes went with y
        engine.moved(x.id, n, this.#now);
        if (y.pipe !== null || x.bulk === 0 || ++i >= SPLICES_PER_EVENT) break;
        y.pipe = socks.pipes.take(); // the one just given back
        if (y.pipe === null) break;
        continue;
      }
      y.pipe = null;
      socks.pipes.give(p);
      if (n === 0) {
        x.eof = true;
        engine.eof(x.id, this.#now);
      } else {
        const e = this.libc.errno();
        if (e !== EAGAIN && e !== EINTR) {
          x.eof = true;
          engine.failed(x.id, { op: "read", code: errnoName(e) }, this.#now);
        }
      }
      break;
    }
    this.socks.mark(y);
  }

  /** One read of a socket the core reads itself. */
  #readOnce(x: Sock): void {
    const n = this.socks.recv(x.fd);
    if (n > 0) this.engine.data(x.id, this.socks.chunk.subarray(0, n), this.#now);
    else if (n === 0) {
      x.eof = true;
      this.engine.eof(x.id, this.#now);
    } else {
      const e = this.libc.errno();
      if (e === EAGAIN || e === EINTR) return;
      x.eof = true;
      this.engine.failed(x.id, { op: "read", code: errnoName(e) }, this.#now);
    }
  }

  /** A connecting socket became writable (connected) or failed. */
  #connectDone(x: Sock, events: number): void {
    // a connect that failed reports EPOLLERR (and EPOLLHUP): only then is SO_ERROR worth a syscall
    this.#int[0] = 0;
    if ((events & (EPOLLERR | EPOLLHUP)) !== 0) {
      this.#intLen[0] = 4;
      this.libc.sym.getsockopt(x.fd, SOL_SOCKET, SO_ERROR, this.#int, this.#intLen);
    }
    const err = this.#int[0]!;
    x.connecting = false;
    if (err !== 0) {
      x.eof = true;
      this.socks.broke(x);
      this.engine.failed(x.id, { op: "connect", code: errnoName(err) }, this.#now);
    } else {
      const e = x.queue.length > 0 || x.shutAfter ? this.socks.flush(x) : 0;
      if (e !== 0) return this.#writeFailed(x, e);
      this.engine.connected(x.id, this.#now);
    }
    this.socks.mark(x);
    this.#settle();
  }

  #accept(l: Listener): void {
    const s = this.libc.sym;
    for (let i = 0; i < ACCEPTS_PER_EVENT; i++) {
      this.#addrLen[0] = this.#addr.length;
      const fd = s.accept4(l.fd, this.#addr, this.#addrLen, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        const e = this.libc.errno();
        if (e === EAGAIN) return;
        if (e === EINTR || e === ECONNABORTED) continue;
        // EMFILE and the like: the connection stays queued, so pause or this would spin
        this.socks.ctl(EPOLL_CTL_DEL, l.fd, l.gen, 0);
        l.pausedUntil = this.#now + ACCEPT_PAUSE_MS;
        this.engine.emit({ type: "acceptFailed", port: l.port, error: errnoName(e) });
        return;
      }
      const a = decodeSockaddr(this.#addr);
      const id = this.engine.accept(
        l.port,
        { hostname: a.hostname, port: a.port },
        this.#now,
        l.local ?? this.socks.localOf(fd),
      );
      if (id === null) {
        s.close(fd);
        this.#settle();
        continue;
      }
      const x = this.socks.add(fd, id);
      x.listener = l; // it inherits TCP_NODELAY and the keepalive options
      x.keepAliveMs = l.keepAliveMs;
      this.#settle();
      // its first bytes are most often there (TCP_DEFER_ACCEPT; a dial-back's token): read them
      // now, not after an epoll_wait (a hello routed to a pooled dial-back needs no epoll_ctl)
      if (x.peer !== null || !canRead(x)) continue;
      this.#readOnce(x);
      this.#settle();
    }
  }

  // -- outputs ---------------------------------------------------------------------------------

  /** Carries out the core's outputs, then feeds it the failures found meanwhile, until quiet. */
  #settle(): void {
    const outs = this.engine.outputs;
    for (;;) {
      if (outs.length > 0) {
        for (let i = 0; i < outs.length; i++) this.#do(outs[i]!);
        outs.length = 0;
      }
      const f = this.#failures.shift();
      if (f === undefined) return;
      this.engine.failed(f.id, f.failure, this.#now);
    }
  }

  #do(o: Output): void {
    const byId = this.socks.byId;
    switch (o.op) {
      case "read": {
        const x = byId.get(o.sock);
        if (x === undefined) return;
        x.reading = o.on;
        return this.socks.mark(x);
      }
      case "write": {
        const x = byId.get(o.sock);
        if (x === undefined) return;
        const e = this.socks.write(x, o.bytes);
        if (e !== 0) return this.#fail(x.id, "write", errnoName(e));
        return this.socks.mark(x);
      }
      case "shutdown": {
        const x = byId.get(o.sock);
        if (x !== undefined) this.socks.shutdown(x);
        return;
      }
      case "close": {
        const x = byId.get(o.sock);
        if (x === undefined) return;
        const peer = x.peer;
        this.socks.close(x, o.abort);
        this.socks.mark(x);
        if (peer !== null) this.socks.mark(peer);
        return;
      }
      case "connect":
        return this.#connect(o.sock, o.to);
      case "pipe": {
        const a = byId.get(o.a);
        const b = byId.get(o.b);
        if (a === undefined || b === undefined) return;
        a.peer = b;
        b.peer = a;
        if (a.keepAliveMs !== o.keepAliveMs) this.#keepAlives.spliced(a, o.keepAliveMs, this.#now);
        if (b.keepAliveMs !== o.keepAliveMs) this.#keepAlives.spliced(b, o.keepAliveMs, this.#now);
        this.socks.mark(a);
        return this.socks.mark(b);
      }
    }
  }

  #fail(id: SockId, op: SockFailure["op"], code: string): void {
    this.#failures.push({ id, failure: { op, code } });
  }

  /** Applies the interest marked this turn; a failure of epoll_ctl fails the socket. */
  #apply(): void {
    this.socks.applyMarked((x, e) => {
      if (x.released) return this.socks.release(x);
      x.eof = true;
      this.#fail(x.id, "read", errnoName(e));
      this.#settle(); // may mark more
    });
  }

  /** A non-blocking connect to an IP literal; it completes with EPOLLOUT (and SO_ERROR). */
  #connect(id: SockId, to: HostPort): void {
    let sa: Uint8Array | null;
    try {
      sa = encodeSockaddr(to.hostname, to.port);
    } catch {
      sa = null;
    }
    if (sa === null) return this.#fail(id, "connect", "EINVAL"); // not an IP literal
    const fd = openStream(this.libc, sa, this.#int);
    if (fd < 0) return this.#fail(id, "connect", errnoName(-fd));
    const x = this.socks.add(fd, id);
    x.connecting = true;
    const e = startConnect(this.libc, fd, sa);
    if (e !== 0) {
      x.connecting = false;
      x.eof = true;
      return this.#fail(id, "connect", errnoName(e));
    }
    this.socks.mark(x);
  }

  /** Closes every socket, listener and the epoll instance. */
  close(): void {
    this.socks.closeAll();
    this.libc.sym.close(this.ep);
  }

  /** Posts what the last turn left (the kill's events). */
  flushEvents(): void {
    this.#post(true);
  }
}
