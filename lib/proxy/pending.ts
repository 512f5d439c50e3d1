/**
 * The pending table: client connections parked on the public proxy while they wait for their
 * dial-back, keyed by a one-time token (DESIGN.md §4 steps 3–4).
 *
 * Admission happens before any notice is sent: caps in total, per operator and per client address.
 * Every entry expires after `timeoutMs`; a token can be claimed once.
 * @module
 */
import type { ByteConn } from "../net/conn.ts";

/** Length of a token on the wire. */
export const TOKEN_BYTES = 32;

export interface PendingLimits {
  maxTotal: number;
  maxPerOperator: number;
  maxPerClient: number;
  /** How long an entry waits for its dial-back. */
  timeoutMs: number;
}

/** Which cap refused an admission. */
export type PendingCap = "total" | "operator" | "client";

/** Why a parked connection ended without a dial-back. */
export class PendingExpiredError extends Error {
  override name = "PendingExpiredError";
}

/** A parked client connection; `dialBack` settles when the token is claimed, expires or is released. */
export interface Parked {
  /** The token as base64 (what the notice carries). Never log it; use `redact()`. */
  readonly token: string;
  /** The 32 raw token bytes. */
  readonly tokenBytes: Uint8Array;
  /** Resolves with the dial-back connection; rejects with PendingExpiredError or the release reason. */
  readonly dialBack: Promise<ByteConn>;
  /** Removes the entry (notice failed, role stopping); `dialBack` rejects with `reason`. */
  release(reason?: unknown): void;
}

interface Entry {
  operator: string;
  client: string;
  timer: ReturnType<typeof setTimeout>;
  resolve(conn: ByteConn): void;
  reject(err: unknown): void;
}

/** Standard base64 of bytes. */
export function tokenText(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s);
}

/** The result of `park()`: the parked entry, or the cap that refused it. */
export type ParkResult = { ok: true; parked: Parked } | { ok: false; cap: PendingCap };

/** The table of pending connections. Created per public proxy; never module-level. */
export class PendingTable {
  #entries = new Map<string, Entry>();
  #perOperator = new Map<string, number>();
  #perClient = new Map<string, number>();

  constructor(readonly limits: PendingLimits) {
    for (const [k, v] of Object.entries(limits)) {
      if (!Number.isInteger(v) || v < 1) {
        throw new RangeError(`Cannot create pending table: ${k} is ${v}, expected an integer > 0`);
      }
    }
  }

  /** Entries waiting now. */
  get size(): number {
    return this.#entries.size;
  }

  /** The cap that a new entry for `operator` from `client` would exceed, else null. */
  admissible(operator: string, client: string): PendingCap | null {
    if (this.#entries.size >= this.limits.maxTotal) return "total";
    if ((this.#perOperator.get(operator) ?? 0) >= this.limits.maxPerOperator) return "operator";
    if ((this.#perClient.get(client) ?? 0) >= this.limits.maxPerClient) return "client";
    return null;
  }

  /**
   * Admits and parks a connection for `operator` from the client address `client` under a fresh
   * token, or names the cap that refused it.
   */
  park(operator: string, client: string): ParkResult {
    const cap = this.admissible(operator, client);
    if (cap !== null) return { ok: false, cap };
    const tokenBytes = new Uint8Array(TOKEN_BYTES);
    let token: string;
    do {
      crypto.getRandomValues(tokenBytes);
      token = tokenText(tokenBytes);
    } while (this.#entries.has(token)); // 2^-256: never, but cheap to be sure
    let resolve!: (conn: ByteConn) => void;
    let reject!: (err: unknown) => void;
    const dialBack = new Promise<ByteConn>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    dialBack.catch(() => {}); // a rejection nobody awaits yet is not unhandled
    const timer = setTimeout(() => {
      if (this.#remove(token)) {
        reject(
          new PendingExpiredError(
            `Cannot complete pending connection for "${operator}": no dial-back within ${this.limits.timeoutMs} ms`,
          ),
        );
      }
    }, this.limits.timeoutMs);
    this.#entries.set(token, { operator, client, timer, resolve, reject });
    bump(this.#perOperator, operator, 1);
    bump(this.#perClient, client, 1);
    return {
      ok: true,
      parked: {
        token,
        tokenBytes: tokenBytes.slice(),
        dialBack,
        release: (reason?: unknown) => {
          if (this.#remove(token)) {
            reject(
              reason ?? new PendingExpiredError("Cannot complete pending connection: released"),
            );
          }
        },
      },
    };
  }

  /**
   * Hands `conn` to the entry of `token` (base64) and removes it. Returns the operator of the
   * entry, or null when the token is unknown, expired or already claimed.
   */
  claim(token: string, conn: ByteConn): string | null {
    const e = this.#entries.get(token);
    if (e === undefined) return null;
    this.#remove(token);
    e.resolve(conn);
    return e.operator;
  }

  /** Releases every entry (role stopping). */
  releaseAll(reason: unknown): void {
    for (const [token, e] of [...this.#entries]) {
      this.#remove(token);
      e.reject(reason);
    }
  }

  #remove(token: string): boolean {
    const e = this.#entries.get(token);
    if (e === undefined) return false;
    clearTimeout(e.timer);
    this.#entries.delete(token);
    bump(this.#perOperator, e.operator, -1);
    bump(this.#perClient, e.client, -1);
    return true;
  }
}

function bump(m: Map<string, number>, key: string, by: number): void {
  const n = (m.get(key) ?? 0) + by;
  if (n <= 0) m.delete(key);
  else m.set(key, n);
}
