/**
 * The settings loader (docs/settings.md, "How settings are loaded"): files and folders in order,
 * deep merge, `${VAR}` from the environment, relative paths resolved against the file that names
 * them, then one strict parser per role that reports every problem at once as
 * `FILE: key.path: problem`.
 * @module
 */
import { parseDocument } from "yaml";
import { dirname, isAbsolute, join as joinPath, resolve } from "node:path";
import { SettingsError } from "../errors.ts";
import type { Problems } from "./check.ts";

type Obj = Record<string, unknown>;

/** Keys whose string values are paths, resolved against the folder of the file that sets them. */
export const PATH_KEY = /_(file|files|dir|path)$/;

const EXTENSIONS = [".yml", ".yaml", ".json"];

/** The merged raw settings and, for every key path, the file that set it last. */
export interface RawSettings {
  data: Obj;
  files: string[];
  origins: Map<string, string>;
}

/**
 * The settings sources: the `--settings` values if any, else the colon-separated environment
 * variable `envVar`, else `fallback`.
 */
export function settingsSources(
  flags: readonly string[],
  envVar?: string,
  fallback?: string,
): string[] {
  if (flags.length > 0) return [...flags];
  const env = envVar ? Deno.env.get(envVar) : undefined;
  if (env) return env.split(":").filter((p) => p.length > 0);
  return fallback ? [fallback] : [];
}

/** Expands folders into their settings files, in name order. Unreadable paths become problems. */
async function expand(sources: readonly string[], problems: Problems): Promise<string[]> {
  const files: string[] = [];
  for (const src of sources) {
    let info: Deno.FileInfo;
    try {
      info = await Deno.stat(src);
    } catch (err) {
      problems.push(`${src}: cannot read: ${err instanceof Error ? err.message : String(err)}`);
      continue;
    }
    if (info.isDirectory) {
      const names: string[] = [];
      for await (const e of Deno.readDir(src)) {
        if ((e.isFile || e.isSymlink) && EXTENSIONS.some((x) => e.name.endsWith(x))) {
          names.push(e.name);
        }
      }
      names.sort();
      if (names.length === 0) problems.push(`${src}: folder holds no *.yml, *.yaml or *.json file`);
      files.push(...names.map((n) => joinPath(src, n)));
    } else {
      files.push(src);
    }
  }
  return files;
}

function isObj(v: unknown): v is Obj {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Replaces `${VAR}` in strings and resolves path keys; records problems with the key path. */
function prepare(v: unknown, path: string, key: string, file: string, problems: Problems): unknown {
  if (typeof v === "string") {
    let s = v.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (_, name: string) => {
      const value = Deno.env.get(name);
      if (value === undefined) {
        problems.push(`${file}: ${path}: environment variable "${name}" is not set`);
        return "";
      }
      return value;
    });
    if (PATH_KEY.test(key) && s !== "" && !isAbsolute(s)) s = resolve(dirname(file), s);
    return s;
  }
  if (Array.isArray(v)) return v.map((x, i) => prepare(x, `${path}[${i}]`, key, file, problems));
  if (isObj(v)) {
    const out: Obj = {};
    for (const [k, x] of Object.entries(v)) {
      out[k] = prepare(x, path === "" ? k : `${path}.${k}`, k, file, problems);
    }
    return out;
  }
  return v;
}

/** Deep merge: maps merge, scalars and lists replace. Records which file set each key path. */
function merge(
  into: Obj,
  from: Obj,
  prefix: string,
  file: string,
  origins: Map<string, string>,
): void {
  for (const [k, v] of Object.entries(from)) {
    const path = prefix === "" ? k : `${prefix}.${k}`;
    const cur = into[k];
    if (isObj(cur) && isObj(v)) {
      merge(cur, v, path, file, origins);
    } else {
      into[k] = isObj(v) ? structuredClone(v) : v;
      for (const key of [...origins.keys()]) if (key.startsWith(`${path}.`)) origins.delete(key);
      origins.set(path, file);
      if (isObj(v)) recordOrigins(v, path, file, origins);
    }
  }
}

function recordOrigins(v: Obj, prefix: string, file: string, origins: Map<string, string>): void {
  for (const [k, x] of Object.entries(v)) {
    const path = `${prefix}.${k}`;
    origins.set(path, file);
    if (isObj(x)) recordOrigins(x, path, file, origins);
  }
}

/** Reads, substitutes and merges the settings sources. Throws SettingsError on any problem. */
export async function loadRaw(sources: readonly string[]): Promise<RawSettings> {
  const problems: Problems = [];
  if (sources.length === 0) {
    throw new SettingsError("(none)", [
      "no settings given: pass --settings PATH or set the environment variable",
    ]);
  }
  const files = await expand(sources, problems);
  const data: Obj = {};
  const origins = new Map<string, string>();
  for (const file of files) {
    let text: string;
    try {
      text = await Deno.readTextFile(file);
    } catch (err) {
      problems.push(`${file}: cannot read: ${err instanceof Error ? err.message : String(err)}`);
      continue;
    }
    const doc = parseDocument(text, { uniqueKeys: true, prettyErrors: true });
    if (doc.errors.length > 0) {
      for (const e of doc.errors) problems.push(`${file}: ${e.message.split("\n")[0]}`);
      continue;
    }
    const js: unknown = doc.toJS();
    if (js === null || js === undefined) continue; // an empty file contributes nothing
    if (!isObj(js)) {
      problems.push(`${file}: (top level): must be a mapping`);
      continue;
    }
    merge(data, prepare(js, "", "", file, problems) as Obj, "", file, origins);
  }
  if (problems.length > 0) throw new SettingsError(sources.join(":"), problems);
  return { data, files, origins };
}

/** The file that set `keyPath` (or its nearest parent), else the last file. */
function originOf(raw: RawSettings, keyPath: string): string {
  let p = keyPath.replace(/\[\d+\].*$/, "");
  while (p !== "") {
    const f = raw.origins.get(p);
    if (f) return f;
    const dot = p.lastIndexOf(".");
    p = dot < 0 ? "" : p.slice(0, dot);
  }
  return raw.files[raw.files.length - 1] ?? "(none)";
}

/** A role's settings parser: raw merged data in, typed settings out, problems as `key.path: …`. */
export type SettingsParser<T> = (data: Record<string, unknown>, problems: Problems) => T;

/**
 * Loads and validates a role's settings. Every problem is reported at once, each prefixed with
 * the file that set the key.
 */
export async function loadSettings<T>(
  sources: readonly string[],
  parse: SettingsParser<T>,
): Promise<T> {
  const raw = await loadRaw(sources);
  return parseRaw(raw, parse, sources);
}

/** Validates already merged settings. */
function parseRaw<T>(
  raw: RawSettings,
  parse: SettingsParser<T>,
  sources: readonly string[] = raw.files,
): T {
  const problems: Problems = [];
  const settings = parse(raw.data, problems);
  if (problems.length > 0) {
    throw new SettingsError(
      sources.join(":"),
      problems.map((p) => `${originOf(raw, p.slice(0, p.indexOf(":")))}: ${p}`),
    );
  }
  return settings;
}

/** Checks that a file exists and is readable now (declared with the fields, ./schema.ts). */
export { checkReadable } from "./schema.ts";
