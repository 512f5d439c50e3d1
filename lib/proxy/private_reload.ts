/**
 * The private proxy's reload (docs/architecture.md, "Reload"): the new settings are loaded and
 * validated as at start; keys that cannot change while it runs are refused by name, the rest is
 * applied without dropping a live connection (the announcements diffed, a new snapshot for new
 * connections, the pools' sizes, the announcer's intervals, the EPS client's settings).
 * @module
 */
import { checkRestartOnly, diffSettings, Reloader } from "../settings/diff.ts";
import type { PrivateSettings } from "../settings/private.ts";
import { withInstance } from "../settings/public.ts";
import type { DataPlane, Snapshot } from "../dataplane/mod.ts";
import type { EpsClient } from "../eps/client.ts";
import type { Announcer } from "./announcer.ts";
import type { AnnouncementTable } from "./drain.ts";
import type { ReplicaPools } from "./replica_pools.ts";

/**
 * Keys the private proxy cannot apply while it runs (docs/architecture.md, "Reload"): the
 * announcer's loops, the pools and the notice check are built per operator at start, the
 * descriptor budget is planned once, the driver and the admin endpoint are chosen at start.
 */
export const PRIVATE_RESTART_ONLY = [
  "operator",
  "instance",
  "announce_to",
  "endpoints",
  "sockets",
  "zero_copy",
  "max_connections",
  "pool.enabled",
  "admin_listen",
] as const;

/**
 * What a valid reload of `next` over `current` applies, as lines; throws ReloadRefused naming
 * each restart-only key that changed. The announcements' own lines come from their table.
 */
export function privateChanges(current: PrivateSettings, next: PrivateSettings): string[] {
  const diff = diffSettings(current, next, { restartOnly: PRIVATE_RESTART_ONLY });
  return checkRestartOnly(diff).filter((line) => !line.startsWith("announcements"));
}

/** The private proxy's reloads, one at a time (lib/settings/diff.ts `Reloader`). */
export function privateReloader(c: PrivateParts): Reloader<PrivateSettings> {
  return new Reloader(async (given: PrivateSettings) => {
    const next = withInstance(given); // an absent instance is the default, as at start
    const applied = privateChanges(c.settings, next);
    applied.push(...await applyPrivate(c, next));
    return applied;
  });
}

/** The parts of the running private proxy a reload changes. */
export interface PrivateParts {
  settings: PrivateSettings;
  readonly table: AnnouncementTable;
  readonly pools: ReadonlyMap<string, ReplicaPools>;
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
  // first: it reads and checks the files (also ones renewed in place) and throws, naming them,
  // before anything changed
  c.eps.reconfigure(next.eps);
  c.settings = next;
  const lines = c.table.update(next.announcements);
  await c.resolve(); // new host names
  c.plane.send({ type: "snapshot", snapshot: c.snapshot() });
  for (const p of c.pools.values()) p.reconfigure({ ...next.pool, retryMs: next.retryMs });
  c.announcer.reconfigure(next); // announces now: the added ones go out
  return lines;
}
