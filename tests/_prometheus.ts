/**
 * A strict checker of the Prometheus text exposition format (version 0.0.4), for the admin tests:
 * every line parses, every family has exactly one HELP and one TYPE before its samples and its
 * samples are contiguous, counters never go negative, and each histogram's buckets are ascending,
 * cumulative and end in `+Inf` equal to its `_count`. Throws an Error naming the line otherwise.
 * @module
 */

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export interface Family {
  name: string;
  help: string;
  type: "counter" | "gauge" | "histogram" | "summary" | "untyped";
  samples: Sample[];
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)( -?\d+)?$/;
const LABEL = /^([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\["\\n])*)"(,|$)/;

function value(v: string, line: number): number {
  if (v === "+Inf") return Infinity;
  if (v === "-Inf") return -Infinity;
  if (v === "NaN") return NaN;
  if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(v)) {
    throw new Error(`line ${line}: bad value "${v}"`);
  }
  return Number(v);
}

function labels(text: string, line: number): Record<string, string> {
  const out: Record<string, string> = {};
  let rest = text;
  while (rest.length > 0) {
    const m = LABEL.exec(rest);
    if (!m) throw new Error(`line ${line}: bad labels "{${text}}"`);
    if (m[1]! in out) throw new Error(`line ${line}: label ${m[1]} twice`);
    out[m[1]!] = m[2]!.replace(/\\n/g, "\n").replace(/\\(["\\])/g, "$1");
    rest = rest.slice(m[0].length);
  }
  return out;
}

function familyOf(sample: string, families: Map<string, Family>): Family | undefined {
  for (const suffix of ["", "_bucket", "_sum", "_count"]) {
    if (!sample.endsWith(suffix)) continue;
    const f = families.get(sample.slice(0, sample.length - suffix.length));
    if (f && (suffix === "" || f.type === "histogram" || f.type === "summary")) return f;
  }
  return undefined;
}

/** Parses and checks an exposition; returns its families by name. */
export function parsePrometheus(text: string): Map<string, Family> {
  const families = new Map<string, Family>();
  const closed = new Set<string>();
  let current: Family | undefined;
  let help: { name: string; text: string } | undefined;
  const lines = text.split("\n");
  if (lines.at(-1) !== "") throw new Error("the exposition must end with a newline");
  for (const [i, raw] of lines.slice(0, -1).entries()) {
    const n = i + 1;
    if (raw === "") continue;
    if (raw.startsWith("# HELP ")) {
      const [name, ...words] = raw.slice(7).split(" ");
      if (!NAME.test(name!)) throw new Error(`line ${n}: bad metric name in HELP`);
      if (families.has(name!) || help) throw new Error(`line ${n}: second HELP for ${name}`);
      help = { name: name!, text: words.join(" ") };
      continue;
    }
    if (raw.startsWith("# TYPE ")) {
      const [name, type] = raw.slice(7).split(" ");
      if (help === undefined || help.name !== name) {
        throw new Error(`line ${n}: TYPE ${name} without its HELP before`);
      }
      if (!["counter", "gauge", "histogram", "summary", "untyped"].includes(type!)) {
        throw new Error(`line ${n}: bad type "${type}"`);
      }
      if (current) closed.add(current.name);
      current = { name: name!, help: help.text, type: type as Family["type"], samples: [] };
      families.set(name!, current);
      help = undefined;
      continue;
    }
    if (raw.startsWith("#")) continue;
    const m = SAMPLE.exec(raw);
    if (!m) throw new Error(`line ${n}: not a sample: ${raw}`);
    const f = familyOf(m[1]!, families);
    if (!f) throw new Error(`line ${n}: sample ${m[1]} has no HELP and TYPE before it`);
    if (f !== current || closed.has(f.name)) {
      throw new Error(`line ${n}: sample of ${f.name} outside its family's block`);
    }
    const s = { name: m[1]!, labels: labels(m[3] ?? "", n), value: value(m[4]!, n) };
    if (f.type === "counter" && !(s.value >= 0)) throw new Error(`line ${n}: negative counter`);
    f.samples.push(s);
  }
  if (help) throw new Error(`HELP ${help.name} without a TYPE`);
  for (const f of families.values()) if (f.type === "histogram") checkHistogram(f);
  return families;
}

function checkHistogram(f: Family): void {
  const groups = new Map<string, { buckets: [number, number][]; count?: number }>();
  for (const s of f.samples) {
    const { le, ...rest } = s.labels;
    const key = JSON.stringify(Object.entries(rest).sort());
    const g = groups.get(key) ?? { buckets: [] };
    groups.set(key, g);
    if (s.name === `${f.name}_bucket`) {
      if (le === undefined) throw new Error(`${f.name}: a bucket without le`);
      g.buckets.push([value(le, 0), s.value]);
    } else if (s.name === `${f.name}_count`) g.count = s.value;
  }
  for (const [key, g] of groups) {
    let last: [number, number] = [-Infinity, 0];
    for (const b of g.buckets) {
      if (!(b[0] > last[0])) throw new Error(`${f.name}${key}: buckets not ascending`);
      if (b[1] < last[1]) throw new Error(`${f.name}${key}: buckets not cumulative`);
      last = b;
    }
    if (last[0] !== Infinity) throw new Error(`${f.name}${key}: no +Inf bucket`);
    if (g.count !== last[1]) throw new Error(`${f.name}${key}: +Inf bucket is not _count`);
  }
}

/** The value of one sample of `name` whose labels include `want`; undefined when absent. */
export function sampleValue(
  families: Map<string, Family>,
  name: string,
  want: Record<string, string> = {},
): number | undefined {
  for (const f of families.values()) {
    for (const s of f.samples) {
      if (s.name !== name) continue;
      if (Object.entries(want).every(([k, v]) => s.labels[k] === v)) return s.value;
    }
  }
  return undefined;
}
