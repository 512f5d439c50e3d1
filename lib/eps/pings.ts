/**
 * The pings of a yamux session (lib/eps/session.ts): pings asked by callers (round-trip time) and
 * the keepalive ping, each with an id no other ping in flight has. The session sends the frames
 * and decides what a missed keepalive means; this keeps the bookkeeping.
 * @module
 */
import { MAX_U32 } from "./frame.ts";

/** Pings a caller may have in flight at once. */
export const MAX_PINGS = 64;

interface PendingPing {
  start: number;
  resolve: (rtt: number) => void;
  reject: (err: unknown) => void;
}

export class Pings {
  #pending = new Map<number, PendingPing>();
  #next = 1;
  #keepaliveId = -1;
  #keepaliveSent = 0;
  #misses = 0;

  /** Asks a ping: `send(id)` posts its frame; resolves to the round-trip time in ms. */
  async ask(name: string, send: (id: number) => void, signal?: AbortSignal): Promise<number> {
    if (this.#pending.size >= MAX_PINGS) {
      throw new RangeError(`Cannot ping "${name}": ${MAX_PINGS} pings are in flight`);
    }
    const id = this.#id();
    const p = Promise.withResolvers<number>();
    this.#pending.set(id, { start: performance.now(), resolve: p.resolve, reject: p.reject });
    const onAbort = () => {
      this.#pending.delete(id);
      p.reject(signal!.reason);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
    send(id);
    try {
      return await p.promise;
    } finally {
      signal?.removeEventListener("abort", onAbort);
    }
  }

  /** The answer to ping `id` came. */
  pong(id: number): void {
    if (id === this.#keepaliveId) {
      this.#keepaliveId = -1;
      this.#misses = 0;
      return;
    }
    const p = this.#pending.get(id);
    if (!p) return; // unasked or abandoned: ignore
    this.#pending.delete(id);
    p.resolve(performance.now() - p.start);
  }

  /**
   * A keepalive tick at `now`: the id of the keepalive ping to send, "wait" when the last one
   * went out less than half an interval ago (ticks back to back after a busy event loop do not
   * count as a whole interval), or "dead" with the misses once `maxMisses` went unanswered.
   */
  keepalive(
    now: number,
    intervalMs: number,
    maxMisses: number,
  ): number | "wait" | { dead: number } {
    if (this.#keepaliveId !== -1) {
      if (now - this.#keepaliveSent < intervalMs / 2) return "wait";
      if (++this.#misses >= maxMisses) return { dead: this.#misses };
    }
    this.#keepaliveId = this.#id();
    this.#keepaliveSent = now;
    return this.#keepaliveId;
  }

  /** Every asked ping fails with `err` (the session ended). */
  failAll(err: Error): void {
    for (const p of this.#pending.values()) p.reject(err);
    this.#pending.clear();
  }

  #id(): number {
    do {
      this.#next = this.#next >= MAX_U32 ? 1 : this.#next + 1;
    } while (this.#pending.has(this.#next) || this.#next === this.#keepaliveId);
    return this.#next;
  }
}
