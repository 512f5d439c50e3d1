/**
 * The Redis store: every replica of one public operator shares its announcements through one Redis
 * (docs/architecture.md, "Public replicas and the Redis store"; settings in docs/settings.md).
 *
 * Keys, each under `redis_prefix`:
 * - `announcements`: a hash, one field per (operator, domain, instance) — the JSON
 *   `[operator, domain, instance]` — holding the entry as a store line (./store.ts). Two replicas
 *   writing entries of one name write different fields: no read-modify-write, nothing lost.
 * - `changes`: a pub/sub channel; each write publishes its changes, so every replica applies them
 *   at once (within a second).
 * - `replicas`: a hash, instance → `{"endpoint", "expires_at"}`, refreshed every
 *   REPLICA_TTL_MS / 3; an entry past its expiry is dropped by whoever reads it.
 *
 * The cache is the truth for routing: a lost Redis changes nothing but what is shared. On every
 * (re)connect the replica reads the whole hash, applies what changed, and writes back what it
 * wrote itself and Redis lacks (a Redis restarted without persistence loses nothing) and every
 * write queued meanwhile. `write()` waits at most WRITE_TIMEOUT_MS for Redis and then resolves
 * anyway, the write queued: the announcement already routes here, and the private proxy
 * re-announces; an announce refused for a slow Redis would turn a Redis outage into an outage of
 * new names.
 * @module
 */
import { createClient } from "redis";
import type { Logger } from "@logtape/logtape";
import { errorText, logger } from "../log.ts";
import type { RedisUrl } from "../settings/public.ts";
import {
  type Announcement,
  type AnnouncementStore,
  decodeValue,
  encode,
  entryKey,
  type Replica,
  type StoreChange,
  type StoreSelf,
} from "./store.ts";

/** How long a write waits for Redis before it is answered from the cache and queued. */
export const WRITE_TIMEOUT_MS = 1000;
/** How long a replica stays listed without refreshing its entry. */
export const REPLICA_TTL_MS = 15_000;
/** How long the start waits for a first connection before serving from what it has. */
export const CONNECT_WAIT_MS = 2000;
/** The deadline of a connection attempt. */
const CONNECT_TIMEOUT_MS = 2000;
/** A command link silent this long (no answer, not even to its PING) is dropped and reconnected. */
const SOCKET_TIMEOUT_MS = 5000;
/** After a command Redis refused (not a lost link), the next full re-read. */
const RETRY_MS = 1000;
/** The longest wait between two reconnect attempts. */
const MAX_BACKOFF_MS = 5000;
/** How often expired entries are swept (from the cache and from Redis). */
const SWEEP_MS = 1000;

export interface RedisStoreOptions {
  connectWaitMs?: number;
  writeTimeoutMs?: number;
  replicaTtlMs?: number;
  log?: Logger;
}

type Client = ReturnType<typeof createClient>;

