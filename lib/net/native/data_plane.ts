/**
 * The main thread's handle on the data-plane worker (data_plane_worker.ts): hands a spliced pair
 * of native sockets over, and resolves the splice when the worker reports its end.
 * @module
 */
import type { SpliceOptions, SpliceResult } from "../splice.ts";
import { encodeSockaddr, errnoText, socketError } from "./libc.ts";
import {
  HEAD,
  MAIL_BUSY,
  MAIL_BYTES,
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
  R_ABORTED,
  R_CONNECT,
  R_EOF,
  R_IDLE_END,
  R_READ,
  R_TAKEN,
  R_WATCH,
  REPORT_BYTES,
  REPORT_INTS,
  reportAt,
  RHEAD,
  RINFLIGHT,
  RING_BYTES,
  RING_SLOTS,
  RNUDGE,
  type RouteMail,
  RROOM,
  RTAIL,
  SLEEPING,
  slotAt,
  TAIL,
  type WorkerInit,
} from "./data_plane_layout.ts";
import { NativeConn, type NativeListener, type Reactor } from "./reactor.ts";

/** What the front door (DataPlane.front) tells the public proxy. */
export interface FrontOptions {
  /** The ClientHello size cap (`max_client_hello_bytes`). */
  maxHelloBytes: number;
  /** How long a client's hello may take after its accept (`hello_timeout_ms`). */
  helloTimeoutMs: number;
  /** Aborting ends the splices of the clients the worker serves. */
  signal?: AbortSignal;
  /**
   * The worker serves a client from idle pooled connection `pool` (its id from pool()):
   * `ended` resolves as splice() would, with the hello counted in `aToB`.
   */
  onServed(
    served: { pool: number; info: unknown; name: string; remoteAddr: Deno.NetAddr },
    ended: Promise<SpliceResult>,
  ): void;
  /** A client the caller serves; `pre`: what the worker read from it already. */
  onClient(conn: NativeConn, pre: Uint8Array): void;
  /** An accept failed (EMFILE and the like): the worker stops accepting for 100 ms. */
  onAcceptFailed(error: Error): void;
  /** `n` clients sent no whole hello in time and were closed; `last` is the latest of them. */
  onHelloTimeouts(n: number, last: Deno.NetAddr): void;
  /** The worker died (a bug): nothing accepts on the port any more. */
  onFailed(error: Error): void;
}

/** An announced name the front door may serve from pool buckets (see {@linkcode DataPlane.pool}). */
export interface FrontRoute {
  /** An announced name, exact or `*.parent`. */
  name: string;
  /** Milliseconds since the epoch. */
  expiresAt: number;
  buckets: number[];
}

/** What a parked connection's owner hears when its client comes (see {@linkcode DataPlane.park}). */
export interface ParkOptions {
  /** Aborting ends the parked connection, or the splice of its client. */
  signal?: AbortSignal;
  /** The sides' names in reasons, as in {@linkcode SpliceOptions}: [dial-back, internal]. */
  names?: readonly [string, string];
  /** The worker serves the client, by route `index` (setRoutes); `ended`: as splice() resolves. */
  onServed(index: number, ended: Promise<SpliceResult>): void;
  /** The worker has no route for `name`: the caller serves the client (`rest` followed the header). */
  onHandback(conn: NativeConn, name: string, rest: Uint8Array): void;
}

/** A connection parked in the worker. */
export interface Parked {
  /**
   * Resolves null once a client came (after onServed or onHandback ran), or with why the
   * connection ended without one; never rejects.
   */
  readonly result: Promise<string | null>;
  /** Ends the wait (no-op once a client came): `result` resolves with `why`. */
  unpark(why: string): void;
}

/** A route for parked connections: clients for `name` go to `hostname:port` (an IP literal). */
export interface ParkRoute {
  name: string;
  hostname: string;
  port: number;
}

