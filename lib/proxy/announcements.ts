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

/**
 * A name as it routes: its holder `operator`, the latest expiry of its entries, the newest entry's
 * `allow`, and the instances of the operator that announced it (sorted, live ones).
 */
export interface AnnouncedName {
  operator: string;
  domain: string;
  expiresAt: number;
  allow?: readonly string[];
  instances: string[];
}

/** The longest an announcement may live. */
export const MAX_EXPIRY_MS = 7 * 86_400_000;
/** The default of `max_announcements_per_operator`: the most domains one operator may hold. */
export const MAX_ANNOUNCEMENTS_PER_OPERATOR = 100_000;
/** The most instances whose entries one name may have (docs/architecture.md, "Instances"). */
export const MAX_INSTANCES_PER_NAME = 64;
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
export function viewOf(
  list: readonly { domain: string; expiresAt: number; allow?: readonly string[] }[],
): AnnouncementView[] {
  return list.map((a) => ({
    domain: a.domain,
    expires_at: new Date(a.expiresAt).toISOString(),
    ...(a.allow !== undefined ? { allow: a.allow } : {}),
  }));
}

/** The key of one entry within a domain. */
function slot(operator: string, instance: string): string {
  return `${operator}\u0000${instance}`;
}

/**
 * The announcement table, backed by a store; created per public proxy. It keeps one entry per
 * (operator, domain, instance), each with its own expiry and allow; a domain routes while any entry
 * of it lives (docs/architecture.md, "Public replicas and the Redis store").
 */
export class Announcements {
  /** domain → slot → entry; within a domain, the newest entry is the last. */
  #byDomain = new Map<string, Map<string, Announcement>>();
  #store: AnnouncementStore;
  #policy: DomainPolicy;
  #clock: () => number;
  #listeners = new Set<() => void>();

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
    // an entry stored before a directory change that no longer allows it is not served
    for (const a of store.initial) this.#accept(a, now);
    store.onRemote((changes) => {
      const now = this.#clock();
      for (const c of changes) {
        if (c.op === "put") this.#accept(c.announcement, now);
        else this.#remove(c.operator, c.domain, c.instance);
      }
      for (const l of [...this.#listeners]) l();
    });
  }

  /** Calls `listener` after the table changed from outside (a peer replica, a swept expiry). */
  onChange(listener: () => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  #accept(a: Announcement, now: number): void {
    if (a.expiresAt > now && this.#policy(a.operator, a.domain)) this.#set(a);
  }

  #set(a: Announcement): void {
    let m = this.#byDomain.get(a.domain);
    if (m === undefined) this.#byDomain.set(a.domain, m = new Map());
    const k = slot(a.operator, a.instance);
    m.delete(k); // re-inserted last: the newest
    m.set(k, a);
  }

  /** Removes `operator`'s entries of `domain` (one instance's, or all); whether any was there. */
  #remove(operator: string, domain: string, instance?: string): boolean {
    const m = this.#byDomain.get(domain);
    if (m === undefined) return false;
    let removed = false;
    for (const [k, a] of m) {
      if (a.operator === operator && (instance === undefined || a.instance === instance)) {
        m.delete(k);
        removed = true;
      }
    }
    if (m.size === 0) this.#byDomain.delete(domain);
    return removed;
  }

