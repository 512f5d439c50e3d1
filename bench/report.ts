// deno-lint-ignore-file camelcase -- the JSON keys match ../shared/bench results.json
/**
 * Turns the raw records of a run (one per topology and round) into medians, paired ratios and
 * the Markdown tables. Medians are over rounds; W3 pools every download of every round. A ratio
 * is the median of the per-round ratios (topology / reference in the same round), so slow drifts
 * of a noisy machine cancel out. Same rules as ../shared/bench/tools/report.mjs.
 *
 * Before issue 17, "W6" was the burst of new TLS clients (now W7); W6 is HTTP/2 multiplexed
 * (h2load). {@link normalizeRow} and {@link normalizeResults} read records of either age.
 * @module
 */

// deno-lint-ignore no-explicit-any
export type Row = Record<string, any>;
type Better = "higher" | "lower";
type Metric = [label: string, get: (r: Row) => unknown, better: Better];

export function median(xs: readonly unknown[]): number | null {
  const v = xs.filter((x): x is number => typeof x === "number" && Number.isFinite(x))
    .sort((a, b) => a - b);
  if (v.length === 0) return null;
  const m = Math.floor(v.length / 2);
  return v.length % 2 ? v[m]! : (v[m - 1]! + v[m]!) / 2;
}
const finite = (xs: readonly unknown[]) =>
  xs.filter((x): x is number => typeof x === "number" && Number.isFinite(x));
const min = (xs: readonly unknown[]) => (finite(xs).length ? Math.min(...finite(xs)) : null);
const max = (xs: readonly unknown[]) => (finite(xs).length ? Math.max(...finite(xs)) : null);
const mib = (x: unknown) => (typeof x === "number" ? x / 1024 : null);

/** True for a burst record of before issue 17: burst size → burst, as W7 is now. */
function isBurstRecord(x: unknown): boolean {
  if (typeof x !== "object" || x === null || Array.isArray(x) || "rps" in x) return false;
  const entries = Object.entries(x);
  return entries.length > 0 &&
    entries.every(([k, v]) => /^\d+$/.test(k) && typeof v === "object" && v !== null);
}

/** A raw record (raw.jsonl line) of any age: an old "W6" burst record becomes "W7". */
export function normalizeRow(r: Row): Row {
  if (!isBurstRecord(r.W6) || r.W7) return r;
  const { W6, ...rest } = r;
  return { ...rest, W7: W6 };
}

/**
 * A results.json of any age: the old top-level "w6" (bursts) becomes "w7", and "W6" in the
 * workloads and the w6* burst parameters are renamed with it.
 */
export function normalizeResults(json: Row): Row {
  const w6 = json.w6 as Row | undefined;
  const bursts = w6 !== undefined && !json.w7 &&
    Object.values(w6).every((t) => isBurstRecord(t) || Object.keys(t ?? {}).length === 0);
  if (!bursts) return json;
  const { w6: _old, ...rest } = json;
  const meta = { ...(json.meta ?? {}) } as Row;
  if (Array.isArray(meta.workloads)) {
    meta.workloads = meta.workloads.map((w: string) => (w === "W6" ? "W7" : w));
  }
  if (meta.params) {
    meta.params = Object.fromEntries(
      Object.entries(meta.params as Row).map(([k, v]) => [k.replace(/^w6(?=[A-Z])/, "w7"), v]),
    );
  }
  return { ...rest, meta, w7: w6 };
}

const errorsOf = (r: Row): number =>
  (r.W1 ? (r.W1.failed ?? 0) + (r.W1.non2xx ?? 0) : 0) +
  (r.W2 ? (r.W2.socket_errors ?? 0) + (r.W2.non2xx ?? 0) : 0) +
  (r.W3 ? r.W3.failed ?? 0 : 0) + (r.W5 ? r.W5.failed ?? 0 : 0) +
  (r.W4 ? r.W4.failed ?? 0 : 0) + (r.W4?.error || r.W5?.error ? 1 : 0) +
  (r.W6 ? r.W6.failed ?? 0 : 0) +
  (r.relays_alive_at_end === false ? 1 : 0);