interface ParkedEntry {
  /** A private proxy's parked connection; undefined for a pooled one of the front door. */
  options: ParkOptions | undefined;
  /** What the caller of pool() gave, handed back with the client it served. */
  info: unknown;
  remoteAddr: Deno.NetAddr;
  resolve(why: string | null): void;
  why: string | undefined;
  onAbort: (() => void) | undefined;
}

interface Live {
  names: readonly [string, string];
  resolve(r: SpliceResult): void;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
}

const DEFAULT_NAMES: readonly [string, string] = ["a", "b"];
const FRONT_NAMES: readonly [string, string] = ["client", "dial-back"];
/** Splice ids are positive int32s (the command ring holds them) and wrap after this one. */
const MAX_ID = 0x7fff_fff0;

/**
 * The id for the next splice, from `next` on: one still `live` (a connection that outlived 2^31
 * splices) is skipped, else both splices would share a report and one promise never resolved.
 */
export function nextSpliceId(next: number, live: { has(id: number): boolean }): number {
  let id = next > MAX_ID ? 1 : next;
  while (live.has(id)) id = id >= MAX_ID ? 1 : id + 1;
  return id;
}

/** How often ends of splices are collected when the reactor has nothing to do. */
const POLL_MS = 50;

/** One worker thread that copies the bytes of every spliced pair of a role. */
export class DataPlane {
  readonly #worker: Worker;
  readonly #ring: Int32Array;
  readonly #rhdr: Int32Array;
  readonly #rdata: Float64Array;
  #pollTimer: ReturnType<typeof setInterval> | undefined;
  readonly #reactor: Reactor;
  readonly #wakeFd: number;
  readonly #live = new Map<number, Live>();
  readonly #parked = new Map<number, ParkedEntry>();
  readonly #ids = { has: (id: number) => this.#live.has(id) || this.#parked.has(id) };
  readonly #mail: Uint8Array;
  #routes: { mail: Uint8Array; length: number } | undefined;
  #front: FrontOptions | undefined;
  /** Clients the worker took from the pool, until their `taken` message names them. */
  readonly #taken = new Map<number, { info: unknown; ended: Promise<SpliceResult> }>();
  #routesTimer: ReturnType<typeof setTimeout> | undefined;
  /** What the mail waiting to be sent holds (a newer one of the same kind replaces it). */
  #unsent: RouteMail = {};
  readonly #wakeBuf = new BigUint64Array([1n]);
  #overflow: number[] = [];
  #overflowTimer: ReturnType<typeof setTimeout> | undefined;
  #nextId = 1;
  #stopped: Promise<void>;
  #closed = false;
  /** The worker died: splices are refused (ended at once). */
  #failed = false;

