/**
 * The public proxy's private port (docs/architecture.md, "The core"): a dial-back until its token
 * is read (→ claim a waiting client, or go idle in the pool), and an idle pooled dial-back.
 * @module
 */
import type { HostPort } from "../../role.ts";
import { TOKEN_BYTES, tokenText } from "../../wire/token.ts";
import type { Refusal } from "../events.ts";
import type { SockFailure, SockId } from "./io.ts";
import { type Engine, hostPortText } from "./engine.ts";
import { Machine, type PoolRight } from "./machine.ts";

/** A dial-back on the private port, until its token is read. */
export class DialBackIn extends Machine {
  readonly #buf = new Uint8Array(TOKEN_BYTES);
  #got = 0;
  readonly peer: string;

  constructor(engine: Engine, sock: SockId, remote: HostPort, now: number) {
    super(engine, sock);
    this.peer = hostPortText(remote);
    engine.timers.arm(this, now + engine.limits.tokenTimeoutMs);
  }

  onData(_sock: SockId, bytes: Uint8Array, now: number): void {
    const n = Math.min(bytes.length, TOKEN_BYTES - this.#got);
    this.#buf.set(bytes.subarray(0, n), this.#got);
    this.#got += n;
    if (this.#got < TOKEN_BYTES) return;
    const e = this.engine;
    e.timers.disarm(this);
    e.out({ op: "read", sock: this.sock, on: false });
    const token = tokenText(this.#buf);
    const early = bytes.slice(n);
    const client = e.pending.get(token);
    if (client !== undefined) return client.claimed(this.sock, early, now, token);
    const grant = e.grants.get(token);
    if (grant !== undefined && early.length === 0) {
      e.grants.delete(token);
      e.timers.disarm(grant);
      new IdlePooled(e, this.sock, grant, now, false);
      return;
    }
    const t = e.tickets.check(this.#buf);
    if (t === null) return this.#refuse("bad-token", "unknown, expired or reused token");
    if (!t.ok) return this.#refuse(t.why, t.detail);
    if (early.length > 0) return this.#refuse("bad-token", "bytes after a ticket token");
    new IdlePooled(e, this.sock, t.right, now, true);
  }

  #refuse(why: Refusal, detail: string): void {
    this.engine.timers.disarm(this);
    this.engine.emit({ type: "refused", why, client: this.peer, detail });
    this.engine.close(this.sock, true);
  }

  onEof(): void {
    this.#refuse("bad-token", "closed before sending a token");
  }

  onFailed(_sock: SockId, failure: SockFailure): void {
    this.#refuse("bad-token", `token read failed: ${failure.code}`);
  }

  onTimeout(): void {
    this.#refuse("token-timeout", `no token within ${this.engine.limits.tokenTimeoutMs} ms`);
  }

  onStop(): void {
    this.engine.timers.disarm(this);
    this.engine.close(this.sock, true);
  }
}

/** An idle pooled dial-back: anything on it (bytes, EOF, an error) or its timeout ends it. */
export class IdlePooled extends Machine {
  readonly operator: string;
  /** The names it may serve; null: every name of its operator. */
  readonly domains: ReadonlySet<string> | null;
  /** The private instance it belongs to (its grant's or ticket's), when known. */
  readonly instance: string | undefined;
  #idle = true;

  constructor(engine: Engine, sock: SockId, grant: PoolRight, now: number, ticket: boolean) {
    super(engine, sock);
    this.operator = grant.operator;
    this.domains = grant.domains;
    this.instance = grant.instance;
    engine.own(sock, this);
    engine.addIdle(this);
    engine.out({ op: "read", sock, on: true });
    engine.timers.arm(this, now + grant.idleTimeoutMs);
    engine.emit({
      type: "poolIdle",
      operator: this.operator,
      ticket,
      ...(this.instance !== undefined ? { instance: this.instance } : {}),
    });
  }

  /** A client took it (already out of the idle list): stop watching it. */
  take(): void {
    this.#idle = false;
    this.engine.timers.disarm(this);
    this.engine.out({ op: "read", sock: this.sock, on: false });
  }

  #drop(why: "eof" | "data" | "error" | "timeout" | "stopping", detail?: string): void {
    if (!this.#idle) return;
    this.#idle = false;
    this.engine.removeIdle(this);
    this.engine.timers.disarm(this);
    this.engine.close(this.sock, true);
    this.engine.emit({
      type: "poolDropped",
      operator: this.operator,
      why,
      ...(detail !== undefined ? { detail } : {}),
      ...(this.instance !== undefined ? { instance: this.instance } : {}),
    });
  }

  onData(): void {
    this.#drop("data");
  }
  onEof(): void {
    this.#drop("eof");
  }
  onFailed(_sock: SockId, failure: SockFailure): void {
    this.#drop("error", failure.code);
  }
  onTimeout(): void {
    this.#drop("timeout");
  }
  onStop(): void {
    this.#drop("stopping");
  }
}
