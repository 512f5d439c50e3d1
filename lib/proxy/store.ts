/**
 * Where the public proxy keeps its announcements so that they survive a restart
 * (docs/architecture.md, "The control plane"), and, with Redis, shares them between replicas
 * (docs/architecture.md, "Public replicas and the Redis store").
 *
 * - `memory`: nothing survives; for tests.
 * - `file`: an append-only JSON-lines file, one change per line, each appended line fsynced
 *   before the call that made it is answered. On open the file is read, expired and withdrawn
 *   entries dropped, and the live ones rewritten to a temporary file that replaces it (compaction).
 *   A torn last line (a crash mid-write) is skipped.
 * - `redis`: ./store_redis.ts; every replica of the public operator shares one Redis.
 *
 * Line format: `{"op":"put","operator":"o","domain":"d","instance":"i","expires_at":1767225600000}`
 * (with `"allow":["10.0.0.0/8"]` when the announcement has one) or
 * `{"op":"del","operator":"o","domain":"d","instance":"i"}`; `expires_at` is epoch milliseconds.
 * A line without `"instance"` (an older file) means `""` in a put and every instance in a del.
 * @module
 */
import { dirname } from "node:path";

/**
 * One announcement: instance `instance` of operator `operator` serves `domain` until `expiresAt`
 * (epoch ms).
 */
export interface Announcement {
  operator: string;
  /** Normalised host name, or `*.name` for a one-label wildcard. */
  domain: string;
  /** The announcing private proxy's instance; "" when unknown (an old line, a caller without one). */
  instance: string;
  expiresAt: number;
  /** CIDRs that may reach the name (docs/architecture.md, "Admission"); absent: everyone. */
  allow?: readonly string[];
}

/** A change to the announcements, as stored. */
export type StoreChange =
  | { op: "put"; announcement: Announcement }
  /** `instance` absent: every instance's entry of that operator and domain. */
  | { op: "del"; operator: string; domain: string; instance?: string };

import type { StoreSettings } from "../settings/public.ts";

export type { StoreSettings };

/** One public proxy replica: its instance name and its private endpoint (`host:port`). */
export interface Replica {
  instance: string;
  endpoint: string;
}

/** This replica, as the store registers it; `endpoint` is read at each refresh (a reload may change it). */
export interface StoreSelf {
  readonly operator: string;
  readonly instance: string;
  readonly endpoint: string;
}

export interface AnnouncementStore extends AsyncDisposable {
  /** The live announcements found when the store was opened. */
  readonly initial: readonly Announcement[];
  /**
   * Records changes: durably (fsync) before resolving for a file store; for Redis, see
   * ./store_redis.ts (queued when Redis does not answer in time).
   */
  write(changes: readonly StoreChange[]): Promise<void>;
  /** Changes made elsewhere (a peer replica, an entry found on reconnect): the table applies them. */
  onRemote(listener: (changes: readonly StoreChange[]) => void): void;
  /** The live public replicas (file and memory: only this one). */
  replicas(): Replica[];
  /**
   * This replica's endpoint is known (its private port is bound) or changed (a reload): a shared
   * store registers it now rather than at its next refresh.
   */
  selfChanged(): void;
  /** Why this replica is not ready (Redis unreachable); empty when it is. */
  problems(): string[];
  close(): Promise<void>;
}

/** Opens the store the settings describe. */
export async function openStore(
  settings: StoreSettings,
  self: StoreSelf = { operator: "", instance: "", endpoint: "" },
  now = Date.now(),
): Promise<AnnouncementStore> {
  if (settings.kind === "memory") return localStore([], self, () => Promise.resolve());
  if (settings.kind === "file") return await openFileStore(settings.path, self, now);
  const { openRedisStore } = await import("./store_redis.ts");
  return await openRedisStore(settings, self);
}

/** A store of this replica alone around `write` (memory: nothing; file: append). */
function localStore(
  initial: readonly Announcement[],
  self: StoreSelf,
  write: (changes: readonly StoreChange[]) => Promise<void>,
  close: () => Promise<void> = () => Promise.resolve(),
): AnnouncementStore {
  return {
    initial,
    write,
    onRemote: () => {},
    replicas: () => [{ instance: self.instance, endpoint: self.endpoint }],
    selfChanged: () => {},
    problems: () => [],
    close,
    [Symbol.asyncDispose]: close,
  };
}

/** The key of one entry: (operator, domain, instance). */
export function entryKey(operator: string, domain: string, instance: string): string {
  return `${operator}\u0000${domain}\u0000${instance}`;
}