/** metric key → label, extractor, which direction is better. */
export const METRICS: Record<string, Metric> = {
  w1_rps: ["W1 req/s", (r) => r.W1?.rps, "higher"],
  w1_p50_ms: ["W1 p50 ms", (r) => r.W1?.p50_ms, "lower"],
  w1_p99_ms: ["W1 p99 ms", (r) => r.W1?.p99_ms, "lower"],
  w1_relay_cpu_us_per_req: ["W1 CPU µs/req", (r) => r.W1?.relay_cpu_us_per_req, "lower"],
  w1_relay_sys_share: ["W1 kernel share", (r) => r.W1?.relay_cpu_sys_share, "lower"],
  w2_rps: ["W2 req/s", (r) => r.W2?.rps, "higher"],
  w2_p50_ms: ["W2 p50 ms", (r) => r.W2?.p50_ms, "lower"],
  w2_p99_ms: ["W2 p99 ms", (r) => r.W2?.p99_ms, "lower"],
  w2_relay_cpu_us_per_req: ["W2 CPU µs/req", (r) => r.W2?.relay_cpu_us_per_req, "lower"],
  w2_relay_sys_share: ["W2 kernel share", (r) => r.W2?.relay_cpu_sys_share, "lower"],
  w3_mb_per_s: ["W3 MB/s", (r) => median(r.W3?.mb_per_s ?? []), "higher"],
  w3_relay_cpu_s_per_gb: ["W3 CPU s/GB", (r) => r.W3?.relay_cpu_s_per_gb, "lower"],
  w3_relay_sys_share: ["W3 kernel share", (r) => r.W3?.relay_cpu_sys_share, "lower"],
  w4_ok: ["W4 ok", (r) => r.W4?.ok, "higher"],
  w4_alive: ["W4 alive", (r) => r.W4?.alive_at_release, "higher"],
  w4_open_s: ["W4 open s", (r) => r.W4?.open_s, "lower"],
  w4_relay_idle_rss_mib: ["idle RSS MiB", (r) => mib(r.W4?.relay_idle?.rss_kib), "lower"],
  w4_relay_held_rss_mib: ["W4 held RSS MiB", (r) => mib(r.W4?.relay_held?.rss_kib), "lower"],
  w4_relay_rss_per_conn_kib: ["W4 KiB/conn", (r) => r.W4?.relay_rss_per_conn_kib, "lower"],
  w4_relay_pss_per_conn_kib: ["W4 PSS KiB/conn", (r) => r.W4?.relay_pss_per_conn_kib, "lower"],
  w4_relay_after_close_rss_mib: [
    "W4 RSS after close MiB",
    (r) => mib(r.W4?.relay_after_close?.rss_kib),
    "lower",
  ],
  w4_retained_after_close_kib_per_conn: [
    "W4 kept after close KiB/conn",
    (r) =>
      r.W4?.ok > 0 && r.W4?.relay_held?.procs > 0
        ? (r.W4.relay_after_close.rss_kib - r.W4.relay_idle.rss_kib) / r.W4.ok
        : null,
    "lower",
  ],
  w4_relay_fd_peak_max: [
    "W4 peak fds (busiest relay process)",
    (r) => r.W4?.relay_fd_peak_max,
    "lower",
  ],
  w4_backend_rss_per_conn_kib: ["backend KiB/conn", (r) => r.W4?.backend_rss_per_conn_kib, "lower"],
  w5_p50_ms: ["W5 p50 ms", (r) => r.W5?.p50_ms, "lower"],
  w5_p99_ms: ["W5 p99 ms", (r) => r.W5?.p99_ms, "lower"],
  // a marked h2load run (error: failed requests, exit code, no h2) counts in no median
  w6_rps: ["W6 req/s", (r) => (r.W6?.error ? null : r.W6?.rps), "higher"],
  w6_p50_ms: ["W6 p50 ms", (r) => (r.W6?.error ? null : r.W6?.p50_ms), "lower"],
  w6_p99_ms: ["W6 p99 ms", (r) => (r.W6?.error ? null : r.W6?.p99_ms), "lower"],
  w6_relay_cpu_us_per_req: [
    "W6 CPU µs/req",
    (r) => (r.W6?.error ? null : r.W6?.relay_cpu_us_per_req),
    "lower",
  ],
  w6_failed: ["W6 failed", (r) => r.W6?.failed, "lower"],
  rss_at_start_mib: ["RSS at start MiB", (r) => mib(r.relay_rss_kib_at_start), "lower"],
  rss_after_w1_mib: ["RSS after W1 MiB", (r) => mib(r.W1?.relay_rss_kib_after), "lower"],
  rss_after_w2_mib: ["RSS after W2 MiB", (r) => mib(r.W2?.relay_rss_kib_after), "lower"],
  rss_after_w3_mib: ["RSS after W3 MiB", (r) => mib(r.W3?.relay_rss_kib_after), "lower"],
  relay_procs: ["relay procs", (r) => r.relay_procs, "lower"],
  start_s: ["start s", (r) => r.start_s, "lower"],
  errors: ["errors", errorsOf, "lower"],
};

const RATIO_KEYS = [
  "w1_rps",
  "w1_p50_ms",
  "w1_p99_ms",
  "w1_relay_cpu_us_per_req",
  "w2_rps",
  "w2_p50_ms",
  "w2_p99_ms",
  "w2_relay_cpu_us_per_req",
  "w3_mb_per_s",
  "w3_relay_cpu_s_per_gb",
  "w4_relay_rss_per_conn_kib",
  "w4_relay_held_rss_mib",
  "w5_p50_ms",
  "w5_p99_ms",
  "w4_relay_idle_rss_mib",
  "w6_rps",
  "w6_p50_ms",
  "w6_p99_ms",
  "w6_relay_cpu_us_per_req",
];

const atLeast = (x: number) => (r: number | null) => (r === null ? null : r >= x);
const atMost = (x: number) => (r: number | null) => (r === null ? null : r <= x);

/**
 * The issue-17 targets (DESIGN.md §9, v2), as ratios to `ref` (default haproxy2) in the same run;
 * `absolute` ones on tls-pass's own median.
 */
const TARGETS: {
  key: string;
  label: string;
  ok: (ratio: number | null, abs: number | null) => boolean | null;
  want: string;
  ref?: string;
  absolute?: boolean;
}[] = [
  { key: "w1_rps", label: "W1 req/s", want: "≥ 1.0 ×", ok: atLeast(1) },
  {
    key: "w1_relay_cpu_us_per_req",
    label: "W1 relay CPU per new connection",
    want: "≤ 1.2 ×",
    ok: atMost(1.2),
  },
  { key: "w2_rps", label: "W2 req/s", want: "≥ 1.25 ×", ok: atLeast(1.25) },
  { key: "w3_mb_per_s", label: "W3 MB/s", want: "≥ 1.1 ×", ok: atLeast(1.1) },
  {
    key: "w3_mb_per_s",
    label: "W3 MB/s vs haproxy2-splice",
    want: "≥ 1.0 ×",
    ref: "haproxy2-splice",
    ok: atLeast(1),
  },
  { key: "w3_relay_cpu_s_per_gb", label: "W3 relay CPU per GB", want: "≤ 0.8 ×", ok: atMost(0.8) },
  { key: "w5_p50_ms", label: "W5 p50", want: "≤ 1.0 ×", ok: atMost(1) },
  { key: "w5_p99_ms", label: "W5 p99", want: "≤ 1.1 ×", ok: atMost(1.1) },
  {
    key: "w4_relay_rss_per_conn_kib",
    label: "W4 RSS per held connection",
    want: "≤ 12 KiB",
    absolute: true,
    ok: (_r, a) => atMost(12)(a),
  },
  {
    key: "w4_relay_idle_rss_mib",
    label: "idle RSS of the relay processes",
    want: "≤ 160 MiB",
    absolute: true,
    ok: (_r, a) => atMost(160)(a),
  },
  { key: "w6_rps", label: "W6 HTTP/2 req/s", want: "≥ 1.0 ×", ok: atLeast(1) },
  {
    key: "w4_retained_after_close_kib_per_conn",
    label: "W4 memory returned after close",
    want: "returned or reused: read with the RSS columns",
    absolute: true,
    ok: () => null,
  },
];

