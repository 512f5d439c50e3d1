/**
 * Announcements on the public proxy: which operator serves which domain until when (docs/architecture.md, "The control plane"),
 * and the three calls private proxies make about them.
 *
 * - `announceConnections {connections: [{domain, expires_at?, allow?}]}` → `{connections: [{domain, expires_at, allow?}]}`
 *   (`allow`: CIDRs that may reach the name, docs/architecture.md "Admission"; absent: everyone)
 * - `withdrawConnections {domains?: [...]}` (none = all of the caller's) → `{withdrawn: [...]}`
 * - `getAnnouncements {}` → `{connections: [{domain, expires_at}]}`, the caller's own
 *
 * `expires_at` is an RFC 3339 / ISO 8601 string, as the original's Go `time.Time` (a number is
 * read as epoch milliseconds); it is capped at 7 days from now, and absent means that cap. Answers
 * always carry ISO strings. The caller is the operator the EPS stamped (`_client`), never a field
 * of the params. A domain is `name` or `*.name` (one label).
 * @module
 */
import { RpcCode, RpcError } from "../errors.ts";
import { matchDomain, normalizeDomain } from "../wire/names.ts";
import { cidrList, MAX_CIDRS } from "../settings/limits.ts";

export { normalizeDomain };
import type { Announcement, AnnouncementStore, StoreChange } from "./store.ts";

/** The longest an announcement may live. */
export const MAX_EXPIRY_MS = 7 * 86_400_000;
/** The default of `max_announcements_per_operator`: the most domains one operator may hold. */
export const MAX_ANNOUNCEMENTS_PER_OPERATOR = 100_000;
/** The most domains one announce or withdraw call (one page) may carry. */
export const MAX_PAGE = 5000;

/** Whether `operator` may announce `domain` (the directory's allowed_domains). */
export type DomainPolicy = (operator: string, domain: string) => boolean;

export interface AnnouncementRequest {
  domain: string;
  expiresAt: number;
  /** Normalised CIDRs; absent: everyone. */
  allow?: string[];
}

/** An announcement as the calls answer it. */
export interface AnnouncementView {
  domain: string;
  "expires_at": string;
  allow?: readonly string[];
}

function invalid(message: string): RpcError {
  return new RpcError(message, RpcCode.InvalidParams);
}

function parseExpiry(v: unknown, path: string, now: number): number {
  const cap = now + MAX_EXPIRY_MS;
  if (v === undefined || v === null) return cap;
  let t = Number.NaN;
  if (typeof v === "number") t = v;
  else if (typeof v === "string") t = Date.parse(v);
  if (!Number.isFinite(t)) {
    throw invalid(
      `Cannot announce: ${path} must be an ISO 8601 time or epoch milliseconds, got ${
        JSON.stringify(v)
      }`,
    );
  }
  if (t <= now) {
    throw invalid(`Cannot announce: ${path} is ${new Date(t).toISOString()}, already past`);
  }
  return Math.min(t, cap);
}

/** Validates the params of `announceConnections`. Throws RpcError InvalidParams. */
export function parseAnnounceParams(
  params: Record<string, unknown>,
  now: number,
): AnnouncementRequest[] {
  const list = params.connections;
  if (!Array.isArray(list)) {
    throw invalid(`Cannot announce: "connections" must be a list, got ${JSON.stringify(list)}`);
  }
  if (list.length > MAX_PAGE) {
    throw invalid(
      `Cannot announce: ${list.length} connections in one call exceed the page size ${MAX_PAGE}; send them in pages`,
    );
  }
  const out = new Map<string, AnnouncementRequest>();
  list.forEach((item, i) => {
    const path = `connections[${i}]`;
    if (typeof item !== "object" || item === null || Array.isArray(item)) {
      throw invalid(`Cannot announce: ${path} must be an object`);
    }
    const o = item as Record<string, unknown>;
    // "name" is the original's field; "domain" is ours
    const domain = normalizeDomain(o.domain ?? o.name);
    if (domain === null) {
      throw invalid(
        `Cannot announce: ${path}.domain must be a host name or *.name, got ${
          JSON.stringify(o.domain ?? o.name)
        }`,
      );
    }
    const r: AnnouncementRequest = {
      domain,
      expiresAt: parseExpiry(o.expires_at, `${path}.expires_at`, now),
    };
    if (o.allow !== undefined) r.allow = parseAllow(o.allow, `${path}.allow`);
    out.set(domain, r);
  });
  return [...out.values()];
}

/** An announcement's `allow`: 1 to MAX_CIDRS CIDRs, normalised. */
function parseAllow(v: unknown, path: string): string[] {
  const problems: string[] = [];
  const list = Array.isArray(v) && v.length > 0 ? cidrList(v, path, problems) : [];
  if (list.length === 0 && problems.length === 0) {
    problems.push(`${path}: must be a list of 1 to ${MAX_CIDRS} CIDRs, got ${JSON.stringify(v)}`);
  }
  if (problems.length > 0) throw invalid(`Cannot announce: ${problems.join("; ")}`);
  return list;
}

/** Validates the params of `withdrawConnections`; undefined means every domain of the caller. */
export function parseWithdrawParams(params: Record<string, unknown>): string[] | undefined {
  const list = params.domains;
  if (list === undefined || list === null) return undefined;
  if (!Array.isArray(list) || list.length > MAX_PAGE) {
    throw invalid(`Cannot withdraw: "domains" must be a list of at most ${MAX_PAGE} names`);
  }
  return list.map((v, i) => {
    const d = normalizeDomain(v);
    if (d === null) {
      throw invalid(`Cannot withdraw: domains[${i}] must be a host name, got ${JSON.stringify(v)}`);
    }
    return d;
  });
}

