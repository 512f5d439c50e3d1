// deno-lint-ignore-file no-console
// W4 client: open --count TLS connections through --host:--port (SNI --sni, verified against
// --ca), with at most --parallel handshakes in flight, then hold them open.
//
// When every attempt has settled it writes --ready FILE (JSON: attempted, ok, failed, errors,
// open_s). It then holds the connections until --release FILE exists (or --hold-max-s passes),
// writes --done FILE (JSON: alive, i.e. still open at release), closes everything and exits.
// Copied from ../shared/bench/tools/ (lint fixes only).
// Runs under Node (`node hold.mjs ...`) or Deno (`deno run -A hold.mjs ...`).
import tls from "node:tls";
import fs from "node:fs";
import { parseArgs } from "node:util";

const { values: a } = parseArgs({
  options: {
    host: { type: "string", default: "127.0.0.1" },
    port: { type: "string", default: "4433" },
    sni: { type: "string", default: "test.internal-server.local" },
    ca: { type: "string" },
    count: { type: "string", default: "2000" },
    parallel: { type: "string", default: "100" },
    "handshake-timeout-ms": { type: "string", default: "15000" },
    "hold-max-s": { type: "string", default: "60" },
    ready: { type: "string" },
    release: { type: "string" },
    done: { type: "string" },
  },
});
if (!a.ca || !a.ready || !a.release || !a.done) {
  console.error("hold.mjs: --ca, --ready, --release and --done are required");
  process.exit(2);
}
const count = Number(a.count);
const parallel = Number(a.parallel);
const ca = fs.readFileSync(a.ca);
const sockets = [];
const errors = {};
let ok = 0;
let failed = 0;
let alive = 0;
let next = 0;

function writeJson(file, obj) {
  fs.writeFileSync(file + ".tmp", JSON.stringify(obj) + "\n");
  fs.renameSync(file + ".tmp", file);
}

function openOne() {
  return new Promise((resolve) => {
    let settled = false;
    const s = tls.connect({
      host: a.host,
      port: Number(a.port),
      servername: a.sni,
      ca,
      rejectUnauthorized: true,
    });
    const timer = setTimeout(() => fail("timeout"), Number(a["handshake-timeout-ms"]));
    function fail(code) {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      failed++;
      errors[code] = (errors[code] ?? 0) + 1;
      s.destroy();
      resolve();
    }
    s.once("secureConnect", () => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      ok++;
      alive++;
      sockets.push(s);
      s.once("close", () => alive--);
      resolve();
    });
    s.on("error", (e) => fail(e.code ?? e.message));
    s.once("close", () => fail("closed-before-handshake"));
  });
}

async function worker() {
  while (next < count) {
    next++;
    await openOne();
  }
}

const t0 = performance.now();
await Promise.all(Array.from({ length: Math.min(parallel, count) }, worker));
const openS = (performance.now() - t0) / 1000;
writeJson(a.ready, { attempted: count, ok, failed, errors, open_s: Number(openS.toFixed(3)) });

const deadline = Date.now() + Number(a["hold-max-s"]) * 1000;
while (!fs.existsSync(a.release) && Date.now() < deadline) {
  await new Promise((r) => setTimeout(r, 50));
}
writeJson(a.done, { alive, released: fs.existsSync(a.release) });
for (const s of sockets) s.destroy();
process.exit(0);
