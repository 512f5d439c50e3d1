/**
 * Settings as one declaration per key (docs/architecture.md, "Settings"): each role's keys are
 * declared once, with their field (type, range, unit), default and one-line doc, and from that one
 * declaration come the validation (every problem at once, `key.path: problem`, through the
 * checkers of ./check.ts), the defaults, the parsed TypeScript type, the tables of
 * docs/settings.md and the JSON Schema `tls-pass schema ROLE` prints. Pure: no I/O but what a
 * field's own check does (a readable file, an existing folder).
 * @module
 */
import { resolve } from "node:path";
import * as check from "./check.ts";
import { snakeCase } from "./diff.ts";

type Obj = Record<string, unknown>;

/** A JSON Schema (draft-07) fragment. */
export type JsonSchema = { [key: string]: unknown };

/** How a value is checked, described and shown in a JSON Schema. */
export interface Field<T> {
  /** Checks a present value; pushes `path: problem` and returns a placeholder when it is wrong. */
  readonly parse: (v: unknown, path: string, problems: check.Problems) => T;
  /** The value a missing required key stands for while the other keys are checked. */
  readonly empty: T;
  /** The type column of docs/settings.md ("duration", "address", …). */
  readonly type: string;
  /** The valid-range column of docs/settings.md. */
  readonly range: string;
  readonly schema: JsonSchema;
  /** A nested block's declaration, for its own table in docs/settings.md. */
  readonly shape?: Shape;
}

/**
 * Whether a key must be set: `required`; has a `default` (in the files' form); is `optional` (an
 * absent key is absent from the parsed settings); or is `raw`: checked and documented here, but
 * the role's own parse step turns it into the parsed settings (e.g. `store` and `store_path`
 * become `store: {kind, path}`), so it is not in the inferred type.
 */
export type Presence = "required" | "default" | "optional" | "raw";

export interface Key<T, P extends Presence> {
  readonly field: Field<T>;
  readonly presence: P;
  /** The key in the files, when it is not the field name in snake_case. */
  readonly key?: string;
  /** The default, as the files would write it. */
  readonly default?: unknown;
  /** The default column of docs/settings.md, when not the default itself. */
  readonly defaultDoc?: string;
  /** The meaning column of docs/settings.md and the schema's description. */
  readonly doc: string;
  /** The type column, when not the field's. */
  readonly type?: string;
  /** The valid-range column, when not the field's. */
  readonly range?: string;
}

/** A block of keys, by the parsed settings' (camelCase) field names. */
export type Shape = { readonly [field: string]: Key<unknown, Presence> };

type Value<K> = K extends Key<infer T, Presence> ? T : never;

/** The parsed type of a block: required and defaulted keys always there, optional ones maybe. */
export type Infer<S extends Shape> =
  & {
    -readonly [F in keyof S as S[F] extends Key<unknown, "required" | "default"> ? F : never]:
      Value<
        S[F]
      >;
  }
  & {
    -readonly [F in keyof S as S[F] extends Key<unknown, "optional"> ? F : never]?: Value<S[F]>;
  };

/** The fields of a block that have a default, with their parsed defaults. */
export type Defaults<S extends Shape> = {
  -readonly [F in keyof S as S[F] extends Key<unknown, "default"> ? F : never]: Value<S[F]>;
};

type Opts = Omit<Key<unknown, Presence>, "field" | "presence" | "default" | "doc">;

export function required<T>(field: Field<T>, doc: string, opts: Opts = {}): Key<T, "required"> {
  return { field, presence: "required", doc, ...opts };
}

export function withDefault<T>(
  field: Field<T>,
  value: unknown,
  doc: string,
  opts: Opts = {},
): Key<T, "default"> {
  return { field, presence: "default", default: value, doc, ...opts };
}

export function optional<T>(field: Field<T>, doc: string, opts: Opts = {}): Key<T, "optional"> {
  return { field, presence: "optional", doc, ...opts };
}

/** A key the role's parse step turns into settings itself; `value` is its default, if any. */
export function raw<T>(
  field: Field<T>,
  doc: string,
  opts: Opts & { value?: unknown } = {},
): Key<T, "raw"> {
  const { value, ...rest } = opts;
  return {
    field,
    presence: "raw",
    doc,
    ...(value === undefined ? {} : { default: value }),
    ...rest,
  };
}

/** The key of `name` in the files. */
export function fileKey(name: string, k: Key<unknown, Presence>): string {
  return k.key ?? snakeCase(name);
}

/** The keys of a block as the files name them, in declaration order. */
export function fileKeys(shape: Shape): string[] {
  return Object.entries(shape).map(([name, k]) => fileKey(name, k));
}

/**
 * Checks the mapping `data` at `prefix` against `shape`: unknown keys (with a guess at the key
 * meant), missing required keys, every present or defaulted value. Returns the parsed settings
 * and, by field name, the parsed values of the `raw` keys that are set or have a default.
 */