/** Formats announcements for an answer. */
export function viewOf(list: readonly Announcement[]): AnnouncementView[] {
  return list.map((a) => ({
    domain: a.domain,
    expires_at: new Date(a.expiresAt).toISOString(),
    ...(a.allow !== undefined ? { allow: a.allow } : {}),
  }));
}

/**
 * The announcement table: one holder per domain, backed by a store. Created per public proxy.
 */
export class Announcements {
  #byDomain = new Map<string, Announcement>();
  #store: AnnouncementStore;
  #policy: DomainPolicy;
  #clock: () => number;

  constructor(
    store: AnnouncementStore,
    policy: DomainPolicy,
    clock: () => number = Date.now,
    /** Changed by a reload (docs/architecture.md, "Reload"): new announcements count against it. */
    public maxPerOperator: number = MAX_ANNOUNCEMENTS_PER_OPERATOR,
  ) {
    this.#store = store;
    this.#policy = policy;
    this.#clock = clock;
    const now = clock();
    for (const a of store.initial) {
      // an entry stored before a directory change that no longer allows it is not served
      if (a.expiresAt > now && policy(a.operator, a.domain)) this.#byDomain.set(a.domain, a);
    }
  }

  /** The live holder of `domain` exactly, pruning an expired entry. */
  #live(domain: string, now: number): Announcement | undefined {
    const a = this.#byDomain.get(domain);
    if (a === undefined) return undefined;
    if (a.expiresAt > now) return a;
    this.#byDomain.delete(domain);
    return undefined;
  }

  /** The announcement serving the normalised host `name`: exact first, then `*.parent`. */
  match(name: string): Announcement | undefined {
    const now = this.#clock();
    const domain = matchDomain(name, (d) => this.#live(d, now) !== undefined);
    return domain === undefined ? undefined : this.#byDomain.get(domain);
  }

  /** How many live announcements `operator` holds. */
  count(operator: string): number {
    const now = this.#clock();
    let n = 0;
    for (const a of this.#byDomain.values()) if (a.operator === operator && a.expiresAt > now) n++;
    return n;
  }

  /** The live announcements of `operator`. */
  list(operator: string): Announcement[] {
    const now = this.#clock();
    const out: Announcement[] = [];
    for (const a of [...this.#byDomain.values()]) {
      if (a.operator === operator && this.#live(a.domain, now)) out.push(a);
    }
    return out.sort((x, y) => x.domain.localeCompare(y.domain));
  }

  /** Every live announcement. */
  all(): Announcement[] {
    const now = this.#clock();
    return [...this.#byDomain.values()].filter((a) => this.#live(a.domain, now));
  }

  /**
   * Records the announcements of `operator`, all or none. Throws RpcError DomainNotAllowed
   * (-32010) for a domain outside its allowed domains, Conflict (-32009) for a domain another
   * operator holds.
   */
  async announce(
    operator: string,
    requests: readonly AnnouncementRequest[],
  ): Promise<Announcement[]> {
    const now = this.#clock();
    for (const r of requests) {
      if (!this.#policy(operator, r.domain)) {
        throw new RpcError(
          `Cannot announce "${r.domain}" for "${operator}": not in its allowed domains`,
          RpcCode.DomainNotAllowed,
          { domain: r.domain },
        );
      }
      const holder = this.#live(r.domain, now);
      if (holder && holder.operator !== operator) {
        throw new RpcError(
          `Cannot announce "${r.domain}" for "${operator}": held by "${holder.operator}" until ${
            new Date(holder.expiresAt).toISOString()
          }`,
          RpcCode.Conflict,
          { domain: r.domain, holder: holder.operator },
        );
      }
    }
    const fresh = requests.filter((r) => this.#live(r.domain, now)?.operator !== operator).length;
    const holds = this.count(operator);
    if (holds + fresh > this.maxPerOperator) {
      throw invalid(
        `Cannot announce ${fresh} more domains for "${operator}": it holds ${holds}, and max_announcements_per_operator is ${this.maxPerOperator}`,
      );
    }
    const added = requests.map((r): Announcement => ({
      operator,
      domain: r.domain,
      expiresAt: r.expiresAt,
      ...(r.allow !== undefined ? { allow: r.allow } : {}),
    }));
    const previous = added.map((a) => this.#byDomain.get(a.domain));
    for (const a of added) this.#byDomain.set(a.domain, a); // before the await: no race between callers
    try {
      await this.#store.write(added.map((a): StoreChange => ({ op: "put", announcement: a })));
    } catch (err) {
      added.forEach((a, i) => {
        if (this.#byDomain.get(a.domain) !== a) return;
        const p = previous[i];
        if (p) this.#byDomain.set(a.domain, p);
        else this.#byDomain.delete(a.domain);
      });
      throw new RpcError(
        `Cannot announce for "${operator}": store failed`,
        RpcCode.InternalError,
        undefined,
        { cause: err },
      );
    }
    return added;
  }

  /** Removes `operator`'s announcements of `domains` (all when undefined); returns the removed. */
  async withdraw(operator: string, domains?: readonly string[]): Promise<string[]> {
    const targets = domains ?? this.list(operator).map((a) => a.domain);
    const removed: string[] = [];
    for (const d of targets) {
      const a = this.#byDomain.get(d);
      if (a && a.operator === operator) {
        this.#byDomain.delete(d);
        removed.push(d);
      }
    }
    await this.#store.write(removed.map((domain) => ({ op: "del", operator, domain })));
    return removed;
  }
}