export interface Meta {
  date: string;
  host: string;
  cpus: number;
  cpu: string;
  mem: string;
  rounds: number;
  workloads: string[];
  versions: Record<string, string>;
  params: Record<string, unknown>;
  /** topology → why it did not run ("not installed"). */
  unavailable: Record<string, string>;
  quick: boolean;
  /** `--v8-flags` of the run (DENO_V8_FLAGS of every Deno process it started), or null. */
  v8Flags?: string | null;
  /** /proc/loadavg (1, 5, 15 min) when the run started and ended: other load skews results. */
  loadavg: { start: string; end: string };
  /** `--replicas`: relay processes per tier (absent before issue 15: 1). */
  replicas?: number;
}

export interface Report {
  json: Record<string, unknown>;
  markdown: string;
}

/** The references ratios are computed against (each when it ran). */
const RATIO_REFS = ["direct", "haproxy2", "haproxy2-splice"];

export function buildReport(
  rawRows: Row[],
  topologies: string[],
  meta: Meta,
  names: Row[] = [],
): Report {
  const rows = rawRows.map(normalizeRow);
  const ran = topologies.filter((t) => !meta.unavailable[t]);
  const byTopo = Object.fromEntries(ran.map((t) => [t, rows.filter((r) => r.topology === t)]));

  const summary: Record<string, Row> = {};
  for (const t of ran) {
    const rs = byTopo[t]!;
    const ok = rs.filter((r) => !r.error);
    const s: Row = {
      rounds: rs.length,
      failed_rounds: rs.filter((r) => r.error).map((r) => ({ round: r.round, error: r.error })),
    };
    for (const [k, [, f]] of Object.entries(METRICS)) {
      const vals = ok.map(f).map((x) => (typeof x === "number" ? x : null));
      s[k] = { median: median(vals), min: min(vals), max: max(vals), samples: vals };
    }
    const pooled = ok.flatMap((r) => r.W3?.mb_per_s ?? []);
    s.w3_mb_per_s = {
      median: median(pooled),
      min: min(pooled),
      max: max(pooled),
      downloads: pooled,
    };
    s.w4_ok.worst = s.w4_ok.min;
    s.w4_attempted = ok.find((r) => r.W4)?.W4?.attempted ?? null;
    s.errors.total = s.errors.samples.reduce((a: number, b: number | null) => a + (b ?? 0), 0) +
      s.failed_rounds.length;
    summary[t] = s;
  }

  const ratios: Record<string, Record<string, Record<string, unknown>>> = {};
  for (const ref of RATIO_REFS.filter((x) => byTopo[x])) {
    ratios[ref] = {};
    for (const t of ran) {
      const per: Record<string, unknown> = {};
      for (const k of RATIO_KEYS) {
        const f = METRICS[k]![1];
        const xs: number[] = [];
        for (const r of byTopo[t]!) {
          const q = byTopo[ref]!.find((x) => x.round === r.round);
          if (!q || r.error || q.error) continue;
          const a = f(r);
          const b = f(q);
          if (typeof a === "number" && typeof b === "number" && b !== 0) xs.push(a / b);
        }
        per[k] = { median: median(xs), per_round: xs };
      }
      ratios[ref]![t] = per;
    }
  }

  const targets: Row[] = [];
  if (summary["tls-pass"]) {
    for (const tg of TARGETS) {
      const ref = tg.ref ?? "haproxy2";
      const ratio = tg.absolute
        ? null
        : ((ratios[ref]?.["tls-pass"]?.[tg.key] as Row | undefined)?.median ?? null);
      const abs = summary["tls-pass"][tg.key]?.median ?? null;
      const refMissing = !tg.absolute && !ratios[ref];
      const measured = meta.workloads.includes(tg.key.slice(0, 2).toUpperCase()) ||
        !/^w\d_/.test(tg.key);
      if (!measured) continue;
      targets.push({
        target: tg.label,
        want: tg.want,
        ref: tg.absolute ? null : ref,
        ratio,
        // the name of before issue 17, kept for readers of results.json
        ratio_vs_haproxy2: ref === "haproxy2" ? ratio : null,
        tls_pass: abs,
        met: refMissing ? null : tg.ok(ratio, abs),
      });
    }
  }

  const w7 = w7Summary(rows, ran);
  const json = {
    meta,
    topologies,
    summary,
    ratios,
    targets,
    w7,
    names,
    metrics: Object.fromEntries(
      Object.entries(METRICS).map(([k, [label, , better]]) => [k, { label, better }]),
    ),
  };
  let md = markdown(rows, topologies, ran, summary, ratios, targets, meta);
  if (meta.workloads.includes("W6")) md += h2Markdown(rows, topologies, ran, summary, ratios, meta);
  if (rows.some((r) => r.W4?.relay_fd_peak_by_role)) md += w4FdMarkdown(rows, ran);
  if (meta.workloads.includes("W7")) md += w7Markdown(w7, topologies, meta);
  if (names.length) md += namesMarkdown(names);
  return { json, markdown: md };
}

