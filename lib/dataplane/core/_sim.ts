/**
 * A deterministic harness for the sans-IO core (the quinn `Pair` idea): one {@linkcode Engine}, a
 * virtual clock, a seeded PRNG (the engine's `random` and the tests' chunking), and simulated
 * sockets that execute the engine's outputs and record what happened to each. No real socket,
 * timer or randomness. Test-only (the leading underscore keeps it out of the published surface).
 * @module
 */
import type { HostPort } from "../../role.ts";
import type { DataEvent } from "../events.ts";
import { type Command, DEFAULT_LIMITS, type Limits, type Snapshot } from "../snapshot.ts";
import { Engine } from "./engine.ts";
import type { Port, SockId } from "./io.ts";

/** mulberry32: a small seeded PRNG, so a failure can be replayed from its seed. */
export class Rng {
  #s: number;
  constructor(seed: number) {
    this.#s = seed | 0;
  }
  /** A float in [0, 1). */
  next(): number {
    this.#s = (this.#s + 0x6d2b79f5) | 0;
    let t = this.#s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  /** An integer in [lo, hi]. */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }
  bool(p = 0.5): boolean {
    return this.next() < p;
  }
  pick<T>(xs: readonly T[]): T {
    return xs[Math.floor(this.next() * xs.length)]!;
  }
  fill(into: Uint8Array): void {
    for (let i = 0; i < into.length; i++) into[i] = Math.floor(this.next() * 256);
  }
  bytes(n: number): Uint8Array {
    const b = new Uint8Array(n);
    this.fill(b);
    return b;
  }
  /** `bytes` cut into random pieces (1 to `max` bytes; never empty pieces). */
  chunks(bytes: Uint8Array, max = 64): Uint8Array[] {
    const out: Uint8Array[] = [];
    for (let off = 0; off < bytes.length;) {
      const n = Math.min(bytes.length - off, this.int(1, this.bool(0.2) ? bytes.length : max));
      out.push(bytes.slice(off, off + n));
      off += n;
    }
    return out;
  }
}

/**
 * How the simulated driver runs a `pipe`: `data` hands every chunk to `engine.data()` (the core's
 * no-fast-path mode: the Pipe writes it to the peer); `fast` copies it to the peer itself and
 * reports it with `engine.moved()` (the driver fast path).
 */
export type PipeMode = "data" | "fast";

/** One simulated socket: what the engine asked of it. */
export interface SimSock {
  readonly id: SockId;
  /** Accepted on a port, or opened by a `connect` output. */
  readonly origin: "accepted" | "connect";
  readonly port?: Port;
  readonly to?: HostPort;
  readonly remote?: HostPort;
  reading: boolean;
  /** Every write, in order (copies). */
  readonly writes: Uint8Array[];
  /** A shutdown was queued (after the writes so far). */
  shutdown: boolean;
  /** Times `close` came (1 is right; more is a bug). */
  closes: number;
  abort: boolean | undefined;
  /** The other socket of a `pipe`. */
  peer: SockId | undefined;
  /** EOF or a failure was reported to the engine (nothing more may be fed). */
  ended: boolean;
  /** For a `connect` socket: connected or failed was reported. */
  settled: boolean;
}

export interface SimOptions {
  readonly seed?: number;
  readonly mode?: PipeMode;
  readonly limits?: Partial<Limits>;
  readonly publicRoutes?: Snapshot["publicRoutes"];
  readonly privateRoutes?: Snapshot["privateRoutes"];
  readonly now?: number;
  /** What connection ids start with (the engine's `idPrefix`); default "t-". */
  readonly idPrefix?: string;
}

/** A snapshot with `limits` over the defaults and the given routes. */
export function snapshotOf(o: SimOptions, version = 1): Snapshot {
  return {
    version,
    limits: { ...DEFAULT_LIMITS, ...o.limits },
    publicRoutes: o.publicRoutes ?? [],
    privateRoutes: o.privateRoutes ?? [],
  };
}

/** An engine, its clock and its simulated sockets. */
export class Sim {
  readonly engine: Engine;
  readonly rng: Rng;
  mode: PipeMode;
  now: number;
  readonly socks = new Map<SockId, SimSock>();
  /** Every event so far, in order. */
  readonly events: DataEvent[] = [];
  /** Contract breaches seen in the outputs (each test asserts it stays empty). */
  readonly violations: string[] = [];
  /** Largest timer heap seen. */
  maxTimers = 0;
  #taken = 0;
  #remotes = 0;

  constructor(role: "public" | "private", o: SimOptions = {}) {
    this.rng = new Rng(o.seed ?? 1);
    this.mode = o.mode ?? "data";
    this.now = o.now ?? 1000;
    this.engine = new Engine(role, (into) => this.rng.fill(into), o.idPrefix ?? "t-");
    this.command({ type: "snapshot", snapshot: snapshotOf(o) });
  }

  // -- inputs ------------------------------------------------------------------------------