  private constructor(
    reactor: Reactor,
    worker: Worker,
    ring: Int32Array,
    reports: SharedArrayBuffer,
    mail: SharedArrayBuffer,
    wakeFd: number,
  ) {
    this.#mail = new Uint8Array(mail);
    this.#reactor = reactor;
    this.#worker = worker;
    this.#ring = ring;
    this.#rhdr = new Int32Array(reports, 0, 6);
    this.#rdata = new Float64Array(reports);
    this.#wakeFd = wakeFd;
    let stopped!: () => void;
    this.#stopped = new Promise((resolve) => (stopped = resolve));
    worker.onmessage = (e: MessageEvent) => {
      const m = e.data as {
        type: string;
        reports?: number[];
        error?: string;
        id?: number;
        fd?: number;
        name?: string;
        rest?: Uint8Array;
      };
      if (m.type === "nudge") {
        Atomics.store(this.#rhdr, RNUDGE, 0);
        this.poll();
      } else if (m.type === "taken") this.#onTaken(e.data.list);
      else if (m.type === "client") this.#onClient(e.data);
      else if (m.type === "helloTimeouts") {
        const t = e.data as { n: number; host: string; port: number };
        this.#front?.onHelloTimeouts(t.n, { transport: "tcp", hostname: t.host, port: t.port });
      } else if (m.type === "acceptFailed") {
        this.#front?.onAcceptFailed(
          socketError((e.data as { errno: number }).errno, "Cannot accept a connection"),
        );
      } else if (m.type === "handback") this.#handback(m.id!, m.fd!, m.name!, m.rest!);
      else if (m.type === "done") {
        this.poll(); // the ring holds the older reports (nothing newer while this was on its way)
        this.#settle(m.reports!);
        Atomics.sub(this.#rhdr, RINFLIGHT, 1);
      } else if (m.type === "stopped" || m.type === "failed") {
        this.poll();
        if (m.type === "failed") {
          this.#failed = true; // nobody reads the ring any more: later splices end at once
          this.#failAll(`data plane failed: ${m.error}`);
          this.#front?.onFailed(new Error(`The data plane failed: ${m.error}`));
        }
        stopped();
      }
    };
    worker.onerror = (e: ErrorEvent) => {
      e.preventDefault();
      this.#failed = true;
      this.#failAll(`data plane failed: ${e.message}`);
      this.#front?.onFailed(new Error(`The data plane failed: ${e.message}`));
      stopped();
    };
  }

  /** Starts the worker; resolves once its loop runs. */
  static async start(reactor: Reactor): Promise<DataPlane> {
    const libc = reactor.libc;
    const wakeFd = libc.sym.eventfd(0, 0o4000 | 0o2000000);
    if (wakeFd < 0) throw socketError(libc.errno(), "Cannot create an eventfd");
    const sab = new SharedArrayBuffer(RING_BYTES);
    const reports = new SharedArrayBuffer(REPORT_BYTES);
    const mail = new SharedArrayBuffer(MAIL_BYTES);
    const worker = new Worker(new URL("./data_plane_worker.ts", import.meta.url), {
      type: "module",
    });
    const ready = new Promise<void>((resolve, reject) => {
      worker.onmessage = (e: MessageEvent) => {
        const m = e.data as { type: string; error?: string };
        if (m.type === "ready") resolve();
        else reject(new Error(`Cannot start the data plane: ${m.error ?? m.type}`));
      };
      worker.onerror = (e: ErrorEvent) => {
        e.preventDefault();
        reject(new Error(`Cannot start the data plane: ${e.message}`));
      };
    });
    worker.postMessage({ sab, reports, mail, wakeFd } satisfies WorkerInit);
    try {
      await ready;
    } catch (err) {
      worker.terminate();
      libc.sym.close(wakeFd);
      throw err;
    }
    return new DataPlane(reactor, worker, new Int32Array(sab), reports, mail, wakeFd);
  }

  /** Pairs whose splice has not ended yet. */
  get live(): number {
    return this.#live.size;
  }

  /** Connections parked and not taken yet. */
  get parked(): number {
    return this.#parked.size;
  }

  #push(op: number, id: number, fdA: number, fdB: number): void {
    if (this.#overflow.length > 0 || !this.#put(op, id, fdA, fdB)) {
      this.#overflow.push(op, id, fdA, fdB);
      this.#overflowTimer ??= setTimeout(() => this.#retry(), 1);
    }
  }