/** A promise that settles with `p` or with undefined after `ms`, its timer cleared either way. */
function within<T>(p: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const t = new Promise<undefined>((res) => timer = setTimeout(() => res(undefined), ms));
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

function fieldOf(a: { operator: string; domain: string; instance: string }): string {
  return JSON.stringify([a.operator, a.domain, a.instance]);
}

function putOf(value: string): Announcement | null {
  let v: unknown;
  try {
    v = JSON.parse(value);
  } catch {
    return null;
  }
  const c = decodeValue(v);
  return c?.op === "put" ? c.announcement : null;
}

/** Opens the Redis store; resolves within `connectWaitMs` even when Redis is unreachable. */
export async function openRedisStore(
  settings: { url: RedisUrl; prefix: string },
  self: StoreSelf,
  opts: RedisStoreOptions = {},
): Promise<AnnouncementStore> {
  const store = new RedisStore(settings, self, opts);
  await within(store.firstLoad, opts.connectWaitMs ?? CONNECT_WAIT_MS);
  return store.handle();
}

class RedisStore {
  readonly #where: string;
  readonly #keys: { hash: string; channel: string; replicas: string };
  readonly #self: StoreSelf;
  readonly #log: Logger;
  readonly #writeTimeoutMs: number;
  readonly #replicaTtlMs: number;
  readonly #main: Client;
  readonly #sub: Client;
  /** Every live entry known, by entryKey. */
  readonly #cache = new Map<string, Announcement>();
  /** The entries this replica wrote (re-written on reconnect when Redis lacks them). */
  readonly #mine = new Set<string>();
  /** Writes not yet in Redis: the entry, or null for a removal. */
  readonly #pending = new Map<string, Announcement | null>();
  /** Changes not yet published. */
  /**
   * Changes not yet published, one per entry (a later change of an entry replaces the earlier
   * and moves last): a long outage queues each entry once, not once per re-announce round.
   */
  #unpublished = new Map<string, StoreChange>();
  readonly #listeners: ((changes: readonly StoreChange[]) => void)[] = [];
  /** Tells our own messages apart on the channel. */
  readonly #nonce = crypto.randomUUID();
  /** `carried`: listed by a grace, not by Redis (a later grace does not extend it). */
  #replicas: (Replica & { expiresAt: number; carried?: true })[] = [];
  /**
   * Until then the replicas known before the last resync stay listed whatever Redis holds: a
   * restarted Redis lost their entries, and after an outage every entry looks expired; each
   * registers again at its own reconnect (docs/architecture.md, "Public replicas and the Redis
   * store").
   */
  #graceUntil = 0;
  #retry: ReturnType<typeof setTimeout> | undefined;
  #synced = false;
  #downLogged = false;
  #closed = false;
  #subscribed = false;
  /** One Redis conversation at a time: a resync or a flush. */
  #queue: Promise<void> = Promise.resolve();
  #resyncWanted = false;
  /** The Redis run (INFO run_id) last read in full. */
  #runId = "";
  /** While a resync reads the hash: the keys peers changed meanwhile. */
  #touched: Set<string> | undefined;
  readonly #timers: ReturnType<typeof setInterval>[] = [];
  readonly firstLoad: Promise<void>;
  #loaded!: () => void;

  constructor(
    settings: { url: RedisUrl; prefix: string },
    self: StoreSelf,
    opts: RedisStoreOptions,
  ) {
    const u = settings.url;
    this.#where = u.hostname.includes(":")
      ? `[${u.hostname}]:${u.port}`
      : `${u.hostname}:${u.port}`;
    const p = settings.prefix;
    this.#keys = { hash: `${p}announcements`, channel: `${p}changes`, replicas: `${p}replicas` };
    this.#self = self;
    this.#log = opts.log ?? logger("proxy", "store");
    this.#writeTimeoutMs = opts.writeTimeoutMs ?? WRITE_TIMEOUT_MS;
    this.#replicaTtlMs = opts.replicaTtlMs ?? REPLICA_TTL_MS;
    this.firstLoad = new Promise((res) => this.#loaded = res);
    const options = {
      socket: {
        host: u.hostname,
        port: u.port,
        connectTimeout: CONNECT_TIMEOUT_MS,
        reconnectStrategy: (n: number) => Math.min(100 * 2 ** n, MAX_BACKOFF_MS),
      },
      ...(u.username !== undefined ? { username: u.username } : {}),
      ...(u.password !== undefined ? { password: u.password } : {}),
      database: u.db,
      // our own queue keeps what Redis has not taken; the client's would hide it
      disableOfflineQueue: true,
    };
    // the command link pings every second and gives up on a Redis silent for SOCKET_TIMEOUT_MS,
    // so no command waits without a deadline (the subscriber link only listens)
    this.#main = createClient({
      ...options,
      socket: { ...options.socket, socketTimeout: SOCKET_TIMEOUT_MS },
      pingInterval: 1000,
    });
    this.#sub = createClient(options);
    for (const c of [this.#main, this.#sub]) {
      c.on("error", (err: unknown) => this.#down(err));
      c.on("ready", () => this.#up(c));
    }
    this.#main.connect().catch(() => {});
    this.#sub.connect().catch(() => {});
    this.#timers.push(setInterval(() => this.#sweep(), SWEEP_MS));
    this.#timers.push(
      setInterval(() => this.#enqueue(() => this.#refreshReplicas()), this.#replicaTtlMs / 3),
    );
  }

  handle(): AnnouncementStore {
    const close = () => this.close();
    return {
      initial: [...this.#cache.values()],
      write: (changes) => this.write(changes),
      onRemote: (l) => this.#listeners.push(l),
      replicas: () => this.replicas(),
      selfChanged: () => void this.#enqueue(() => this.#refreshReplicas()),
      problems: () => this.#synced ? [] : [`store: redis at ${this.#where} unreachable`],
      close,
      [Symbol.asyncDispose]: close,
    };
  }

  #down(err: unknown): void {
    this.#synced = false;
    if (this.#downLogged || this.#closed) return;
    this.#downLogged = true;
    this.#log.warn(
      "Redis at {where} unreachable ({error}): routing from the cache, writes queued, reconnecting",
      { where: this.#where, error: errorText(err) },
    );
  }

  #up(c: Client): void {
    if (this.#closed) return;
    if (c === this.#sub && !this.#subscribed) {
      this.#subscribed = true;
      // node-redis subscribes again by itself after a reconnect
      this.#sub.subscribe(this.#keys.channel, (m: string) => this.#onMessage(m)).catch((err) => {
        this.#subscribed = false;
        this.#down(err);
      });
    }
    // either link back: what was published meanwhile is lost to us, so read everything again
    this.#resync();
  }

  #enqueue(step: () => Promise<void>): Promise<void> {
    const next = this.#queue.then(step).catch((err) => {
      this.#down(err);
      // a refused command on a live link (not a lost one): read and write everything again later
      if (this.#main.isReady && !this.#closed && this.#retry === undefined) {
        this.#retry = setTimeout(() => {
          this.#retry = undefined;
          this.#resync();
        }, RETRY_MS);
      }
    });
    this.#queue = next;
    return next;
  }

  #emit(changes: readonly StoreChange[]): void {
    if (changes.length === 0) return;
    for (const l of this.#listeners) l(changes);
  }

  #resync(): void {
    if (this.#resyncWanted) return;
    this.#resyncWanted = true;
    void this.#enqueue(async () => {
      this.#resyncWanted = false;
      if (this.#closed || !this.#main.isReady) return;
      // a peer's change that comes while the hash is read is newer than what is read
      this.#touched = new Set();
      const info = await this.#main.info("server");
      const runId = /run_id:(\w+)/.exec(info)?.[1] ?? "";
      // the same Redis run as last time: what it lacks was removed; another run (a restart) may
      // have lost entries, so those of peers stay until they write them back, expire or are
      // withdrawn (the peer publishes its queued removals once it reconnects)
      const sameRun = runId !== "" && runId === this.#runId;
      this.#runId = runId;
      const stored = await this.#main.hGetAll(this.#keys.hash) as Record<string, string>;
      const touched = this.#touched;
      this.#touched = undefined;
      const now = Date.now();
      const remote = new Map<string, Announcement>();
      const expired: string[] = [];
      for (const [field, value] of Object.entries(stored)) {
        const a = putOf(value);
        if (a === null || a.expiresAt <= now) expired.push(field);
        else remote.set(entryKey(a.operator, a.domain, a.instance), a);
      }
      // what a restarted Redis lost (no persistence): every live entry of the cache goes back,
      // not only this replica's own — the replica that wrote an entry may have restarted or died
      // since, and nobody else would (found in review); within the same run, what Redis lacks was
      // withdrawn through a peer meanwhile
      for (const k of sameRun ? [] : [...this.#cache.keys()]) {
        const a = this.#cache.get(k);
        if (a !== undefined && a.expiresAt > now && !remote.has(k) && !this.#pending.has(k)) {
          this.#mine.add(k);
          this.#pending.set(k, a);
          this.#queuePublish({ op: "put", announcement: a });
        }
      }
      for (const [k, a] of this.#pending) {
        if (a === null) remote.delete(k);
        else remote.set(k, a);
      }
      const changes: StoreChange[] = [];
      for (const [k, a] of this.#cache) {
        if (touched.has(k) || (!sameRun && !this.#mine.has(k))) continue;
        if (!remote.has(k)) {
          this.#cache.delete(k);
          this.#mine.delete(k);
          changes.push({ op: "del", operator: a.operator, domain: a.domain, instance: a.instance });
        }
      }
      for (const [k, a] of remote) {
        if (touched.has(k)) continue;
        const old = this.#cache.get(k);
        if (
          old === undefined ||
          encode({ op: "put", announcement: old }) !== encode({ op: "put", announcement: a })
        ) {
          this.#cache.set(k, a);
          changes.push({ op: "put", announcement: a });
        }
      }
      // the table follows the cache at once, whatever happens to the writes below
      this.#emit(changes);
      if (expired.length > 0) await this.#main.hDel(this.#keys.hash, expired);
      await this.#flushNow();
      this.#graceUntil = Date.now() + this.#replicaTtlMs;
      await this.#refreshReplicas();
      // synced once both links are up: the subscriber's return reads everything again anyway
      this.#synced = this.#sub.isReady;
      if (this.#synced && this.#downLogged) {
        this.#downLogged = false;
        this.#log.info("Redis at {where} reachable again: announcements re-read and written", {
          where: this.#where,
        });
      }
      this.#loaded();
    });
  }

  #queuePublish(c: StoreChange): void {
    const k = c.op === "put"
      ? entryKey(c.announcement.operator, c.announcement.domain, c.announcement.instance)
      : `${c.operator}\u0000${c.domain}\u0000${c.instance ?? "\u0001*"}`;
    this.#unpublished.delete(k);
    this.#unpublished.set(k, c);
  }

  /** Writes the pending entries and publishes the unpublished changes; on failure keeps them. */
  async #flushNow(): Promise<void> {
    if (this.#closed || !this.#main.isReady) return;
    if (this.#pending.size === 0 && this.#unpublished.size === 0) return;
    const batch = [...this.#pending];
    const published = [...this.#unpublished.values()];
    this.#pending.clear();
    this.#unpublished = new Map();
    try {
      const m = this.#main.multi();
      const puts: Record<string, string> = {};
      const dels: string[] = [];
      for (const [, a] of batch) {
        if (a !== null) puts[fieldOf(a)] = encode({ op: "put", announcement: a });
      }
      for (const [k, a] of batch) {
        if (a !== null) continue;
        const [operator, domain, instance] = k.split("\u0000") as [string, string, string];
        dels.push(fieldOf({ operator, domain, instance }));
      }
      if (Object.keys(puts).length > 0) m.hSet(this.#keys.hash, puts);
      if (dels.length > 0) m.hDel(this.#keys.hash, dels);
      if (published.length > 0) {
        m.publish(
          this.#keys.channel,
          JSON.stringify({
            from: this.#nonce,
            changes: published.map((c) => JSON.parse(encode(c))),
          }),
        );
      }
      await m.exec();
    } catch (err) {
      // kept for the next try, unless a newer write of the same entry came meanwhile
      for (const [k, a] of batch) if (!this.#pending.has(k)) this.#pending.set(k, a);
      const newer = this.#unpublished;
      this.#unpublished = new Map();
      for (const c of [...published, ...newer.values()]) this.#queuePublish(c);
      throw err;
    }
  }

  /** Applies a peer's changes to the cache and tells the table. */
  #onMessage(message: string): void {
    let v: unknown;
    try {
      v = JSON.parse(message);
    } catch {
      return;
    }
    const o = v as { from?: unknown; changes?: unknown };
    if (o?.from === this.#nonce || !Array.isArray(o?.changes)) return;
    const changes: StoreChange[] = [];
    for (const item of o.changes) {
      const c = decodeValue(item);
      if (c === null) continue;
      changes.push(c);
      if (c.op === "put") {
        const a = c.announcement;
        const k = entryKey(a.operator, a.domain, a.instance);
        this.#cache.set(k, a);
        this.#touched?.add(k);
      } else {
        for (const k of this.#keysOf(c)) {
          this.#cache.delete(k);
          this.#mine.delete(k);
          this.#touched?.add(k);
        }
      }
    }
    this.#emit(changes);
  }

  /** The cache's keys a removal names. */
  #keysOf(c: { operator: string; domain: string; instance?: string }): string[] {
    if (c.instance !== undefined) return [entryKey(c.operator, c.domain, c.instance)];
    const out: string[] = [];
    for (const [k, a] of this.#cache) {
      if (a.operator === c.operator && a.domain === c.domain) out.push(k);
    }
    return out;
  }

  async write(changes: readonly StoreChange[]): Promise<void> {
    if (this.#closed) throw new Error(`Cannot write to the Redis store at ${this.#where}: closed`);
    if (changes.length === 0) return;
    for (const c of changes) {
      if (c.op === "put") {
        const a = c.announcement;
        const k = entryKey(a.operator, a.domain, a.instance);
        this.#cache.set(k, a);
        this.#mine.add(k);
        this.#pending.set(k, a);
      } else {
        for (const k of this.#keysOf(c)) {
          this.#cache.delete(k);
          this.#mine.delete(k);
          this.#pending.set(k, null);
        }
      }
      this.#queuePublish(c);
    }
    // answered within the deadline either way: a write Redis did not take stays queued
    await within(this.#enqueue(() => this.#flushNow()), this.#writeTimeoutMs);
  }

  /** Drops expired entries from the cache, from Redis when it answers, and from the table. */
  #sweep(): void {
    const now = Date.now();
    const gone: Announcement[] = [];
    for (const [k, a] of this.#cache) {
      if (a.expiresAt > now) continue;
      this.#cache.delete(k);
      this.#mine.delete(k);
      this.#pending.delete(k);
      gone.push(a);
    }
    if (gone.length === 0) return;
    if (this.#synced) {
      void this.#enqueue(async () => {
        if (this.#main.isReady) await this.#main.hDel(this.#keys.hash, gone.map(fieldOf));
      });
    }
    this.#emit(
      gone.map((a) => ({
        op: "del",
        operator: a.operator,
        domain: a.domain,
        instance: a.instance,
      })),
    );
  }

  async #refreshReplicas(): Promise<void> {
    if (this.#closed || !this.#main.isReady) return;
    const now = Date.now();
    const endpoint = this.#self.endpoint;
    // before the private port is bound its endpoint is not known yet: registered at the next refresh
    if (endpoint !== "" && !endpoint.endsWith(":0")) {
      await this.#main.hSet(
        this.#keys.replicas,
        this.#self.instance,
        JSON.stringify({ endpoint, expires_at: now + this.#replicaTtlMs }),
      );
    }
    const all = await this.#main.hGetAll(this.#keys.replicas) as Record<string, string>;
    const live: (Replica & { expiresAt: number; carried?: true })[] = [];
    const dead: string[] = [];
    for (const [instance, value] of Object.entries(all)) {
      let v: { endpoint?: unknown; expires_at?: unknown } = {};
      try {
        v = JSON.parse(value);
      } catch { /* dropped below */ }
      if (
        typeof v.endpoint === "string" && typeof v.expires_at === "number" && v.expires_at > now
      ) {
        live.push({ instance, endpoint: v.endpoint, expiresAt: v.expires_at });
      } else dead.push(instance);
    }
    if (dead.length > 0) await this.#main.hDel(this.#keys.replicas, dead);
    if (now < this.#graceUntil) {
      for (const r of this.#replicas) {
        if (live.some((x) => x.instance === r.instance)) continue;
        if (r.carried === undefined) {
          live.push({ ...r, expiresAt: Math.max(r.expiresAt, this.#graceUntil), carried: true });
        } else if (r.expiresAt > now) live.push(r); // a flapping link does not keep it forever
      }
    }
    this.#replicas = live;
  }

  replicas(): Replica[] {
    const self = { instance: this.#self.instance, endpoint: this.#self.endpoint };
    const now = Date.now();
    // while Redis is away nobody can refresh an entry: the last known list stands
    const others = this.#replicas
      .filter((r) => r.instance !== self.instance && (r.expiresAt > now || !this.#synced))
      .map((r) => ({ instance: r.instance, endpoint: r.endpoint }));
    return [self, ...others].sort((a, b) => a.instance.localeCompare(b.instance));
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    for (const t of this.#timers) clearInterval(t);
    clearTimeout(this.#retry);
    // the last writes and this replica's leaving, if Redis answers in time
    await within(
      this.#enqueue(async () => {
        await this.#flushNow();
        if (this.#main.isReady) await this.#main.hDel(this.#keys.replicas, this.#self.instance);
      }),
      this.#writeTimeoutMs,
    );
    this.#closed = true;
    clearTimeout(this.#retry);
    for (const c of [this.#sub, this.#main]) {
      if (c.isOpen) c.destroy();
    }
    this.#loaded();
  }
}