/**
 * W4's descriptors: per topology and relay process, the peak count of /proc/PID/fd while the
 * connections were opened and held (the largest over rounds) against that process's open-file
 * limit, and the same for the W4 client; connections held and errors beside them.
 */
export function w4FdMarkdown(rows: Row[], ran: string[]): string {
  const out: string[] = [
    "",
    "## W4 descriptors (peak of /proc/PID/fd per process, largest over rounds)",
    "",
  ];
  const lines: string[][] = [];
  for (const t of ran) {
    const rs = rows.filter((r) => r.topology === t && r.W4?.relay_fd_peak_by_role);
    if (!rs.length) continue;
    const held = rs.map((r) => `${fmt(r.W4.ok, 0)}/${fmt(r.W4.attempted, 0)}`).join(", ");
    const errors = rs.map((r) => {
      const e = Object.entries(r.W4.errors ?? {}).map(([k, v]) => `${k} ${v}`).join(", ");
      return `${fmt(r.W4.failed ?? 0, 0)}${e ? ` (${e})` : ""}`;
    }).join("; ");
    const kib = rs.map((r) => fmt(r.W4.relay_rss_per_conn_kib, 1)).join(", ");
    const roles = [...new Set(rs.flatMap((r) => Object.keys(r.W4.relay_fd_peak_by_role)))];
    const peakOf = (get: (r: Row) => unknown) =>
      max(rs.map((r) => (typeof get(r) === "number" ? get(r) as number : null)));
    const limitOf = (get: (r: Row) => unknown) =>
      min(rs.map((r) => (typeof get(r) === "number" ? get(r) as number : null)));
    const line = (proc: string, peak: number | null, limit: number | null): string[] => [
      t,
      proc,
      fmt(peak, 0),
      fmt(limit, 0),
      peak !== null && limit !== null ? (peak < limit ? "yes" : "no") : "–",
      held,
      errors,
      kib,
    ];
    for (const role of roles) {
      lines.push(line(
        role,
        peakOf((r) => r.W4.relay_fd_peak_by_role?.[role]),
        limitOf((r) => r.W4.relay_fd_limit_by_role?.[role]),
      ));
    }
    lines.push(line(
      "(W4 client)",
      peakOf((r) => r.W4.client_fd_peak),
      limitOf((r) => r.W4.client_fd_limit),
    ));
  }
  out.push(table(
    [
      "topology",
      "process",
      "peak fds",
      "open-file limit",
      "under it",
      "W4 held",
      "W4 errors",
      "KiB/conn (all relays)",
    ],
    lines,
  ));
  out.push("");
  out.push(
    "Peak fds = the most entries of /proc/PID/fd seen in any one process, counted every 250 ms " +
      "from the W4 client's start until the connections were released. A relayed connection " +
      "holds two descriptors in a relay process (client side and server side). KiB/conn = " +
      "(held − idle) RSS summed over every relay process, per held connection, per round.",
  );
  out.push("");
  return out.join("\n");
}

/** W7 per topology and burst size: medians over rounds, errors summed, ratios vs haproxy2. */
function w7Summary(rows: Row[], ran: string[]): Record<string, Record<string, Row>> {
  const out: Record<string, Record<string, Row>> = {};
  const sizes = [...new Set(rows.flatMap((r) => Object.keys(r.W7 ?? {})))]
    .sort((a, b) => Number(a) - Number(b));
  const stat = (xs: unknown[]) => ({ median: median(xs), min: min(xs), max: max(xs) });
  for (const t of ran) {
    const rs = rows.filter((r) => r.topology === t && r.W7);
    out[t] = {};
    for (const size of sizes) {
      const bursts = rs.map((r) => r.W7[size]).filter(Boolean);
      const ok = bursts.filter((b) => !b.error);
      const errors: Record<string, number> = {};
      for (const b of ok) {
        for (const [k, v] of Object.entries(b.errors ?? {})) {
          errors[k] = (errors[k] ?? 0) + (v as number);
        }
      }
      const netstat: Record<string, number> = {};
      for (const b of ok) {
        for (const [k, v] of Object.entries(b.netstat_delta ?? {})) {
          netstat[k] = (netstat[k] ?? 0) + (v as number);
        }
      }
      const per = (k: string) => stat(ok.map((b) => b[k]));
      // per round: this topology / haproxy2, same round, same size
      const ratio = (k: string) =>
        median(rs.map((r) => {
          const q = rows.find((x) => x.topology === "haproxy2" && x.round === r.round);
          const a = r.W7?.[size]?.[k];
          const b = q?.W7?.[size]?.[k];
          return typeof a === "number" && typeof b === "number" && b !== 0 ? a / b : null;
        }));
      out[t]![size] = {
        bursts: bursts.length,
        failed_starts: bursts.filter((b) => b.error).map((b) => b.error),
        attempted: Number(size),
        served: per("served"),
        handshakes: per("handshakes"),
        setup_p50_ms: per("setup_p50_ms"),
        setup_p99_ms: per("setup_p99_ms"),
        setup_max_ms: per("setup_max_ms"),
        connect_p99_ms: per("connect_p99_ms"),
        total_p99_ms: per("total_p99_ms"),
        start_spread_ms: per("start_spread_ms"),
        hello_spread_ms: per("hello_spread_ms"),
        relay_cpu_ms_per_client: per("relay_cpu_ms_per_client"),
        client_cpu_ms_per_client: per("client_cpu_ms_per_client"),
        errors,
        netstat_delta: netstat,
        vs_haproxy2: {
          served: ratio("served"),
          setup_p50_ms: ratio("setup_p50_ms"),
          setup_p99_ms: ratio("setup_p99_ms"),
        },
      };
    }
  }
  return out;
}

