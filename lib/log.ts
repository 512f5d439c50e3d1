/**
 * Logging helpers. Library code only gets loggers; cli.ts configures sinks.
 * @module
 */
import { getLogger, type Logger } from "@logtape/logtape";

/** A logger in the `["tls-pass", role, component]` category. */
export function logger(role: string, component?: string): Logger {
  return getLogger(component ? ["tls-pass", role, component] : ["tls-pass", role]);
}

/** The first 6 characters of a secret, for logs (rathole's MaskedString idea). */
export function redact(secret: string): string {
  return secret.length <= 6 ? "******" : `${secret.slice(0, 6)}…`;
}

/** A one-line description of an unknown error, for log properties. */
export function errorText(err: unknown): string {
  if (err instanceof Error) return `${err.name}: ${err.message}`;
  return String(err);
}

/**
 * Counts events and logs at most once per interval, so a cap that is hit by every connection does
 * not flood the log.
 */
export class RateLimitedCounter {
  #count = 0;
  #last = 0;
  constructor(readonly intervalMs = 10_000) {}
  /** Adds one; returns the count to report when a log line is due now, else undefined. */
  hit(now: number = Date.now()): number | undefined {
    this.#count++;
    if (now - this.#last < this.intervalMs) return undefined;
    this.#last = now;
    const n = this.#count;
    this.#count = 0;
    return n;
  }
}
