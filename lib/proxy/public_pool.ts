/**
 * The public half of the dial-back pool (docs/architecture.md, "Pre-warmed dial-backs"): the
 * accounting behind `openPool`. It mints one-time pool tokens within `max_pooled_per_operator`
 * (tokens not yet redeemed count, as do idle pooled dial-backs) and hands them to the data plane
 * as a `grantPool` command; the data plane keeps the idle connections themselves and tells this
 * table, by events, when one went idle, was taken by a client or dropped.
 * @module
 */
import type { Command, DataEvent } from "../dataplane/mod.ts";
import { TOKEN_BYTES, tokenText } from "../wire/token.ts";
import { TICKET_ID_BYTES, TICKET_KEY_BYTES, ticketIdText } from "../wire/ticket.ts";

/** Longest a public proxy keeps an idle pooled connection, whatever the private proxy asks. */
export const MAX_POOL_IDLE_MS = 600_000;
/** Shortest idle timeout a private proxy may ask for. */
export const MIN_POOL_IDLE_MS = 1000;
/** Most tokens one `openPool` call may ask for. */
export const MAX_OPEN_COUNT = 64;

/**
 * How long a pool ticket is valid. The private proxy renews it at half that, so an EPS may be
 * down for about five minutes before its pool stops refilling on its own.
 */
export const TICKET_TTL_MS = 600_000;

/** A pool ticket as openPool answers it (the key is base64 and secret: never log it). */
export interface TicketGrant {
  id: string;
  key: string;
  expiresInMs: number;
  cap: number;
  /** The idle timeout its dial-backs get (clamped as a mint's). */
  idleTimeoutMs: number;
}

/** The result of `mint()`: the tokens (base64; never log them), or why none were granted. */
export type MintResult =
  | { ok: true; tokens: string[]; idleTimeoutMs: number }
  | { ok: false; why: "off" | "cap" };

/**
 * Tokens and idle pooled dial-backs per operator, as the data plane reports them, and per
 * (operator, private instance) for the instances that named themselves (docs/architecture.md,
 * "Several private instances"). The cap stays per operator: it is the operator's share of the
 * descriptor budget, whichever of its instances holds it.
 */
export class PoolGrants {
  /** Unredeemed tokens plus idle connections, per operator: what the cap counts. */
  #held = new Map<string, number>();
  #idle = new Map<string, number>();
  /** The same per operator and instance (`operator\ninstance`). */
  #heldOf = new Map<string, number>();
  #idleOf = new Map<string, number>();
  #closed = false;

  constructor(
    /** Changed by a reload (docs/architecture.md, "Reload"): new mints and tickets use it. */
    public maxPerOperator: number,
    readonly send: (cmd: Command) => void,
    readonly random: (into: Uint8Array) => void = (b) => crypto.getRandomValues(b),
    /** Tokens and idle connections of all operators at once: the descriptor budget's part for them. */
    readonly maxTotal = Infinity,
  ) {}

