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
 * Rate-limited warnings: at most one line per kind per interval, with the count since the last
 * line. What is held back is flushed on a timer, so a summary also appears when no further event
 * of its kind comes. `close()` logs the rest and stops the timers.
 */
interface Kind {
  /** When the last line of this kind was logged (Date.now()), or -Infinity. */
  last: number;
  /** Events since that line. */
  count: number;
  message: string;
  props: Record<string, unknown>;
  timer: ReturnType<typeof setTimeout> | undefined;
}

/** Counts events per kind and logs a warning at most once per interval with the count since. */
export class RateLimitedLog {
  #kinds = new Map<string, Kind>();
  #closed = false;

  constructor(
    readonly log: Logger,
    readonly intervalMs = 10_000,
    readonly clock: () => number = Date.now,
  ) {}

  /** Counts one event of `kind`; `message` and `props` describe the last one (`{count}` is added). */
  warn(kind: string, message: string, props: Record<string, unknown>): void {
    let k = this.#kinds.get(kind);
    if (k === undefined) {
      k = { last: -Infinity, count: 0, message, props, timer: undefined };
      this.#kinds.set(kind, k);
    }
    k.count++;
    k.message = message;
    k.props = props;
    const now = this.clock();
    if (now - k.last >= this.intervalMs) return this.#flush(k, now);
    if (k.timer === undefined && !this.#closed) {
      const kk = k;
      k.timer = setTimeout(() => this.#flush(kk, this.clock()), k.last + this.intervalMs - now);
    }
  }

  #flush(k: Kind, now: number): void {
    clearTimeout(k.timer);
    k.timer = undefined;
    if (k.count === 0) return;
    this.log.warn(k.message, { ...k.props, count: k.count });
    k.count = 0;
    k.last = now;
  }

  /** Logs what is held back and stops the timers (the role stops). */
  close(): void {
    this.#closed = true;
    for (const k of this.#kinds.values()) this.#flush(k, this.clock());
  }
}
