// deno-lint-ignore-file no-console camelcase -- console is this CLI's output; JSON keys match ../shared/bench
/**
 * The tls-pass benchmark: `deno task bench` (= `deno run -A bench/run.ts`). Never part of the
 * test command. See bench/README.md.
 *
 *   deno task bench [--quick] [--rounds N] [--workloads W1,W2,W3,W4,W5,W6,W7,names]
 *     [--topologies tls-pass,haproxy2,haproxy2-splice,direct] [--out DIR] [--save NAME]
 *     [--state DIR] [--max-minutes 10] [--extra-settings ROLE=FILE]... [--log-level warning]
 *     [--w6-requests 50000] [--w7-sizes 2000] [--w7-client node|deno] [--names 1,10000,100000]
 *     [--w4-conns 2000] [--replicas 1]
 *
 * Starts the backend (nginx HTTPS and HTTP/2 on 127.0.0.1:8888), then for each round runs every
 * topology in turn (order rotated each round): start → smoke test → W4 → warm-up → W1 → W2 → W3
 * → W5 → W6 → stop, then per W7 burst size: start → smoke test → burst → stop. After the
 * rounds, "names" starts tls-pass once per name-set size (names.ts). Writes raw.jsonl,
 * results.json, results.md and results.svg (chart.ts) to bench/results/raw/<UTC time>/ (or
 * --out) and prints the Markdown. Loopback only; every load is bounded in count and time.
 * @module
 */
import { parseArgs } from "node:util";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { type Backend, BACKEND_PORT, ensureCerts, SNI, startBackend } from "./backend.ts";
import { memOf, portOpen, round, run, terminateAllStarted, which } from "./proc.ts";
import { buildReport, type Meta, type Row } from "./report.ts";
import { renderChart } from "./chart.ts";
import { MAX_NAMES, measureNames } from "./names.ts";
import {
  benchPorts,
  type Running,
  type TlsPassRole,
  TOPOLOGIES,
  type TopologyContext,
  waitRoute,
} from "./topologies.ts";
import { getFdLimit } from "../lib/net/fd_limit.ts";
import { SHIPPED_V8_FLAGS } from "../tools/v8_flags.ts";
import {
  FULL,
  type Params,
  QUICK,
  w7,
  warmup,
  type WorkloadContext,
  type WorkloadName,
  WORKLOADS,
} from "./workloads.ts";

const HELP = `usage: deno task bench [options]
  --quick                 1 round, W1/W2 4 s each, W3 one download, W6 20000 requests
                          (about 3 min for 4 topologies)
  --rounds N              rounds (default 3; --quick: 1)
  --workloads LIST        subset of W1,W2,W3,W4,W5,W6,W7,names (default all)
  --w4-conns N            connections W4 holds (default 2000; e.g. 10000 for the issue-6 target)
  --replicas N            relay processes per tier (default 1). N > 1: tls-pass runs N public
                          replicas on :4433 (reuse_port, store: redis, a redis-server of the run's
                          own on a free port; private ports 4434, 4437, …) and N private
                          instances; haproxy2 and haproxy2-splice run N HAProxies per tier on
                          :4433 and :4434 (SO_REUSEPORT). Issue 15: --w4-conns 10000 --replicas 2
  --w6-requests N         W6: h2load requests (default 50000, --quick 20000; -c 10 -m 10)
  --w7-sizes LIST         W7 burst sizes, each on freshly started relays (default 2000)
  --w7-client C           W7 client: node (node:tls, as W4/W5; default) or deno (Deno.startTls)
  --names LIST            "names": announcement counts for tls-pass (default 1,10000,100000:
                          1 is the baseline; at most 100000, the private settings' cap)
  --v8-flags F            DENO_V8_FLAGS for every Deno process the run starts (the roles, loop2,
                          splice2); default: the shipped flags of tools/v8_flags.ts
                          (--max-semi-space-size=2,--expose-gc); --v8-flags= for V8's defaults
  --topologies LIST       subset of tls-pass,haproxy2,haproxy2-splice,direct,loop2,splice2,
                          tls-pass-admin,tls-pass-limits (default the first four)
  --out DIR               where this run's files go (default bench/results/raw/<UTC time>)
  --save NAME             also copy results.md/.json/.svg to bench/results/NAME.{md,json,svg}
                          and the chart to bench/results/latest.svg (the README shows it)
  --state DIR             scratch folder (default $TMPDIR/tls-pass-bench-run)
  --max-minutes M         bound of the whole run (default 10): no topology round starts that
                          would end after it, judged by that topology's longest round so far,
                          with 45 s kept for "names"
  --extra-settings R=FILE extra --settings file for tls-pass role R (eps|public|private), repeatable
  --log-level L           tls-pass --log-level (default warning)
Environment: TLS_PASS_BIN runs that binary instead of 'deno run -A cli.ts'.`;

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, "..");

