/**
 * The private proxy's announcements (docs/architecture.md, "The control plane"): it calls
 * `<public>.announceConnections` at start, every `reannounce_interval_ms` and whenever the EPS
 * link comes back, retrying with a doubling delay while the EPS or the public side is not there,
 * and `withdrawConnections` on a graceful stop.
 * @module
 */
import type { Logger } from "@logtape/logtape";
import { RpcCode, RpcError } from "../errors.ts";
import { errorText } from "../log.ts";
import type { EpsClient } from "../eps/client.ts";
import type { PrivateSettings } from "../settings/private.ts";
import { Backoff } from "../backoff.ts";

/** Longest wait between two announcement attempts while the EPS or the public side is not there. */
const MAX_RETRY_MS = 20_000;
/** Longest a withdrawal may hold up a graceful stop. */
const WITHDRAW_TIMEOUT_MS = 2000;

/** Waits `ms`, or until a waker in `wakers` is called or `signal` aborts; never rejects. */
function pause(ms: number, signal: AbortSignal, wakers: Set<() => void>): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      wakers.delete(done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
    wakers.add(done);
  });
}

/** Announces to every operator of `announce_to` until the signal aborts. */
export class Announcer {
  readonly #wakers = new Set<() => void>();
  readonly #acknowledged = new Set<string>();
  readonly #ready = Promise.withResolvers<void>();
  readonly #loops: Promise<void>[];
  readonly #unsubscribe: () => void;
  announced = 0;

  constructor(
    readonly eps: EpsClient,
    readonly settings: PrivateSettings,
    readonly log: Logger,
    readonly signal: AbortSignal,
    /** Called after each acknowledged round (the pool may open once its names are held). */
    readonly onAnnounced: (operator: string) => void | Promise<void>,
  ) {
    this.#ready.promise.catch(() => {}); // nobody has to await it
    this.#unsubscribe = eps.onAttach(() => this.wake());
    this.#loops = settings.announceTo.map((op) => this.#loop(op));
  }

  /** Resolves once every operator acknowledged; rejects (AbortError) on a stop before that. */
  get ready(): Promise<void> {
    return this.#ready.promise;
  }

  wake(): void {
    for (const wake of [...this.#wakers]) wake();
  }

  async #loop(operator: string): Promise<void> {
    const s = this.settings;
    const backoff = new Backoff(s.retryMs, MAX_RETRY_MS, false);
    let waitingLogged = false;
    while (!this.signal.aborted) {
      const now = Date.now();
      try {
        await this.eps.call(`${operator}.announceConnections`, {
          connections: s.announcements.map((a) => ({
            domain: a.domain,
            expires_at: new Date(now + a.expiresInMs).toISOString(),
          })),
        }, { signal: this.signal });
        this.announced++;
        backoff.reset();
        waitingLogged = false;
        this.log.info("Announced {domains} to {operator}", {
          operator,
          domains: s.announcements.map((a) => a.domain),
        });
        this.#acknowledged.add(operator);
        if (this.#acknowledged.size === s.announceTo.length) this.#ready.resolve();
        await this.onAnnounced(operator);
        await pause(s.reannounceIntervalMs, this.signal, this.#wakers);
      } catch (err) {
        if (this.signal.aborted) break;
        const refused = err instanceof RpcError &&
          (err.code === RpcCode.DomainNotAllowed || err.code === RpcCode.Conflict ||
            err.code === RpcCode.NotPermitted || err.code === RpcCode.InvalidParams);
        if (refused) {
          this.log.error("Announcement refused by {operator}: {error}; retrying in {ms} ms", {
            operator,
            error: errorText(err),
            ms: MAX_RETRY_MS,
          });
          backoff.longest();
        } else if (!waitingLogged) {
          this.log.info("Waiting for {operator} to acknowledge the announcement: {error}", {
            operator,
            error: errorText(err),
          });
          waitingLogged = true;
        } else {
          this.log.debug("Still waiting for {operator}: {error}", {
            operator,
            error: errorText(err),
          });
        }
        await pause(backoff.next(), this.signal, this.#wakers);
      }
    }
  }

  /** After the signal aborted: ends the loops (ready rejects if it had not resolved). */
  async stopped(): Promise<void> {
    this.#unsubscribe();
    this.#ready.reject(
      new DOMException("Private proxy stopped before its first announcement", "AbortError"),
    );
    this.wake();
    await Promise.all(this.#loops);
  }

  /** Withdraws every announcement, bounded: a public proxy that is gone must not hold up a stop. */
  async withdraw(): Promise<void> {
    const s = this.settings;
    await Promise.all(s.announceTo.map(async (operator) => {
      if (!this.eps.attached) return;
      try {
        await this.eps.call(`${operator}.withdrawConnections`, {
          domains: s.announcements.map((a) => a.domain),
        }, { timeoutMs: WITHDRAW_TIMEOUT_MS });
        this.log.info("Withdrew announcements from {operator}", { operator });
      } catch (err) {
        this.log.warn("Cannot withdraw announcements from {operator}: {error}", {
          operator,
          error: errorText(err),
        });
      }
    }));
  }
}
