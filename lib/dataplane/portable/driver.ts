/**
 * The portable driver (docs/architecture.md, "The drivers"): runs the core on this thread over
 * Deno's own sockets (`Deno.listen`, `Deno.connect`), for macOS, Windows and `sockets: deno`. It
 * only moves bytes and events: every decision is the core's.
 *
 * Per socket one read loop runs while the core wants input or the socket is piped; bytes read
 * while the core does not want them (a read that was in flight when it said stop) are kept and
 * delivered when it wants them again, or go first into the pipe. Writes, half-closes and a
 * graceful close go through one promise chain per socket, so they happen in the order asked; a
 * piped direction awaits its write before it reads again (backpressure).
 * @module
 */
import type { HostPort } from "../../role.ts";
import { Engine } from "../core/engine.ts";
import { LISTEN_BACKLOG, type Output, type Port, type SockId } from "../core/io.ts";
import type { DataEvent } from "../events.ts";
import type { Command } from "../snapshot.ts";
import type { DataPlane, DataPlaneOptions } from "../mod.ts";

/** Bytes one read may take while data flows (a read that fills its buffer grows it to this). */
const READ_BYTES = 64 * 1024;
/**
 * The read buffer a socket starts with: an idle held connection keeps a read pending, and its
 * buffer stays pinned, so it starts small (a ClientHello, a token, a small request fit).
 */
const SMALL_READ_BYTES = 2048;
/** How long a listener pauses after a failed accept (EMFILE and the like). */
const ACCEPT_PAUSE_MS = 100;

function codeOf(err: unknown): string {
  const code = (err as { code?: unknown })?.code;
  if (typeof code === "string" && code !== "") return code;
  return err instanceof Error ? err.name : String(err);
}

class PSock {
  conn: Deno.TcpConn | undefined;
  /** The core wants data/EOF reported. */
  reading = false;
  /** Piped to this socket: bytes read go there. */
  peer: PSock | undefined;
  /** Bytes (and EOF: null) read while nobody wanted them. */
  stash: (Uint8Array | null)[] = [];
  #looping = false;
  #tail: Promise<void> = Promise.resolve();
  #writeFailed = false;
  closed = false;

  constructor(readonly d: PortableDriver, readonly id: SockId) {}

  /** Starts the read loop if it should run and does not. */
  kick(): void {
    if (this.#looping || this.closed || this.conn === undefined) return;
    if (!this.reading && this.peer === undefined) return;
    if (this.stash.length > 0) {
      const item = this.stash.shift()!;
      this.#deliver(item);
      if (this.stash.length > 0) return queueMicrotask(() => this.kick());
    }
    this.#looping = true;
    this.#loop().finally(() => {
      this.#looping = false;
      this.kick();
    });
  }

  async #loop(): Promise<void> {
    let buf = new Uint8Array(SMALL_READ_BYTES);
    const conn = this.conn!;
    while (!this.closed && (this.reading || this.peer !== undefined)) {
      let n: number | null;
      try {
        n = await conn.read(buf);
      } catch (err) {
        if (!this.closed) {
          this.d.input((e, now) => e.failed(this.id, { op: "read", code: codeOf(err) }, now));
        }
        return;
      }
      if (this.closed) return;
      const item = n === null ? null : buf.subarray(0, n);
      if (this.peer !== undefined) {
        await this.#pipeOut(item);
      } else if (this.reading) {
        this.#deliver(item);
      } else {
        this.stash.push(item === null ? null : item.slice());
      }
      if (n === null) return;
      if (n === buf.length && buf.length < READ_BYTES) buf = new Uint8Array(READ_BYTES);
    }
  }

  /** Hands one read's result to the core (not piped). */
  #deliver(item: Uint8Array | null): void {
    if (this.peer !== undefined) {
      void this.#pipeOut(item);
      return;
    }
    if (item === null) this.d.input((e, now) => e.eof(this.id, now));
    else this.d.input((e, now) => e.data(this.id, item, now));
  }

  /** One piped chunk (or EOF) towards the peer. */
  async #pipeOut(item: Uint8Array | null): Promise<void> {
    if (item === null) {
      this.d.input((e, now) => e.eof(this.id, now));
      return;
    }
    const peer = this.peer!;
    await peer.write(item);
    if (!this.closed) this.d.engine.moved(this.id, item.length, performance.now());
  }

  /** Queues `bytes`; resolves once written (or failed). `bytes` may be reused after. */
  write(bytes: Uint8Array): Promise<void> {
    return this.#queue(async (conn) => {
      for (let off = 0; off < bytes.length;) off += await conn.write(bytes.subarray(off));
    });
  }

  shutdown(): void {
    void this.#queue((conn) => conn.closeWrite());
  }

  close(abort: boolean): void {
    if (abort) return this.#release();
    this.#tail = this.#tail.then(() => this.#release());
  }

  #queue(op: (conn: Deno.TcpConn) => Promise<void>): Promise<void> {
    this.#tail = this.#tail.then(async () => {
      if (this.closed || this.#writeFailed || this.conn === undefined) return;
      try {
        await op(this.conn);
      } catch (err) {
        if (this.closed) return;
        this.#writeFailed = true;
        this.d.input((e, now) => e.failed(this.id, { op: "write", code: codeOf(err) }, now));
      }
    });
    return this.#tail;
  }

  #release(): void {
    if (this.closed) return;
    this.closed = true;
    this.d.socks.delete(this.id);
    try {
      this.conn?.close();
    } catch {
      // already closed
    }
    this.d.maybeIdle();
  }
}

