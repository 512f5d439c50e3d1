/**
 * The one backoff every retry loop uses (EPS links, announcements, pool refills): a delay that
 * doubles from `baseMs` to `maxMs`, optionally drawn from [d/2, d] (jitter, so that many peers
 * that failed together do not retry together).
 * @module
 */

/** Exponential backoff: `baseMs` doubling to `maxMs`; with jitter each delay is drawn from [d/2, d]. */
export class Backoff {
  #attempt = 0;
  #longest = false;
  constructor(
    readonly baseMs = 200,
    readonly maxMs = 20_000,
    readonly jitter = true,
    readonly random: () => number = Math.random,
  ) {}

  /** The next delay in milliseconds. */
  next(): number {
    const d = this.#longest
      ? this.maxMs
      : Math.min(this.maxMs, this.baseMs * 2 ** Math.min(this.#attempt, 30));
    this.#attempt++;
    return this.jitter ? Math.round(d / 2 + this.random() * d / 2) : d;
  }

  /** From now on every delay is the longest (a refusal that will not change soon). */
  longest(): void {
    this.#longest = true;
  }

  /** After a success: start from `baseMs` again. */
  reset(): void {
    this.#attempt = 0;
    this.#longest = false;
  }

  get attempts(): number {
    return this.#attempt;
  }
}