export function parseBlock<S extends Shape>(
  shape: S,
  data: Obj,
  prefix: string,
  problems: check.Problems,
): [Infer<S>, Record<string, unknown>] {
  check.onlyKeys(data, fileKeys(shape), prefix, problems);
  const out: Obj = {};
  const rawValues: Obj = {};
  for (const [name, k] of Object.entries(shape)) {
    const path = check.join(prefix, fileKey(name, k));
    let v = data[fileKey(name, k)];
    if (v === undefined || v === null) {
      if (k.presence === "required") {
        problems.push(`${path}: is required`);
        out[name] = k.field.empty;
        continue;
      }
      if (k.default === undefined) continue;
      v = k.default;
    }
    (k.presence === "raw" ? rawValues : out)[name] = k.field.parse(v, path, problems);
  }
  return [out as Infer<S>, rawValues];
}

/** The parsed defaults of a block's keys that have one. */
export function defaultsOf<S extends Shape>(shape: S): Defaults<S> {
  const out: Obj = {};
  for (const [name, k] of Object.entries(shape)) {
    if (k.presence !== "default") continue;
    const problems: check.Problems = [];
    out[name] = k.field.parse(k.default, name, problems);
    if (problems.length > 0) throw new Error(`bad default: ${problems.join("; ")}`);
  }
  return out as Defaults<S>;
}

/** The JSON Schema of a block (a mapping with exactly these keys). */
export function blockSchema(shape: Shape): JsonSchema {
  const properties: Record<string, JsonSchema> = {};
  const req: string[] = [];
  for (const [name, k] of Object.entries(shape)) {
    const key = fileKey(name, k);
    properties[key] = {
      ...k.field.schema,
      description: k.doc,
      ...(k.default === undefined ? {} : { default: k.default }),
    };
    if (k.presence === "required") req.push(key);
  }
  return {
    type: "object",
    properties,
    ...(req.length > 0 ? { required: req } : {}),
    additionalProperties: false,
  };
}

/** A nested block: a mapping checked against `shape`, then by `finish` (cross-key checks). */
export function block<S extends Shape, T = Infer<S>>(
  shape: S,
  finish?: (v: Infer<S>, raw: Record<string, unknown>, path: string, problems: check.Problems) => T,
): Field<T> {
  const parse = (v: unknown, path: string, problems: check.Problems): T => {
    const m = check.mapping(v, path, problems);
    const [parsed, rawValues] = parseBlock(shape, m, path, problems);
    return finish ? finish(parsed, rawValues, path, problems) : parsed as unknown as T;
  };
  return {
    parse,
    get empty() {
      return parse({}, "", []);
    },
    type: "mapping",
    range: "mapping",
    schema: blockSchema(shape),
    shape,
  };
}

/** Groups digits by three from 10 000 up, as docs/settings.md writes numbers. */
export function num(n: number): string {
  return n < 10_000 ? String(n) : n.toString().replace(/\B(?=(\d{3})+(?!\d))/g, " ");
}

export function integer(min: number, max: number, type = "count"): Field<number> {
  return {
    parse: (v, path, problems) => check.integer(v, path, problems, min, max),
    empty: min,
    type,
    range: `${num(min)} – ${num(max)}`,
    schema: { type: "integer", minimum: min, maximum: max },
  };
}

export const MAX_MS = 30 * 86_400_000;

/** A duration in milliseconds, `min` (default 1) to `max` (default 30 days). */
export function duration(min = 1, max = MAX_MS): Field<number> {
  return integer(min, max, min === 1 ? "duration" : "integer (ms)");
}

export function size(min: number, max: number): Field<number> {
  return integer(min, max, "size");
}

export const boolean: Field<boolean> = {
  parse: check.boolean,
  empty: false,
  type: "boolean",
  range: "`true`, `false`",
  schema: { type: "boolean" },
};

export const string: Field<string> = {
  parse: check.string,
  empty: "",
  type: "string",
  range: "non-empty",
  schema: { type: "string", minLength: 1 },
};

/** A path (resolved by the loader, docs/settings.md "Path resolution"). */
export const path: Field<string> = { ...string, type: "path" };

/** A path to a file that must be readable now. */
export const readableFile: Field<string> = {
  ...path,
  parse: (v, at, problems) => {
    const s = check.string(v, at, problems);
    checkReadable(s, at, problems);
    return s;
  },
  range: "readable file",
};

/** A path to an existing folder. */
export const existingDir: Field<string> = {
  ...path,
  parse: (v, at, problems) => {
    const s = check.string(v, at, problems);
    checkDir(s, at, problems);
    return s;
  },
  range: "existing folder",
};

export function oneOf<T extends string>(allowed: readonly T[]): Field<T> {
  return {
    parse: (v, path, problems) => check.oneOf(v, allowed, path, problems),
    empty: allowed[0]!,
    type: "string",
    range: allowed.map((a) => `\`${a}\``).join(", "),
    schema: { type: "string", enum: [...allowed] },
  };
}

