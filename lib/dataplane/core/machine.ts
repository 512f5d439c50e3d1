/**
 * What every machine of the public proxy's core shares (docs/architecture.md, "The core"): the base
 * class with no-op inputs, and the pool rights a dial-back goes idle with.
 * @module
 */
import type { SockFailure, SockId } from "./io.ts";
import type { Engine, SockOwner } from "./engine.ts";

/** What lets a dial-back go idle in the pool: a one-time pool token's grant, or a ticket. */
export interface PoolRight {
  readonly operator: string;
  /** The names it may serve; null: every name of its operator. */
  readonly domains: ReadonlySet<string> | null;
  readonly idleTimeoutMs: number;
  /** The private instance it was granted to (docs/architecture.md, "Several private instances"). */
  readonly instance?: string | undefined;
}

/** A one-time pool token not yet redeemed. */
export interface Grant extends PoolRight {
  readonly token: string;
  timerGen: number;
  onTimeout(now: number): void;
}

/** Base of the machines: no-op inputs a state does not expect. */
export abstract class Machine implements SockOwner {
  timerGen = 0;
  constructor(readonly engine: Engine, readonly sock: SockId) {}
  abstract onData(sock: SockId, bytes: Uint8Array, now: number): void;
  abstract onEof(sock: SockId, now: number): void;
  abstract onFailed(sock: SockId, failure: SockFailure, now: number): void;
  abstract onTimeout(now: number): void;
  abstract onStop(now: number): void;
  onConnected(): void {}
  onMoved(): void {}
  onKill(now: number): void {
    this.onStop(now);
    this.engine.close(this.sock, true);
  }
}
