/**
 * The live connections of a proxy (docs/architecture.md, "Connection ids"): a bounded table fed
 * by the data plane's events (`piped` adds a connection, `ended` removes it), for `/status`.
 * Newest first; counts per domain cover every live connection, also those past the table's
 * bound.
 * @module
 */
import type { StatusTable } from "../admin/status.ts";
import type { DataEvent, Via } from "../dataplane/mod.ts";

/** A live (spliced) connection as /status shows it. */
export interface LiveConnection {
  /** The connection id, the same in both proxies' logs. */
  readonly id: string;
  readonly domain: string;
  /** The client's address (public proxy); empty on the private proxy, which does not know it. */
  readonly client: string;
  readonly operator: string;
  readonly via: Via;
  /** Milliseconds since the splice started. */
  readonly sinceMs: number;
}

interface Entry {
  readonly id: string;
  readonly domain: string;
  readonly client: string;
  readonly operator: string;
  readonly via: Via;
  readonly since: number;
}

/** Default bound of the table (the counts go on past it). */
export const MAX_LIVE_ENTRIES = 10_000;

/**
 * The live connections of one proxy, keyed by the data plane's connection number (the id is a
 * field: on a private proxy it comes from the peer, which must not be able to hide or replace
 * another connection's entry by reusing one).
 */
export class LiveConnections {
  /** Insertion order is splice order: the newest last. */
  readonly #entries = new Map<number, Entry>();
  /** Live connections past the bound, by number → domain (counted, not listed). */
  readonly #untracked = new Map<number, string>();
  readonly #byDomain = new Map<string, number>();

  constructor(
    readonly maxEntries: number = MAX_LIVE_ENTRIES,
    readonly clock: () => number = () => performance.now(),
  ) {
    if (!Number.isInteger(maxEntries) || maxEntries < 0) {
      throw new RangeError(`Invalid maxEntries ${maxEntries}: expected an integer >= 0`);
    }
  }

  /** Connections live now (listed or not). */
  get size(): number {
    return this.#entries.size + this.#untracked.size;
  }

  /** Takes the events that start and end a splice; ignores the others. */
  onEvent(e: DataEvent): void {
    if (e.type === "piped") {
      this.add(e.conn, {
        id: e.connId,
        domain: e.domain,
        client: e.client,
        operator: e.operator,
        via: e.via,
      });
    } else if (e.type === "ended") this.remove(e.conn);
  }

  /** A splice started: connection number `conn` of the data plane. */
  add(conn: number, c: Omit<LiveConnection, "sinceMs">): void {
    if (this.#entries.has(conn) || this.#untracked.has(conn)) return;
    this.#bump(c.domain, 1);
    if (this.#entries.size >= this.maxEntries) {
      this.#untracked.set(conn, c.domain);
      return;
    }
    this.#entries.set(conn, {
      id: c.id,
      domain: c.domain,
      client: c.client,
      operator: c.operator,
      via: c.via,
      since: this.clock(),
    });
  }

  /** A splice ended; an unknown number is ignored. */
  remove(conn: number): void {
    const e = this.#entries.get(conn);
    if (e !== undefined) {
      this.#entries.delete(conn);
      this.#bump(e.domain, -1);
      return;
    }
    const domain = this.#untracked.get(conn);
    if (domain === undefined) return;
    this.#untracked.delete(conn);
    this.#bump(domain, -1);
  }

  /** Up to `limit` live connections, newest first. */
  list(limit = 100): LiveConnection[] {
    const now = this.clock();
    const out: LiveConnection[] = [];
    const all = [...this.#entries.values()];
    for (let i = all.length - 1; i >= 0 && out.length < limit; i--) {
      const e = all[i]!;
      out.push({
        id: e.id,
        domain: e.domain,
        client: e.client,
        operator: e.operator,
        via: e.via,
        sinceMs: Math.max(0, Math.round(now - e.since)),
      });
    }
    return out;
  }

  /** Live connections per domain (a name's count, also past the table's bound). */
  countsByDomain(): Map<string, number> {
    return new Map(this.#byDomain);
  }

  #bump(domain: string, by: number): void {
    const n = (this.#byDomain.get(domain) ?? 0) + by;
    if (n <= 0) this.#byDomain.delete(domain);
    else this.#byDomain.set(domain, n);
  }
}

/** The newest live connections as a status table (docs/architecture.md, "The admin endpoint"). */
export function liveTable(live: LiveConnections, limit = 50): StatusTable {
  const rows = live.list(limit).map((c) => [
    c.id,
    c.domain,
    c.client,
    c.operator,
    c.via,
    Math.round(c.sinceMs / 1000),
  ]);
  const more = live.size - rows.length;
  return {
    title: more > 0
      ? `Live connections (newest ${rows.length} of ${live.size})`
      : "Live connections",
    columns: ["id", "domain", "client", "operator", "via", "age s"],
    rows,
    empty: "no live connection",
  };
}