/** One change as a line of the file (and a message of the Redis store). */
export function encode(c: StoreChange): string {
  return c.op === "put"
    ? JSON.stringify({
      op: "put",
      operator: c.announcement.operator,
      domain: c.announcement.domain,
      instance: c.announcement.instance,
      expires_at: c.announcement.expiresAt,
      ...(c.announcement.allow !== undefined ? { allow: c.announcement.allow } : {}),
    })
    : JSON.stringify({
      op: "del",
      operator: c.operator,
      domain: c.domain,
      ...(c.instance !== undefined ? { instance: c.instance } : {}),
    });
}

/** A line (or message) back to its change; null when it is not one. */
export function decode(line: string): StoreChange | null {
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch {
    return null;
  }
  return decodeValue(v);
}

/** A parsed line back to its change; null when it is not one. */
export function decodeValue(v: unknown): StoreChange | null {
  if (typeof v !== "object" || v === null) return null;
  const o = v as Record<string, unknown>;
  if (typeof o.operator !== "string" || typeof o.domain !== "string") return null;
  if (o.instance !== undefined && typeof o.instance !== "string") return null;
  if (o.op === "del") {
    return o.instance === undefined
      ? { op: "del", operator: o.operator, domain: o.domain }
      : { op: "del", operator: o.operator, domain: o.domain, instance: o.instance };
  }
  if (o.op === "put" && typeof o.expires_at === "number" && Number.isFinite(o.expires_at)) {
    const a: Announcement = {
      operator: o.operator,
      domain: o.domain,
      instance: o.instance ?? "",
      expiresAt: o.expires_at,
    };
    if (o.allow !== undefined) {
      if (!Array.isArray(o.allow) || !o.allow.every((c) => typeof c === "string")) return null;
      a.allow = o.allow;
    }
    return { op: "put", announcement: a };
  }
  return null;
}

/** Applies one change to a map of entries by entryKey. */
export function applyChange(map: Map<string, Announcement>, c: StoreChange): void {
  if (c.op === "put") {
    const a = c.announcement;
    map.set(entryKey(a.operator, a.domain, a.instance), a);
  } else if (c.instance !== undefined) {
    map.delete(entryKey(c.operator, c.domain, c.instance));
  } else {
    for (const [k, a] of map) {
      if (a.operator === c.operator && a.domain === c.domain) map.delete(k);
    }
  }
}

/** Replays the lines of a store file; returns the live announcements and the count of bad lines. */
export function replay(
  text: string,
  now: number,
): { live: Announcement[]; skipped: number } {
  const map = new Map<string, Announcement>();
  let skipped = 0;
  for (const line of text.split("\n")) {
    if (line.trim() === "") continue;
    const c = decode(line);
    if (c === null) {
      skipped++;
      continue;
    }
    applyChange(map, c);
  }
  return { live: [...map.values()].filter((a) => a.expiresAt > now), skipped };
}

const encoder = new TextEncoder();

async function openFileStore(
  path: string,
  self: StoreSelf,
  now: number,
): Promise<AnnouncementStore> {
  await Deno.mkdir(dirname(path), { recursive: true });
  let text = "";
  try {
    text = await Deno.readTextFile(path);
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
  const { live } = replay(text, now);
  // compaction: write the live entries to a temporary file, fsync, rename over the old one
  const tmp = `${path}.tmp-${crypto.randomUUID()}`;
  {
    using f = await Deno.open(tmp, { write: true, createNew: true, mode: 0o600 });
    const body = live.map((a) => encode({ op: "put", announcement: a }) + "\n").join("");
    await writeFully(f, encoder.encode(body));
    await f.sync();
  }
  await Deno.rename(tmp, path);
  const file = await Deno.open(path, { append: true });
  let queue: Promise<void> = Promise.resolve();
  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    await queue.catch(() => {});
    file.close();
  };
  return localStore(
    live,
    self,
    (changes) => {
      if (closed) {
        return Promise.reject(new Error(`Cannot write announcement store "${path}": closed`));
      }
      if (changes.length === 0) return Promise.resolve();
      const bytes = encoder.encode(changes.map((c) => encode(c) + "\n").join(""));
      // one writer at a time, so lines never interleave and fsyncs are ordered
      const next = queue.then(async () => {
        await writeFully(file, bytes);
        await file.sync();
      });
      queue = next.catch(() => {});
      return next;
    },
    close,
  );
}

async function writeFully(f: Deno.FsFile, bytes: Uint8Array): Promise<void> {
  for (let off = 0; off < bytes.length;) off += await f.write(bytes.subarray(off));
}