function w7Markdown(
  w7: Record<string, Record<string, Row>>,
  all: string[],
  meta: Meta,
): string {
  const p = meta.params as Record<string, unknown>;
  const sizes = [...new Set(Object.values(w7).flatMap((x) => Object.keys(x)))]
    .sort((a, b) => Number(a) - Number(b));
  const out: string[] = ["", "## W7: bursts of new TLS clients", ""];
  out.push(
    `Each burst on freshly started relays: N clients whose connect() calls start ${
      Number(p.w7WindowMs) > 0 ? `spread over ${p.w7WindowMs} ms` : "at once"
    } (${p.w7Procs} ${p.w7Client} client processes on one schedule; the spreads actually ` +
      "measured are in the details), each a verified TLS handshake (SNI " +
      "test.internal-server.local) and one POST /jsonrpc, then closed; " +
      `${Number(p.w7DeadlineMs) / 1000} s deadline per client. served = answered ` +
      '{"message":"success"}, worst round; set-up = connect() to handshake complete, medians ' +
      "over rounds of each burst's p50/p99; × haproxy2 = median of per-round ratios.",
  );
  out.push("");
  const head = ["topology"];
  for (const n of sizes) {
    const k = Number(n).toLocaleString("en-US");
    head.push(`${k}: served`, `${k}: p50 ms`, `${k}: p99 ms`, `${k}: p50/p99 × haproxy2`);
  }
  const fmtStat = (x: Row | undefined, d: number) => fmt(x?.median, d);
  out.push(table(
    head,
    all.filter((t) => w7[t]).map((t) => [
      t,
      ...sizes.flatMap((n) => {
        const x = w7[t]![n];
        if (!x) return ["–", "–", "–", "–"];
        if (x.failed_starts.length === x.bursts) {
          return [`failed: ${x.failed_starts[0] ?? "no burst ran"}`, "", "", ""];
        }
        const v = x.vs_haproxy2 as Row;
        return [
          `${fmt(x.served.min, 0)}/${n}`,
          fmtStat(x.setup_p50_ms, 1),
          fmtStat(x.setup_p99_ms, 1),
          t === "haproxy2" ? "1" : `${fmt(v.setup_p50_ms, 2)} / ${fmt(v.setup_p99_ms, 2)}`,
        ];
      }),
    ]),
  ));
  out.push("");
  out.push("### W7 details (medians over rounds; failures and counters summed over rounds)");
  out.push("");
  const lines: string[][] = [];
  for (const t of all.filter((t) => w7[t])) {
    for (const n of sizes) {
      const x = w7[t]![n];
      if (!x || x.failed_starts.length === x.bursts) continue;
      const errs = Object.entries(x.errors as Record<string, number>)
        .sort((a, b) => b[1] - a[1]).map(([k, v]) => `${v} × ${k}`).join("; ");
      const ns = x.netstat_delta as Record<string, number>;
      lines.push([
        t,
        n,
        `${fmt(x.served.min, 0)}–${fmt(x.served.max, 0)}`,
        fmt(x.handshakes.median, 0),
        fmt(x.setup_max_ms.median, 0),
        fmt(x.connect_p99_ms.median, 1),
        fmt(x.total_p99_ms.median, 1),
        `${fmt(x.start_spread_ms.max, 0)} / ${fmt(x.hello_spread_ms.max, 0)}`,
        `${ns.ListenOverflows ?? "–"} / ${ns.TCPReqQFullDrop ?? "–"} / ${ns.SyncookiesSent ?? "–"}`,
        `${fmt(x.relay_cpu_ms_per_client.median, 2)} / ${
          fmt(x.client_cpu_ms_per_client.median, 2)
        }`,
        errs || "none",
      ]);
    }
  }
  out.push(table(
    [
      "topology",
      "clients",
      "served (min–max)",
      "handshakes",
      "set-up max ms",
      "TCP connect p99 ms",
      "answer p99 ms",
      "spread ms: connect() / hello (max)",
      "listen overflows / SYN drops / SYN cookies",
      "CPU ms/client: relays / clients",
      "failures by error (stage: code)",
    ],
    lines,
  ));
  out.push("");
  out.push(
    "spread = first to last connect() call, and first to last ClientHello written (TCP " +
      "connected), of the burst over all client processes. The " +
      "listen counters are /proc/net/netstat TcpExt deltas over the burst (the whole network " +
      "namespace: anything else running counts too); a connect p99 near 1,000 ms or more is a " +
      "SYN retransmitted after a drop. The errors column of the tables above does not count W7.",
  );
  out.push("");
  return out.join("\n");
}

/**
 * W6: HTTP/2 multiplexed (h2load) per topology: median req/s with min–max over the rounds that
 * count, latency, relay CPU, ratios vs haproxy2 (median and min–max of the per-round ratios),
 * and every marked run (failed requests, an h2load error) by round: those count in no median.
 */
