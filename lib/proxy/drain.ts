/**
 * The private proxy's announcements one by one (docs/architecture.md, "Drain"): the state of
 * each (`pending` until every operator of `announce_to` acknowledged it, `announced`,
 * `draining`, `drained`), its live connections, and the drain itself: withdraw it at every
 * public operator, refuse its notices and pooled clients, let its splices finish for `grace_ms`,
 * then close what is left. Undrain announces it again.
 * @module
 */
import type { DataEvent, DataPlane, Snapshot } from "../dataplane/mod.ts";
import { formatHostPort } from "../role.ts";
import type { PrivateAnnouncement } from "../settings/private.ts";
import { matchName, normalizeHostName } from "../wire/names.ts";

export type AnnouncementState = "pending" | "announced" | "draining" | "drained";

/** One announcement as `/status` shows it. */
export interface AnnouncementStatus {
  readonly domain: string;
  /** The internal server, `host:port`. */
  readonly internal: string;
  readonly state: AnnouncementState;
  /** Connections being set up or spliced now for it. */
  readonly live: number;
  /** The last acknowledgement of each public operator (ISO time), since it was last announced. */
  readonly acknowledged: readonly { readonly operator: string; readonly at: string }[];
  /** The earliest expiry those acknowledgements hold (ISO), absent when none holds it. */
  readonly expiresAt?: string;
}

/**
 * What a drain did. `state` is `drained` when it was waited for, `draining` when the caller did
 * not wait (`{wait: false}`), or `pending`/`announced` when an undrain ended it first.
 */
export interface DrainResult {
  readonly domain: string;
  readonly state: AnnouncementState;
  /** Operators that acknowledged the withdrawal. */
  readonly withdrawn: readonly string[];
  /** Operators that could not be told (the announcement lapses there at its expiry). */
  readonly notWithdrawn: readonly { readonly operator: string; readonly error: string }[];
  /** Connections live when the drain started. */
  readonly live: number;
  /** Splices that ended on their own during the drain. */
  readonly finished: number;
  /** Splices closed when `grace_ms` ran out. */
  readonly closed: number;
  /** How long the drain took (ms). */
  readonly ms: number;
}

export interface DrainOptions {
  /** Resolve once drained (default), or at once with state `draining`. */
  readonly wait?: boolean;
}

/** What the table needs from the private proxy. */
export interface DrainHooks {
  /** Withdraws `domains` at every operator of announce_to; one answer per operator. */
  withdraw(domains: readonly string[]): Promise<{ operator: string; error?: string }[]>;
  /** The set of serving announcements changed: a new snapshot, the pools (stop or start). */
  changed(): void;
  /** Closes these connections now (the data plane's `close`). */
  close(conns: readonly number[]): void;
  /** Announce now (an undrain, an added announcement). */
  announce(): void;
  /** `grace_ms` now. */
  graceMs(): number;
}

/** Longest an undrain waits for the acknowledgements by default. */
export const UNDRAIN_WAIT_MS = 10_000;

class Entry {
  state: AnnouncementState = "pending";
  /** operator → [acknowledged at, expires at] (epoch ms). */
  readonly acks = new Map<string, [number, number]>();
  /** Spliced connections. */
  readonly conns = new Set<number>();
  settingUp = 0;
  /** Removed from the settings by a reload: forgotten once drained. */
  removing = false;
  drain: Drain | undefined;
  readonly waiters = new Set<() => void>();
  constructor(public announcement: PrivateAnnouncement) {}
  get live(): number {
    return this.conns.size + this.settingUp;
  }
  get serving(): boolean {
    return this.state === "pending" || this.state === "announced";
  }
}

class Drain {
  readonly started = performance.now();
  readonly live: number;
  finished = 0;
  closed = 0;
  withdrawn: string[] = [];
  notWithdrawn: { operator: string; error: string }[] = [];
  readonly done = Promise.withResolvers<DrainResult>();
  /** Resolves when the last connection ended (or the drain was cancelled). */
  readonly empty = Promise.withResolvers<void>();
  constructor(readonly entry: Entry) {
    this.live = entry.live;
  }
  result(): DrainResult {
    return {
      domain: this.entry.announcement.domain,
      state: this.entry.state,
      withdrawn: this.withdrawn,
      notWithdrawn: this.notWithdrawn,
      live: this.live,
      finished: this.finished,
      closed: this.closed,
      ms: Math.round(performance.now() - this.started),
    };
  }
}

