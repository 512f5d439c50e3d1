/**
 * Pool tickets in the public core (docs/architecture.md, "Pool tickets"): the tickets `openPool`
 * granted, each a key, an expiry, an operator with its names and a cap. A dial-back whose 32 bytes
 * are no one-time token may be a ticket token (lib/wire/ticket.ts): its id names the ticket, its
 * MAC must check with the ticket's key, its counter must be new, and the operator must hold fewer
 * idle pooled dial-backs than the cap. Then it goes idle as if it had redeemed a token: the EPS is
 * not asked, so the pool refills while an EPS restarts.
 * @module
 */
import { ReplayWindow, ticketCounter, ticketIdText, ticketMacOk } from "../../wire/ticket.ts";
import type { Refusal } from "../events.ts";
import type { Command } from "../snapshot.ts";
import type { Engine } from "./engine.ts";
import type { PoolRight } from "./machine.ts";

/** Live tickets one operator may hold: the current one and the one it renews. */
export const MAX_TICKETS_PER_OPERATOR = 2;

type GrantTicket = Extract<Command, { type: "grantTicket" }>;

class Ticket implements PoolRight {
  timerGen = 0;
  readonly domains: ReadonlySet<string> | null;
  readonly window = new ReplayWindow();
  constructor(readonly cmd: GrantTicket, readonly key: Uint8Array, readonly tickets: Tickets) {
    this.domains = cmd.domains.length === 0 ? null : new Set(cmd.domains);
  }
  get operator(): string {
    return this.cmd.operator;
  }
  get idleTimeoutMs(): number {
    return this.cmd.idleTimeoutMs;
  }
  get instance(): string | undefined {
    return this.cmd.instance;
  }
  onTimeout(): void {
    this.tickets.drop(this);
  }
}

/** What a dial-back's 32 bytes mean as a ticket token. */
export type TicketCheck =
  | { readonly ok: true; readonly right: PoolRight }
  | { readonly ok: false; readonly why: Refusal; readonly detail: string };

export class Tickets {
  readonly #byId = new Map<string, Ticket>();

  constructor(readonly engine: Engine) {}

  get size(): number {
    return this.#byId.size;
  }

  /** A ticket from openPool; the operator's oldest goes when it would hold more than two. */
  grant(cmd: GrantTicket, now: number): void {
    const key = Uint8Array.from(atob(cmd.key), (c) => c.charCodeAt(0));
    const t = new Ticket(cmd, key, this);
    this.#byId.get(cmd.id)?.onTimeout();
    this.#byId.set(cmd.id, t);
    this.engine.timers.arm(t, now + cmd.ttlMs);
    const mine = [...this.#byId.values()].filter((x) => x.operator === cmd.operator);
    for (const old of mine.slice(0, Math.max(0, mine.length - MAX_TICKETS_PER_OPERATOR))) {
      this.drop(old);
    }
  }

  drop(t: Ticket): void {
    if (this.#byId.get(t.cmd.id) !== t) return;
    this.#byId.delete(t.cmd.id);
    this.engine.timers.disarm(t);
  }

  /** Checks a dial-back's 32 bytes as a ticket token; null: no ticket has that id. */
  check(token: Uint8Array): TicketCheck | null {
    const t = this.#byId.get(ticketIdText(token));
    if (t === undefined) return null;
    if (!ticketMacOk(token, t.key)) {
      return { ok: false, why: "bad-token", detail: "ticket token with a wrong MAC" };
    }
    const counter = ticketCounter(token);
    if (!t.window.accept(counter)) {
      return {
        ok: false,
        why: "bad-token",
        detail: `ticket counter ${counter} replayed or too old`,
      };
    }
    const idle = this.engine.idle.get(t.operator)?.length ?? 0;
    const all = this.engine.limits.maxPooled;
    if (this.engine.idleTotal >= all) {
      return {
        ok: false,
        why: "pool-full",
        detail: `${all} idle pooled in all, the budget's part for them`,
      };
    }
    if (idle >= t.cmd.cap) {
      return {
        ok: false,
        why: "pool-full",
        detail: `${idle} idle pooled, the ticket's cap is ${t.cmd.cap}`,
      };
    }
    return { ok: true, right: t };
  }

  /** Every ticket ends (the role stops). */
  clear(): void {
    for (const t of this.#byId.values()) this.engine.timers.disarm(t);
    this.#byId.clear();
  }
}