/** The portable driver of one data plane. */
export class PortableDriver implements DataPlane {
  readonly driver = "portable" as const;
  readonly engine: Engine;
  readonly socks = new Map<SockId, PSock>();
  addrs: { public?: HostPort; private?: HostPort } = {};
  readonly failed: Promise<never> = new Promise<never>(() => {});
  #listeners: Deno.TcpListener[] = [];
  #accepting: Promise<void>[] = [];
  #events: DataEvent[] = [];
  #timer: ReturnType<typeof setTimeout> | undefined;
  #timerAt = Infinity;
  #busy = false;
  #drained: PromiseWithResolvers<void> | undefined;
  #closed = false;

  constructor(readonly options: DataPlaneOptions) {
    this.engine = new Engine(options.role, (b) => crypto.getRandomValues(b), options.idPrefix);
    this.engine.setSnapshot(options.snapshot);
  }

  listen(): void {
    const l = this.options.listen;
    if (l === undefined) return;
    const pub = listenOn(l.public, l.keys?.public, l.reusePort === true);
    let priv: Deno.TcpListener;
    try {
      // never SO_REUSEPORT on the private port: each replica has its own
      priv = listenOn(l.private, l.keys?.private, false);
    } catch (err) {
      pub.close();
      throw err;
    }
    this.#listeners = [pub, priv];
    this.addrs = { public: hostPortOf(pub.addr), private: hostPortOf(priv.addr) };
    this.#accepting = [this.#acceptLoop(pub, "public"), this.#acceptLoop(priv, "private")];
  }