function log(msg: string): void {
  console.error(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}`);
}

function die(msg: string): never {
  console.error(`bench: ${msg}`);
  Deno.exit(2);
}

const { values: a } = (() => {
  try {
    return parseArgs({
      args: Deno.args,
      strict: true,
      allowPositionals: false,
      options: {
        quick: { type: "boolean", default: false },
        rounds: { type: "string" },
        workloads: { type: "string", default: "W1,W2,W3,W4,W5,W6,W7,names" },
        topologies: { type: "string", default: "tls-pass,haproxy2,haproxy2-splice,direct" },
        out: { type: "string" },
        save: { type: "string" },
        state: { type: "string" },
        "max-minutes": { type: "string", default: "10" },
        "extra-settings": { type: "string", multiple: true, default: [] },
        "log-level": { type: "string", default: "warning" },
        "w4-conns": { type: "string" },
        replicas: { type: "string", default: "1" },
        "w6-requests": { type: "string" },
        "w7-sizes": { type: "string", default: "2000" },
        "w7-client": { type: "string", default: "node" },
        names: { type: "string", default: "1,10000,100000" },
        "v8-flags": { type: "string" },
        help: { type: "boolean", short: "h", default: false },
      },
    });
  } catch (err) {
    const msg = err instanceof Error ? err.message : String(err);
    // the bursts were W6 before issue 17
    const renamed = /--w6-(sizes|client)/.exec(msg);
    die(`${msg}${renamed ? ` (now --w7-${renamed[1]}: the bursts are W7)` : ""}\n${HELP}`);
  }
})();
if (a.help) {
  console.log(HELP);
  Deno.exit(0);
}

const rounds = Number(a.rounds ?? (a.quick ? 1 : 3));
if (!Number.isInteger(rounds) || rounds < 1) {
  die(`--rounds wants a positive integer, got ${a.rounds}`);
}
const workloads = a.workloads.split(",").map((w) => w.trim()).filter(Boolean)
  .map((w) => (w.toLowerCase() === "names" ? "names" : w.toUpperCase()));
for (const w of workloads) {
  if (!(w in WORKLOADS) && w !== "W7" && w !== "names") {
    die(`unknown workload "${w}" (known: W1..W7, names; the bursts were W6 before issue 17)`);
  }
}
/** The workloads of one topology start (W7 and names start their own). */
const mainWorkloads = workloads.filter((w) => w in WORKLOADS);
function countList(opt: string, v: string, max: number): number[] {
  const xs = v.split(",").map((x) => Number(x.trim().replaceAll("_", "")));
  if (!xs.length || xs.some((x) => !(Number.isInteger(x) && x >= 1 && x <= max))) {
    die(`${opt} wants integers in 1..${max}, comma-separated, got "${v}"`);
  }
  return xs;
}
const w7Sizes = countList("--w7-sizes", a["w7-sizes"], 20_000);
const nameSets = countList("--names", a.names, MAX_NAMES);
const w7Client = a["w7-client"];
if (w7Client !== "node" && w7Client !== "deno") {
  die(`--w7-client wants node or deno, got "${w7Client}"`);
}
const w6Requests = a["w6-requests"] === undefined
  ? undefined
  : countList("--w6-requests", a["w6-requests"], 10_000_000)[0];
const topoNames = a.topologies.split(",").map((t) => t.trim()).filter(Boolean);
for (const t of topoNames) {
  if (!TOPOLOGIES[t]) die(`unknown topology "${t}" (known: ${Object.keys(TOPOLOGIES).join(", ")})`);
}
const maxMs = Number(a["max-minutes"]) * 60_000;
/** What "names" takes after the rounds (about 40 s for 1, 10,000 and 100,000 names). */
const namesReserveMs = workloads.includes("names") ? 45_000 : 0;
const extraSettings: Partial<Record<TlsPassRole, string[]>> = {};
for (const e of a["extra-settings"]) {
  const [role, file] = e.split("=", 2);
  if (!file || !["eps", "public", "private"].includes(role!)) {
    die(`--extra-settings wants ROLE=FILE with ROLE eps|public|private, got "${e}"`);
  }
  (extraSettings[role as TlsPassRole] ??= []).push(resolve(file));
}
const w4Conns = a["w4-conns"] === undefined ? undefined : Number(a["w4-conns"]);
if (w4Conns !== undefined && !(Number.isInteger(w4Conns) && w4Conns > 0 && w4Conns <= 100_000)) {
  die(`--w4-conns wants an integer in 1..100000, got ${a["w4-conns"]}`);
}
const replicas = Number(a.replicas);
if (!(Number.isInteger(replicas) && replicas >= 1 && replicas <= 8)) {
  die(`--replicas wants an integer in 1..8, got ${a.replicas}`);
}
if (replicas > 1 && topoNames.some((t) => t.startsWith("tls-pass")) && !which("redis-server")) {
  die("--replicas > 1 runs a redis-server for tls-pass: apt-get install redis-server");
}
const params: Params = {
  ...(a.quick ? QUICK : FULL),
  ...(w4Conns ? { w4Conns } : {}),
  ...(w6Requests ? { w6Requests } : {}),
  w7Sizes,
  w7Client,
};
/**
 * HAProxy's maxconn: 8000 as before, more for a larger W4, but never more than the open-file
 * limit allows (a relay needs two descriptors per connection; HAProxy refuses to start when it
 * cannot raise its limit to about 2 × maxconn).
 */
function haproxyMaxconn(conns: number): number {
  let fdHard = Infinity;
  try {
    fdHard = getFdLimit().hard;
  } catch {
    // not Linux: leave it to HAProxy
  }
  return Math.max(8000, Math.min(conns + 500, Math.floor((fdHard - 200) / 2)));
}
const t0 = Date.now();
const loadAtStart = (await Deno.readTextFile("/proc/loadavg").catch(() => "")).split(" ").slice(
  0,
  3,
)
  .join(" ");

// --- preflight ------------------------------------------------------------------------------
for (const tool of ["ab", "wrk", "curl", "openssl", "nginx", "bash", "getconf"]) {
  if (!which(tool)) {
    die(`${tool} not found; apt-get install apache2-utils wrk curl openssl nginx (and haproxy)`);
  }
}
const js = which("node") ? ["node"] : [Deno.execPath(), "run", "-A"];
const hosts = await Deno.readTextFile("/etc/hosts").catch(() => "");
if (
  !new RegExp(`^\\s*127\\.0\\.0\\.1\\s+(.*\\s)?${SNI.replaceAll(".", "\\.")}(\\s|$)`, "m").test(
    hosts,
  )
) {
  // wrk and ab take the SNI from the URL's host name, so the name must resolve to loopback.
  try {
    await Deno.writeTextFile("/etc/hosts", `127.0.0.1 ${SNI} # tls-pass bench\n`, { append: true });
    log(`added '127.0.0.1 ${SNI}' to /etc/hosts (wrk and ab send the URL host as SNI)`);
  } catch {
    die(`${SNI} must resolve to 127.0.0.1: add '127.0.0.1 ${SNI}' to /etc/hosts`);
  }
}
for (const port of [BACKEND_PORT, ...benchPorts(replicas)]) {
  if (await portOpen("127.0.0.1", port)) {
    die(`127.0.0.1:${port} is already in use; stop whatever listens there`);
  }
}

