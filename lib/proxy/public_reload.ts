/**
 * The public proxy's reload (docs/architecture.md, "Reload"): the settings, the directory and the
 * EPS link's certificate files read again and validated as at start; a valid change is applied to
 * what serves new connections and calls, nothing live is dropped. Restart-only keys refuse the
 * whole reload, naming each.
 * @module
 */
import type { EpsClient } from "../eps/client.ts";
import { type Directory, directoryValue, loadDirectory } from "../eps/directory.ts";
import type { Limits } from "../dataplane/mod.ts";
import { formatHostPort, type HostPort } from "../role.ts";
import { type PublicSettings, withInstance } from "../settings/public.ts";
import { checkRestartOnly, diffSettings, Reloader, sameValue } from "../settings/diff.ts";
import type { Announcements } from "./announcements.ts";
import type { PoolGrants } from "./public_pool.ts";
import type { Notifier } from "./public_notices.ts";

/**
 * Keys a reload cannot change: the listeners, the identity, the store, the data-plane driver and
 * the descriptor budget planned at start (docs/architecture.md, "Reload").
 */
export const PUBLIC_RESTART_ONLY = [
  "operator",
  "instance",
  "public_listen",
  "private_listen",
  "reuse_port",
  "store",
  "store_path",
  "redis_url",
  "redis_prefix",
  "sockets",
  "zero_copy",
  "max_connections",
  "admin_listen",
] as const;

/** Parsed shapes that are not one file key each. */
const NAMES = {
  "store.kind": "store",
  "store.path": "store_path",
  "store.url.hostname": "redis_url",
  "store.url.port": "redis_url",
  "store.url.username": "redis_url",
  "store.url.db": "redis_url",
  "store.prefix": "redis_prefix",
};

/** What the running proxy reads at each new connection or call; a reload replaces it. */
export interface PublicLive {
  settings: PublicSettings;
  directory: Directory;
  /** The endpoint notices name. */
  privateEndpoint: HostPort;
}

/** The parts of a running public proxy a reload changes. */
export interface PublicReloadParts {
  live: PublicLive;
  /** The private port's bound address (the endpoint's last fallback). */
  boundPrivate: HostPort;
  /** The data plane's limits for new connections from these settings. */
  limitsOf(s: PublicSettings): Limits;
  /** Sends a snapshot with these limits (and the current routes) to the data plane. */
  pushLimits(limits: Limits): void;
  eps: EpsClient;
  notifier: Notifier;
  grants: PoolGrants;
  announcements: Announcements;
  /** The limits the event handler reads (its log lines name them); updated in place. */
  eventLimits: { dialBackTimeoutMs: number; tokenTimeoutMs: number };
  /** The openPool handler's view of the pool cap; updated in place. */
  rpc: { maxPooledPerOperator: number };
}

/** The endpoint notices name: the setting, else the directory's, else the bound private port. */
export function privateEndpointOf(s: PublicSettings, d: Directory, bound: HostPort): HostPort {
  return s.privateEndpoint ?? d.operators.get(s.operator)?.proxy.privateEndpoint ?? bound;
}

/** The reloader of one public proxy. */
export function publicReloader(p: PublicReloadParts): Reloader<PublicSettings> {
  return new Reloader<PublicSettings>(async (given) => {
    const next = withInstance(given); // an absent instance is the default, as at start
    const before = p.live.settings;
    const applied = checkRestartOnly(
      diffSettings(before, next, { restartOnly: PUBLIC_RESTART_ONLY, names: NAMES }),
    );
    // read and check everything before changing anything
    const directory = await loadDirectory([next.directoryDir]);
    p.eps.reconfigure(next.eps); // throws SettingsError naming the file; nothing changed then
    if (!sameValue(directoryValue(p.live.directory), directoryValue(directory))) {
      applied.push(
        `directory: re-read (${directory.operators.size} operators; new announcements and calls use it)`,
      );
    }
    const endpoint = privateEndpointOf(next, directory, p.boundPrivate);
    if (!sameValue(endpoint, p.live.privateEndpoint)) {
      applied.push(`notices name ${formatHostPort(endpoint)}`);
      p.notifier.setEndpoint(formatHostPort(endpoint));
    }
    p.live.settings = next;
    p.live.directory = directory;
    p.live.privateEndpoint = endpoint;
    p.notifier.timeoutMs = next.noticeTimeoutMs;
    p.notifier.redispatchAfterMs = next.redispatchAfterMs;
    p.notifier.maxDispatches = next.maxDispatches;
    p.grants.maxPerOperator = next.maxPooledPerOperator;
    p.rpc.maxPooledPerOperator = next.maxPooledPerOperator;
    p.announcements.maxPerOperator = next.maxAnnouncementsPerOperator;
    Object.assign(p.eventLimits, {
      dialBackTimeoutMs: next.dialBackTimeoutMs,
      tokenTimeoutMs: next.tokenTimeoutMs,
    });
    p.pushLimits(p.limitsOf(next));
    return applied;
  });
}