  async #acceptLoop(listener: Deno.TcpListener, port: Port): Promise<void> {
    for (;;) {
      let conn: Deno.TcpConn;
      try {
        conn = await listener.accept();
      } catch (err) {
        if (this.engine.stopping || err instanceof Deno.errors.BadResource) return;
        this.#events.push({ type: "acceptFailed", port, error: codeOf(err) });
        this.#flushEvents();
        await new Promise((r) => setTimeout(r, ACCEPT_PAUSE_MS));
        continue;
      }
      const remote = conn.remoteAddr;
      const local = conn.localAddr;
      let id: SockId | null = null;
      this.input((e, now) => {
        id = e.accept(port, { hostname: remote.hostname, port: remote.port }, now, {
          hostname: local.hostname,
          port: local.port,
        });
        if (id !== null) {
          const s = new PSock(this, id);
          s.conn = conn;
          this.socks.set(id, s);
        }
      });
      if (id === null) conn.close();
      else conn.setNoDelay(true);
    }
  }

  /** Runs one input of the core, then carries out what it asked for. */
  input(fn: (e: Engine, now: number) => void): void {
    fn(this.engine, performance.now());
    if (!this.#busy) this.#apply();
  }

  #apply(): void {
    this.#busy = true;
    try {
      const outs = this.engine.outputs;
      for (let i = 0; i < outs.length; i++) this.#do(outs[i]!);
      outs.length = 0;
    } finally {
      this.#busy = false;
    }
    const ev = this.engine.events;
    if (ev.length > 0) {
      for (const e of ev) {
        this.#events.push(e);
        if (e.type === "drained") this.#drained?.resolve();
      }
      ev.length = 0;
      this.#flushEvents();
    }
    this.#arm();
  }

  #flushEvents(): void {
    if (this.#events.length === 0) return;
    const batch = this.#events;
    this.#events = [];
    queueMicrotask(() => this.options.onEvents(batch));
  }

  #do(o: Output): void {
    switch (o.op) {
      case "read": {
        const s = this.socks.get(o.sock);
        if (s === undefined) return;
        s.reading = o.on;
        if (o.on) s.kick();
        return;
      }
      case "write":
        void this.socks.get(o.sock)?.write(o.bytes);
        return;
      case "shutdown":
        this.socks.get(o.sock)?.shutdown();
        return;
      case "close":
        this.socks.get(o.sock)?.close(o.abort);
        return;
      case "connect":
        return this.#connect(o.sock, o.to);
      case "pipe": {
        const a = this.socks.get(o.a);
        const b = this.socks.get(o.b);
        if (a === undefined || b === undefined) return;
        a.peer = b;
        b.peer = a;
        if (o.keepAliveMs > 0) {
          // Deno sets SO_KEEPALIVE only: the probes keep the system's timings (README, "Drivers")
          a.conn?.setKeepAlive(true);
          b.conn?.setKeepAlive(true);
        }
        a.kick();
        b.kick();
        return;
      }
    }
  }

  #connect(id: SockId, to: HostPort): void {
    const s = new PSock(this, id);
    this.socks.set(id, s);
    Deno.connect({ hostname: to.hostname, port: to.port }).then((conn) => {
      if (s.closed) return conn.close();
      conn.setNoDelay(true);
      s.conn = conn;
      this.input((e, now) => e.connected(id, now));
      s.kick();
    }, (err) => {
      if (s.closed) return;
      this.input((e, now) => e.failed(id, { op: "connect", code: codeOf(err) }, now));
    });
  }

  #arm(): void {
    const at = this.engine.nextTimeout();
    if (at === this.#timerAt) return;
    clearTimeout(this.#timer);
    this.#timerAt = at;
    this.#timer = undefined;
    if (at === Infinity || this.#closed) return;
    this.#timer = setTimeout(() => {
      this.#timerAt = Infinity;
      this.#timer = undefined;
      this.input((e, now) => e.timeout(now));
    }, Math.max(0, Math.ceil(at - performance.now())));
  }

  send(cmd: Command): void {
    if (this.#closed) return;
    if (cmd.type === "stop" || cmd.type === "kill") this.#closeListeners();
    this.input((e, now) => e.command(cmd, now));
  }

  #closeListeners(): void {
    for (const l of this.#listeners) {
      try {
        l.close();
      } catch {
        // closed already
      }
    }
    this.#listeners = [];
  }

  maybeIdle(): void {
    if (this.engine.stopping && this.socks.size === 0) this.#drained?.resolve();
  }

  stop(): Promise<void> {
    this.#drained ??= Promise.withResolvers<void>();
    this.send({ type: "stop" });
    this.maybeIdle();
    return this.#drained.promise;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.send({ type: "kill" });
    this.#closed = true;
    clearTimeout(this.#timer);
    for (const s of [...this.socks.values()]) s.close(true);
    await Promise.all(this.#accepting);
  }
}

function hostPortOf(a: Deno.NetAddr): HostPort {
  return { hostname: a.hostname, port: a.port };
}

/**
 * Whether `Deno.listen({reusePort: true})` may be called: Deno gates it behind `--unstable-net`
 * (deno.json `"unstable": ["net"]`) and, without it, exits the process instead of throwing.
 * `Deno.listenDatagram` exists exactly when that flag is on.
 */
export function reusePortAvailable(): boolean {
  return typeof (Deno as { listenDatagram?: unknown }).listenDatagram === "function";
}

/** A listener on `a` (`key`, the setting, names it in errors), with SO_REUSEPORT if asked. */
function listenOn(a: HostPort, key: string | undefined, reusePort: boolean): Deno.TcpListener {
  const addr = a.hostname.includes(":") ? `[${a.hostname}]:${a.port}` : `${a.hostname}:${a.port}`;
  const what = key === undefined ? addr : `${key} ${addr}`;
  if (reusePort && !reusePortAvailable()) {
    throw new Error(
      `Cannot listen on ${what} with SO_REUSEPORT: Deno's sockets need --unstable-net for it (deno.json "unstable": ["net"]); use the native driver or run with that flag`,
    );
  }
  try {
    return Deno.listen({
      hostname: a.hostname,
      port: a.port,
      tcpBacklog: LISTEN_BACKLOG,
      ...(reusePort ? { reusePort: true } : {}),
    });
  } catch (err) {
    const message = `Cannot listen on ${what}: ${err instanceof Error ? err.message : String(err)}`;
    if (err instanceof Deno.errors.AddrInUse) throw new Deno.errors.AddrInUse(message);
    throw new Error(message, { cause: err });
  }
}

/** Starts the portable driver: binds the listeners (public proxy) and serves. */
export function startPortable(options: DataPlaneOptions): Promise<DataPlane> {
  const d = new PortableDriver(options);
  d.listen();
  return Promise.resolve(d);
}
