/**
 * What changed between two parsed settings of one role, for a reload (docs/architecture.md,
 * "Reload"): the changed keys, named as in the settings files (`public_listen`,
 * `eps.certificate_file`), and which of them cannot change without a restart. Pure: no I/O.
 * Shared by every role's `reload()`.
 * @module
 */
import { SettingsError } from "../errors.ts";
import type { Reloadable, ReloadResult } from "../role.ts";

/** One changed key, as the settings files name it. */
export interface KeyChange {
  key: string;
  before: unknown;
  after: unknown;
}

export interface SettingsDiff {
  /** Every changed key, in the order of the settings object. */
  changed: KeyChange[];
  /** The changed keys that need a restart. */
  restartOnly: KeyChange[];
}

/** `publicListen` → `public_listen`. */
export function snakeCase(name: string): string {
  return name.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}

function isPlain(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Deep equality of parsed settings values (plain objects, arrays, scalars). */
export function sameValue(a: unknown, b: unknown): boolean {
  if (Object.is(a, b)) return true;
  if (Array.isArray(a) && Array.isArray(b)) {
    return a.length === b.length && a.every((x, i) => sameValue(x, b[i]));
  }
  if (isPlain(a) && isPlain(b)) {
    const ka = Object.keys(a).filter((k) => a[k] !== undefined);
    const kb = Object.keys(b).filter((k) => b[k] !== undefined);
    return ka.length === kb.length && ka.every((k) => sameValue(a[k], b[k]));
  }
  return false;
}

/** A leaf value is compared whole: scalars, lists, and host:port pairs. */
function isLeaf(v: unknown): boolean {
  if (!isPlain(v)) return true;
  const keys = Object.keys(v);
  return keys.length === 2 && "hostname" in v && "port" in v;
}

/**
 * Compares two parsed settings. Keys are the files' names (camelCase → snake_case, nested blocks
 * joined with "."), renamed by `names` where the parsed shape differs from the file (e.g.
 * `{"store.kind": "store", "store.path": "store_path"}`). A key is restart-only when it or a
 * parent block is listed in `restartOnly` (file names).
 */
export function diffSettings(
  before: object,
  after: object,
  options: { restartOnly?: readonly string[]; names?: Readonly<Record<string, string>> } = {},
): SettingsDiff {
  const changed: KeyChange[] = [];
  const walk = (a: unknown, b: unknown, path: string) => {
    if (path !== "" && (isLeaf(a) || isLeaf(b))) {
      if (!sameValue(a, b)) {
        changed.push({ key: options.names?.[path] ?? path, before: a, after: b });
      }
      return;
    }
    const ra = isPlain(a) ? a : {};
    const rb = isPlain(b) ? b : {};
    const keys = [...new Set([...Object.keys(ra), ...Object.keys(rb)])];
    for (const k of keys) {
      walk(ra[k], rb[k], path === "" ? snakeCase(k) : `${path}.${snakeCase(k)}`);
    }
  };
  walk(before, after, "");
  // a renamed pair (store.kind + store.path → store, store_path) may name one key twice
  const seen = new Set<string>();
  const unique = changed.filter((c) => !seen.has(c.key) && seen.add(c.key));
  const restart = options.restartOnly ?? [];
  const restartOnly = unique.filter((c) =>
    restart.some((r) => c.key === r || c.key.startsWith(`${r}.`))
  );
  return { changed: unique, restartOnly };
}

/** A settings value for a log line: host:port pairs as text, others as JSON, shortened. */
export function showValue(v: unknown): string {
  if (v === undefined) return "(absent)";
  if (isPlain(v) && "hostname" in v && "port" in v) {
    const h = String(v.hostname);
    return h.includes(":") ? `[${h}]:${v.port}` : `${h}:${v.port}`;
  }
  const s = JSON.stringify(v) ?? String(v);
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}

/** The refusal line of one restart-only key. */
export function restartProblem(c: KeyChange): string {
  return `${c.key}: cannot change without a restart (running ${
    showValue(c.before)
  }, the files now say ${showValue(c.after)})`;
}

/** The applied line of one changed key. */
export function changeLine(c: KeyChange): string {
  return `${c.key}: ${showValue(c.before)} → ${showValue(c.after)}`;
}

/** Thrown by a role's apply step to refuse a reload with problems; nothing was applied. */
export class ReloadRefused extends Error {
  override name = "ReloadRefused";
  constructor(readonly problems: readonly string[]) {
    super(`Reload refused:\n  ${problems.join("\n  ")}`);
  }
}

/**
 * Runs reloads one at a time and keeps the last result. `apply(next)` validates everything it
 * needs first (it throws SettingsError or ReloadRefused, having changed nothing), then applies
 * and returns what it applied.
 */
export class Reloader<S> {
  #last: ReloadResult | null = null;
  #queue: Promise<unknown> = Promise.resolve();
  /** Reloads so far, by outcome (the `tls_pass_reloads_total` metric). */
  readonly counts = { applied: 0, refused: 0 };

  constructor(readonly apply: (next: S) => Promise<string[]>) {}

  get last(): ReloadResult | null {
    return this.#last;
  }

  reload(next: () => Promise<S>): Promise<ReloadResult> {
    const run = this.#queue.then(() => this.#once(next));
    this.#queue = run.catch(() => {});
    return run;
  }

  async #once(next: () => Promise<S>): Promise<ReloadResult> {
    const at = new Date().toISOString();
    let result: ReloadResult;
    try {
      const applied = await this.apply(await next());
      result = { at, ok: true, applied, problems: [] };
    } catch (err) {
      const problems = err instanceof SettingsError || err instanceof ReloadRefused
        ? [...err.problems]
        : [err instanceof Error ? err.message : String(err)];
      result = { at, ok: false, applied: [], problems };
    }
    this.#last = result;
    this.counts[result.ok ? "applied" : "refused"]++;
    return result;
  }
}

/**
 * Refuses (ReloadRefused) when a restart-only key changed, naming each; else returns the applied
 * lines of the changed keys.
 */
export function checkRestartOnly(diff: SettingsDiff): string[] {
  if (diff.restartOnly.length > 0) throw new ReloadRefused(diff.restartOnly.map(restartProblem));
  return diff.changed.map(changeLine);
}

/** Adds `reload` and a live `lastReload` to a role's handle (Object.assign would copy a getter's value once). */
export function withReload<H extends object, S>(
  handle: H,
  reloader: Reloader<S>,
): H & Reloadable<S> {
  return Object.defineProperties(handle, {
    reload: { value: (next: () => Promise<S>) => reloader.reload(next), enumerable: true },
    lastReload: { get: () => reloader.last, enumerable: true },
  }) as H & Reloadable<S>;
}