  /** The live entries of `domain` exactly, pruning expired ones. */
  #live(domain: string, now: number): Map<string, Announcement> | undefined {
    const m = this.#byDomain.get(domain);
    if (m === undefined) return undefined;
    for (const [k, a] of m) if (a.expiresAt <= now) m.delete(k);
    if (m.size > 0) return m;
    this.#byDomain.delete(domain);
    return undefined;
  }

  /**
   * `domain` as it routes: held by one operator (two operators can meet only through a race
   * between replicas; then the name that sorts first holds it, on every replica alike).
   */
  #view(domain: string, now: number, operator?: string): AnnouncedName | undefined {
    const m = this.#live(domain, now);
    if (m === undefined) return undefined;
    let holder = operator;
    if (holder === undefined) {
      for (const a of m.values()) {
        if (holder === undefined || a.operator < holder) holder = a.operator;
      }
    }
    let expiresAt = 0;
    let newest: Announcement | undefined;
    const instances: string[] = [];
    for (const a of m.values()) {
      if (a.operator !== holder) continue;
      newest = a;
      expiresAt = Math.max(expiresAt, a.expiresAt);
      instances.push(a.instance);
    }
    if (newest === undefined) return undefined;
    return {
      operator: newest.operator,
      domain,
      expiresAt,
      ...(newest.allow !== undefined ? { allow: newest.allow } : {}),
      instances: instances.sort(),
    };
  }

  /** The announcement serving the normalised host `name`: exact first, then `*.parent`. */
  match(name: string): AnnouncedName | undefined {
    const now = this.#clock();
    const domain = matchDomain(name, (d) => this.#live(d, now) !== undefined);
    return domain === undefined ? undefined : this.#view(domain, now);
  }

  /** The live instances that announced `domain` (sorted). */
  instancesOf(domain: string): string[] {
    return this.#view(domain, this.#clock())?.instances ?? [];
  }

  /** How many domains `operator` holds (any instance). */
  count(operator: string): number {
    const now = this.#clock();
    let n = 0;
    for (const m of this.#byDomain.values()) {
      for (const a of m.values()) {
        if (a.operator === operator && a.expiresAt > now) {
          n++;
          break;
        }
      }
    }
    return n;
  }

  /** The earliest expiry of any live entry (one instance's entry ending changes a route's instances). */
  nextExpiry(): number {
    const now = this.#clock();
    let next = Infinity;
    for (const m of this.#byDomain.values()) {
      for (const a of m.values()) if (a.expiresAt > now && a.expiresAt < next) next = a.expiresAt;
    }
    return next;
  }

  /** The live domains of `operator`, with its instances. */
  list(operator: string): AnnouncedName[] {
    const now = this.#clock();
    const out: AnnouncedName[] = [];
    for (const domain of [...this.#byDomain.keys()]) {
      const v = this.#view(domain, now, operator);
      if (v !== undefined) out.push(v);
    }
    return out.sort((x, y) => x.domain.localeCompare(y.domain));
  }

  /** Every live name. */
  all(): AnnouncedName[] {
    const now = this.#clock();
    const out: AnnouncedName[] = [];
    for (const domain of [...this.#byDomain.keys()]) {
      const v = this.#view(domain, now);
      if (v !== undefined) out.push(v);
    }
    return out;
  }

  /** The live operator of `domain` other than `operator`, if any. */
  #otherHolder(domain: string, operator: string, now: number): AnnouncedName | undefined {
    const m = this.#live(domain, now);
    if (m === undefined) return undefined;
    for (const a of m.values()) {
      if (a.operator !== operator) return this.#view(domain, now, a.operator);
    }
    return undefined;
  }

  #holds(domain: string, operator: string, now: number): boolean {
    const m = this.#live(domain, now);
    if (m === undefined) return false;
    for (const a of m.values()) if (a.operator === operator) return true;
    return false;
  }

  /**
   * Records the announcements of `instance` of `operator`, all or none. Throws RpcError
   * DomainNotAllowed (-32010) for a domain outside its allowed domains, Conflict (-32009) for a
   * domain another operator holds.
   */
  async announce(
    operator: string,
    requests: readonly AnnouncementRequest[],
    instance = "",
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
      const holder = this.#otherHolder(r.domain, operator, now);
      if (holder) {
        throw new RpcError(
          `Cannot announce "${r.domain}" for "${operator}": held by "${holder.operator}" until ${
            new Date(holder.expiresAt).toISOString()
          }`,
          RpcCode.Conflict,
          { domain: r.domain, holder: holder.operator },
        );
      }
    }
    // entries per name are bounded: a caller's own EPS stamps its instance names, so a peer could
    // otherwise grow one name's entries (and every snapshot's instance list) without end
    const k0 = slot(operator, instance);
    for (const r of requests) {
      const m = this.#live(r.domain, now);
      if (m !== undefined && !m.has(k0) && m.size >= MAX_INSTANCES_PER_NAME) {
        throw invalid(
          `Cannot announce "${r.domain}" for instance "${instance}" of "${operator}": ${m.size} instances hold it, at most ${MAX_INSTANCES_PER_NAME}`,
        );
      }
    }
    // the cap counts domains, not entries: another instance of a held domain is not fresh
    const fresh = requests.filter((r) => !this.#holds(r.domain, operator, now)).length;
    const holds = this.count(operator);
    if (holds + fresh > this.maxPerOperator) {
      throw invalid(
        `Cannot announce ${fresh} more domains for "${operator}": it holds ${holds}, and max_announcements_per_operator is ${this.maxPerOperator}`,
      );
    }
    const added = requests.map((r): Announcement => ({
      operator,
      domain: r.domain,
      instance,
      expiresAt: r.expiresAt,
      ...(r.allow !== undefined ? { allow: r.allow } : {}),
    }));
    const k = slot(operator, instance);
    const previous = added.map((a) => this.#byDomain.get(a.domain)?.get(k));
    for (const a of added) this.#set(a); // before the await: no race between callers
    try {
      await this.#store.write(added.map((a): StoreChange => ({ op: "put", announcement: a })));
    } catch (err) {
      added.forEach((a, i) => {
        if (this.#byDomain.get(a.domain)?.get(k) !== a) return;
        const p = previous[i];
        if (p) this.#set(p);
        else this.#remove(operator, a.domain, instance);
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

  /**
   * Forgets `instance`'s entries of `operator` in this table only, not in the store (its EPS says
   * it is not attached: docs/architecture.md, "Re-dispatch"); another replica decides for itself,
   * and the instance's next announcement brings them back. Returns the domains.
   */
  forget(operator: string, instance: string): string[] {
    const out: string[] = [];
    for (const a of this.list(operator)) {
      if (a.instances.includes(instance) && this.#remove(operator, a.domain, instance)) {
        out.push(a.domain);
      }
    }
    return out;
  }

  /**
   * Removes `operator`'s entries of `domains` (all when undefined): `instance`'s only, or every
   * instance's when undefined. Returns the domains an entry was removed from.
   */
  async withdraw(
    operator: string,
    domains?: readonly string[],
    instance?: string,
  ): Promise<string[]> {
    const targets = domains ?? this.list(operator).map((a) => a.domain);
    const removed: string[] = [];
    for (const d of targets) if (this.#remove(operator, d, instance)) removed.push(d);
    // a named domain is deleted in the store even when this table lacks it: with a shared store
    // another replica may hold an entry this one has not seen yet (its write still queued)
    await this.#store.write(
      (domains ?? removed).map((domain): StoreChange =>
        instance === undefined
          ? { op: "del", operator, domain }
          : { op: "del", operator, domain, instance }
      ),
    );
    return removed;
  }
}
