/**
 * The private proxy's announcements (docs/architecture.md, "The control plane"): it calls
 * `<public>.announceConnections` at start, every `reannounce_interval_ms` and whenever the EPS
 * link comes back, retrying with a doubling delay while the EPS or the public side is not there,
 * and `withdrawConnections` on a graceful stop and for a drain (docs/architecture.md, "Drain").
 * Rounds and withdrawals towards one operator run one after the other, so that a round under way
 * cannot announce again a domain a drain withdraws.
 * @module
 */
import type { Logger } from "@logtape/logtape";
import { RpcCode, RpcError } from "../errors.ts";
import { errorText } from "../log.ts";
import type { EpsClient } from "../eps/client.ts";
import type { PrivateAnnouncement, PrivateSettings } from "../settings/private.ts";
import { Backoff } from "../backoff.ts";

/** Longest wait between two announcement attempts while the EPS or the public side is not there. */
const MAX_RETRY_MS = 20_000;
/** Domains per announce or withdraw call (the public proxy takes at most 5,000). */
const PAGE = 2000;
/** Longest a withdrawal may hold up a graceful stop (per page). */
const WITHDRAW_TIMEOUT_MS = 2000;

/** True for an answer that will not change by retrying at once (the page itself is refused). */
function isRefusal(err: unknown): boolean {
  return err instanceof RpcError &&
    (err.code === RpcCode.DomainNotAllowed || err.code === RpcCode.Conflict ||
      err.code === RpcCode.NotPermitted || err.code === RpcCode.InvalidParams);
}

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
  /** Per operator, the last round or withdrawal queued (they run in order). */
  readonly #chains = new Map<string, Promise<unknown>>();
  announced = 0;

  constructor(
    readonly eps: EpsClient,
    /** Read at each round: reannounce_interval_ms and retry_ms (a reload replaces it). */
    public settings: PrivateSettings,
    readonly log: Logger,
    readonly signal: AbortSignal,
    /** Called after each acknowledged round with what it acknowledged (the pool may open once its names are held). */
    readonly onAnnounced: (
      operator: string,
      acked: readonly { domain: string; expiresAt: number }[],
    ) => void | Promise<void>,
    /** The announcements to announce now (drained ones are left out). */
    readonly list: () => readonly PrivateAnnouncement[] = () => settings.announcements,
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

  /** New settings (a reload): the loops take them at once (each announces again). */
  reconfigure(settings: PrivateSettings): void {
    this.settings = settings;
    this.wake();
  }

  /** Runs `task` after every earlier round or withdrawal towards `operator`. */
  #serial<T>(operator: string, task: () => Promise<T>): Promise<T> {
    const run = (this.#chains.get(operator) ?? Promise.resolve()).then(task, task);
    this.#chains.set(operator, run.catch(() => {}));
    return run;
  }

  async #loop(operator: string): Promise<void> {
    let s = this.settings;
    let backoff = new Backoff(s.retryMs, MAX_RETRY_MS, false);
    let waitingLogged = false;
    while (!this.signal.aborted) {
      if (s !== this.settings) {
        s = this.settings;
        backoff = new Backoff(s.retryMs, MAX_RETRY_MS, false);
      }
      try {
        const { accepted, acked } = await this.#serial(operator, () => this.#round(operator));
        if (accepted === 0) {
          backoff.longest(); // every page refused: nothing will change soon
          await pause(backoff.next(), this.signal, this.#wakers);
          continue;
        }
        this.announced++;
        backoff.reset();
        waitingLogged = false;
        this.#acknowledged.add(operator);
        if (this.#acknowledged.size === s.announceTo.length) this.#ready.resolve();
        await this.onAnnounced(operator, acked);
        await pause(s.reannounceIntervalMs, this.signal, this.#wakers);
      } catch (err) {
        if (this.signal.aborted) break;
        if (!waitingLogged) {
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

  /**
   * Announces every domain to `operator`, a page at a time; returns how many pages it accepted.
   * A page it refuses (domain not allowed, conflict, over its cap) is logged and skipped: the
   * others are served. Any other failure (EPS down, deadline) throws: the round is retried.
   */
  async #round(
    operator: string,
  ): Promise<{ accepted: number; acked: { domain: string; expiresAt: number }[] }> {
    const all = this.list();
    const acked: { domain: string; expiresAt: number }[] = [];
    let accepted = 0;
    for (let at = 0; at < all.length; at += PAGE) {
      const page = all.slice(at, at + PAGE);
      const now = Date.now();
      try {
        await this.eps.call(`${operator}.announceConnections`, {
          connections: page.map((a) => ({
            domain: a.domain,
            expires_at: new Date(now + a.expiresInMs).toISOString(),
            // who may reach the name (docs/architecture.md, "Admission"); absent: everyone
            ...(a.allow !== undefined ? { allow: a.allow } : {}),
          })),
        }, { signal: this.signal });
        accepted++;
        for (const a of page) acked.push({ domain: a.domain, expiresAt: now + a.expiresInMs });
      } catch (err) {
        if (!isRefusal(err)) throw err;
        this.log.error(
          "Announcement of {count} domains ({first} to {last}) refused by {operator}: {error}; retrying in {ms} ms",
          {
            operator,
            count: page.length,
            first: page[0]!.domain,
            last: page.at(-1)!.domain,
            error: errorText(err),
            ms: accepted === 0 ? MAX_RETRY_MS : this.settings.reannounceIntervalMs,
          },
        );
      }
    }
    if (accepted > 0) {
      this.log.info("Announced {domains} to {operator}", {
        operator,
        domains: all.length <= 10 ? all.map((a) => a.domain) : `${all.length} domains`,
      });
    }
    return { accepted, acked };
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

  /**
   * Withdraws `domains` at every operator, bounded: a public proxy that is gone must not hold up
   * a stop or a drain. One answer per operator (`error` when it could not be told).
   */
  withdraw(domains: readonly string[]): Promise<{ operator: string; error?: string }[]> {
    return Promise.all(
      this.settings.announceTo.map((operator) =>
        this.#serial(operator, async () => {
          if (!this.eps.attached) return { operator, error: "the EPS link is down" };
          try {
            for (let at = 0; at < domains.length; at += PAGE) {
              await this.eps.call(`${operator}.withdrawConnections`, {
                domains: domains.slice(at, at + PAGE),
              }, { timeoutMs: WITHDRAW_TIMEOUT_MS });
            }
            this.log.info("Withdrew {domains} from {operator}", {
              operator,
              domains: domains.length <= 10 ? domains : `${domains.length} domains`,
            });
            return { operator };
          } catch (err) {
            this.log.warn("Cannot withdraw {domains} from {operator}: {error}", {
              operator,
              domains: domains.length <= 10 ? domains : `${domains.length} domains`,
              error: errorText(err),
            });
            return { operator, error: errorText(err) };
          }
        })
      ),
    );
  }
}
