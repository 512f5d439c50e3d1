/**
 * The private half of pool tickets (docs/architecture.md, "Pool tickets"): the ticket each public
 * operator granted with `openPool`, from which the pool makes the tokens of its dial-backs itself
 * (ticket id, a counter that only grows, an HMAC over both), so that it refills without an EPS
 * round trip. It asks for a new ticket at half the old one's life, and keeps using the old one
 * while that call fails (an EPS restarting) until shortly before it expires.
 * @module
 */
import { decodeTicketId, encodeTicketToken, TICKET_KEY_BYTES } from "../wire/ticket.ts";
import { tokenText } from "../wire/token.ts";

/** A ticket is not used in its last seconds: its dial-backs must arrive before it expires. */
const SAFETY_MS = 5000;

export class PoolTicket {
  #counter = 0;

  constructor(
    readonly id: Uint8Array,
    readonly key: Uint8Array,
    readonly issuedAt: number,
    readonly expiresAt: number,
  ) {}

  /** Parses openPool's `ticket` answer ({id, key, expires_in_ms, cap}); null when it is not one. */
  static parse(v: unknown, now: number): PoolTicket | null {
    if (typeof v !== "object" || v === null) return null;
    const t = v as Record<string, unknown>;
    const id = decodeTicketId(t.id);
    const ms = t.expires_in_ms;
    if (id === null || typeof t.key !== "string" || !Number.isInteger(ms) || (ms as number) <= 0) {
      return null;
    }
    let key: Uint8Array;
    try {
      key = Uint8Array.from(atob(t.key), (c) => c.charCodeAt(0));
    } catch {
      return null;
    }
    if (key.length !== TICKET_KEY_BYTES) return null;
    return new PoolTicket(id, key, now, now + (ms as number));
  }

  /** Whether dial-backs made now still arrive in time. */
  usable(now: number): boolean {
    return now < this.expiresAt - SAFETY_MS;
  }

  /** Whether a new ticket should be asked for (half its life is over). */
  renewDue(now: number): boolean {
    return now >= this.issuedAt + (this.expiresAt - this.issuedAt) / 2;
  }

  /** `n` tokens (base64; never log them), each with the next counter. */
  tokens(n: number): string[] {
    const out: string[] = [];
    for (let i = 0; i < n; i++) {
      out.push(tokenText(encodeTicketToken(this.id, this.key, ++this.#counter)));
    }
    return out;
  }
}
