/**
 * Pool tickets on the wire (docs/architecture.md, "Pool tickets"): what a private proxy presents
 * first on a pooled dial-back it opened on its own, in the place and size of a one-time token
 * (32 bytes): the ticket id (8 bytes), a counter (8 bytes, big-endian) and the first 16 bytes of
 * HMAC-SHA256(ticket key, id ‖ counter). A public proxy that knows the id checks the MAC and that
 * the counter was not seen before ({@linkcode ReplayWindow}). Pure: no I/O, no clock; the key and
 * the counter come from the caller.
 * @module
 */
import { timingSafeEqual } from "node:crypto";
import { hmac } from "@noble/hashes/hmac.js";
import { sha256 } from "@noble/hashes/sha2.js";
import { TOKEN_BYTES } from "./token.ts";

export const TICKET_ID_BYTES = 8;
export const TICKET_KEY_BYTES = 32;
const COUNTER_AT = TICKET_ID_BYTES;
const MAC_AT = COUNTER_AT + 8;
const MAC_BYTES = TOKEN_BYTES - MAC_AT;

/** Hex of a ticket id (what tables are keyed by; an id is not a secret). */
export function ticketIdText(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < TICKET_ID_BYTES; i++) s += bytes[i]!.toString(16).padStart(2, "0");
  return s;
}

/** The bytes of a ticket id in hex, or null when it is not {@linkcode TICKET_ID_BYTES} of hex. */
export function decodeTicketId(v: unknown): Uint8Array | null {
  if (typeof v !== "string" || !/^[0-9a-f]{16}$/.test(v)) return null;
  const out = new Uint8Array(TICKET_ID_BYTES);
  for (let i = 0; i < TICKET_ID_BYTES; i++) out[i] = parseInt(v.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/**
 * HMAC-SHA256 keyed once per ticket key (the key's inner and outer pads hashed already), by the
 * key array's identity: ticket keys are never changed in place (both sides decode a fresh one).
 */
const keyed = new WeakMap<Uint8Array, ReturnType<typeof hmac.create>>();

/**
 * The MAC of `idAndCounter` under `key`. One per pooled dial-back on each side, so it is @noble's
 * HMAC cloned from a keyed state (about 3 µs) rather than node:crypto's `createHmac`, whose
 * stream object cost about 10 µs and a good part of the private proxy's main thread under W1.
 */
function mac(key: Uint8Array, idAndCounter: Uint8Array): Uint8Array {
  let h = keyed.get(key);
  if (h === undefined) {
    h = hmac.create(sha256, key);
    keyed.set(key, h);
  }
  return h.clone().update(idAndCounter).digest().subarray(0, MAC_BYTES);
}

/** The 32 bytes a dial-back presents for ticket `id` with `counter` (1 to 2⁵³ − 1). */
export function encodeTicketToken(id: Uint8Array, key: Uint8Array, counter: number): Uint8Array {
  if (!Number.isSafeInteger(counter) || counter < 1) {
    throw new RangeError(`Cannot encode ticket token: counter ${counter} is not 1 to 2^53-1`);
  }
  const out = new Uint8Array(TOKEN_BYTES);
  out.set(id.subarray(0, TICKET_ID_BYTES), 0);
  const view = new DataView(out.buffer);
  view.setUint32(COUNTER_AT, Math.floor(counter / 2 ** 32));
  view.setUint32(COUNTER_AT + 4, counter >>> 0);
  out.set(mac(key, out.subarray(0, MAC_AT)), MAC_AT);
  return out;
}

/** The counter of a ticket token (its bytes 8 to 15), or -1 when it is over 2⁵³ − 1. */
export function ticketCounter(token: Uint8Array): number {
  const view = new DataView(token.buffer, token.byteOffset, TOKEN_BYTES);
  const hi = view.getUint32(COUNTER_AT);
  if (hi >= 2 ** 21) return -1;
  return hi * 2 ** 32 + view.getUint32(COUNTER_AT + 4);
}

/** Whether the MAC of a ticket token is right for `key` (compared in constant time). */
export function ticketMacOk(token: Uint8Array, key: Uint8Array): boolean {
  return timingSafeEqual(mac(key, token.subarray(0, MAC_AT)), token.subarray(MAC_AT, TOKEN_BYTES));
}

/**
 * No replay: each counter is accepted once. Dial-backs race each other, so they may arrive out of
 * order: a counter up to {@linkcode ReplayWindow.SIZE} below the highest seen is still accepted
 * once (the sliding window of IPsec's anti-replay, RFC 4303 §3.4.3); older ones are refused.
 */
export class ReplayWindow {
  static readonly SIZE = 1024;
  #top = 0;
  readonly #seen = new Uint32Array(ReplayWindow.SIZE / 32);

  /** Accepts `counter` (≥ 1) once; false for a repeat or one too old. */
  accept(counter: number): boolean {
    if (counter < 1) return false;
    const size = ReplayWindow.SIZE;
    if (counter > this.#top) {
      const shift = counter - this.#top;
      if (shift >= size) this.#seen.fill(0);
      else for (let c = this.#top + 1; c < counter; c++) this.#clear(c);
      this.#top = counter;
      this.#set(counter);
      return true;
    }
    if (this.#top - counter >= size) return false;
    if (this.#has(counter)) return false;
    this.#set(counter);
    return true;
  }

  #slot(c: number): [number, number] {
    const i = c % ReplayWindow.SIZE;
    return [i >>> 5, 1 << (i & 31)];
  }
  #has(c: number): boolean {
    const [w, bit] = this.#slot(c);
    return (this.#seen[w]! & bit) !== 0;
  }
  #set(c: number): void {
    const [w, bit] = this.#slot(c);
    this.#seen[w]! |= bit;
  }
  #clear(c: number): void {
    const [w, bit] = this.#slot(c);
    this.#seen[w]! &= ~bit;
  }
}