// by default the roles run with the flags the compiled executable embeds (tools/v8_flags.ts);
// --v8-flags="" measures V8's defaults
const v8Flags = a["v8-flags"] ?? SHIPPED_V8_FLAGS;
if (v8Flags !== "") Deno.env.set("DENO_V8_FLAGS", v8Flags);
const tlsPassCmd = Deno.env.get("TLS_PASS_BIN")
  ? [Deno.env.get("TLS_PASS_BIN")!]
  : [Deno.execPath(), "run", "-A", join(repo, "cli.ts")];
const unavailable: Record<string, string> = {};
for (const t of topoNames) {
  const why = await TOPOLOGIES[t]!.unavailable({ repo, tlsPass: tlsPassCmd });
  if (why) {
    unavailable[t] = why;
    log(`${t}: ${why}; its column says so`);
  }
}

const stamp = new Date().toISOString().replace(/[-:]/g, "").replace(/\.\d+Z$/, "Z");
const outdir = resolve(a.out ?? join(here, "results", "raw", stamp));
const logs = join(outdir, "logs");
await Deno.mkdir(logs, { recursive: true });
const stateRoot = resolve(a.state ?? join(Deno.env.get("TMPDIR") ?? "/tmp", "tls-pass-bench-run"));
await Deno.mkdir(stateRoot, { recursive: true });
const rawFile = join(outdir, "raw.jsonl");
await Deno.writeTextFile(rawFile, "");