  /**
   * Accepts a connection on `port` (each gets its own remote port unless `remote` is given);
   * `local`: its address on this side, as a driver reports it.
   */
  accept(port: Port, remote?: HostPort, local?: HostPort): SockId | null {
    const from = remote ?? { hostname: "203.0.113.9", port: 40000 + this.#remotes++ };
    const id = this.engine.accept(port, from, this.now, local);
    if (id !== null) {
      if (this.socks.has(id)) this.violations.push(`accept reused socket ${id}`);
      this.socks.set(id, newSock(id, "accepted", { port, remote: from }));
    }
    this.#drain();
    return id;
  }

  /**
   * Bytes arrive on `sock`. Piped in `fast` mode they are moved to the peer here; otherwise they
   * go to `engine.data()` in a buffer that is scribbled over after the call (the core may not
   * keep it). Throws when the socket is not readable (a bug in the test, or the core forgot to
   * turn reading on).
   */
  feed(sock: SockId, bytes: Uint8Array): void {
    const s = this.sock(sock);
    if (s.closes > 0 || s.ended) throw new Error(`feed: socket ${sock} is closed or ended`);
    if (!s.reading && s.peer === undefined) throw new Error(`feed: socket ${sock} is not read`);
    if (bytes.length === 0) return;
    if (s.peer !== undefined && this.mode === "fast") {
      const p = this.sock(s.peer);
      if (p.closes > 0 || p.shutdown) this.violations.push(`fast: peer ${p.id} cannot take bytes`);
      p.writes.push(bytes.slice());
      this.engine.moved(sock, bytes.length, this.now);
    } else {
      const buf = bytes.slice();
      this.engine.data(sock, buf, this.now);
      buf.fill(0xee);
    }
    this.#drain();
  }

  /** Feeds `bytes` cut at `cuts` (offsets, ascending). */
  feedAt(sock: SockId, bytes: Uint8Array, cuts: readonly number[]): void {
    let off = 0;
    for (const c of [...cuts, bytes.length]) {
      this.feed(sock, bytes.subarray(off, c));
      off = c;
    }
  }

  /** Feeds `bytes` one byte at a time. */
  feedBytes(sock: SockId, bytes: Uint8Array): void {
    for (let i = 0; i < bytes.length; i++) this.feed(sock, bytes.subarray(i, i + 1));
  }

  /** Feeds `bytes` in random pieces. */
  feedRandom(sock: SockId, bytes: Uint8Array, max = 64): void {
    for (const c of this.rng.chunks(bytes, max)) this.feed(sock, c);
  }

  eof(sock: SockId): void {
    const s = this.sock(sock);
    if (s.ended || s.closes > 0) throw new Error(`eof: socket ${sock} is closed or ended`);
    s.ended = true;
    this.engine.eof(sock, this.now);
    this.#drain();
  }

  fail(sock: SockId, op: "read" | "write" | "connect" = "read", code = "ECONNRESET"): void {
    const s = this.sock(sock);
    if (s.ended || s.closes > 0) throw new Error(`fail: socket ${sock} is closed or ended`);
    s.ended = true;
    if (s.origin === "connect") s.settled = true;
    this.engine.failed(sock, { op, code }, this.now);
    this.#drain();
  }

  /** A `connect` output completed. */
  connected(sock: SockId): void {
    const s = this.sock(sock);
    if (s.origin !== "connect" || s.settled) {
      throw new Error(`connected: ${sock} is not connecting`);
    }
    s.settled = true;
    this.engine.connected(sock, this.now);
    this.#drain();
  }

  /** A `connect` output failed. */
  connectFailed(sock: SockId, code = "ECONNREFUSED"): void {
    this.fail(sock, "connect", code);
  }

  command(cmd: Command): void {
    this.engine.command(cmd, this.now);
    this.#drain();
  }

  /** Moves the clock forward by `ms`, firing every deadline on the way at its own time. */
  advance(ms: number): void {
    this.runUntil(this.now + ms);
  }

  /** Fires deadlines in order up to `until` (the clock visits each), then sets the clock there. */
  runUntil(until: number): void {
    for (;;) {
      const next = this.engine.nextTimeout();
      if (next > until) break;
      this.now = Math.max(this.now, next);
      this.engine.timeout(this.now);
      this.#drain();
    }
    this.now = Math.max(this.now, until);
  }

  /** Jumps to the next deadline and fires it; false when there is none. */
  step(): boolean {
    const next = this.engine.nextTimeout();
    if (next === Infinity) return false;
    this.now = Math.max(this.now, next);
    this.engine.timeout(this.now);
    this.#drain();
    return true;
  }

  // -- what happened -----------------------------------------------------------------------

  sock(id: SockId): SimSock {
    const s = this.socks.get(id);
    if (s === undefined) throw new Error(`no socket ${id}`);
    return s;
  }

  /** Everything written to `sock`, concatenated. */
  written(sock: SockId): Uint8Array {
    return concat(...this.sock(sock).writes);
  }

  /** Events since the last call. */
  take(): DataEvent[] {
    const out = this.events.slice(this.#taken);
    this.#taken = this.events.length;
    return out;
  }

  /** Events of one type (all so far). */
  ofType<T extends DataEvent["type"]>(type: T): Extract<DataEvent, { type: T }>[] {
    return this.events.filter((e): e is Extract<DataEvent, { type: T }> => e.type === type);
  }

  /** `connect` sockets not yet connected or failed, in the order they were asked for. */
  connecting(): SimSock[] {
    return [...this.socks.values()].filter((s) => s.origin === "connect" && !s.settled);
  }

  /** Sockets not closed. */
  open(): SimSock[] {
    return [...this.socks.values()].filter((s) => s.closes === 0);
  }

  // -- outputs -----------------------------------------------------------------------------

  #drain(): void {
    const e = this.engine;
    for (const o of e.outputs) {
      if (o.op === "connect") {
        if (this.socks.has(o.sock)) this.violations.push(`connect reused socket ${o.sock}`);
        this.socks.set(o.sock, newSock(o.sock, "connect", { to: o.to }));
        continue;
      }
      if (o.op === "pipe") {
        const a = this.#live(o.a, "pipe");
        const b = this.#live(o.b, "pipe");
        if (a === undefined || b === undefined) continue;
        if (a.peer !== undefined || b.peer !== undefined || o.a === o.b) {
          this.violations.push(`pipe ${o.a}/${o.b}: already piped`);
        }
        a.peer = o.b;
        b.peer = o.a;
        continue;
      }
      const s = this.socks.get(o.sock);
      if (s === undefined) {
        this.violations.push(`${o.op} for unknown socket ${o.sock}`);
        continue;
      }
      if (s.closes > 0) {
        this.violations.push(`${o.op} on closed socket ${o.sock}`);
        if (o.op === "close") s.closes++;
        continue;
      }
      switch (o.op) {
        case "read":
          s.reading = o.on;
          break;
        case "write":
          if (s.shutdown) this.violations.push(`write after shutdown on ${o.sock}`);
          if (o.bytes.length === 0) this.violations.push(`empty write on ${o.sock}`);
          s.writes.push(o.bytes.slice());
          break;
        case "shutdown":
          if (s.shutdown) this.violations.push(`second shutdown on ${o.sock}`);
          s.shutdown = true;
          break;
        case "close":
          s.closes++;
          s.abort = o.abort;
          s.reading = false;
          break;
      }
    }
    e.outputs.length = 0;
    this.events.push(...e.events);
    e.events.length = 0;
    this.maxTimers = Math.max(this.maxTimers, e.timers.size);
  }

  #live(id: SockId, what: string): SimSock | undefined {
    const s = this.socks.get(id);
    if (s === undefined) this.violations.push(`${what} for unknown socket ${id}`);
    else if (s.closes > 0) this.violations.push(`${what} on closed socket ${id}`);
    else return s;
    return undefined;
  }
}

function newSock(
  id: SockId,
  origin: "accepted" | "connect",
  o: { port?: Port; to?: HostPort; remote?: HostPort },
): SimSock {
  return {
    id,
    origin,
    ...o,
    reading: false,
    writes: [],
    shutdown: false,
    closes: 0,
    abort: undefined,
    peer: undefined,
    ended: false,
    settled: origin === "accepted",
  };
}

export function concat(...parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

// -- ClientHellos ------------------------------------------------------------------------------

/** A real ClientHello captured from a client (lib/wire/testdata). */
export function fixture(name: string): Uint8Array {
  return Deno.readFileSync(new URL(`../../wire/testdata/${name}.bin`, import.meta.url));
}

const u16 = (v: number): number[] => [(v >> 8) & 0xff, v & 0xff];
const vec16 = (b: number[]): number[] => [...u16(b.length), ...b];

/**
 * A minimal synthetic ClientHello with SNI `name` (none when null), in type-22 records of the
 * given payload sizes (the rest in the last one).
 */
export function helloFor(name: string | null, sizes: readonly number[] = []): Uint8Array {
  const ascii = [...new TextEncoder().encode(name ?? "")];
  const sni = name === null ? [] : [...u16(0), ...vec16(vec16([0, ...vec16(ascii)]))];
  const body = [
    ...u16(0x0303),
    ...Array.from({ length: 32 }, (_, i) => i),
    0,
    ...vec16([0x13, 0x01]),
    1,
    0,
    ...vec16(sni),
  ];
  const n = body.length;
  const message = [1, (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff, ...body];
  const out: number[] = [];
  let off = 0;
  for (let i = 0; off < message.length; i++) {
    const size = Math.min(sizes[i] ?? message.length - off, message.length - off);
    out.push(22, 3, 1, ...u16(size), ...message.slice(off, off + size));
    off += size;
  }
  return Uint8Array.from(out);
}

/** A base64 token of 32 bytes from `rng`, with its raw bytes. */
export function newToken(rng: Rng): { text: string; raw: Uint8Array } {
  const raw = rng.bytes(32);
  let s = "";
  for (const b of raw) s += String.fromCharCode(b);
  return { text: btoa(s), raw };
}

/** The raw bytes of a base64 token. */
export function tokenBytes(text: string): Uint8Array {
  return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
}