/** The private proxy's announcements, their states and their live connections. */
export class AnnouncementTable {
  readonly #entries = new Map<string, Entry>();
  #serving = new Map<string, PrivateAnnouncement>();
  /** Connections being set up, by the name of their events, with the entry counted for each. */
  readonly #settingUp = new Map<string, Entry[]>();
  /** Spliced connection → its entry. */
  readonly #byConn = new Map<number, Entry>();
  #closed = false;

  constructor(
    announcements: readonly PrivateAnnouncement[],
    readonly announceTo: readonly string[],
    readonly hooks: DrainHooks,
  ) {
    for (const a of announcements) this.#entries.set(a.domain, new Entry(a));
    this.#rebuild();
  }

  /** Announcements that serve (pending or announced), by domain: notices, routes, announcing. */
  get serving(): ReadonlyMap<string, PrivateAnnouncement> {
    return this.#serving;
  }

  /** Every domain this proxy may hold at a public proxy (what a stop withdraws). */
  domains(): string[] {
    return [...this.#entries.keys()];
  }

  /** The announcement serving or once serving `name` (exact, then `*.parent`). */
  find(name: string): PrivateAnnouncement | undefined {
    return matchName(name, this.#entries)?.announcement;
  }

  status(): AnnouncementStatus[] {
    const out: AnnouncementStatus[] = [];
    for (const e of this.#entries.values()) {
      const acks = [...e.acks].map(([operator, [at]]) => ({
        operator,
        at: new Date(at).toISOString(),
      }));
      const expiry = Math.min(...[...e.acks.values()].map(([, x]) => x));
      out.push({
        domain: e.announcement.domain,
        internal: formatHostPort(e.announcement.internal),
        state: e.state,
        live: e.live,
        acknowledged: acks,
        ...(Number.isFinite(expiry) ? { expiresAt: new Date(expiry).toISOString() } : {}),
      });
    }
    return out;
  }

  /** `operator` acknowledged these domains (one announce round). */
  acknowledged(
    operator: string,
    acked: readonly { domain: string; expiresAt: number }[],
    now = Date.now(),
  ): void {
    for (const a of acked) {
      const e = this.#entries.get(a.domain);
      if (e === undefined || !e.serving) continue; // drained meanwhile: withdrawn after this round
      e.acks.set(operator, [now, a.expiresAt]);
      if (e.state === "pending" && this.announceTo.every((op) => e.acks.has(op))) {
        e.state = "announced";
        for (const w of [...e.waiters]) w();
      }
    }
  }

  // -- the connections ---------------------------------------------------------------------

  /** A notice was accepted, or a client came on a pooled dial-back, for `name`. */
  opened(name: string): void {
    const e = matchName(name, this.#entries);
    if (e === undefined) return;
    e.settingUp++;
    let list = this.#settingUp.get(name);
    if (list === undefined) this.#settingUp.set(name, list = []);
    list.push(e);
  }

  #setUpDone(name: string): Entry | undefined {
    const list = this.#settingUp.get(name);
    const e = list?.shift();
    if (list !== undefined && list.length === 0) this.#settingUp.delete(name);
    if (e !== undefined) e.settingUp--;
    return e;
  }

  /**
   * Follows a data-plane event; returns the id of a connection to close now: a splice set up
   * for an announcement drained meanwhile (or gone), which must not outlive its drain.
   */
  onEvent(ev: DataEvent): number | undefined {
    switch (ev.type) {
      case "poolUsed":
        this.opened(ev.domain);
        return;
      case "connectFailed": {
        const e = this.#setUpDone(ev.domain);
        if (e !== undefined) this.#check(e);
        return;
      }
      case "piped": {
        const e = this.#setUpDone(ev.domain) ?? matchName(ev.domain, this.#entries);
        if (e === undefined || e.state === "drained" || !this.#entries.has(e.announcement.domain)) {
          return ev.conn;
        }
        e.conns.add(ev.conn);
        this.#byConn.set(ev.conn, e);
        return;
      }
      case "ended": {
        const e = this.#byConn.get(ev.conn);
        if (e === undefined) return;
        this.#byConn.delete(ev.conn);
        e.conns.delete(ev.conn);
        if (e.drain !== undefined && ev.reason.kind !== "stopped") e.drain.finished++;
        this.#check(e);
        return;
      }
    }
  }

  #check(e: Entry): void {
    if (e.drain !== undefined && e.live === 0) e.drain.empty.resolve();
  }

  // -- drain and undrain -------------------------------------------------------------------

  #entry(domain: string, verb: string): Entry {
    const name = normalizeHostName(domain) ?? domain;
    const e = this.#entries.get(name);
    if (e === undefined) {
      const known = [...this.#entries.keys()];
      throw new RangeError(
        `Cannot ${verb} "${domain}": not an announcement of this private proxy (it has ${
          known.length === 0 ? "none" : known.slice(0, 10).join(", ")
        }${known.length > 10 ? ", …" : ""})`,
      );
    }
    return e;
  }

  /**
   * Drains `domain`: no new connection for it from now on (withdrawn at every operator, its
   * notices and pooled clients refused), its splices get `grace_ms` to finish, then the rest are
   * closed and it is `drained`. Throws RangeError for a domain not announced here.
   */
  async drain(domain: string, options: DrainOptions = {}): Promise<DrainResult> {
    const e = this.#entry(domain, "drain");
    if (e.drain === undefined) {
      if (e.state === "drained") {
        return {
          domain: e.announcement.domain,
          state: e.state,
          withdrawn: [],
          notWithdrawn: [],
          live: e.live,
          finished: 0,
          closed: 0,
          ms: 0,
        };
      }
      this.#start(e);
    }
    const d = e.drain!;
    return options.wait === false ? d.result() : await d.done.promise;
  }

  #start(e: Entry): void {
    const d = new Drain(e);
    e.drain = d;
    e.state = "draining";
    this.#rebuild();
    this.hooks.changed();
    if (e.live === 0) d.empty.resolve();
    void this.#run(d);
  }

