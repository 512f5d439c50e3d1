/**
 * Rate-limited warnings of a control plane: one line per kind per interval with the count since
 * the last line, so that a cap hit by every connection does not flood the log.
 * @module
 */
import type { Logger } from "@logtape/logtape";
import { RateLimitedCounter } from "../log.ts";

/** Counts events per kind and logs a warning at most once per interval with the count since. */
export class Counters {
  #counters = new Map<string, RateLimitedCounter>();
  constructor(readonly log: Logger) {}
  warn(kind: string, message: string, props: Record<string, unknown>): void {
    let c = this.#counters.get(kind);
    if (!c) this.#counters.set(kind, c = new RateLimitedCounter());
    const n = c.hit();
    if (n !== undefined) this.log.warn(message, { ...props, count: n });
  }
}
