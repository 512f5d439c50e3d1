/**
 * The contract every long-lived role follows.
 * @module
 */

/** A dialable address, unlike `Deno.NetAddr` it carries no transport. */
export interface HostPort {
  hostname: string;
  port: number;
}

/** What every `start<Role>()` resolves to. `close()` is idempotent and equals aborting the signal. */
export interface RoleHandle<K extends string = string> extends AsyncDisposable {
  /** Real bound addresses, also when the settings said port 0. */
  readonly addrs: Readonly<Record<K, HostPort>>;
  /** Settles after every listener and connection is closed; rejects only on a fault that killed the role. */
  readonly finished: Promise<void>;
  close(): Promise<void>;
}

export type StartRole<S, K extends string> = (
  settings: S,
  signal?: AbortSignal,
) => Promise<RoleHandle<K>>;

/** Formats a HostPort for logs and the ready line (`[::1]:4433` for IPv6). */
export function formatHostPort(a: HostPort): string {
  return a.hostname.includes(":") ? `[${a.hostname}]:${a.port}` : `${a.hostname}:${a.port}`;
}

/** Converts the `addr` of a Deno listener into a HostPort. */
export function hostPortOf(addr: Deno.Addr): HostPort {
  if (addr.transport !== "tcp" && addr.transport !== "udp") {
    throw new TypeError(`Cannot convert address: transport is "${addr.transport}", expected "tcp"`);
  }
  return { hostname: addr.hostname, port: addr.port };
}

/**
 * Builds a RoleHandle from a `finished` promise and a close routine. `close()` runs `stop` once,
 * then waits for `finished`; an abort of `signal` does the same.
 */
export function makeHandle<K extends string>(
  addrs: Record<K, HostPort>,
  finished: Promise<void>,
  stop: () => void | Promise<void>,
  signal?: AbortSignal,
): RoleHandle<K> {
  let stopping: Promise<void> | undefined;
  const close = (): Promise<void> => {
    stopping ??= (async () => {
      await stop();
      await finished;
    })();
    return stopping;
  };
  // finished must never be an unhandled rejection just because nobody awaited it yet
  finished.catch(() => {});
  if (signal) {
    if (signal.aborted) void close().catch(() => {});
    else signal.addEventListener("abort", () => void close().catch(() => {}), { once: true });
  }
  return {
    addrs,
    finished,
    close,
    [Symbol.asyncDispose]: close,
  };
}

/**
 * The outcome of one reload (docs/architecture.md, "Reload"): `ok` when the new settings were
 * applied, else `problems` holds the same `FILE: key: problem` lines a start would print (or the
 * restart-only keys that changed) and the role kept its old settings.
 */
export interface ReloadResult {
  /** ISO time of the reload. */
  readonly at: string;
  readonly ok: boolean;
  /** What changed and was applied, one short line each (empty when nothing changed). */
  readonly applied: readonly string[];
  readonly problems: readonly string[];
}

/**
 * A role that can re-read its settings (SIGHUP). `next()` loads and validates the settings files
 * again exactly as at start (it throws SettingsError on a problem); the role applies what it can
 * without dropping a live connection, or refuses and keeps running on the old settings.
 */
export interface Reloadable<S> {
  reload(next: () => Promise<S>): Promise<ReloadResult>;
  /** The last reload's result, null before the first. */
  readonly lastReload: ReloadResult | null;
}