  async #run(d: Drain): Promise<void> {
    const e = d.entry;
    const domain = e.announcement.domain;
    // grace_ms runs from the start of the drain, alongside the withdrawal
    let timer: ReturnType<typeof setTimeout> | undefined;
    const grace = new Promise<void>((r) => timer = setTimeout(r, this.hooks.graceMs()));
    const answers = await this.hooks.withdraw([domain]).catch((err) =>
      this.announceTo.map((operator) => ({ operator, error: String(err) }))
    );
    for (const a of answers) {
      if (a.error === undefined) {
        d.withdrawn.push(a.operator);
        e.acks.delete(a.operator);
      } else d.notWithdrawn.push({ operator: a.operator, error: a.error });
    }
    if (e.drain !== d) { // undrained meanwhile
      clearTimeout(timer);
      return;
    }
    await Promise.race([d.empty.promise, grace]);
    clearTimeout(timer);
    if (e.drain !== d) return;
    if (e.conns.size > 0) {
      d.closed = e.conns.size;
      this.hooks.close([...e.conns]);
    }
    e.drain = undefined;
    e.state = "drained";
    e.acks.clear();
    if (e.removing) this.#entries.delete(domain);
    d.done.resolve(d.result());
  }

  /**
   * Serves `domain` again: announces it, and resolves once every operator acknowledged it (state
   * `announced`) or after `timeoutMs` with the state then. A drain under way ends (its live
   * splices go on). Throws RangeError for a domain not announced here.
   */
  async undrain(
    domain: string,
    options: { wait?: boolean; timeoutMs?: number } = {},
  ): Promise<AnnouncementStatus> {
    const e = this.#entry(domain, "undrain");
    if (e.removing) {
      throw new RangeError(
        `Cannot undrain "${domain}": the last reload removed it from the settings (add it back and reload)`,
      );
    }
    if (!e.serving) {
      const d = e.drain;
      e.drain = undefined;
      e.state = "pending";
      e.acks.clear();
      this.#rebuild();
      this.hooks.changed();
      d?.empty.resolve();
      d?.done.resolve(d.result());
      this.hooks.announce();
    }
    if (options.wait !== false && e.state === "pending") {
      let timer: ReturnType<typeof setTimeout> | undefined;
      let waiter: (() => void) | undefined;
      await new Promise<void>((resolve) => {
        waiter = resolve;
        e.waiters.add(resolve);
        timer = setTimeout(resolve, options.timeoutMs ?? UNDRAIN_WAIT_MS);
      });
      clearTimeout(timer);
      e.waiters.delete(waiter!);
    }
    return this.status().find((s) => s.domain === e.announcement.domain)!;
  }

  // -- reload ------------------------------------------------------------------------------

  /**
   * Takes the announcements of new settings: new ones start pending, removed ones are drained
   * (then forgotten), a changed internal server or expiry applies to new connections and the
   * next round. Returns one line per change; the caller makes the new snapshot and announces.
   */
  update(next: readonly PrivateAnnouncement[]): string[] {
    const lines: string[] = [];
    const wanted = new Set(next.map((a) => a.domain));
    for (const a of next) {
      const e = this.#entries.get(a.domain);
      if (e === undefined) {
        this.#entries.set(a.domain, new Entry(a));
        lines.push(`announcements: added ${a.domain}`);
        continue;
      }
      const old = e.announcement;
      e.announcement = a;
      if (formatHostPort(old.internal) !== formatHostPort(a.internal)) {
        lines.push(
          `announcements: ${a.domain} now goes to ${formatHostPort(a.internal)} (was ${
            formatHostPort(old.internal)
          }) for new connections`,
        );
      }
      if (old.proxyProtocol !== a.proxyProtocol) {
        lines.push(
          `announcements: ${a.domain} proxy_protocol ${a.proxyProtocol ?? "none"} (was ${
            old.proxyProtocol ?? "none"
          }) for new connections`,
        );
      }
      if (old.expiresInMs !== a.expiresInMs) {
        lines.push(`announcements: ${a.domain} expires_in_ms ${a.expiresInMs}`);
      }
      if ((old.allow ?? []).join(",") !== (a.allow ?? []).join(",")) {
        // announced again at once (the announcer's reconfigure): the public proxy applies it
        lines.push(`announcements: ${a.domain} allow ${a.allow?.join(", ") ?? "(everyone)"}`);
      }
      if (e.removing) {
        e.removing = false; // removed, then listed again before its drain ended
        if (!e.serving) void this.undrain(a.domain, { wait: false });
      }
    }
    for (const e of [...this.#entries.values()]) {
      const domain = e.announcement.domain;
      if (wanted.has(domain) || e.removing) continue;
      e.removing = true;
      lines.push(`announcements: removed ${domain} (drained, then withdrawn)`);
      if (e.state === "drained") this.#entries.delete(domain);
      else if (e.drain === undefined) this.#start(e);
    }
    this.#rebuild();
    return lines;
  }

  /** The role stops: drains under way resolve with their state now, undrain waits end. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const e of this.#entries.values()) {
      for (const w of [...e.waiters]) w();
      const d = e.drain;
      if (d !== undefined) {
        d.empty.resolve();
        d.done.resolve(d.result());
      }
    }
  }

  #rebuild(): void {
    const m = new Map<string, PrivateAnnouncement>();
    for (const e of this.#entries.values()) {
      if (e.serving) m.set(e.announcement.domain, e.announcement);
    }
    this.#serving = m;
  }
}

/** The parts of the private proxy a drain touches beside the table. */
export interface DrainParts {
  readonly table: AnnouncementTable;
  readonly plane: DataPlane;
  readonly pools: ReadonlyMap<string, { pause(): void; resume(): void; readonly paused: boolean }>;
  snapshot(): Snapshot;
}

/**
 * The serving names changed: a new snapshot without the drained ones (their pooled clients are
 * refused); the pools stop, and their idle dial-backs close, while no name is announced (a pooled
 * connection serves every announced name of its operator, and every operator of announce_to is
 * announced every name).
 */
export function servingChanged(c: DrainParts): void {
  c.plane.send({ type: "snapshot", snapshot: c.snapshot() });
  const none = c.table.serving.size === 0;
  for (const p of c.pools.values()) {
    if (none) p.pause();
    else p.resume();
  }
  if (none && c.pools.size > 0) {
    c.plane.send({ type: "close", conns: [], idleOf: [...c.pools.keys()] });
  }
}

/** After each data-plane event: a late splice of a drained name closes, so does a paused pool's new idle one. */
export function afterEvent(c: DrainParts, e: DataEvent): void {
  const late = c.table.onEvent(e);
  if (late !== undefined) c.plane.send({ type: "close", conns: [late] });
  if (e.type === "poolIdle" && c.pools.get(e.operator)?.paused) {
    c.plane.send({ type: "close", conns: [], idleOf: [e.operator] });
  }
}
