import assert from "node:assert/strict";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { h2loadDurations, h2loadMs, h2loadProblem, parseH2load } from "./workloads.ts";
import { http2Directives } from "./backend.ts";

const testdata = join(dirname(fileURLToPath(import.meta.url)), "testdata");
const ok = Deno.readTextFileSync(join(testdata, "h2load_ok.txt"));
const refused = Deno.readTextFileSync(join(testdata, "h2load_refused.txt"));

Deno.test("h2loadMs() reads h2load's units", () => {
  assert.equal(h2loadMs("30us"), 0.03);
  assert.equal(h2loadMs("4.45ms"), 4.45);
  assert.equal(h2loadMs("1.5s"), 1500);
  assert.equal(h2loadMs("12"), null);
});

Deno.test("parseH2load() reads a complete run (nghttp2 1.52)", () => {
  const s = parseH2load(ok);
  assert.ok(s);
  assert.equal(s.protocol, "h2");
  assert.equal(s.rps, 60498.45);
  assert.equal(s.finished_ms, 330.59);
  assert.deepEqual(
    [s.total, s.started, s.done, s.succeeded, s.failed, s.errored, s.timeout, s.status_2xx],
    [20000, 20000, 20000, 20000, 0, 0, 0, 20000],
  );
  assert.equal(s.request_mean_ms, 1.15);
  assert.equal(s.request_max_ms, 4.45);
  assert.equal(h2loadProblem({ code: 0, timedOut: false }, s, 20000), undefined);
});

Deno.test("parseH2load() ignores lines it does not know and needs the summary lines", () => {
  const extra = ok.replace("traffic:", "some future line: 1 2 3\ntraffic:");
  assert.equal(parseH2load(extra)?.rps, 60498.45);
  assert.equal(parseH2load("starting benchmark...\nprogress: 10% done\n"), null);
  assert.equal(parseH2load(""), null);
});

Deno.test("h2loadProblem() marks failed requests, errors, a kill and a missing h2", () => {
  const r = parseH2load(refused);
  assert.ok(r);
  assert.equal(r.protocol, null);
  // h2load exits 0 when every connection was refused: the counts say so
  assert.match(h2loadProblem({ code: 0, timedOut: false }, r, 10)!, /^10 of 10 requests failed/);
  const s = parseH2load(ok)!;
  assert.match(
    h2loadProblem({ code: 0, timedOut: false }, { ...s, failed: 3, succeeded: 19997 }, 20000)!,
    /^3 of 20000 requests failed/,
  );
  assert.match(
    h2loadProblem({ code: 0, timedOut: false }, { ...s, status_2xx: 19990 }, 20000)!,
    /^10 of 20000 requests failed/,
  );
  assert.equal(h2loadProblem({ code: 1, timedOut: false }, s, 20000), "h2load exit 1");
  assert.equal(
    h2loadProblem({ code: 1, timedOut: false }, null, 20000),
    "h2load exit 1, no summary",
  );
  assert.equal(
    h2loadProblem({ code: 137, timedOut: true }, null, 20000),
    "h2load killed at its deadline",
  );
  assert.match(
    h2loadProblem({ code: 0, timedOut: false }, { ...s, protocol: "http/1.1" }, 20000)!,
    /negotiated http\/1\.1, not h2/,
  );
});

Deno.test("h2loadDurations() keeps the 2xx requests of the log, in milliseconds", () => {
  const log = "1796653521933106\t200\t2907\n1796653521933108\t-1\t10\n1796653521933109\t503\t5\n" +
    "1796653521933110\t204\t1000\n\n";
  assert.deepEqual(h2loadDurations(log), [2.907, 1]);
});

Deno.test("http2Directives() picks `http2 on` from nginx 1.25.1, the listen parameter before", () => {
  assert.deepEqual(http2Directives("1.22.1"), { listen: " http2", server: "" });
  assert.deepEqual(http2Directives("1.25.0"), { listen: " http2", server: "" });
  assert.deepEqual(http2Directives("1.25.1"), { listen: "", server: "http2 on;" });
  assert.deepEqual(http2Directives("1.27.4"), { listen: "", server: "http2 on;" });
});