function h2Markdown(
  rows: Row[],
  all: string[],
  ran: string[],
  summary: Record<string, Row>,
  ratios: Record<string, Record<string, Record<string, unknown>>>,
  meta: Meta,
): string {
  const p = meta.params as Record<string, number>;
  const out: string[] = ["", "## W6: HTTP/2 multiplexed (h2load)", ""];
  out.push(
    `\`h2load -n ${p.w6Requests} -c ${p.w6Conns} -m ${p.w6Streams}\` per round: the W1/W2 POST ` +
      `/jsonrpc on ${p.w6Conns} TLS connections (ALPN h2, SNI test.internal-server.local), ` +
      `${p.w6Streams} streams in flight on each, through the path to nginx's HTTP/2. req/s = ` +
      "h2load's (connections' set-up included), median over rounds with min–max; p50/p99 = " +
      "request time from h2load's per-request log, medians over rounds; CPU = all relay " +
      "processes per request; × = median (min–max) of per-round ratios. A run with a failed " +
      "request or an h2load error is marked below and left out of the medians.",
  );
  out.push("");
  const rr = (ref: string, t: string): string => {
    const x = ratios[ref]?.[t]?.w6_rps as Row | undefined;
    if (!x || x.median === null) return "–";
    const per = (x.per_round as number[]) ?? [];
    return per.length > 1
      ? `${fmt(x.median, 2)} (${fmt(Math.min(...per), 2)}–${fmt(Math.max(...per), 2)})`
      : fmt(x.median, 2);
  };
  const marked: string[] = [];
  const lines = all.map((t) => {
    if (meta.unavailable[t]) return [t, meta.unavailable[t]!, "", "", "", "", "", "", ""];
    if (!ran.includes(t) || !summary[t]) return [t, "not run", "", "", "", "", "", "", ""];
    const rs = rows.filter((r) => r.topology === t && !r.error && r.W6);
    const bad = rs.filter((r) => r.W6.error);
    for (const r of bad) marked.push(`${t} round ${r.round}: ${r.W6.error}`);
    const s = summary[t]!;
    const counted = rs.length - bad.length;
    return [
      t,
      counted ? fmt(s.w6_rps.median, 0) : "failed",
      counted ? `${fmt(s.w6_rps.min, 0)}–${fmt(s.w6_rps.max, 0)}` : "–",
      fmt(s.w6_p50_ms.median, 2),
      fmt(s.w6_p99_ms.median, 2),
      t === "direct" ? "–" : fmt(s.w6_relay_cpu_us_per_req.median, 1),
      t === "haproxy2" ? "1" : rr("haproxy2", t),
      t === "direct" ? "1" : rr("direct", t),
      `${counted}/${rs.length}${bad.length ? " †" : ""}`,
    ];
  });
  out.push(table(
    [
      "topology",
      "W6 req/s",
      "min–max",
      "p50 ms",
      "p99 ms",
      "CPU µs/req",
      "× haproxy2",
      "× direct",
      "runs counted",
    ],
    lines,
  ));
  out.push("");
  out.push(
    marked.length
      ? `† marked, not counted: ${marked.join("; ")}.`
      : "Every h2load run served all its requests over HTTP/2.",
  );
  out.push("");
  return out.join("\n");
}

function namesMarkdown(names: Row[]): string {
  const out: string[] = ["", "## Names: start-up and memory with N announcements (tls-pass)", ""];
  out.push(
    "The private proxy announces N names (n1.bench.local … and test.internal-server.local " +
      "last, all to the backend), the directory allows .bench.local. start-up = from spawning " +
      "the private proxy until both proxies printed their ready line and POST /jsonrpc for " +
      "test.internal-server.local was answered through :4433; RSS 2 s after that. The EPS " +
      "servers are started with them (public-eps / private-eps). Settings parse = parsing the " +
      "private settings YAML once in the bench process, for scale.",
  );
  out.push("");
  out.push(table(
    [
      "N",
      "start-up s",
      "public RSS MiB",
      "private RSS MiB",
      "EPS RSS MiB",
      "private ready s",
      "public ready s",
      "first served s",
      "settings MB",
      "settings parse s",
    ],
    names.map((x) =>
      x.error
        ? [Number(x.names).toLocaleString("en-US"), `failed: ${x.error}`, ...Array(8).fill("")]
        : [
          Number(x.names).toLocaleString("en-US"),
          fmt(x.startup_s, 2),
          fmt(x.rss_mib?.public, 1),
          fmt(x.rss_mib?.private, 1),
          `${fmt(x.rss_mib?.["public-eps"], 1)} / ${fmt(x.rss_mib?.["private-eps"], 1)}`,
          fmt(x.ready_s?.private, 2),
          fmt(x.ready_s?.public, 2),
          fmt(x.served_s, 2),
          fmt(x.settings_bytes / 1e6, 1),
          fmt(x.settings_parse_s, 2),
        ]
    ),
  ));
  out.push("");
  out.push(
    "Caps: the private settings take at most 100,000 announcements; the public proxy's " +
      "max_announcements_per_operator defaults to 100,000.",
  );
  out.push("");
  return out.join("\n");
}

const fmt = (x: unknown, d = 1) => typeof x === "number" && Number.isFinite(x) ? x.toFixed(d) : "–";

function table(head: string[], lines: string[][]): string {
  return [
    `| ${head.join(" | ")} |`,
    `| ${head.map((_, i) => (i ? "---:" : "---")).join(" | ")} |`,
    ...lines.map((l) => `| ${l.join(" | ")} |`),
  ].join("\n");
}

