/**
 * A splice inside the core (docs/architecture.md, "The core"): two sockets after their set-up.
 * The driver copies the bytes itself and reports each chunk with `moved` (a counter and a time,
 * no output); the core answers EOF on one side with a half-close of the other, closes both when
 * both directions are done or either fails, reaps a splice idle for `idle_timeout_ms`, and emits
 * the one `ended` event of the connection.
 * @module
 */
import type { EndReason, Phases, SideName, Via } from "../events.ts";
import type { SockFailure, SockId } from "./io.ts";
import type { Engine, SockOwner } from "./engine.ts";

/** What the `ended` event says about the connection besides bytes and reason. */
export interface PipeMeta {
  readonly conn: number;
  readonly connId: string;
  readonly via: Via;
  readonly operator: string;
  readonly domain: string;
  readonly client: string;
  /** Public: the ALPN protocols the client offered (docs/architecture.md, "ALPN"). */
  readonly alpn?: readonly string[];
  /** Phase times so far; `piped` and `ended` are filled in here. */
  readonly phases: Omit<Phases, "piped" | "ended">;
  /**
   * Public, via pool: the private instance of the dial-back; the splice counts in the engine's
   * live splices of (operator, instance) while it lasts (docs/architecture.md, "Several private
   * instances").
   */
  readonly instance?: string;
  /** Public, via notice: the attempt whose token was claimed (the `piped` event's). */
  readonly attempt?: number;
}

/** Two sockets spliced: `a` is the side towards the client, `b` the side towards the server. */
export class Pipe implements SockOwner {
  timerGen = 0;
  /** Bytes from a to b (up) and from b to a (down). */
  up: number;
  down = 0;
  #eofA = false;
  #eofB = false;
  #last: number;
  #piped: number;
  #done = false;

  get conn(): number {
    return this.meta.conn;
  }

  constructor(
    readonly engine: Engine,
    readonly a: SockId,
    readonly b: SockId,
    readonly names: readonly [SideName, SideName],
    readonly meta: PipeMeta,
    now: number,
    /** Bytes already written towards b (the replayed ClientHello). */
    replayed = 0,
  ) {
    this.up = replayed;
    this.#last = now;
    this.#piped = now;
    engine.own(a, this);
    engine.own(b, this);
    engine.out({ op: "pipe", a, b, keepAliveMs: engine.limits.tcpKeepAliveMs });
    engine.emit({
      type: "piped",
      conn: meta.conn,
      connId: meta.connId,
      via: meta.via,
      operator: meta.operator,
      domain: meta.domain,
      client: meta.client,
      ...(meta.alpn !== undefined ? { alpn: meta.alpn } : {}),
      phases: { ...meta.phases, piped: now, ended: 0 },
      ...(meta.instance !== undefined ? { instance: meta.instance } : {}),
      ...(meta.attempt !== undefined ? { attempt: meta.attempt } : {}),
    });
    if (meta.instance !== undefined) engine.spliced(meta.operator, meta.instance, 1);
    this.#armIdle(now);
  }

  #armIdle(now: number): void {
    const ms = this.engine.limits.idleTimeoutMs;
    if (ms > 0) this.engine.timers.arm(this, this.#last + ms > now ? this.#last + ms : now + ms);
  }

  onMoved(sock: SockId, n: number, now: number): void {
    if (sock === this.a) this.up += n;
    else this.down += n;
    this.#last = now;
  }

  /** Bytes the driver handed to the core instead of copying them (a driver without a fast path). */
  onData(sock: SockId, bytes: Uint8Array, now: number): void {
    this.onMoved(sock, bytes.length, now);
    this.engine.out({ op: "write", sock: sock === this.a ? this.b : this.a, bytes: bytes.slice() });
  }

  onEof(sock: SockId, now: number): void {
    if (sock === this.a) {
      if (this.#eofA) return;
      this.#eofA = true;
    } else {
      if (this.#eofB) return;
      this.#eofB = true;
    }
    this.#last = now;
    this.engine.out({ op: "shutdown", sock: sock === this.a ? this.b : this.a });
    if (this.#eofA && this.#eofB) this.#finish({ kind: "done" }, now, false);
  }

  onFailed(sock: SockId, failure: SockFailure, now: number): void {
    const side = sock === this.a ? this.names[0] : this.names[1];
    this.#finish({ kind: "error", side, op: failure.op, code: failure.code }, now, true);
  }

  onConnected(): void {}

  onTimeout(now: number): void {
    const ms = this.engine.limits.idleTimeoutMs;
    if (ms <= 0) return;
    if (now - this.#last < ms) return this.#armIdle(now); // bytes moved since it was armed
    this.#finish({ kind: "timeout", phase: "idle", side: this.names[0] }, now, true);
  }

  onStop(): void {} // a splice finishes on its own (or at the kill)

  onKill(now: number): void {
    this.#finish({ kind: "stopped" }, now, true);
  }

  #finish(reason: EndReason, now: number, abort: boolean): void {
    if (this.#done) return;
    this.#done = true;
    this.engine.timers.disarm(this);
    this.engine.close(this.a, abort);
    this.engine.close(this.b, abort);
    const m = this.meta;
    if (m.instance !== undefined) this.engine.spliced(m.operator, m.instance, -1);
    this.engine.emit({
      type: "ended",
      conn: m.conn,
      connId: m.connId,
      via: m.via,
      operator: m.operator,
      domain: m.domain,
      client: m.client,
      ...(m.alpn !== undefined ? { alpn: m.alpn } : {}),
      up: this.up,
      down: this.down,
      reason,
      phases: { ...m.phases, piped: this.#piped, ended: now },
      ...(m.instance !== undefined ? { instance: m.instance } : {}),
    });
  }
}
