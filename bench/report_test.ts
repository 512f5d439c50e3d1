import assert from "node:assert/strict";
import {
  buildReport,
  type Meta,
  normalizeResults,
  normalizeRow,
  type Row,
  w4FdMarkdown,
} from "./report.ts";

const meta: Meta = {
  date: "2026-12-07T15:00:00Z",
  host: "Linux test",
  cpus: 2,
  cpu: "test",
  mem: "1 GiB",
  rounds: 2,
  workloads: ["W3", "W6", "W7"],
  versions: {},
  params: { w6Requests: 100, w6Conns: 10, w6Streams: 10, w7Sizes: [2000] },
  unavailable: {},
  quick: false,
  loadavg: { start: "0 0 0", end: "0 0 0" },
};

const burst = { attempted: 2000, served: 2000, "setup_p50_ms": 900, errors: {} };

Deno.test("normalizeRow() reads an old burst record (W6) as W7, leaves a new W6 alone", () => {
  const old = { topology: "tls-pass", round: 1, W6: { "1000": burst, "2000": burst } };
  assert.deepEqual(normalizeRow(old), {
    topology: "tls-pass",
    round: 1,
    W7: { "1000": burst, "2000": burst },
  });
  const h2 = { topology: "tls-pass", round: 1, W6: { rps: 10, failed: 0 } };
  assert.equal(normalizeRow(h2), h2);
  const failed = { topology: "tls-pass", round: 1, W6: { error: "h2load not installed" } };
  assert.equal(normalizeRow(failed), failed);
});

Deno.test("normalizeResults() renames an old results.json's w6 bursts, workloads and params", () => {
  const old = {
    meta: { workloads: ["W1", "W6", "names"], params: { w6Sizes: [1000], w6Client: "node" } },
    summary: {},
    w6: { "tls-pass": { "1000": burst }, haproxy2: {} },
  };
  const n = normalizeResults(old);
  assert.equal(n.w6, undefined);
  assert.deepEqual(n.w7, old.w6);
  assert.deepEqual(n.meta.workloads, ["W1", "W7", "names"]);
  assert.deepEqual(n.meta.params, { w7Sizes: [1000], w7Client: "node" });
  const fresh = { meta: { workloads: ["W6"] }, summary: {}, w7: {} };
  assert.equal(normalizeResults(fresh), fresh);
});

Deno.test("buildReport() leaves a marked h2load run out of W6's medians and says so", () => {
  const h2 = (rps: number, error?: string) => ({
    rps,
    failed: error ? 7 : 0,
    p50_ms: 1,
    p99_ms: 3,
    relay_cpu_us_per_req: 10,
    ...(error ? { error } : {}),
  });
  const rows: Row[] = [
    { topology: "tls-pass", round: 1, W3: { mb_per_s: [800] }, W6: h2(30_000) },
    { topology: "haproxy2", round: 1, W3: { mb_per_s: [820] }, W6: h2(25_000) },
    { topology: "haproxy2-splice", round: 1, W3: { mb_per_s: [760] }, W6: h2(26_000) },
    { topology: "tls-pass", round: 2, W3: { mb_per_s: [900] }, W6: h2(1_000, "7 of 100 failed") },
    { topology: "haproxy2", round: 2, W3: { mb_per_s: [800] }, W6: h2(24_000) },
    { topology: "haproxy2-splice", round: 2, W3: { mb_per_s: [820] }, W6: h2(27_000) },
    // an old burst record, as raw.jsonl of before issue 17 has it
    { topology: "tls-pass", round: 3, error: "start failed: x", W6: { "2000": burst } },
  ];
  const { json, markdown } = buildReport(rows, ["tls-pass", "haproxy2", "haproxy2-splice"], meta);
  const s = json.summary as Record<string, Row>;
  assert.equal(s["tls-pass"]!.w6_rps.median, 30_000);
  assert.deepEqual(s["tls-pass"]!.w6_rps.samples, [30_000, null]);
  assert.equal(s["tls-pass"]!.errors.total, 7 + 1);
  const ratios = json.ratios as Row;
  assert.deepEqual(ratios.haproxy2["tls-pass"].w6_rps.per_round, [1.2]);
  assert.ok(ratios["haproxy2-splice"]["tls-pass"], "haproxy2-splice is a reference");
  assert.match(markdown, /## W6: HTTP\/2 multiplexed \(h2load\)/);
  assert.match(markdown, /\| tls-pass \| 30000 \| 30000–30000 \|.*\| 1\/2 † \|/);
  assert.match(markdown, /† marked, not counted: tls-pass round 2: 7 of 100 failed\./);
  assert.match(markdown, /## Ratios vs haproxy2-splice/);
  const targets = json.targets as Row[];
  const w3Splice = targets.find((t) => t.target === "W3 MB/s vs haproxy2-splice")!;
  assert.equal(w3Splice.ref, "haproxy2-splice");
  assert.equal(targets.find((t) => t.target === "W6 HTTP/2 req/s")!.met, true);
  // W1 did not run: no W1 target
  assert.ok(!targets.some((t) => t.target.startsWith("W1")));
});

Deno.test("w4FdMarkdown() gives each process's peak descriptors against its limit", () => {
  const w4 = (peak: Record<string, number>, client: number) => ({
    attempted: 10_000,
    ok: 10_000,
    failed: 0,
    errors: {},
    relay_rss_per_conn_kib: 4.7,
    relay_fd_peak_by_role: peak,
    relay_fd_limit_by_role: Object.fromEntries(Object.keys(peak).map((k) => [k, 20_000])),
    client_fd_peak: client,
    client_fd_limit: 20_000,
  });
  const rows: Row[] = [
    { topology: "tls-pass", round: 1, W4: w4({ "public-1": 9_961, "public-2": 20_000 }, 10_020) },
    { topology: "haproxy2", round: 1, W4: { ...w4({ "public-1": 10_018 }, 10_020), failed: 2 } },
  ];
  const md = w4FdMarkdown(rows, ["tls-pass", "haproxy2"]);
  assert.match(
    md,
    /\| tls-pass \| public-1 \| 9961 \| 20000 \| yes \| 10000\/10000 \| 0 \| 4\.7 \|/,
  );
  assert.match(md, /\| tls-pass \| public-2 \| 20000 \| 20000 \| no \|/);
  assert.match(md, /\| tls-pass \| \(W4 client\) \| 10020 \| 20000 \| yes \|/);
  assert.match(md, /\| haproxy2 \| public-1 \| 10018 \| 20000 \| yes \| 10000\/10000 \| 2 \|/);
  const { markdown } = buildReport(rows, ["tls-pass", "haproxy2"], { ...meta, workloads: ["W4"] });
  assert.match(markdown, /## W4 descriptors/);
});
