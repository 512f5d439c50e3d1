// deno-lint-ignore-file no-console
// W7 client (called W6 before issue 17): a burst of new TLS clients. Client i of --count (this
// process takes the indices --offset, --offset + --stride, ...) calls connect() at --start-at +
// i × --window-ms / --count (epoch milliseconds, so that several processes share one schedule),
// does a verified TLS handshake through --host:--port (SNI --sni, --ca), then one POST /jsonrpc
// with "Connection: close"; it counts as served when the answer holds {"message":"success"},
// and then closes. Every client has --deadline-ms; the process exits by --max-s whatever happens.
//
// Prints one JSON object: attempted, handshakes, served, failed, errors (by stage and code),
// and per client (milliseconds, unsorted) setup_ms (connect() to secureConnect), connect_ms
// (connect() to TCP connected, when the ClientHello is written), total_ms (connect() to the
// answer), plus first_start/last_start (epoch ms of the first and last connect() call),
// first_hello/last_hello (of the first and last ClientHello) and late_ms (the worst delay of a
// connect() call behind its schedule), cpu_ms (this process's CPU time from the first connect()
// to the end).
// Runs under Node (`node burst.mjs ...`, node:tls) or Deno (`deno run -A burst.mjs ...`:
// Deno.connect + Deno.startTls, about a third of node:tls's CPU per handshake; --impl node runs
// node:tls there too).
import tls from "node:tls";
import net from "node:net";
import fs from "node:fs";
import { parseArgs } from "node:util";

const { values: a } = parseArgs({
  options: {
    host: { type: "string", default: "127.0.0.1" },
    port: { type: "string", default: "4433" },
    sni: { type: "string", default: "test.internal-server.local" },
    ca: { type: "string" },
    count: { type: "string", default: "2000" },
    offset: { type: "string", default: "0" },
    stride: { type: "string", default: "1" },
    "start-at": { type: "string" },
    "window-ms": { type: "string", default: "100" },
    "deadline-ms": { type: "string", default: "30000" },
    "max-s": { type: "string", default: "45" },
    // node: node:tls (OpenSSL); deno: Deno.connect + Deno.startTls (rustls). Default: node
    // under Node, deno under Deno
    impl: { type: "string", default: typeof Deno === "undefined" ? "node" : "deno" },
  },
});
if (!a.ca) {
  console.error("burst.mjs: --ca is required");
  process.exit(2);
}
const count = Number(a.count);
const offset = Number(a.offset);
const stride = Number(a.stride);
const windowMs = Number(a["window-ms"]);
const deadlineMs = Number(a["deadline-ms"]);
const now = () => performance.timeOrigin + performance.now();
const startAt = a["start-at"] ? Number(a["start-at"]) : now() + 200;
const caPem = fs.readFileSync(a.ca, "utf8");
// one context for all clients: parsing the CA once, not 2,000 times, inside the burst
const secureContext = a.impl === "node" ? tls.createSecureContext({ ca: caPem }) : undefined;
const body = '{"jsonrpc":"2.0","method":"demo.ping","params":[],"id":1}';
const request = `POST /jsonrpc HTTP/1.1\r\nHost: ${a.sni}\r\nContent-Type: application/json\r\n` +
  `Content-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`;

const requestBytes = new TextEncoder().encode(request);
const mine = [];
for (let i = offset; i < count; i += stride) mine.push(i);
const setupMs = [];
const connectMs = [];
const totalMs = [];
const errors = {};
let handshakes = 0;
let served = 0;
let failed = 0;
let pending = mine.length;
let firstStart = null;
let lastStart = null;
let firstHello = null;
let lastHello = null;
let lateMs = 0;
let finish;
const allDone = new Promise((r) => (finish = r));

function settle() {
  if (--pending === 0) finish();
}

function started() {
  const t0 = now();
  firstStart ??= t0;
  lastStart = t0;
  return t0;
}

function connected(t0) {
  const t = now();
  connectMs.push(t - t0);
  firstHello = Math.min(firstHello ?? t, t);
  lastHello = Math.max(lastHello ?? t, t);
}

function failure(stage, code) {
  failed++;
  const key = `${stage}: ${code}`;
  errors[key] = (errors[key] ?? 0) + 1;
  settle();
}