// --- backend and cleanup --------------------------------------------------------------------
let backend: Backend | undefined;
let current: Running | undefined;
let stopping = false;
async function cleanup(): Promise<void> {
  const c = current;
  current = undefined;
  if (c) await c.stop().catch(() => {});
  const b = backend;
  backend = undefined;
  if (b) await b.stop().catch(() => {});
  terminateAllStarted(); // clients (ab, wrk, curl, hold.mjs) of an interrupted workload
}
for (const sig of ["SIGINT", "SIGTERM"] as const) {
  Deno.addSignalListener(sig, () => {
    if (stopping) return;
    stopping = true;
    log(`${sig}: stopping what this run started`);
    cleanup().finally(() => Deno.exit(130));
  });
}

const certs = await ensureCerts(join(stateRoot, "certs"));
log(
  `backend: starting nginx on 127.0.0.1:${BACKEND_PORT} (writes a ${params.blobMib} MiB blob once)`,
);
backend = await startBackend(join(stateRoot, "backend"), certs, { blobMib: params.blobMib });

// --- main loop ------------------------------------------------------------------------------
const rows: Row[] = [];
const namesRows: Row[] = [];
const runnable = topoNames.filter((t) => !unavailable[t]);
let timeUp = false;
const took: Record<string, number> = {}; // longest round so far, per topology (ms)
// names alone starts no topology round
const perRound = mainWorkloads.length > 0 || workloads.includes("W7");
try {
  for (let r = 1; r <= rounds && !timeUp && perRound; r++) {
    for (let k = 0; k < runnable.length; k++) {
      const name = runnable[(k + r - 1) % runnable.length]!;
      // Start a topology round only if it can end within the budget (judged by its last one).
      if (Date.now() - t0 + (took[name] ?? 0) + namesReserveMs > maxMs) {
        log(`time budget of ${a["max-minutes"]} min would be exceeded: no further rounds`);
        timeUp = true;
        break;
      }
      const tRound = Date.now();
      const row = await oneRound(name, r);
      took[name] = Math.max(took[name] ?? 0, Date.now() - tRound);
      rows.push(row);
      await Deno.writeTextFile(rawFile, JSON.stringify(row) + "\n", { append: true });
    }
  }
  if (workloads.includes("names") && !stopping) {
    if (!topoNames.includes("tls-pass") || unavailable["tls-pass"]) {
      log(`names: skipped (tls-pass ${unavailable["tls-pass"] ?? "is not in --topologies"})`);
    } else {
      for (const n of nameSets) namesRows.push(await oneNameSet(n));
    }
  }
} finally {
  await cleanup();
}

/** The contexts of one topology start, in state folder `tag` (logs copied as NAME.rR.TAG.*). */
function topoContext(name: string, tag: string): TopologyContext {
  const cache = join(stateRoot, "cache", name);
  return {
    state: join(stateRoot, "topo", tag),
    cache,
    certs,
    repo,
    tlsPass: tlsPassCmd,
    extraSettings,
    logLevel: a["log-level"],
    maxConnections: haproxyMaxconn(Math.max(params.w4Conns, ...params.w7Sizes)),
    // names.ts measures one path: its replicas stay 1
    replicas: tag.startsWith("names-") ? 1 : replicas,
    log,
  };
}

function workloadContext(running: Running, work: string, name: string, r: number): WorkloadContext {
  return {
    port: running.port,
    caCrt: certs.caCrt,
    relayPids: () => running.pids(),
    rolePids: () => running.rolePids(),
    backendPids: () => backend?.pids() ?? [],
    work,
    logRaw: (w, text) =>
      Deno.writeTextFile(
        join(logs, `${w.toLowerCase()}.log`),
        `== ${name} round ${r}\n${text}\n`,
        {
          append: true,
        },
      ),
    js,
    tools: join(here, "tools"),
    params,
  };
}

/**
 * Starts topology `name` afresh in state folder `tag`, smoke-tests it, runs `body`, stops it and
 * keeps its logs (as `NAME.rR.*`, or `NAME.rR.SUFFIX.*`). Returns the body's result, or the
 * error that kept it from running.
 */
