/**
 * The private proxy's reload (docs/architecture.md, "Reload"): the new settings are loaded and
 * validated as at start; keys that cannot change while it runs are refused by name, the rest is
 * applied without dropping a live connection (the announcements diffed, a new snapshot for new
 * connections, the pools' sizes, the announcer's intervals, the EPS client's settings).
 * @module
 */
import type { Logger } from "@logtape/logtape";
import { SettingsError } from "../errors.ts";
import { errorText } from "../log.ts";
import type { ReloadResult } from "../role.ts";
import type { PrivateSettings } from "../settings/private.ts";
import type { DataPlane, Snapshot } from "../dataplane/mod.ts";
import type { EpsClient } from "../eps/client.ts";
import type { Announcer } from "./announcer.ts";
import type { AnnouncementTable } from "./drain.ts";
import type { DialPool } from "./pool_sizing.ts";

type Get = (s: PrivateSettings) => unknown;

/**
 * Keys that need a restart: who this proxy is, whom it announces to and may dial (the
 * announcer's loops, the pools and the notice checks are built per operator at start), its
 * socket driver and its descriptor budget.
 */
export const RESTART_KEYS: readonly (readonly [string, Get])[] = [
  ["operator", (s) => s.operator],
  ["announce_to", (s) => s.announceTo],
  ["endpoints", (s) => s.endpoints],
  ["sockets", (s) => s.sockets],
  ["max_connections", (s) => s.maxConnections],
  ["pool.enabled", (s) => s.pool.enabled],
];

/** Keys a reload applies to new connections, rounds and refills. */
export const APPLIED_KEYS: readonly (readonly [string, Get])[] = [
  ["reannounce_interval_ms", (s) => s.reannounceIntervalMs],
  ["retry_ms", (s) => s.retryMs],
  ["dial_timeout_ms", (s) => s.dialTimeoutMs],
  ["connect_timeout_ms", (s) => s.connectTimeoutMs],
  ["grace_ms", (s) => s.graceMs],
  ["idle_timeout_ms", (s) => s.idleTimeoutMs],
  ["tcp_keepalive_ms", (s) => s.tcpKeepAliveMs],
  ["pool.min_idle", (s) => s.pool.minIdle],
  ["pool.max_idle", (s) => s.pool.maxIdle],
  ["pool.idle_timeout_ms", (s) => s.pool.idleTimeoutMs],
];

/** A canonical text of a settings value (object keys sorted). */
function canon(v: unknown): string {
  return JSON.stringify(
    v,
    (_k, x) =>
      x !== null && typeof x === "object" && !Array.isArray(x)
        ? Object.fromEntries(Object.entries(x).sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0))
        : x,
  ) ?? "absent";
}

/** One `key: cannot change without a restart (…)` line per restart-only key that changed. */
export function restartOnlyChanges(old: PrivateSettings, next: PrivateSettings): string[] {
  const out: string[] = [];
  for (const [key, get] of RESTART_KEYS) {
    const a = canon(get(old));
    const b = canon(get(next));
    if (a !== b) out.push(`${key}: cannot change without a restart (running ${a}, new ${b})`);
  }
  return out;
}

/** One `key: old → new` line per applied key that changed (and `eps: changed`). */
export function appliedChanges(old: PrivateSettings, next: PrivateSettings): string[] {
  const out: string[] = [];
  for (const [key, get] of APPLIED_KEYS) {
    const a = canon(get(old));
    const b = canon(get(next));
    if (a !== b) out.push(`${key}: ${a} → ${b}`);
  }
  if (canon(old.eps) !== canon(next.eps)) out.push("eps: changed (new links and calls use it)");
  return out;
}

/** What a reload changes on the running proxy. */
export interface PrivateReloadTarget {
  readonly settings: PrivateSettings;
  /** Applies valid new settings; returns the lines of what changed beyond the keys. */
  apply(next: PrivateSettings): Promise<string[]>;
}

/**
 * Loads the next settings with `next()` and applies them to `target`, or refuses them: a
 * SettingsError's `FILE: key: problem` lines, or the restart-only keys that changed. Never
 * throws; logs the outcome.
 */
export async function reloadPrivate(
  target: PrivateReloadTarget,
  next: () => Promise<PrivateSettings>,
  log: Logger,
): Promise<ReloadResult> {
  const at = new Date().toISOString();
  const refuse = (problems: string[]): ReloadResult => {
    log.error("Reload refused, still running on the old settings:\n  {problems}", {
      problems: problems.join("\n  "),
    });
    return { at, ok: false, applied: [], problems };
  };
  let s: PrivateSettings;
  try {
    s = await next();
  } catch (err) {
    return refuse(err instanceof SettingsError ? [...err.problems] : [errorText(err)]);
  }
  const restart = restartOnlyChanges(target.settings, s);
  if (restart.length > 0) return refuse(restart);
  const applied = appliedChanges(target.settings, s);
  try {
    applied.push(...await target.apply(s));
  } catch (err) {
    return refuse([`cannot apply the new settings: ${errorText(err)}`]);
  }
  if (applied.length === 0) log.info("Reloaded: nothing changed");
  else log.info("Reloaded:\n  {applied}", { applied: applied.join("\n  ") });
  return { at, ok: true, applied, problems: [] };
}

/** The parts of the running private proxy a reload changes. */
export interface PrivateParts {
  settings: PrivateSettings;
  readonly table: AnnouncementTable;
  readonly pools: ReadonlyMap<string, DialPool>;
  readonly announcer: Announcer;
  readonly plane: DataPlane;
  readonly eps: EpsClient;
  resolve(): Promise<void>;
  snapshot(): Snapshot;
}

/**
 * Applies valid new settings to the running proxy: the announcements diffed (added ones are
 * announced, removed ones drained then forgotten), a new snapshot (routes, limits and timeouts
 * for new connections), the pools' sizes, the announcer's intervals, the EPS client's settings.
 * Returns the announcement lines.
 */
export async function applyPrivate(c: PrivateParts, next: PrivateSettings): Promise<string[]> {
  const old = c.settings;
  c.settings = next;
  const lines = c.table.update(next.announcements);
  await c.resolve(); // new host names
  c.plane.send({ type: "snapshot", snapshot: c.snapshot() });
  for (const p of c.pools.values()) p.reconfigure({ ...next.pool, retryMs: next.retryMs });
  if (canon(old.eps) !== canon(next.eps)) c.eps.reconfigure(next.eps);
  c.announcer.reconfigure(next); // announces now: the added ones go out
  return lines;
}

/** Runs reloads one at a time and keeps the last result. */
export class PrivateReloader {
  lastReload: ReloadResult | null = null;
  #queue: Promise<unknown> = Promise.resolve();

  constructor(readonly parts: PrivateParts, readonly log: Logger) {}

  reload(next: () => Promise<PrivateSettings>): Promise<ReloadResult> {
    const c = this.parts;
    const run = this.#queue.then(() =>
      reloadPrivate({ settings: c.settings, apply: (s) => applyPrivate(c, s) }, next, this.log)
    ).then((r) => this.lastReload = r);
    this.#queue = run.catch(() => {});
    return run;
  }
}
