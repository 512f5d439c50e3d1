// deno-lint-ignore-file no-console
// W5 client: --count TLS handshakes through --host:--port (SNI --sni, verified against --ca),
// one after another. For each it times TCP connect and the completed TLS handshake from the
// moment connect() is called; it closes the connection before starting the next. The first
// --warmup handshakes are not counted. Prints one JSON object (milliseconds).
// Copied from ../shared/bench/tools/ (lint fixes only).
// Runs under Node (`node handshake.mjs ...`) or Deno (`deno run -A handshake.mjs ...`).
import tls from "node:tls";
import fs from "node:fs";
import { parseArgs } from "node:util";

const { values: a } = parseArgs({
  options: {
    host: { type: "string", default: "127.0.0.1" },
    port: { type: "string", default: "4433" },
    sni: { type: "string", default: "test.internal-server.local" },
    ca: { type: "string" },
    count: { type: "string", default: "500" },
    warmup: { type: "string", default: "20" },
    "timeout-ms": { type: "string", default: "5000" },
    "max-s": { type: "string", default: "40" },
  },
});
if (!a.ca) {
  console.error("handshake.mjs: --ca is required");
  process.exit(2);
}
const ca = fs.readFileSync(a.ca);
const count = Number(a.count);
const warmup = Number(a.warmup);
const deadline = Date.now() + Number(a["max-s"]) * 1000;

function once() {
  return new Promise((resolve) => {
    const t0 = process.hrtime.bigint();
    let tcp = NaN;
    let done = false;
    const s = tls.connect({
      host: a.host,
      port: Number(a.port),
      servername: a.sni,
      ca,
      rejectUnauthorized: true,
    });
    const timer = setTimeout(() => finish({ error: "timeout" }), Number(a["timeout-ms"]));
    function finish(r) {
      if (done) return;
      done = true;
      clearTimeout(timer);
      s.once("close", () => resolve(r));
      s.destroy();
    }
    s.once("connect", () => (tcp = Number(process.hrtime.bigint() - t0) / 1e6));
    s.once("secureConnect", () => finish({ tcp, tls: Number(process.hrtime.bigint() - t0) / 1e6 }));
    s.on("error", (e) => finish({ error: e.code ?? e.message }));
  });
}

function pct(sorted, p) {
  if (sorted.length === 0) return null;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return Number(sorted[i].toFixed(3));
}

const tlsMs = [];
const tcpMs = [];
const errors = {};
let failed = 0;
let attempted = 0;
for (let i = 0; i < warmup + count && Date.now() < deadline; i++) {
  const r = await once();
  if (i < warmup) continue;
  attempted++;
  if (r.error) {
    failed++;
    errors[r.error] = (errors[r.error] ?? 0) + 1;
  } else {
    tlsMs.push(r.tls);
    tcpMs.push(r.tcp);
  }
}
tlsMs.sort((x, y) => x - y);
tcpMs.sort((x, y) => x - y);
const mean = tlsMs.length ? tlsMs.reduce((s, x) => s + x, 0) / tlsMs.length : null;
console.log(JSON.stringify({
  attempted,
  ok: tlsMs.length,
  failed,
  errors,
  p50_ms: pct(tlsMs, 50),
  p90_ms: pct(tlsMs, 90),
  p99_ms: pct(tlsMs, 99),
  mean_ms: mean === null ? null : Number(mean.toFixed(3)),
  min_ms: pct(tlsMs, 0),
  max_ms: pct(tlsMs, 100),
  tcp_p50_ms: pct(tcpMs, 50),
  tcp_p99_ms: pct(tcpMs, 99),
}));