async function withTopology<T>(
  name: string,
  r: number,
  suffix: string,
  body: (running: Running, wctx: WorkloadContext, startS: number) => Promise<T>,
): Promise<T | { error: string }> {
  const ctx = topoContext(name, suffix ? `${name}.${suffix}` : name);
  const logName = suffix ? `${name}.r${r}.${suffix}` : `${name}.r${r}`;
  await Deno.remove(ctx.state, { recursive: true }).catch(() => {});
  await Deno.mkdir(ctx.state, { recursive: true });
  await Deno.mkdir(ctx.cache, { recursive: true });
  const tStart = Date.now();
  let running: Running;
  try {
    running = await TOPOLOGIES[name]!.start(ctx);
  } catch (err) {
    const msg = err instanceof Error ? err.message : String(err);
    log(`${name}${suffix ? ` (${suffix})` : ""}: start failed: ${msg}`);
    await Deno.writeTextFile(join(logs, `${name}.start.log`), `round ${r} ${suffix}: ${msg}\n`, {
      append: true,
    });
    await copyStateLogs(ctx.state, logName);
    return { error: `start failed: ${msg.split("\n")[0]}` };
  }
  current = running;
  try {
    const startS = round((Date.now() - tStart) / 1000, 2);
    const why = await waitRoute(running.port, certs.caCrt, Date.now() + 10_000);
    if (why) {
      log(`${name}: smoke test failed: ${why}`);
      return { error: `smoke test failed: ${why}` };
    }
    const work = join(ctx.state, "work");
    await Deno.mkdir(work, { recursive: true });
    return await body(running, workloadContext(running, work, name, r), startS);
  } finally {
    current = undefined;
    await running.stop();
    await copyStateLogs(ctx.state, logName);
    await waitPortsFree();
  }
}

async function waitPortsFree(): Promise<void> {
  for (const port of benchPorts(replicas)) {
    const end = Date.now() + 10_000;
    while (Date.now() < end && await portOpen("127.0.0.1", port)) {
      await new Promise((res) => setTimeout(res, 50));
    }
  }
}

async function oneRound(name: string, r: number): Promise<Row> {
  log(`round ${r}/${rounds}: ${name}`);
  let row: Row = { topology: name, round: r };
  if (mainWorkloads.length > 0) {
    const res = await withTopology(name, r, "", async (running, wctx, startS) => {
      const pids = running.pids();
      const row: Row = {
        topology: name,
        round: r,
        start_s: startS,
        port: running.port,
        relay_pids: running.rolePids(),
        relay_procs: memOf(pids).procs,
        relay_rss_kib_at_start: memOf(pids).rssKib,
      };
      // W4 first, on freshly started relays, so that its idle baseline is not inflated by
      // garbage from the other workloads; the warm-up (both request shapes) comes after it.
      for (const w of ["W4", "warmup", "W1", "W2", "W3", "W5", "W6"]) {
        if (w === "warmup") {
          await warmup(wctx);
          continue;
        }
        if (!workloads.includes(w)) continue;
        const res = await WORKLOADS[w as WorkloadName](wctx);
        res.relay_rss_kib_after = memOf(running.pids()).rssKib;
        row[w] = res;
        log(`  ${w} ${JSON.stringify(res).slice(0, 220)}`);
      }
      row.relays_alive_at_end = running.pids().length === running.procs.length;
      return row;
    });
    if ("error" in res) return { topology: name, round: r, error: res.error };
    row = res;
  }
  if (workloads.includes("W7") && !stopping) {
    // each burst on freshly started relays: what a burst leaves behind (TIME_WAIT, a drained
    // pool, a grown heap) is not what the next one meets
    const bursts: Record<string, Row> = {};
    for (const size of params.w7Sizes) {
      const res = await withTopology(name, r, `w7-${size}`, async (running, wctx, startS) => {
        await new Promise((res) => setTimeout(res, 1000)); // let a pool fill after the smoke test
        const rss0 = memOf(running.pids()).rssKib;
        const res: Row = await w7(wctx, size);
        res.start_s = startS;
        res.relay_rss_kib_before = rss0;
        res.relay_rss_kib_after = memOf(running.pids()).rssKib;
        res.relays_alive_at_end = running.pids().length === running.procs.length;
        return res;
      });
      bursts[String(size)] = res;
      const { errors, ...brief } = res as Row;
      log(`  W7 ${size}: ${JSON.stringify(brief).slice(0, 300)} errors ${JSON.stringify(errors)}`);
    }
    row.W7 = bursts;
  }
  return row;
}

