/**
 * Field checkers. Each takes a value, its key path and a problem list; it returns the value (or a
 * placeholder) and pushes `key.path: problem` for anything wrong, so that a parser reports every
 * problem at once. Pure: no I/O.
 * @module
 */
import type { HostPort } from "../role.ts";
import { normalizeHostName } from "../wire/names.ts";

export { normalizeHostName };

export type Problems = string[];
type Obj = Record<string, unknown>;

function show(v: unknown): string {
  if (v === undefined) return "nothing";
  const s = JSON.stringify(v);
  return s === undefined ? String(v) : s.length > 60 ? `${s.slice(0, 57)}...` : s;
}

/** Joins a key path: `join("a", "b")` = `a.b`, `join("", "b")` = `b`, `join("a", 0)` = `a[0]`. */
export function join(prefix: string, key: string | number): string {
  if (typeof key === "number") return `${prefix}[${key}]`;
  return prefix === "" ? key : `${prefix}.${key}`;
}

/** A mapping (plain object); an absent value is an empty mapping. */
export function mapping(v: unknown, path: string, problems: Problems): Obj {
  if (v === undefined || v === null) return {};
  if (typeof v === "object" && !Array.isArray(v)) return v as Obj;
  problems.push(`${path || "(top level)"}: must be a mapping, got ${show(v)}`);
  return {};
}

/** Reports every key of `obj` that is not in `known`. */
export function onlyKeys(
  obj: Obj,
  known: readonly string[],
  prefix: string,
  problems: Problems,
): void {
  for (const k of Object.keys(obj)) {
    if (known.includes(k)) continue;
    const near = nearest(k, known);
    problems.push(
      near === undefined
        ? `${join(prefix, k)}: unknown key (known: ${known.join(", ")})`
        : `${join(prefix, k)}: unknown key, did you mean \`${near}\`? (known: ${known.join(", ")})`,
    );
  }
}

/**
 * The known key a misspelt one most likely meant: within an edit distance of a third of its
 * length (at least 1, at most 3; none for keys under 4 characters), or the same words in another
 * order, case or with dashes; undefined if none.
 */
export function nearest(key: string, known: readonly string[]): string | undefined {
  const lower = key.toLowerCase().replaceAll("-", "_");
  const words = (s: string) => s.split("_").sort().join("_");
  let best: string | undefined;
  // a short key is too easily near another: only keys of 4 characters or more get a guess
  let bestD = key.length < 4 ? 0 : Math.min(3, Math.max(1, Math.floor(key.length / 3))) + 1;
  for (const k of known) {
    if (k === lower || words(k) === words(lower)) return k;
    const d = editDistance(lower, k);
    if (d < bestD) [best, bestD] = [k, d];
  }
  return best;
}

/** Levenshtein distance (insert, delete, replace, and swapping two neighbours counts one). */
function editDistance(a: string, b: string): number {
  const rows: number[][] = [];
  for (let i = 0; i <= a.length; i++) {
    rows.push([i]);
    for (let j = 1; j <= b.length; j++) {
      if (i === 0) {
        rows[0]!.push(j);
        continue;
      }
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let d = Math.min(rows[i - 1]![j]! + 1, rows[i]![j - 1]! + 1, rows[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) {
        d = Math.min(d, rows[i - 2]![j - 2]! + 1);
      }
      rows[i]!.push(d);
    }
  }
  return rows[a.length]![b.length]!;
}

/** Reports `path` as missing when `v` is undefined; returns whether it is present. */
export function required(v: unknown, path: string, problems: Problems): boolean {
  if (v !== undefined && v !== null) return true;
  problems.push(`${path}: is required`);
  return false;
}

export function string(v: unknown, path: string, problems: Problems): string {
  if (typeof v === "string" && v.length > 0) return v;
  problems.push(`${path}: must be a non-empty string, got ${show(v)}`);
  return "";
}

export function boolean(v: unknown, path: string, problems: Problems): boolean {
  if (typeof v === "boolean") return v;
  problems.push(`${path}: must be true or false, got ${show(v)}`);
  return false;
}

/** An integer in [min, max]. */
export function integer(
  v: unknown,
  path: string,
  problems: Problems,
  min = 0,
  max = Number.MAX_SAFE_INTEGER,
): number {
  if (Number.isInteger(v) && (v as number) >= min && (v as number) <= max) return v as number;
  problems.push(`${path}: must be an integer from ${min} to ${max}, got ${show(v)}`);
  return min;
}

export function port(v: unknown, path: string, problems: Problems): number {
  return integer(v, path, problems, 0, 65535);
}

/** A duration in milliseconds, 1 ms to 30 days. */
export function durationMs(
  v: unknown,
  path: string,
  problems: Problems,
  max = 30 * 86_400_000,
): number {
  return integer(v, path, problems, 1, max);
}

/** A size in bytes, at least `min`. */
export function bytes(
  v: unknown,
  path: string,
  problems: Problems,
  min = 1,
  max = 2 ** 31,
): number {
  return integer(v, path, problems, min, max);
}

/** One of the given strings. */
export function oneOf<T extends string>(
  v: unknown,
  allowed: readonly T[],
  path: string,
  problems: Problems,
): T {
  if (typeof v === "string" && (allowed as readonly string[]).includes(v)) return v as T;
  problems.push(
    `${path}: must be one of ${allowed.map((a) => `"${a}"`).join(", ")}, got ${show(v)}`,
  );
  return allowed[0]!;
}

/** A list; each element is checked by `each`. An absent list is `fallback`. */
export function list<T>(
  v: unknown,
  path: string,
  problems: Problems,
  each: (item: unknown, path: string, problems: Problems) => T,
): T[] {
  if (!Array.isArray(v)) {
    problems.push(`${path}: must be a list, got ${show(v)}`);
    return [];
  }
  return v.map((item, i) => each(item, join(path, i), problems));
}

/** A DNS host name, normalised; `*.` in front is allowed when `wildcard`. */
export function hostName(v: unknown, path: string, problems: Problems, wildcard = false): string {
  if (typeof v === "string") {
    const star = wildcard && v.startsWith("*.");
    const n = normalizeHostName(star ? v.slice(2) : v);
    if (n !== null) return star ? `*.${n}` : n;
  }
  problems.push(
    `${path}: must be a host name${wildcard ? " (or *.name)" : ""}, got ${show(v)}`,
  );
  return "";
}

/** A host: an IP literal or a host name. */
export function host(v: unknown, path: string, problems: Problems): string {
  if (typeof v === "string") {
    if (isIp(v)) return v;
    const n = normalizeHostName(v);
    if (n !== null) return n;
  }
  problems.push(`${path}: must be an IP address or host name, got ${show(v)}`);
  return "";
}

function isIp(s: string): boolean {
  if (/^(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}$/.test(s)) return true;
  return s.includes(":") && /^[0-9a-fA-F:.]+$/.test(s) && s.split("::").length <= 2;
}

/** `host:port` or `[v6]:port`, as a HostPort. */
export function address(v: unknown, path: string, problems: Problems): HostPort {
  if (typeof v === "string") {
    const m = /^\[([^\]]+)\]:(\d+)$/.exec(v) ?? /^([^:[\]]+):(\d+)$/.exec(v);
    if (m) {
      const p: Problems = [];
      const hostname = host(m[1], path, p);
      const portNum = port(Number(m[2]), path, p);
      if (p.length === 0) return { hostname, port: portNum };
    }
  }
  problems.push(`${path}: must be "host:port" (IPv6 as "[::1]:port"), got ${show(v)}`);
  return { hostname: "", port: 0 };
}
