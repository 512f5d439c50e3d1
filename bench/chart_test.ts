import assert from "node:assert/strict";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { XMLValidator } from "fast-xml-parser";
import { compact, panelsOf, renderChart } from "./chart.ts";
import { buildReport, type Meta, type Row } from "./report.ts";

const results = join(dirname(fileURLToPath(import.meta.url)), "results");

function assertWellFormed(svg: string): void {
  const v = XMLValidator.validate(svg);
  assert.equal(v, true, `not well-formed XML: ${JSON.stringify(v)}`);
  assert.match(
    svg,
    /^<\?xml version="1\.0" encoding="UTF-8"\?>\n<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"/,
  );
}

const meta: Meta = {
  date: "2026-12-07T15:00:00Z",
  host: "Linux test",
  cpus: 2,
  cpu: "test",
  mem: "1 GiB",
  rounds: 2,
  workloads: ["W1", "W3", "W6"],
  versions: {},
  params: { w6Requests: 100, w6Conns: 10, w6Streams: 10 },
  unavailable: {},
  quick: false,
  loadavg: { start: "0 0 0", end: "0 0 0" },
};

function row(topology: string, round: number, w1: number, w6: number, w6Error?: string): Row {
  return {
    topology,
    round,
    W1: { rps: w1, requests: w1 * 8 },
    W3: { mb_per_s: [w1 / 2, w1 / 2 + 10] },
    W6: {
      rps: w6,
      failed: w6Error ? 3 : 0,
      p50_ms: 1,
      p99_ms: 2,
      ...(w6Error ? { error: w6Error } : {}),
    },
  };
}

const rows = [
  row("tls-pass", 1, 900, 20_000),
  row("haproxy2", 1, 1000, 25_000),
  row("haproxy2-splice", 1, 1010, 26_000),
  row("direct", 1, 1500, 60_000),
  row("tls-pass", 2, 950, 5_000, "3 of 100 requests failed"),
  row("haproxy2", 2, 1050, 24_000),
  row("haproxy2-splice", 2, 1000, 25_500),
  row("direct", 2, 1600, 61_000),
];
const topologies = ["tls-pass", "haproxy2", "haproxy2-splice", "direct"];

Deno.test("renderChart() writes well-formed SVG: a panel per figure, bars, ratios", () => {
  const { json } = buildReport(rows, topologies, meta);
  const svg = renderChart(json);
  assertWellFormed(svg);
  const titles = panelsOf(json).map((p) => p.title);
  assert.deepEqual(titles, [
    "W1 req/s (new TLS connection each)",
    "W3 MB/s (bulk download)",
    "W6 req/s (HTTP/2, h2load)",
  ]);
  // W1: per-round ratios 0.9 and 0.905 → median 0.9025
  assert.match(svg, /tls-pass \/ haproxy2 = 0\.90 ×/);
  // W6: the marked run of round 2 counts in no median and no ratio
  assert.match(svg, /tls-pass \/ haproxy2 = 0\.80 ×/);
  for (const t of topologies) assert.ok(svg.includes(`>${t}</text>`), t);
  // a min–max whisker where rounds differ
  assert.match(svg, /<path d="M[\d.]+ [\d.]+V[\d.]+/);
});

Deno.test("renderChart() escapes names and copes with an empty run", () => {
  const odd = rows.map((r) => (r.topology === "direct" ? { ...r, topology: `a<b&"c'` } : r));
  const svg = renderChart(buildReport(odd, [...topologies.slice(0, 3), `a<b&"c'`], meta).json);
  assertWellFormed(svg);
  assert.ok(svg.includes("a&lt;b&amp;&quot;c&apos;"));
  const empty = renderChart({ meta: { date: "x" }, summary: {} });
  assertWellFormed(empty);
  assert.match(empty, /No figures in this run/);
});

Deno.test("renderChart() reads a results.json of before issue 17 (bursts as w6)", async () => {
  const old = JSON.parse(await Deno.readTextFile(join(results, "after-wave-2026-12-07.json")));
  assert.ok(old.w6 && !old.w7);
  const svg = renderChart(old);
  assertWellFormed(svg);
  const titles = panelsOf(old).map((p) => p.title);
  assert.ok(titles.includes("W7 burst of 2,000: set-up p50 ms"), titles.join(", "));
  assert.ok(!titles.includes("W6 req/s (HTTP/2, h2load)"));
});

Deno.test("compact() keeps labels short", () => {
  assert.equal(compact(123456), "123k");
  assert.equal(compact(45678), "45.7k");
  assert.equal(compact(1234), "1,234");
  assert.equal(compact(12.34), "12.3");
  assert.equal(compact(0.1234), "0.12");
});