/** "names": tls-pass with `n` announcements, once (not per round). */
async function oneNameSet(n: number): Promise<Row> {
  log(`names: tls-pass with ${n} announcements`);
  const ctx = topoContext("tls-pass", `names-${n}`);
  await Deno.remove(ctx.state, { recursive: true }).catch(() => {});
  await Deno.mkdir(ctx.state, { recursive: true });
  await Deno.mkdir(ctx.cache, { recursive: true });
  let res: Row;
  try {
    res = await measureNames(ctx, n, (r) => (current = r));
  } catch (err) {
    res = { names: n, error: err instanceof Error ? err.message : String(err) };
  }
  await copyStateLogs(ctx.state, `tls-pass.names-${n}`);
  await waitPortsFree();
  log(`  names ${n}: ${JSON.stringify(res).slice(0, 400)}`);
  await Deno.writeTextFile(rawFile, JSON.stringify({ names: res }) + "\n", { append: true });
  return res;
}

/** Keeps the topology's own logs (*.log, *.out) with the run, as `logs/PREFIX.FILE`. */
async function copyStateLogs(state: string, prefix: string): Promise<void> {
  let entries: Deno.DirEntry[];
  try {
    entries = await Array.fromAsync(Deno.readDir(state));
  } catch {
    return;
  }
  for (const e of entries) {
    if (!e.isFile || !/\.(log|out|cfg)$/.test(e.name)) continue;
    await Deno.copyFile(join(state, e.name), join(logs, `${prefix}.${e.name}`)).catch(() => {});
  }
}

// --- report ---------------------------------------------------------------------------------
async function version(argv: string[], re: RegExp): Promise<string> {
  if (!which(argv[0]!)) return "not installed";
  const o = await run(argv, 5000).catch(() => undefined);
  return re.exec(`${o?.stdout ?? ""}${o?.stderr ?? ""}`)?.[1] ?? "?";
}
const cpuinfo = await Deno.readTextFile("/proc/cpuinfo").catch(() => "");
const meminfo = await Deno.readTextFile("/proc/meminfo").catch(() => "");
const uname = await run(["uname", "-srm"], 5000);
const meta: Meta = {
  date: new Date().toISOString().replace(/\.\d+Z$/, "Z"),
  host: uname.stdout.trim(),
  cpus: navigator.hardwareConcurrency,
  cpu: /model name\s*:\s*(.*)/.exec(cpuinfo)?.[1] ?? "?",
  mem: `${(Number(/MemTotal:\s+(\d+)/.exec(meminfo)?.[1] ?? 0) / 1048576).toFixed(1)} GiB`,
  rounds,
  workloads,
  versions: {
    HAProxy: await version(["haproxy", "-v"], /version (\S+)/),
    nginx: await version(["nginx", "-v"], /nginx\/(\S+)/),
    Deno: Deno.version.deno,
    Node: js[0] === "node" ? await version(["node", "--version"], /v(\S+)/) : "not installed",
    OpenSSL: await version(["openssl", "version"], /OpenSSL (\S+)/),
  },
  params: { ...params },
  replicas,
  unavailable,
  quick: a.quick,
  v8Flags: v8Flags === "" ? null : v8Flags,
  loadavg: {
    start: loadAtStart,
    end: (await Deno.readTextFile("/proc/loadavg").catch(() => "")).split(" ").slice(0, 3).join(
      " ",
    ),
  },
};
const report = buildReport(rows, topoNames, meta, namesRows);
await Deno.writeTextFile(join(outdir, "results.json"), JSON.stringify(report.json, null, 2) + "\n");
await Deno.writeTextFile(join(outdir, "results.md"), report.markdown);
await Deno.writeTextFile(join(outdir, "results.svg"), renderChart(report.json));
if (!a.out) {
  const latest = join(here, "results", "raw", "latest");
  await Deno.remove(latest).catch(() => {});
  await Deno.symlink(outdir, latest).catch(() => {});
}
if (a.save) {
  await Deno.copyFile(join(outdir, "results.md"), join(here, "results", `${a.save}.md`));
  await Deno.copyFile(join(outdir, "results.json"), join(here, "results", `${a.save}.json`));
  await Deno.copyFile(join(outdir, "results.svg"), join(here, "results", `${a.save}.svg`));
  await Deno.copyFile(join(outdir, "results.svg"), join(here, "results", "latest.svg"));
  log(`saved as bench/results/${a.save}.{md,json,svg} (the chart also as latest.svg)`);
}
console.log(report.markdown);
log(
  `results: ${outdir}/results.md, results.json and results.svg (${
    Math.round((Date.now() - t0) / 1000)
  } s)`,
);
Deno.exit(0);