/** The Deno client: TCP to --host, then TLS with SNI and verification for --sni. */
function prepareDeno() {
  return () => {
    const t0 = started();
    let stage = "handshake";
    let done = false;
    let conn;
    const timer = setTimeout(() => fail("timeout"), deadlineMs);
    function close() {
      try {
        conn?.close();
      } catch {
        // closed already
      }
    }
    function fail(code) {
      if (done) return;
      done = true;
      clearTimeout(timer);
      close();
      failure(stage, code);
    }
    (async () => {
      const tcp = await Deno.connect({ hostname: a.host, port: Number(a.port) });
      conn = tcp;
      if (done) return close();
      connected(t0);
      const c = await Deno.startTls(tcp, { hostname: a.sni, caCerts: [caPem] });
      conn = c;
      if (done) return close();
      await c.handshake();
      if (done) return close();
      handshakes++;
      setupMs.push(now() - t0);
      stage = "request";
      await c.write(requestBytes);
      const buf = new Uint8Array(4096);
      const dec = new TextDecoder("latin1");
      let got = "";
      while (!done) {
        const n = await c.read(buf);
        if (n === null) {
          return fail(got ? `closed after ${JSON.stringify(got.slice(0, 12))}` : "closed");
        }
        got += dec.decode(buf.subarray(0, n));
        if (got.includes('{"message":"success"}')) break;
        if (got.length > 65536) return fail("answer too long");
      }
      if (done) return;
      done = true;
      clearTimeout(timer);
      served++;
      totalMs.push(now() - t0);
      close();
      settle();
    })().catch((e) => fail(e?.code ?? `${e?.name}: ${String(e?.message).slice(0, 80)}`));
  };
}

/**
 * The Node client, made ready before the burst: its TLS socket over a TCP socket not yet
 * connected (so that the JavaScript cost of making it is not paid inside the burst). Returns the
 * function that connects it; node writes the ClientHello when the TCP connection is up.
 */
function prepareNode() {
  let t0 = 0;
  let stage = "handshake";
  let done = false;
  let got = "";
  let timer;
  const raw = new net.Socket();
  const s = tls.connect({
    socket: raw,
    servername: a.sni,
    secureContext,
    rejectUnauthorized: true,
  });
  function fail(code) {
    if (done) return;
    done = true;
    clearTimeout(timer);
    s.destroy();
    raw.destroy();
    failure(stage, code);
  }
  // TCP connected: node writes the ClientHello now
  raw.once("connect", () => connected(t0));
  s.once("secureConnect", () => {
    if (done) return;
    handshakes++;
    setupMs.push(now() - t0);
    stage = "request";
    s.write(request);
  });
  s.setEncoding("latin1");
  s.on("data", (chunk) => {
    if (done) return;
    got += chunk;
    if (!got.includes('{"message":"success"}')) {
      if (got.length > 65536) fail("answer too long");
      return;
    }
    done = true;
    clearTimeout(timer);
    served++;
    totalMs.push(now() - t0);
    s.destroy();
    settle();
  });
  s.on("error", (e) => fail(e.code ?? e.message));
  raw.on("error", (e) => fail(e.code ?? e.message));
  s.once("end", () => fail(got ? `closed after ${JSON.stringify(got.slice(0, 12))}` : "closed"));
  s.once("close", () => fail("closed"));
  return () => {
    t0 = started();
    timer = setTimeout(() => fail("timeout"), deadlineMs);
    raw.connect(Number(a.port), a.host);
  };
}

const hardStop = setTimeout(() => {
  console.error("burst.mjs: --max-s passed; reporting what settled");
  finish();
}, Number(a["max-s"]) * 1000);

const starters = mine.map(() => (a.impl === "node" ? prepareNode() : prepareDeno()));
// Wait for the shared start time (coarse timer, then a short spin for precision).
while (now() < startAt - 5) {
  await new Promise((r) => setTimeout(r, Math.max(1, startAt - now() - 5)));
}
while (now() < startAt);

// Start every client whose time has come, then yield (connect() runs on the next tick; the
// handshakes already under way are read in between).
const cpu0 = process.cpuUsage();
let k = 0;
await new Promise((resolve) => {
  function slice() {
    let t = now();
    while (k < mine.length && startAt + (mine[k] * windowMs) / count <= t) {
      lateMs = Math.max(lateMs, t - (startAt + (mine[k] * windowMs) / count));
      starters[k]();
      k++;
      t = now();
    }
    if (k < mine.length) setImmediate(slice);
    else resolve();
  }
  slice();
});
if (mine.length > 0) await allDone;
clearTimeout(hardStop);
const cpu = process.cpuUsage(cpu0);
const r3 = (x) => Number(x.toFixed(3));
const unsettled = pending;
console.log(JSON.stringify({
  attempted: mine.length,
  handshakes,
  served,
  failed: failed + unsettled,
  errors: unsettled ? { ...errors, "unsettled at --max-s": unsettled } : errors,
  first_start: firstStart,
  last_start: lastStart,
  first_hello: firstHello,
  last_hello: lastHello,
  late_ms: r3(lateMs),
  cpu_ms: r3((cpu.user + cpu.system) / 1000),
  setup_ms: setupMs.map(r3),
  connect_ms: connectMs.map(r3),
  total_ms: totalMs.map(r3),
}));
process.exit(0);