function markdown(
  rows: Row[],
  all: string[],
  ran: string[],
  summary: Record<string, Row>,
  ratios: Record<string, Record<string, Record<string, unknown>>>,
  targets: Row[],
  meta: Meta,
): string {
  const m = (t: string, k: string, d: number) => fmt(summary[t]![k].median, d);
  const p = meta.params as Record<string, number>;
  const out: string[] = [];
  // A topology that did not run, or failed every round, gets one cell saying why.
  const why = (t: string) =>
    meta.unavailable[t] ??
      (summary[t] && summary[t].rounds === summary[t].failed_rounds.length
        ? `failed: ${summary[t].failed_rounds[0]?.error ?? "no round ran"}`
        : undefined);
  const missing = (t: string, width: number) => [t, why(t) ?? "", ...Array(width).fill("")];
  out.push(`# tls-pass benchmark ${meta.date}${meta.quick ? " (quick)" : ""}`);
  out.push("");
  out.push(
    `Machine: ${meta.cpus} × ${meta.cpu}, ${meta.mem}, ${meta.host}. Versions: ` +
      Object.entries(meta.versions).map(([k, v]) => `${k} ${v}`).join(", ") + ".",
  );
  out.push(
    `Rounds: ${meta.rounds} (topology order rotated each round); medians over rounds. ` +
      `Workloads ${
        meta.workloads.join(",")
      }; concurrency ${p.concurrency}; W1 ${p.w1Seconds} s × ` +
      `${p.w1Procs} ab; W2 ${p.w2Seconds} s wrk; W3 ${p.w3Repeats} × ${p.blobMib} MiB per round; ` +
      `W4 ${p.w4Conns} connections; W5 ${p.w5Count} handshakes per round` +
      (meta.workloads.includes("W6")
        ? `; W6 h2load -n ${p.w6Requests} -c ${p.w6Conns} -m ${p.w6Streams}`
        : "") +
      (meta.workloads.includes("W7") && Array.isArray(p.w7Sizes)
        ? `; W7 bursts of ${(p.w7Sizes as unknown as number[]).join(", ")} clients`
        : "") +
      ". Load average " +
      `(1/5/15 min) at start ${meta.loadavg.start}, at end ${meta.loadavg.end}: anything else ` +
      "running on the machine skews the figures; the ratios (same run) less so." +
      (meta.v8Flags ? ` V8 flags of the Deno processes: \`${meta.v8Flags}\`.` : "") +
      ((meta.replicas ?? 1) > 1
        ? ` Replicas: ${meta.replicas} relay processes per tier (tls-pass: ${meta.replicas} ` +
          `public replicas on one port with reuse_port and store: redis, ${meta.replicas} ` +
          `private instances; HAProxy: ${meta.replicas} processes per tier, SO_REUSEPORT).`
        : ""),
  );
  out.push("");
  // only W6, W7 and/or names ran: their own sections follow, the W1–W5 tables would be empty
  if (!meta.workloads.some((w) => /^W[1-5]$/.test(w))) return out.join("\n");
  out.push("## Results (medians)");
  out.push("");
  const head = [
    "topology",
    "W1 req/s",
    "W1 p50 ms",
    "W1 p99 ms",
    "W2 req/s",
    "W2 p50 ms",
    "W2 p99 ms",
    "W3 MB/s",
    "W4 ok",
    "W4 RSS MiB",
    "W4 KiB/conn",
    "W4 after close MiB",
    "W5 p50 ms",
    "W5 p99 ms",
    "errors",
  ];
  out.push(table(
    head,
    all.map((t) =>
      why(t) ? missing(t, head.length - 2) : [
        t,
        m(t, "w1_rps", 0),
        m(t, "w1_p50_ms", 1),
        m(t, "w1_p99_ms", 1),
        m(t, "w2_rps", 0),
        m(t, "w2_p50_ms", 2),
        m(t, "w2_p99_ms", 2),
        m(t, "w3_mb_per_s", 0),
        `${fmt(summary[t]!.w4_ok.worst, 0)}/${fmt(summary[t]!.w4_attempted, 0)}`,
        m(t, "w4_relay_held_rss_mib", 1),
        m(t, "w4_relay_rss_per_conn_kib", 1),
        m(t, "w4_relay_after_close_rss_mib", 1),
        m(t, "w5_p50_ms", 2),
        m(t, "w5_p99_ms", 2),
        fmt(summary[t]!.errors.total, 0),
      ]
    ),
  ));
  out.push("");
  out.push(
    "W4 ok = connections whose TLS handshake completed, worst round. W4 RSS = all relay " +
      "processes (and their descendants) while holding them; KiB/conn = (held − idle) / ok, on " +
      "freshly started relays (W4 runs first in each round); after close = 1 s after the " +
      "connections closed.",
  );
  out.push("");
  out.push("## Relay cost");
  out.push("");
  const costHead = [
    "topology",
    "relay procs",
    "W1 CPU µs/req",
    "W2 CPU µs/req",
    "W3 CPU s/GB",
    "kernel share W1/W2/W3",
    "RSS MiB: start",
    "after W4",
    "after W1",
    "after W2",
    "after W3",
    "W4 PSS KiB/conn",
  ];
  out.push(table(
    costHead,
    all.map((t) =>
      why(t) ? missing(t, costHead.length - 2) : [
        t,
        m(t, "relay_procs", 0),
        m(t, "w1_relay_cpu_us_per_req", 0),
        m(t, "w2_relay_cpu_us_per_req", 1),
        m(t, "w3_relay_cpu_s_per_gb", 2),
        `${m(t, "w1_relay_sys_share", 2)} / ${m(t, "w2_relay_sys_share", 2)} / ${
          m(t, "w3_relay_sys_share", 2)
        }`,
        m(t, "rss_at_start_mib", 1),
        m(t, "w4_relay_after_close_rss_mib", 1),
        m(t, "rss_after_w1_mib", 1),
        m(t, "rss_after_w2_mib", 1),
        m(t, "rss_after_w3_mib", 1),
        m(t, "w4_relay_pss_per_conn_kib", 1),
      ]
    ),
  ));
  out.push("");
  out.push(
    "CPU = user+system time of all relay processes (for tls-pass: both proxies and both EPS " +
      "servers) during the workload, per request or per GB.",
  );
  const roleRows: string[][] = [];
  for (const t of ran.filter((t) => !why(t))) {
    const ok = rows.filter((r) => r.topology === t && !r.error);
    const roles = Object.keys(ok[0]?.relay_pids ?? {});
    for (const role of roles) {
      const per = (w: string, n: (r: Row) => number | null, scale: number) =>
        median(ok.map((r) => {
          const s = r[w]?.relay_cpu_s_by_role?.[role];
          const d = n(r);
          return typeof s === "number" && d ? (s * scale) / d : null;
        }));
      const w4 = (r: Row, k: string) => r.W4?.relay_rss_kib_by_role?.[k]?.[role];
      roleRows.push([
        t,
        role,
        fmt(per("W1", (r) => r.W1?.requests ?? null, 1e6), 0),
        fmt(per("W2", (r) => r.W2?.requests ?? null, 1e6), 1),
        fmt(
          per(
            "W3",
            (
              r,
            ) => (r.W3?.mb_per_s?.length
              ? r.W3.mb_per_s.length * (p.blobMib ?? 256) * 1.048576e-3
              : null),
            1,
          ),
          2,
        ),
        fmt(median(ok.map((r) => mib(w4(r, "idle")))), 1),
        fmt(
          median(ok.map((r) => (r.W4?.ok ? (w4(r, "held") - w4(r, "idle")) / r.W4.ok : null))),
          1,
        ),
        fmt(median(ok.map((r) => mib(w4(r, "after_close")))), 1),
      ]);
    }
  }
  if (roleRows.length) {
    out.push("");
    out.push(
      "### By relay process (medians; CPU per request or GB, RSS of that process and its descendants)",
    );
    out.push("");
    out.push(table(
      [
        "topology",
        "process",
        "W1 CPU µs/req",
        "W2 CPU µs/req",
        "W3 CPU s/GB",
        "idle RSS MiB",
        "W4 KiB/conn",
        "W4 after close MiB",
      ],
      roleRows,
    ));
  }
  for (const ref of RATIO_REFS) {
    // haproxy2-splice as a reference only when it ran (the other two always get a section)
    if (ref === "haproxy2-splice" && !ratios[ref]) continue;
    out.push("");
    out.push(
      `## Ratios vs ${ref} (median of per-round ratios; >1 means more: better for req/s and ` +
        "MB/s, worse for ms, CPU, KiB)",
    );
    out.push("");
    if (meta.unavailable[ref] || !ratios[ref]) {
      out.push(`${ref}: ${meta.unavailable[ref] ?? "not measured in this run"}.`);
      continue;
    }
    const keys = (ref === "direct"
      ? [
        "w1_rps",
        "w1_p50_ms",
        "w1_p99_ms",
        "w2_rps",
        "w2_p50_ms",
        "w2_p99_ms",
        "w3_mb_per_s",
        "w5_p50_ms",
        "w5_p99_ms",
        "w6_rps",
      ]
      : [
        "w1_rps",
        "w1_p50_ms",
        "w1_p99_ms",
        "w2_rps",
        "w2_p50_ms",
        "w2_p99_ms",
        "w3_mb_per_s",
        "w5_p50_ms",
        "w5_p99_ms",
        "w1_relay_cpu_us_per_req",
        "w2_relay_cpu_us_per_req",
        "w3_relay_cpu_s_per_gb",
        "w4_relay_rss_per_conn_kib",
        "w6_rps",
        "w6_relay_cpu_us_per_req",
      ]).filter((k) => meta.workloads.includes(k.slice(0, 2).toUpperCase()));
    // vs haproxy2: every relay (haproxy2-splice too); vs haproxy2-splice: the others but haproxy2
    const rows = all.filter((t) =>
      t !== ref && !(ref !== "direct" && (t === "direct" || t === "haproxy2"))
    );
    if (rows.length === 0) {
      out.push(`No other topology to compare with ${ref} in this run.`);
      continue;
    }
    out.push(table(
      ["topology", ...keys.map((k) => METRICS[k]![0])],
      rows.map((t) =>
        why(t) || !ratios[ref]![t]
          ? missing(t, keys.length - 1)
          : [t, ...keys.map((k) => fmt((ratios[ref]![t]![k] as Row).median, 2))]
      ),
    ));
  }
  if (targets.length) {
    out.push("");
    out.push("## Targets (issue 17, DESIGN.md §9 v2): tls-pass vs HAProxy in this run");
    out.push("");
    out.push(table(
      ["target", "wanted", "vs", "ratio", "tls-pass", "met"],
      targets.map((t) => [
        t.target,
        t.want,
        t.ref ?? "absolute",
        fmt(t.ratio, 2),
        fmt(t.tls_pass, 1),
        t.met === null ? "–" : t.met ? "yes" : "no",
      ]),
    ));
    out.push("");
    out.push(
      "Noise on these machines is about ±8 % for request rates and ±15 % for MB/s: repeat a " +
        "run before calling a close result.",
    );
  }
  out.push("");
  out.push("## Spread (min–max over rounds)");
  out.push("");
  const mm = (t: string, k: string, d: number) =>
    `${fmt(summary[t]![k].min, d)}–${fmt(summary[t]![k].max, d)}`;
  out.push(table(
    [
      "topology",
      "W1 req/s",
      "W2 req/s",
      "W3 MB/s (all downloads)",
      "W5 p50 ms",
      "W6 req/s",
      "W1 CPU µs/req",
    ],
    ran.filter((t) => !why(t)).map((t) => [
      t,
      mm(t, "w1_rps", 0),
      mm(t, "w2_rps", 0),
      mm(t, "w3_mb_per_s", 0),
      mm(t, "w5_p50_ms", 2),
      mm(t, "w6_rps", 0),
      mm(t, "w1_relay_cpu_us_per_req", 0),
    ]),
  ));
  const failed = ran.flatMap((t) =>
    (summary[t]!.failed_rounds as Row[]).map((f) => `${t} round ${f.round}: ${f.error}`)
  );
  if (failed.length) {
    out.push("");
    out.push("Failed rounds: " + failed.join("; "));
  }
  out.push("");
  return out.join("\n");
}
