/**
 * Admission before signalling (docs/architecture.md, "Admission"): token buckets for the
 * per-address and per-name rates, kept in bounded tables. Pure: the time is the core's `now`
 * (monotonic ms) passed in, so a test drives it with a virtual clock.
 * @module
 */

/** The most buckets a table keeps (per-address and per-name tables each). */
export const MAX_RATE_KEYS = 65_536;

/** One bucket: `tokens` as of `at`. */
interface Bucket {
  tokens: number;
  at: number;
}

/**
 * Token buckets by key (a client address, a name): `rate` tokens a second, at most `burst`
 * held; a new connection takes one. At most `max` buckets are kept: a bucket that refilled to
 * `burst` is the same as none, so the least recently used are evicted first; when every one of
 * `max` is still refilling (a flood of addresses), the least recently used is evicted anyway,
 * so memory stays bounded (an evicted key starts again from a full bucket).
 */
export class RateTable {
  readonly #buckets = new Map<string, Bucket>();
  constructor(readonly max: number) {}

  /** Buckets held now. */
  get size(): number {
    return this.#buckets.size;
  }

  /** Takes a token for `key` at `now`; false when its bucket is empty (refuse). */
  take(key: string, rate: number, burst: number, now: number): boolean {
    const m = this.#buckets;
    let b = m.get(key);
    if (b === undefined) {
      this.#room(rate, burst, now);
      b = { tokens: burst, at: now };
    } else {
      m.delete(key); // re-inserted below: the map's order is least recently used first
      b.tokens = Math.min(burst, b.tokens + ((now - b.at) * rate) / 1000);
      b.at = now;
    }
    m.set(key, b);
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
  }

  /**
   * Makes room for one more bucket: drops the full ones among the least recently used few, then,
   * while still at `max`, the least recently used.
   */
  #room(rate: number, burst: number, now: number): void {
    const m = this.#buckets;
    // a few per insert keep the table small without a sweep of it
    let looked = 0;
    for (const [key, b] of m) {
      if (++looked > 8) break;
      if (b.tokens + ((now - b.at) * rate) / 1000 >= burst) m.delete(key);
    }
    while (m.size >= this.max) m.delete(m.keys().next().value!);
  }

  clear(): void {
    this.#buckets.clear();
  }
}