  #put(op: number, id: number, fdA: number, fdB: number): boolean {
    const ring = this.#ring;
    const head = Atomics.load(ring, HEAD);
    if (((head - Atomics.load(ring, TAIL)) | 0) >= RING_SLOTS) return false;
    const at = slotAt(head);
    ring[at] = op;
    ring[at + 1] = id;
    ring[at + 2] = fdA;
    ring[at + 3] = fdB;
    Atomics.store(ring, HEAD, (head + 1) | 0);
    if (Atomics.load(ring, SLEEPING) === 1) {
      this.#reactor.libc.sym.write(this.#wakeFd, this.#wakeBuf, 8n);
    }
    return true;
  }

  #retry(): void {
    this.#overflowTimer = undefined;
    const q = this.#overflow;
    let i = 0;
    while (i < q.length && this.#put(q[i]!, q[i + 1]!, q[i + 2]!, q[i + 3]!)) i += 4;
    this.#overflow = q.slice(i);
    if (this.#overflow.length > 0) this.#overflowTimer = setTimeout(() => this.#retry(), 1);
  }

  #settle(reports: number[]): void {
    for (let i = 0; i + REPORT_INTS <= reports.length; i += REPORT_INTS) {
      this.#settleOne(
        reports[i]!,
        reports[i + 1]!,
        reports[i + 2]!,
        reports[i + 3]!,
        reports[i + 4]!,
        reports[i + 5]!,
      );
    }
  }

  #settleOne(id: number, aToB: number, bToA: number, code: number, side: number, errno: number) {
    if (code === R_TAKEN || code === R_IDLE_END) {
      return this.#parkedReport(id, aToB, code, side, errno);
    }
    const live = this.#live.get(id);
    if (!live) return;
    this.#live.delete(id);
    live.signal?.removeEventListener("abort", live.onAbort!);
    const name = live.names[side]!;
    const reason = code === R_EOF
      ? "eof"
      : code === R_ABORTED
      ? "aborted"
      : `${name} ${
        code === R_READ
          ? "read"
          : code === R_WATCH
          ? "watch"
          : code === R_CONNECT
          ? "connect"
          : "write"
      } failed: ${errnoText(errno)}`;
    live.resolve({ aToB, bToA, reason });
  }

  /**
   * Collects the ends of splices the worker reported. Called by the reactor after each batch of
   * events and by a timer while splices are live; cheap when there is nothing.
   */
  poll(): void {
    const hdr = this.#rhdr;
    let tail = Atomics.load(hdr, RTAIL);
    const head = Atomics.load(hdr, RHEAD);
    if (tail === head) {
      // the last ends may have come another way (postMessage when the ring was full, a failure)
      if (this.#live.size === 0) this.#stopPolling();
      return;
    }
    const d = this.#rdata;
    while (tail !== head) {
      const at = reportAt(tail);
      this.#settleOne(d[at]!, d[at + 1]!, d[at + 2]!, d[at + 3]!, d[at + 4]!, d[at + 5]!);
      tail = (tail + 1) | 0;
    }
    Atomics.store(hdr, RTAIL, tail);
    if (this.#live.size === 0) this.#stopPolling();
  }

  #stopPolling(): void {
    clearInterval(this.#pollTimer);
    this.#pollTimer = undefined;
  }

  #failAll(reason: string): void {
    for (const [id, live] of this.#live) {
      this.#live.delete(id);
      live.signal?.removeEventListener("abort", live.onAbort!);
      live.resolve({ aToB: 0, bToA: 0, reason });
    }
    for (const [id, p] of this.#parked) {
      this.#parked.delete(id);
      p.options?.signal?.removeEventListener("abort", p.onAbort!);
      p.resolve(p.why ?? reason);
    }
  }

  /** The worker served clients of the front door: name them to the public proxy. */
  #onTaken(list: { id: number; name: string; host: string; port: number }[]): void {
    this.poll(); // their R_TAKEN reports came first: the splices are live (or over) by now
    for (const m of list) {
      const taken = this.#taken.get(m.id);
      if (taken === undefined || this.#front === undefined) continue;
      this.#taken.delete(m.id);
      this.#front.onServed({
        pool: m.id,
        info: taken.info,
        name: m.name,
        remoteAddr: { transport: "tcp", hostname: m.host, port: m.port },
      }, taken.ended);
    }
  }

  #onClient(m: { fd: number; host: string; port: number; bytes: Uint8Array }): void {
    if (this.#front === undefined || this.#closed) {
      this.#reactor.libc.sym.close(m.fd);
      return;
    }
    const conn = new NativeConn(this.#reactor, m.fd, {
      transport: "tcp",
      hostname: m.host,
      port: m.port,
    });
    conn.markNoDelay(); // accepted from a listener that has it
    this.#front.onClient(conn, m.bytes);
  }

  /** A parked connection was taken by a client the worker serves, or ended without one. */
  #parkedReport(id: number, index: number, code: number, why: number, errno: number): void {
    const p = this.#parked.get(id);
    if (!p) return;
    this.#parked.delete(id);
    const options = p.options;
    if (options === undefined) return this.#pooledReport(id, p, code, why, errno);
    const signal = options.signal;
    signal?.removeEventListener("abort", p.onAbort!);
    if (code === R_IDLE_END) {
      p.resolve(
        p.why ??
          (why === P_EOF
            ? "ended"
            : why === P_READ
            ? `read failed: ${errnoText(errno)}`
            : why === P_BAD_HEADER
            ? "not a pool header"
            : why === P_ABORTED
            ? "aborted"
            : `watch failed: ${errnoText(errno)}`),
      );
      return;
    }
    // the splice goes on under the same id: its end comes as any other
    options.onServed(index, this.#track(id, options.names ?? DEFAULT_NAMES, signal));
    p.resolve(null);
  }

  /**
   * Registers live splice `id`: the promise resolves with its end report; aborting `signal`
   * ends it in the worker.
   */
  #track(
    id: number,
    names: readonly [string, string],
    signal: AbortSignal | undefined,
  ): Promise<SpliceResult> {
    return new Promise<SpliceResult>((resolve) => {
      const onAbort = signal ? () => this.#push(OP_KILL, id, 0, 0) : undefined;
      this.#live.set(id, { names, resolve, signal, onAbort });
      this.#pollTimer ??= setInterval(() => this.poll(), POLL_MS);
      if (signal) signal.addEventListener("abort", onAbort!, { once: true });
    });
  }

  /** A pooled connection of the front door: taken by a client, or ended while idle. */
  #pooledReport(id: number, p: ParkedEntry, code: number, why: number, errno: number): void {
    if (code === R_IDLE_END) {
      // the pool's own reasons (PoolDropReason): "eof", "data", "reset"
      p.resolve(
        p.why ??
          (why === P_EOF
            ? "eof"
            : why === P_DATA
            ? "data"
            : why === P_READ
            ? "reset"
            : why === P_ABORTED
            ? "stopping"
            : `watch failed: ${errnoText(errno)}`),
      );
      return;
    }
    const signal = this.#front?.signal;
    this.#taken.set(id, { info: p.info, ended: this.#track(id, FRONT_NAMES, signal) });
    p.resolve(null);
  }

  #handback(id: number, fd: number, name: string, rest: Uint8Array): void {
    const p = this.#parked.get(id);
    if (!p || this.#closed) {
      this.#reactor.libc.sym.close(fd);
      p?.resolve(p.why ?? "aborted");
      this.#parked.delete(id);
      return;
    }
    this.#parked.delete(id);
    p.options?.signal?.removeEventListener("abort", p.onAbort!);
    const conn = new NativeConn(this.#reactor, fd, p.remoteAddr);
    conn.markNoDelay(); // parked connections had it set (splice and park set it)
    p.options?.onHandback(conn, name, rest);
    p.resolve(null);
  }

  /**
   * Sets the routes parked connections are served by in the worker: exact names whose target is
   * an IP literal (others, and names not listed, are handed back). Each route's number in
   * `onServed` is its index here. Only the last call counts.
   */
  setRoutes(routes: readonly ParkRoute[], connectTimeoutMs: number): void {
    const list: NonNullable<RouteMail["routes"]> = [];
    routes.forEach((r, index) => {
      const sa = encodeSockaddr(r.hostname, r.port);
      if (sa !== null && !r.name.includes("*")) list.push({ name: r.name, index, addr: [...sa] });
    });
    // too many to mail: the main thread serves every client (slower, never wrong)
    this.#mailRoutes({ connectTimeoutMs, routes: list }, { connectTimeoutMs, routes: [] });
  }

  /**
   * Sets the names the front door serves from the pool, and from which buckets. Only the last
   * call counts; a name left out is handed back to the public proxy (which sends a notice).
   */
  setFrontRoutes(routes: readonly FrontRoute[]): void {
    this.#mailRoutes({ front: [...routes] }, { front: [] });
  }

  /** Mails routes to the worker; an unsent mail of the other kind is kept (merged). */
  #mailRoutes(m: RouteMail, tooLarge: RouteMail): void {
    const merged: RouteMail = { ...this.#unsent, ...m };
    let bytes = new TextEncoder().encode(JSON.stringify(merged));
    if (bytes.length > MAIL_BYTES) {
      bytes = new TextEncoder().encode(JSON.stringify({ ...this.#unsent, ...tooLarge }));
    }
    this.#unsent = merged;
    this.#routes = { mail: bytes, length: bytes.length };
    this.#sendRoutes();
  }

  /** A route mail waits to be sent or read (a test waits for this before it connects). */
  get routesPending(): boolean {
    return this.#routes !== undefined || Atomics.load(this.#ring, MAIL_BUSY) === 1;
  }

  /** How many clients the front door may still serve before the caller counts them. */
  setFrontRoom(room: number): void {
    // clients the worker served that the caller has not heard of yet take room too
    room -= this.#taken.size;
    Atomics.store(this.#rhdr, RROOM, Math.max(0, Math.min(room, 0x7fff_ffff)));
  }

  /**
   * Makes `listener` the front door: the worker accepts on it from now on (it becomes closed
   * here). Returns a function that stops accepting and closes the socket.
   */
  front(listener: NativeListener, options: FrontOptions): () => void {
    if (this.#front !== undefined) throw new Error("Cannot open a second front door");
    if (this.#closed || this.#failed) throw new Deno.errors.BadResource("The data plane is closed");
    const fd = listener.detach();
    this.#front = options;
    // the hello timeout comes with the command: the worker needs it from its first client on
    this.#push(OP_FRONT, options.helloTimeoutMs, fd, options.maxHelloBytes);
    let open = true;
    return () => {
      if (!open) return;
      open = false;
      this.#push(OP_FRONT_CLOSE, 0, fd, 0);
    };
  }

  /**
   * Keeps `conn`, an idle pooled connection of the public proxy, in the worker for the front
   * door, in `bucket` (an operator and the names it was opened for; see setFrontRoutes). Its
   * `result` resolves null once a client took it (onServed follows), or with a PoolDropReason.
   */
  pool(conn: NativeConn, bucket: number, info?: unknown): Parked | null {
    return this.#keep(conn, OP_POOL, bucket, undefined, info);
  }

  /**
   * Hands `conn` to the worker as an idle connection (OP_PARK or OP_POOL, `arg` its fdB); null
   * when the data plane cannot take it (closed, failed, a read or write pending).
   */
  #keep(
    conn: NativeConn,
    op: number,
    arg: number,
    options: ParkOptions | undefined,
    info: unknown,
  ): Parked | null {
    if (this.#closed || this.#failed || options?.signal?.aborted) return null;
    let fd: number;
    try {
      conn.setNoDelay(true);
      fd = conn.detach();
    } catch {
      return null;
    }
    const id = nextSpliceId(this.#nextId, this.#ids);
    this.#nextId = id + 1;
    let resolve!: (why: string | null) => void;
    const result = new Promise<string | null>((r) => (resolve = r));
    const entry: ParkedEntry = {
      options,
      info,
      remoteAddr: conn.remoteAddr,
      resolve,
      why: undefined,
      onAbort: undefined,
    };
    const signal = options?.signal;
    if (signal) {
      entry.onAbort = () => {
        entry.why ??= "aborted";
        this.#push(OP_KILL, id, 0, 0);
      };
      signal.addEventListener("abort", entry.onAbort, { once: true });
    }
    // its reports come with a nudge: no poll timer while it is idle
    this.#parked.set(id, entry);
    this.#push(op, id, fd, arg);
    return {
      result,
      unpark: (why: string) => {
        if (!this.#parked.has(id)) return;
        entry.why ??= why;
        this.#push(OP_UNPARK, id, 0, 0);
      },
    };
  }

  #sendRoutes(): void {
    this.#routesTimer = undefined;
    const r = this.#routes;
    if (r === undefined || this.#closed || this.#failed) return;
    if (Atomics.load(this.#ring, MAIL_BUSY) === 1) {
      // the last mail is being read
      this.#routesTimer ??= setTimeout(() => this.#sendRoutes(), 1);
      return;
    }
    this.#routes = undefined;
    this.#unsent = {};
    this.#mail.set(r.mail);
    Atomics.store(this.#ring, MAIL_BUSY, 1);
    this.#push(OP_ROUTES, 0, r.length, 0);
  }

  /**
   * Parks `conn`, an idle pooled dial-back whose next bytes are a pool header, in the worker
   * (it becomes closed here); null when the data plane cannot take it (closed, failed, busy).
   */
  park(conn: NativeConn, options: ParkOptions): Parked | null {
    return this.#keep(conn, OP_PARK, 0, options, undefined);
  }

  /**
   * Hands `a` and `b` to the worker (both become closed here) and resolves when their splice
   * ended; never rejects.
   */
  splice(a: NativeConn, b: NativeConn, options: SpliceOptions = {}): Promise<SpliceResult> {
    const signal = options.signal;
    if (this.#closed || this.#failed || signal?.aborted) {
      a.close(); // closing a NativeConn twice is a no-op
      b.close();
      return Promise.resolve({ aToB: 0, bToA: 0, reason: "aborted" });
    }
    a.setNoDelay(true);
    b.setNoDelay(true);
    // a closed or busy side ends the splice as a failed read would, with nothing left open
    const names = options.names ?? DEFAULT_NAMES;
    let fdA = -1;
    let fdB: number;
    try {
      fdA = a.detach();
      fdB = b.detach();
    } catch (err) {
      if (fdA >= 0) this.#reactor.libc.sym.close(fdA);
      a.close();
      b.close();
      const side = names[fdA >= 0 ? 1 : 0];
      const text = err instanceof Error ? err.message : String(err);
      return Promise.resolve({ aToB: 0, bToA: 0, reason: `${side} read failed: ${text}` });
    }
    const id = nextSpliceId(this.#nextId, this.#ids);
    this.#nextId = id + 1;
    const ended = this.#track(id, names, signal);
    this.#push(OP_SPLICE, id, fdA, fdB);
    return ended;
  }

  /** Ends every splice ("aborted"), stops the worker and releases its eventfd. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#overflowTimer);
    clearTimeout(this.#routesTimer);
    this.#retry();
    // what still does not fit will never run: close the sockets of queued splices here
    const q = this.#overflow;
    this.#overflow = [];
    for (let i = 0; i + 3 < q.length; i += 4) {
      if (q[i] === OP_PARK || q[i] === OP_POOL || q[i] === OP_FRONT) {
        this.#reactor.libc.sym.close(q[i + 2]!);
      }
      if (q[i] !== OP_SPLICE) continue;
      this.#reactor.libc.sym.close(q[i + 2]!);
      this.#reactor.libc.sym.close(q[i + 3]!);
    }
    this.#push(OP_STOP, 0, 0, 0);
    await this.#stopped;
    this.poll();
    this.#stopPolling();
    clearTimeout(this.#overflowTimer);
    this.#worker.terminate();
    this.#failAll("aborted");
    this.#reactor.libc.sym.close(this.#wakeFd);
  }
}