const HOST = String.raw`(\[[0-9A-Fa-f:.]+\]|[^:\[\]\s]+)`;

export const address: Field<{ hostname: string; port: number }> = {
  parse: check.address,
  empty: { hostname: "", port: 0 },
  type: "address",
  range: "address",
  schema: {
    type: "string",
    pattern: `^${HOST}:([0-9]{1,5})$`,
    examples: ["127.0.0.1:4433", "[::1]:4433", "tunnel.example.com:9999"],
  },
};

const LABEL = "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?";

/** An operator name: a lower-case host name, as in the directory. */
export const operatorName: Field<string> = {
  parse: (v, path, problems) => {
    if (typeof v === "string" && check.normalizeHostName(v) === v) return v;
    problems.push(
      `${path}: must be a lower-case host name (an operator name), got ${JSON.stringify(v)}`,
    );
    return "";
  },
  empty: "",
  type: "operator name",
  range: "lower-case host name",
  schema: { type: "string", maxLength: 253, pattern: `^${LABEL}(\\.${LABEL})*$` },
};

/** An instance name (docs/architecture.md, "Instances"): 1–64 of `[A-Za-z0-9._-]`. */
export const INSTANCE_NAME = /^[A-Za-z0-9._-]{1,64}$/;

/** Whether `v` is an instance name ({@linkcode INSTANCE_NAME}). */
export function isInstanceName(v: unknown): v is string {
  return typeof v === "string" && INSTANCE_NAME.test(v);
}

/**
 * The default instance name (docs/architecture.md, "Instances"): the host name (characters
 * outside the pattern become `-`), and for settings read from files `-` and 6 hex digits of a
 * hash of their paths. Stable across restarts on purpose: a restarted proxy takes its own place
 * — its announcements, the pools kept for it — instead of leaving a stale instance behind at
 * every restart; and two proxies of one operator on one host with their own settings folders get
 * distinct names (the same name would make each replace the other's link on the EPS, forever).
 */
export function defaultInstanceName(sources?: readonly string[]): string {
  let host = "host";
  try {
    host = Deno.hostname().replace(/[^A-Za-z0-9._-]/g, "-") || "host";
  } catch {
    // no permission to read the host name: "host" stands for it
  }
  if (sources === undefined || sources.length === 0) return host.slice(0, 64);
  const tag = `-${
    fnv1a(sources.map((p) => resolve(p)).join("\n")).toString(16).padStart(8, "0").slice(0, 6)
  }`;
  return host.slice(0, 64 - tag.length) + tag;
}

/** FNV-1a, 32 bits: a short stable tag, not a secret. */
function fnv1a(text: string): number {
  let h = 0x811c9dc5;
  for (const b of new TextEncoder().encode(text)) h = Math.imul(h ^ b, 0x01000193) >>> 0;
  return h;
}

/** The name of one instance of an operator (several proxies of one operator on its EPS). */
export const instanceName: Field<string> = {
  parse: (v, path, problems) => {
    if (isInstanceName(v)) return v;
    problems.push(
      `${path}: must be 1–64 characters of A-Z a-z 0-9 . _ - (an instance name), got ${
        JSON.stringify(v)
      }`,
    );
    return "";
  },
  empty: "",
  type: "instance name",
  range: "1–64 of `A-Za-z0-9._-`",
  schema: { type: "string", pattern: INSTANCE_NAME.source },
};

export function list<T>(
  item: Field<T>,
  type = `list of ${item.type}s`,
  /** What the parser's own checks also bound (so editors refuse what `run` refuses). */
  bounds: { minItems?: number; maxItems?: number } = {},
): Field<T[]> {
  return {
    parse: (v, path, problems) => check.list(v, path, problems, item.parse),
    empty: [],
    type,
    range: item.range,
    schema: { type: "array", items: item.schema, ...bounds },
  };
}

/** Checks that a file exists and is readable now, so the role fails at start-up, not later. */
export function checkReadable(path: string, key: string, problems: check.Problems): void {
  if (path === "") return;
  try {
    const info = Deno.statSync(path);
    if (!info.isFile) problems.push(`${key}: "${path}" is not a file`);
  } catch (err) {
    problems.push(
      `${key}: cannot read "${path}": ${err instanceof Error ? err.message : String(err)}`,
    );
  }
}

/** Checks that `path` is an existing folder. */
export function checkDir(path: string, key: string, problems: check.Problems): void {
  if (path === "") return;
  try {
    if (!Deno.statSync(path).isDirectory) problems.push(`${key}: "${path}" is not a folder`);
  } catch (err) {
    problems.push(
      `${key}: cannot read "${path}": ${err instanceof Error ? err.message : String(err)}`,
    );
  }
}
