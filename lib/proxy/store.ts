/**
 * Where the public proxy keeps its announcements so that they survive a restart
 * (docs/architecture.md, "The control plane").
 *
 * - `memory`: nothing survives; for tests.
 * - `file`: an append-only JSON-lines file, one change per line, each appended line fsynced
 *   before the call that made it is answered. On open the file is read, expired and withdrawn
 *   entries dropped, and the live ones rewritten to a temporary file that replaces it (compaction).
 *   A torn last line (a crash mid-write) is skipped.
 *
 * Line format: `{"op":"put","operator":"o","domain":"d","expires_at":1767225600000}` (with
 * `"allow":["10.0.0.0/8"]` when the announcement has one) or
 * `{"op":"del","operator":"o","domain":"d"}`; `expires_at` is epoch milliseconds.
 * @module
 */
import { dirname } from "node:path";

/** One announcement: operator `operator` serves `domain` until `expiresAt` (epoch ms). */
export interface Announcement {
  operator: string;
  /** Normalised host name, or `*.name` for a one-label wildcard. */
  domain: string;
  expiresAt: number;
  /** CIDRs that may reach the name (docs/architecture.md, "Admission"); absent: everyone. */
  allow?: readonly string[];
}

/** A change to the announcements, as stored. */
export type StoreChange =
  | { op: "put"; announcement: Announcement }
  | { op: "del"; operator: string; domain: string };

import type { StoreSettings } from "../settings/public.ts";

export type { StoreSettings };

export interface AnnouncementStore extends AsyncDisposable {
  /** The live announcements found when the store was opened. */
  readonly initial: readonly Announcement[];
  /** Records changes durably (fsync for a file store) before resolving. */
  write(changes: readonly StoreChange[]): Promise<void>;
  close(): Promise<void>;
}

/** Opens the store the settings describe. */
export function openStore(settings: StoreSettings, now = Date.now()): Promise<AnnouncementStore> {
  return settings.kind === "memory"
    ? Promise.resolve(memoryStore())
    : openFileStore(settings.path, now);
}

function memoryStore(): AnnouncementStore {
  const close = () => Promise.resolve();
  return {
    initial: [],
    write: () => Promise.resolve(),
    close,
    [Symbol.asyncDispose]: close,
  };
}

function keyOf(operator: string, domain: string): string {
  return `${operator}\u0000${domain}`;
}

function encode(c: StoreChange): string {
  return c.op === "put"
    ? JSON.stringify({
      op: "put",
      operator: c.announcement.operator,
      domain: c.announcement.domain,
      expires_at: c.announcement.expiresAt,
      ...(c.announcement.allow !== undefined ? { allow: c.announcement.allow } : {}),
    })
    : JSON.stringify({ op: "del", operator: c.operator, domain: c.domain });
}

function decode(line: string): StoreChange | null {
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch {
    return null;
  }
  if (typeof v !== "object" || v === null) return null;
  const o = v as Record<string, unknown>;
  if (typeof o.operator !== "string" || typeof o.domain !== "string") return null;
  if (o.op === "del") return { op: "del", operator: o.operator, domain: o.domain };
  if (o.op === "put" && typeof o.expires_at === "number" && Number.isFinite(o.expires_at)) {
    const a: Announcement = { operator: o.operator, domain: o.domain, expiresAt: o.expires_at };
    if (o.allow !== undefined) {
      if (!Array.isArray(o.allow) || !o.allow.every((c) => typeof c === "string")) return null;
      a.allow = o.allow;
    }
    return { op: "put", announcement: a };
  }
  return null;
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
    if (c.op === "put") {
      map.set(keyOf(c.announcement.operator, c.announcement.domain), c.announcement);
    } else map.delete(keyOf(c.operator, c.domain));
  }
  return { live: [...map.values()].filter((a) => a.expiresAt > now), skipped };
}

const encoder = new TextEncoder();

async function openFileStore(path: string, now: number): Promise<AnnouncementStore> {
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
  return {
    initial: live,
    write(changes) {
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
    [Symbol.asyncDispose]: close,
  };
}

async function writeFully(f: Deno.FsFile, bytes: Uint8Array): Promise<void> {
  for (let off = 0; off < bytes.length;) off += await f.write(bytes.subarray(off));
}