  /** Tokens and idle connections held for every operator. */
  heldTotal(): number {
    let n = 0;
    for (const v of this.#held.values()) n += v;
    return n;
  }

  /** Tokens and idle connections held for `operator`. */
  held(operator: string): number {
    return this.#held.get(operator) ?? 0;
  }

  /** Tokens and idle connections held for `operator`'s `instance`. */
  heldBy(operator: string, instance: string): number {
    return this.#heldOf.get(`${operator}\n${instance}`) ?? 0;
  }

  /** Idle pooled connections of `operator`'s `instance`. */
  idleBy(operator: string, instance: string): number {
    return this.#idleOf.get(`${operator}\n${instance}`) ?? 0;
  }

  /** Idle pooled connections of `operator`, or of all operators. */
  idle(operator?: string): number {
    if (operator !== undefined) return this.#idle.get(operator) ?? 0;
    let n = 0;
    for (const v of this.#idle.values()) n += v;
    return n;
  }

  /**
   * Mints up to `count` tokens for `operator`, usable for `domains` (announcement names), within
   * the per-operator cap, and grants them to the data plane. Grants fewer when the cap leaves less
   * room; none → `{ok: false}`.
   */
  mint(
    operator: string,
    domains: readonly string[],
    count: number,
    idleMs: number,
    /** The private instance that asked (`CallContext.callerInstance`), when it named one. */
    instance?: string,
  ): MintResult {
    if (this.maxPerOperator === 0 || this.#closed) return { ok: false, why: "off" };
    const n = Math.min(
      count,
      this.maxPerOperator - this.held(operator),
      this.maxTotal - this.heldTotal(),
    );
    if (n <= 0) return { ok: false, why: "cap" };
    const idleTimeoutMs = clampIdle(idleMs);
    const tokens: string[] = [];
    const raw = new Uint8Array(TOKEN_BYTES);
    for (let i = 0; i < n; i++) {
      this.random(raw);
      tokens.push(tokenText(raw));
    }
    this.#hold(operator, instance, n);
    this.send({
      type: "grantPool",
      operator,
      domains,
      tokens,
      idleTimeoutMs,
      ...(instance !== undefined ? { instance } : {}),
    });
    return { ok: true, tokens, idleTimeoutMs };
  }

  /**
   * A ticket for `operator`'s pooled dial-backs (docs/architecture.md, "Pool tickets"): the data
   * plane admits a dial-back that presents it while the operator holds fewer idle ones than the
   * cap (`max_pooled_per_operator`). Null when pooling is off.
   */
  ticket(
    operator: string,
    domains: readonly string[],
    idleMs: number,
    instance?: string,
  ): TicketGrant | null {
    if (this.maxPerOperator === 0 || this.#closed) return null;
    const idleTimeoutMs = clampIdle(idleMs);
    const id = new Uint8Array(TICKET_ID_BYTES);
    const key = new Uint8Array(TICKET_KEY_BYTES);
    this.random(id);
    this.random(key);
    const grant = {
      id: ticketIdText(id),
      key: tokenText(key),
      expiresInMs: TICKET_TTL_MS,
      cap: this.maxPerOperator,
      idleTimeoutMs,
    };
    this.send({
      type: "grantTicket",
      operator,
      domains,
      id: grant.id,
      key: grant.key,
      ttlMs: TICKET_TTL_MS,
      cap: grant.cap,
      idleTimeoutMs,
      ...(instance !== undefined ? { instance } : {}),
    });
    return grant;
  }

  /** Follows the data plane's pool events. */
  onEvent(e: DataEvent): void {
    switch (e.type) {
      case "poolIdle":
        this.#idleBy(e.operator, e.instance, 1);
        // a ticket's dial-back was not counted at mint time: it is held from now on
        if (e.ticket) this.#hold(e.operator, e.instance, 1);
        return;
      case "poolDropped":
        this.#idleBy(e.operator, e.instance, -1);
        this.#hold(e.operator, e.instance, -1);
        return;
      case "poolTokensExpired":
        this.#hold(e.operator, e.instance, -e.count);
        return;
      case "piped":
        if (e.via === "pool") {
          this.#idleBy(e.operator, e.instance, -1);
          this.#hold(e.operator, e.instance, -1);
        }
        return;
    }
  }

  #hold(operator: string, instance: string | undefined, by: number): void {
    bump(this.#held, operator, by);
    if (instance !== undefined) bump(this.#heldOf, `${operator}\n${instance}`, by);
  }

  #idleBy(operator: string, instance: string | undefined, by: number): void {
    bump(this.#idle, operator, by);
    if (instance !== undefined) bump(this.#idleOf, `${operator}\n${instance}`, by);
  }

  /** Later mints are refused (the role stops). */
  close(): void {
    this.#closed = true;
  }
}

/** The idle timeout a private proxy asked for, within what this proxy allows. */
function clampIdle(ms: number): number {
  return Math.min(Math.max(ms, MIN_POOL_IDLE_MS), MAX_POOL_IDLE_MS);
}

function bump(m: Map<string, number>, key: string, by: number): void {
  const n = (m.get(key) ?? 0) + by;
  if (n <= 0) m.delete(key);
  else m.set(key, n);
}
