/**
 * A pooled dial-back taken for a client, until its first byte back (docs/architecture.md, "Pooled
 * dial-backs that close unanswered"): it holds what was written to it, so that a dial-back that
 * closes first (the private side closed it as it was taken) costs the client nothing.
 * @module
 */
import type { SockFailure } from "./io.ts";
import type { Engine } from "./engine.ts";
import { Machine } from "./machine.ts";
import type { IdlePooled } from "./private_port.ts";

/** What the client machine hears from its pooled dial-back (public_conns.ts). */
export interface TryOwner {
  /** Its first answer came (`answer`), or none within `dial_back_timeout_ms`: the pipe. */
  answered(answer: Uint8Array | undefined, now: number): void;
  /** It closed (EOF or error) before any byte; its socket is closed already. */
  unanswered(why: "eof" | "error", detail: string | undefined, now: number): void;
  onKill(now: number): void;
}

/** A taken pooled dial-back in its answer wait; the client's socket is the client machine's. */
export class PooledTry extends Machine {
  readonly instance: string | undefined;
  /** What was written to it: the pool header (`header` bytes), the hello, the client's since. */
  written: Uint8Array;
  /** When it was taken (the `dialBack` phase). */
  readonly taken: number;
  #on = true;

  /** Takes `pooled` for `client`: writes `header` and `replay`, reads it, arms the deadline. */
  constructor(
    engine: Engine,
    pooled: IdlePooled,
    readonly client: TryOwner,
    readonly operator: string,
    readonly header: number,
    replay: Uint8Array,
    now: number,
  ) {
    super(engine, pooled.sock);
    pooled.take();
    this.instance = pooled.instance;
    this.written = replay;
    this.taken = now;
    engine.own(this.sock, this);
    // it counts as a splice of its instance from now on (the least loaded pick)
    if (this.instance !== undefined) engine.spliced(operator, this.instance, 1);
    engine.out({ op: "write", sock: this.sock, bytes: replay });
    engine.out({ op: "read", sock: this.sock, on: true });
    engine.timers.arm(this, now + engine.limits.dialBackTimeoutMs);
  }

  /** The client's bytes before the answer: they follow the hello, and go again with it. */
  forward(bytes: Uint8Array): void {
    this.written = concatBytes(this.written, bytes);
    this.engine.out({ op: "write", sock: this.sock, bytes: bytes.slice() });
  }

  /** The wait is over (the socket goes to a splice, or closed): the splice counts it from here. */
  done(): void {
    if (!this.#on) return;
    this.#on = false;
    this.engine.timers.disarm(this);
    if (this.instance !== undefined) this.engine.spliced(this.operator, this.instance, -1);
  }

  onData(_sock: number, bytes: Uint8Array, now: number): void {
    this.client.answered(bytes, now);
  }

  onEof(_sock: number, now: number): void {
    this.#closed(now, "eof");
  }

  onFailed(_sock: number, failure: SockFailure, now: number): void {
    this.#closed(now, "error", `${failure.op} ${failure.code}`);
  }

  #closed(now: number, why: "eof" | "error", detail?: string): void {
    this.done();
    this.engine.close(this.sock, true);
    this.client.unanswered(why, detail, now);
  }

  onTimeout(now: number): void {
    // no answer in dial_back_timeout_ms: no longer worth a retry; the splice's idle timeout rules
    this.client.answered(undefined, now);
  }

  onStop(): void {} // taken: a splice in the making, it finishes on its own

  override onKill(now: number): void {
    this.client.onKill(now); // it ends as the splice it was to be
  }
}

/** `a` then `b`, in a new buffer. */
export function concatBytes(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}
