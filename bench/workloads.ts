// deno-lint-ignore-file camelcase -- JSON keys match ../shared/bench results.json
/**
 * The five workloads (W1–W5) and the warm-up, as in the shared harness (../shared/bench/run.sh):
 * the same clients (ab, wrk, curl, and the Node clients hold.mjs and handshake.mjs copied into
 * bench/tools/), the same request, the same bounds, the same CPU and memory accounting. W6
 * (HTTP/2 multiplexed, h2load) and W7 (a burst of new TLS clients, tools/burst.mjs; called W6
 * until issue 17) are this bench's own.
 * @module
 */
import { join } from "node:path";
import { SNI } from "./backend.ts";
import {
  cpuDelta,
  cpuOf,
  type CpuTime,
  fdCount,
  fdLimitOf,
  type Mem,
  memOf,
  round,
  run,
  sleep,
  spawn,
  stop,
  which,
} from "./proc.ts";

/** The W1/W2 request body: a small JSON-RPC POST like the demo's curl call (59 bytes). */
export const JSONRPC_BODY = '{"jsonrpc":"2.0","method":"demo.ping","params":[],"id":1}';

export interface Params {
  concurrency: number;
  w1Seconds: number;
  w1Procs: number;
  w2Seconds: number;
  w2Threads: number;
  w3Repeats: number;
  blobMib: number;
  w4Conns: number;
  w4Parallel: number;
  w4SettleS: number;
  w5Count: number;
  warmupS: number;
  /** W6 (h2load): requests in all, connections, concurrent streams per connection. */
  w6Requests: number;
  w6Conns: number;
  w6Streams: number;
  /** W7 burst sizes, each on freshly started relays. */
  w7Sizes: number[];
  /**
   * W7: the connect() calls are spread evenly over this window; 0 = all at once (each client
   * process as fast as it can, the default: spread with yields, they come later, not sooner).
   */
  w7WindowMs: number;
  /** W7 client: node (node:tls, as W4/W5; Deno's node:tls when node is missing) or deno. */
  w7Client: "node" | "deno";
  /** W7: client processes sharing the burst (one start schedule). */
  w7Procs: number;
  /** W7: each client's deadline, handshake and answer. */
  w7DeadlineMs: number;
}

export const FULL: Params = {
  concurrency: 25,
  w1Seconds: 8,
  w1Procs: 2,
  w2Seconds: 8,
  w2Threads: 2,
  w3Repeats: 3,
  blobMib: 256,
  w4Conns: 2000,
  w4Parallel: 100,
  w4SettleS: 2,
  w5Count: 500,
  warmupS: 1,
  w6Requests: 50_000,
  w6Conns: 10,
  w6Streams: 10,
  w7Sizes: [2000],
  w7WindowMs: 0,
  w7Client: "node",
  w7Procs: 4,
  w7DeadlineMs: 30_000,
};

export const QUICK: Params = {
  ...FULL,
  w1Seconds: 4,
  w2Seconds: 4,
  w3Repeats: 1,
  w6Requests: 20_000,
};

/** What every workload gets. */
export interface WorkloadContext {
  port: number;
  caCrt: string;
  /** Live relay PIDs (descendants are added by the measuring helpers). */
  relayPids(): number[];
  /** Relay PIDs by role (for the per-role breakdown in the JSON). */
  rolePids(): Record<string, number[]>;
  backendPids(): number[];
  /** Scratch folder for this topology and round. */
  work: string;
  /** Appends raw tool output to the run's log for this workload. */
  logRaw(workload: string, text: string): Promise<void>;
  /** `[node]` or `[deno, run, -A]`: runs the .mjs clients. */
  js: string[];
  tools: string;
  params: Params;
}

const url = (port: number, path: string) => `https://${SNI}:${port}${path}`;

/** Nearest-rank percentile of unsorted numbers; null when empty. */
export function percentile(xs: number[], p: number): number | null {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  const i = Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1));
  return s[i] ?? null;
}

function num(re: RegExp, text: string): number {
  const m = re.exec(text);
  return m?.[1] === undefined ? 0 : Number(m[1]);
}

/** wrk's duration (12.3us | 4.5ms | 1.2s | 2m) in milliseconds. */
export function wrkMs(v: string): number | null {
  const m = /^([0-9.]+)(us|ms|s|m)$/.exec(v.trim());
  if (!m) return null;
  const x = Number(m[1]);
  const unit = m[2];
  return round(
    unit === "us" ? x / 1000 : unit === "ms" ? x : unit === "s" ? x * 1000 : x * 60000,
    3,
  );
}

async function bodyFile(ctx: WorkloadContext): Promise<string> {
  const f = join(ctx.work, "jsonrpc-body.json");
  await Deno.writeTextFile(f, JSONRPC_BODY);
  return f;
}

/** CPU seconds so far, per role. */
function cpuByRole(ctx: WorkloadContext): Record<string, CpuTime> {
  return Object.fromEntries(Object.entries(ctx.rolePids()).map(([k, p]) => [k, cpuOf(p)]));
}

/** CPU seconds used per role between two {@link cpuByRole} readings. */
function roleCpuDelta(
  a: Record<string, CpuTime>,
  b: Record<string, CpuTime>,
): Record<string, number> {
  return Object.fromEntries(
    Object.keys(a).map((k) => [k, round(b[k] ? cpuDelta(a[k]!, b[k]!).seconds : 0, 2)]),
  );
}

function memByRole(ctx: WorkloadContext): Record<string, number> {
  return Object.fromEntries(Object.entries(ctx.rolePids()).map(([k, p]) => [k, memOf(p).rssKib]));
}

function cpuPer(seconds: number, n: number, scale: number): number | null {
  return n > 0 ? round((seconds * scale) / n, 1) : null;
}

export async function warmup(ctx: WorkloadContext): Promise<void> {
  const s = ctx.params.warmupS;
  const body = await bodyFile(ctx);
  const u = url(ctx.port, "/jsonrpc");
  const c = String(ctx.params.concurrency);
  await run(
    ["ab", "-q", "-t", String(s), "-n", "100000", "-c", c, "-p", body, "-T", "application/json", u],
    (s + 20) * 1000,
  );
  await run(
    ["wrk", "-t", "1", "-c", c, "-d", `${s}s`, "-s", join(ctx.tools, "post.lua"), u],
    (s + 20) * 1000,
  );
}

/** W1: a new TLS connection per request (ab without -k), concurrency split over ab processes. */
export async function w1(ctx: WorkloadContext): Promise<Record<string, unknown>> {
  const { w1Procs, w1Seconds, concurrency } = ctx.params;
  const body = await bodyFile(ctx);
  const r0 = cpuByRole(ctx);
  const c0 = cpuOf(ctx.relayPids());
  const b0 = cpuOf(ctx.backendPids());
  let rest = concurrency;
  const jobs = [];
  for (let i = 0; i < w1Procs; i++) {
    const c = Math.ceil(rest / (w1Procs - i));
    rest -= c;
    const tsv = join(ctx.work, `w1.${i}.tsv`);
    jobs.push(
      run([
        "ab",
        "-q",
        "-t",
        String(w1Seconds),
        "-n",
        "1000000",
        "-c",
        String(c),
        "-p",
        body,
        "-T",
        "application/json",
        "-g",
        tsv,
        url(ctx.port, "/jsonrpc"),
      ], (w1Seconds + 30) * 1000).then((r) => ({ ...r, tsv })),
    );
  }
  const outs = await Promise.all(jobs);
  const c1 = cpuOf(ctx.relayPids());
  const r1 = cpuByRole(ctx);
  const b1 = cpuOf(ctx.backendPids());
  let rps = 0;
  let requests = 0;
  let failed = 0;
  let non2xx = 0;
  const total: number[] = [];
  const connect: number[] = [];
  for (const o of outs) {
    await ctx.logRaw("W1", o.stdout + o.stderr);
    rps += num(/Requests per second:\s+([0-9.]+)/, o.stdout);
    requests += num(/Complete requests:\s+(\d+)/, o.stdout);
    failed += num(/Failed requests:\s+(\d+)/, o.stdout);
    non2xx += num(/Non-2xx responses:\s+(\d+)/, o.stdout);
    // gnuplot columns (tab-separated): starttime seconds ctime dtime ttime wait (milliseconds)
    const text = await Deno.readTextFile(o.tsv).catch(() => "");
    for (const line of text.split("\n").slice(1)) {
      const f = line.split("\t");
      if (f.length < 6) continue;
      total.push(Number(f[4]));
      connect.push(Number(f[2]));
    }
  }
  const cpu = cpuDelta(c0, c1);
  return {
    rps: round(rps, 1),
    requests,
    failed,
    non2xx,
    p50_ms: percentile(total, 50),
    p99_ms: percentile(total, 99),
    connect_p50_ms: percentile(connect, 50),
    relay_cpu_us_per_req: cpuPer(cpu.seconds, requests, 1e6),
    relay_cpu_sys_share: cpu.sysShare,
    backend_cpu_us_per_req: cpuPer(cpuDelta(b0, b1).seconds, requests, 1e6),
    relay_cpu_s_by_role: roleCpuDelta(r0, r1),
  };
}

/** W2: keep-alive small requests (wrk), concurrency 25. */
export async function w2(ctx: WorkloadContext): Promise<Record<string, unknown>> {
  const { w2Seconds, w2Threads, concurrency } = ctx.params;
  const r0 = cpuByRole(ctx);
  const c0 = cpuOf(ctx.relayPids());
  const b0 = cpuOf(ctx.backendPids());
  const o = await run([
    "wrk",
    "-t",
    String(w2Threads),
    "-c",
    String(concurrency),
    "-d",
    `${w2Seconds}s`,
    "--timeout",
    "10s",
    "--latency",
    "-s",
    join(ctx.tools, "post.lua"),
    url(ctx.port, "/jsonrpc"),
  ], (w2Seconds + 30) * 1000);
  const c1 = cpuOf(ctx.relayPids());
  const r1 = cpuByRole(ctx);
  const b1 = cpuOf(ctx.backendPids());
  const out = o.stdout + o.stderr;
  await ctx.logRaw("W2", out);
  const requests = num(/^\s*(\d+) requests in/m, out);
  const socketErrors = (/Socket errors: (.*)/.exec(out)?.[1] ?? "")
    .split(/\D+/).filter(Boolean).reduce((s, x) => s + Number(x), 0);
  const cpu = cpuDelta(c0, c1);
  return {
    rps: num(/Requests\/sec:\s+([0-9.]+)/, out),
    requests,
    socket_errors: socketErrors,
    non2xx: num(/Non-2xx or 3xx responses:\s+(\d+)/, out),
    p50_ms: wrkMs(/^\s+50%\s+(\S+)/m.exec(out)?.[1] ?? ""),
    p99_ms: wrkMs(/^\s+99%\s+(\S+)/m.exec(out)?.[1] ?? ""),
    relay_cpu_us_per_req: cpuPer(cpu.seconds, requests, 1e6),
    relay_cpu_sys_share: cpu.sysShare,
    backend_cpu_us_per_req: cpuPer(cpuDelta(b0, b1).seconds, requests, 1e6),
    relay_cpu_s_by_role: roleCpuDelta(r0, r1),
  };
}

/** W3: bulk download of the blob through the path, one at a time. */
export async function w3(ctx: WorkloadContext): Promise<Record<string, unknown>> {
  const { w3Repeats, blobMib } = ctx.params;
  const r0 = cpuByRole(ctx);
  const c0 = cpuOf(ctx.relayPids());
  const speeds: number[] = [];
  let bytes = 0;
  let failed = 0;
  for (let i = 0; i < w3Repeats; i++) {
    const o = await run([
      "curl",
      "-sS",
      // the backend speaks HTTP/2 too (W6): W3 stays HTTP/1.1, as in the shared harness
      "--http1.1",
      "-o",
      "/dev/null",
      "--max-time",
      "60",
      "--cacert",
      ctx.caCrt,
      "-w",
      "%{http_code} %{size_download} %{speed_download}",
      url(ctx.port, "/blob"),
    ], 70_000);
    const [code, size, speed] = o.stdout.trim().split(" ");
    if (code === "200" && Number(size) === blobMib * 1048576) {
      speeds.push(round(Number(speed) / 1e6, 1));
      bytes += Number(size);
    } else {
      failed++;
      await ctx.logRaw("W3", `download failed: '${o.stdout}' ${o.stderr}`);
    }
  }
  const cpu = cpuDelta(c0, cpuOf(ctx.relayPids()));
  return {
    mb_per_s: speeds,
    failed,
    relay_cpu_s_per_gb: bytes > 0 ? round(cpu.seconds / (bytes / 1e9), 3) : null,
    relay_cpu_sys_share: cpu.sysShare,
    relay_cpu_s_by_role: roleCpuDelta(r0, cpuByRole(ctx)),
  };
}

const memJson = (m: Mem) => ({ rss_kib: m.rssKib, pss_kib: m.pssKib, procs: m.procs });

/** How often W4 counts the descriptors of each relay process and of its client. */
const FD_SAMPLE_MS = 250;

/**
 * Counts every relay process's open descriptors (/proc/PID/fd) and those of the client every
 * {@link FD_SAMPLE_MS} until the returned function is called, which gives the peak of each (by
 * role name; a role of several PIDs: its largest) and each one's open-file limit. `client` is
 * the W4 client's PID.
 */
function sampleFds(ctx: WorkloadContext, client: number) {
  const peak: Record<string, number> = {};
  const limit: Record<string, { soft: number; hard: number }> = {};
  let clientPeak = 0;
  let clientLimit: { soft: number; hard: number } | null = null;
  let samples = 0;
  const tick = () => {
    samples++;
    for (const [role, pids] of Object.entries(ctx.rolePids())) {
      for (const pid of pids) {
        const n = fdCount(pid);
        if (n !== null && n > (peak[role] ?? -1)) peak[role] = n;
        if (!limit[role]) {
          const l = fdLimitOf(pid);
          if (l) limit[role] = l;
        }
      }
    }
    clientPeak = Math.max(clientPeak, fdCount(client) ?? 0);
    clientLimit ??= fdLimitOf(client);
  };
  tick();
  const timer = setInterval(tick, FD_SAMPLE_MS);
  return () => {
    clearInterval(timer);
    tick();
    const soft = (l: { soft: number } | null | undefined) =>
      l && Number.isFinite(l.soft) ? l.soft : null;
    return {
      relay_fd_peak_by_role: peak,
      relay_fd_limit_by_role: Object.fromEntries(
        Object.entries(limit).map(([k, l]) => [k, soft(l)]),
      ),
      relay_fd_peak_max: Math.max(0, ...Object.values(peak)),
      client_fd_peak: clientPeak,
      client_fd_limit: soft(clientLimit),
      fd_samples: samples,
    };
  };
}

/**
 * W4: hold 2,000 (`w4Conns`) TLS connections; relay memory idle, held and after they close, and
 * the peak descriptor count of every relay process and of the client. One client process: it
 * holds a descriptor per connection (10,000 fit under the 20,000 hard limit; the bench checks
 * its limit and says so).
 */
export async function w4(ctx: WorkloadContext): Promise<Record<string, unknown>> {
  const { w4Conns, w4Parallel, w4SettleS } = ctx.params;
  // 60 s for the default 2,000; more time to open (and hold) a larger count
  const holdMaxS = 60 + Math.ceil(Math.max(0, w4Conns - 2000) / 200);
  const ready = join(ctx.work, "w4.ready");
  const release = join(ctx.work, "w4.release");
  const done = join(ctx.work, "w4.done");
  for (const f of [ready, release, done]) await Deno.remove(f).catch(() => {});
  const idle = memOf(ctx.relayPids());
  const idleByRole = memByRole(ctx);
  const bIdle = memOf(ctx.backendPids());
  const log = join(ctx.work, "w4.log");
  const client = spawn("hold.mjs", [
    ...ctx.js,
    join(ctx.tools, "hold.mjs"),
    "--port",
    String(ctx.port),
    "--sni",
    SNI,
    "--ca",
    ctx.caCrt,
    "--count",
    String(w4Conns),
    "--parallel",
    String(w4Parallel),
    "--ready",
    ready,
    "--release",
    release,
    "--done",
    done,
    "--hold-max-s",
    String(holdMaxS),
  ], { stdoutFile: log });
  const fds = sampleFds(ctx, client.pid);
  let fdFigures: ReturnType<ReturnType<typeof sampleFds>> | undefined;
  try {
    const end = Date.now() + holdMaxS * 1000;
    let opened: Record<string, unknown> | undefined;
    while (Date.now() < end && !client.exited) {
      const text = await Deno.readTextFile(ready).catch(() => "");
      if (text) {
        opened = JSON.parse(text);
        break;
      }
      await sleep(50);
    }
    if (!opened) return { error: "hold client did not report", ...fds() };
    await sleep(w4SettleS * 1000);
    const held = memOf(ctx.relayPids());
    const heldByRole = memByRole(ctx);
    const bHeld = memOf(ctx.backendPids());
    fdFigures = fds();
    const limit = fdFigures.client_fd_limit;
    if (limit !== null && limit < w4Conns + 100) {
      await ctx.logRaw("W4", `hold.mjs: open-file limit ${limit} < ${w4Conns} connections + 100`);
    }
    await Deno.writeTextFile(release, "");
    const stopEnd = Date.now() + 10_000;
    while (!client.exited && Date.now() < stopEnd) await sleep(50);
    await sleep(1000);
    const after = memOf(ctx.relayPids());
    const afterByRole = memByRole(ctx);
    const closed = JSON.parse(await Deno.readTextFile(done).catch(() => "{}"));
    const ok = Number(opened.ok ?? 0);
    const perConn = (a: number, b: number) => (ok > 0 ? round((b - a) / ok, 1) : null);
    return {
      ...opened,
      alive_at_release: closed.alive ?? null,
      relay_idle: memJson(idle),
      relay_held: memJson(held),
      relay_after_close: memJson(after),
      relay_rss_per_conn_kib: held.procs > 0 ? perConn(idle.rssKib, held.rssKib) : null,
      relay_pss_per_conn_kib: held.procs > 0 ? perConn(idle.pssKib, held.pssKib) : null,
      backend_rss_per_conn_kib: perConn(bIdle.rssKib, bHeld.rssKib),
      relay_rss_kib_by_role: { idle: idleByRole, held: heldByRole, after_close: afterByRole },
      ...fdFigures,
    };
  } finally {
    if (!fdFigures) fds(); // stops the sampler
    await ctx.logRaw("W4", await Deno.readTextFile(log).catch(() => ""));
    if (!client.exited) await stop(client, 2000);
  }
}

/** W5: 500 sequential handshakes, connect() to secureConnect. */
export async function w5(ctx: WorkloadContext): Promise<Record<string, unknown>> {
  const o = await run([
    ...ctx.js,
    join(ctx.tools, "handshake.mjs"),
    "--port",
    String(ctx.port),
    "--sni",
    SNI,
    "--ca",
    ctx.caCrt,
    "--count",
    String(ctx.params.w5Count),
    "--max-s",
    "60",
  ], 90_000);
  await ctx.logRaw("W5", o.stderr);
  try {
    return JSON.parse(o.stdout);
  } catch {
    return { error: "handshake client failed" };
  }
}

/** h2load's duration (30us | 5.04ms | 1.2s) in milliseconds; null when it is not one. */
export function h2loadMs(v: string): number | null {
  const m = /^([0-9.]+)(us|ms|s)$/.exec(v.trim());
  if (!m) return null;
  const x = Number(m[1]);
  return round(m[2] === "us" ? x / 1000 : m[2] === "ms" ? x : x * 1000, 3);
}

/** What h2load's summary says (nghttp2 1.52's wording), or null when it printed none. */
export interface H2loadSummary {
  /** "Application protocol:" (h2 when ALPN chose HTTP/2), null when no connection got that far. */
  protocol: string | null;
  finished_ms: number | null;
  rps: number;
  total: number;
  started: number;
  done: number;
  succeeded: number;
  failed: number;
  errored: number;
  timeout: number;
  status_2xx: number;
  /** "time for request:" mean and max, milliseconds. */
  request_mean_ms: number | null;
  request_max_ms: number | null;
}

/**
 * Parses h2load's text output. Every figure is matched on its own, so a line more or less (TLS
 * details, progress lines, a newer version's additions) does not matter; null without the
 * "finished in" and "requests:" lines, which h2load prints last whatever happened.
 */
export function parseH2load(text: string): H2loadSummary | null {
  const fin = /^finished in ([0-9.]+(?:us|ms|s)), ([0-9.]+) req\/s/m.exec(text);
  const req =
    /^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout/m
      .exec(text);
  if (!fin || !req) return null;
  const n = (i: number) => Number(req[i]);
  const timeFor = /^time for request:\s+(\S+)\s+(\S+)\s+(\S+)/m.exec(text);
  return {
    protocol: /^Application protocol: (\S+)/m.exec(text)?.[1] ?? null,
    finished_ms: h2loadMs(fin[1]!),
    rps: Number(fin[2]),
    total: n(1),
    started: n(2),
    done: n(3),
    succeeded: n(4),
    failed: n(5),
    errored: n(6),
    timeout: n(7),
    status_2xx: Number(/^status codes: (\d+) 2xx/m.exec(text)?.[1] ?? 0),
    request_mean_ms: timeFor ? h2loadMs(timeFor[3]!) : null,
    request_max_ms: timeFor ? h2loadMs(timeFor[2]!) : null,
  };
}

/**
 * Why an h2load run does not count (its figures are kept but left out of the medians), or
 * undefined when it served every request over HTTP/2 with a 2xx status.
 */
export function h2loadProblem(
  o: { code: number; timedOut: boolean },
  s: H2loadSummary | null,
  requests: number,
): string | undefined {
  if (o.timedOut) return "h2load killed at its deadline";
  if (!s) return `h2load exit ${o.code}, no summary`;
  if (o.code !== 0) return `h2load exit ${o.code}`;
  // h2load's "failed" includes "errored" (and that "timeout"); a non-2xx status succeeds
  const bad = Math.max(s.failed, requests - Math.min(s.succeeded, s.status_2xx));
  if (bad > 0) {
    return `${bad} of ${requests} ` +
      `requests failed (${s.failed} failed, ${s.errored} errored, ${s.timeout} timeout, ` +
      `${s.status_2xx} 2xx)`;
  }
  if (s.protocol !== "h2") return `negotiated ${s.protocol ?? "nothing"}, not h2`;
  return undefined;
}

/** Durations (ms) of the 2xx requests of h2load's `--log-file` (start µs, status, duration µs). */
export function h2loadDurations(log: string): number[] {
  const out: number[] = [];
  for (const line of log.split("\n")) {
    const f = line.split("\t");
    if (f.length < 3 || !/^2\d\d$/.test(f[1]!)) continue;
    const us = Number(f[2]);
    if (Number.isFinite(us)) out.push(us / 1000);
  }
  return out;
}

/**
 * W6: HTTP/2 multiplexed through the path: `h2load -n w6Requests -c w6Conns -m w6Streams`, the
 * W1/W2 POST on `w6Conns` TLS connections (ALPN h2, SNI from the URL) with `w6Streams` streams in
 * flight on each. Bounded by h2load's count and a kill after 60 s (+1 s per 2,000 requests).
 */
export async function w6(ctx: WorkloadContext): Promise<Record<string, unknown>> {
  const { w6Requests, w6Conns, w6Streams } = ctx.params;
  if (!which("h2load")) return { error: "h2load not installed (apt-get install nghttp2-client)" };
  const body = await bodyFile(ctx);
  const logFile = join(ctx.work, "w6.h2load.log");
  const r0 = cpuByRole(ctx);
  const c0 = cpuOf(ctx.relayPids());
  const b0 = cpuOf(ctx.backendPids());
  const o = await run([
    "h2load",
    "-n",
    String(w6Requests),
    "-c",
    String(w6Conns),
    "-m",
    String(w6Streams),
    "-d",
    body,
    "-H",
    "content-type: application/json",
    "--log-file",
    logFile,
    url(ctx.port, "/jsonrpc"),
  ], (60 + Math.ceil(w6Requests / 2000)) * 1000);
  const c1 = cpuOf(ctx.relayPids());
  const r1 = cpuByRole(ctx);
  const b1 = cpuOf(ctx.backendPids());
  await ctx.logRaw("W6", `exit ${o.code}${o.timedOut ? " (killed)" : ""}\n${o.stdout}${o.stderr}`);
  const s = parseH2load(o.stdout);
  const problem = h2loadProblem(o, s, w6Requests);
  const ms = h2loadDurations(await Deno.readTextFile(logFile).catch(() => ""));
  await Deno.remove(logFile).catch(() => {});
  const cpu = cpuDelta(c0, c1);
  const served = s ? Math.min(s.succeeded, s.status_2xx) : 0;
  return {
    ...(problem ? { error: problem } : {}),
    rps: s?.rps ?? null,
    requests: w6Requests,
    succeeded: s?.succeeded ?? 0,
    failed: s ? Math.max(s.failed, w6Requests - served) : w6Requests,
    protocol: s?.protocol ?? null,
    finished_ms: s?.finished_ms ?? null,
    p50_ms: percentile(ms, 50),
    p99_ms: percentile(ms, 99),
    mean_ms: s?.request_mean_ms ?? null,
    max_ms: s?.request_max_ms ?? null,
    relay_cpu_us_per_req: cpuPer(cpu.seconds, served, 1e6),
    relay_cpu_sys_share: cpu.sysShare,
    backend_cpu_us_per_req: cpuPer(cpuDelta(b0, b1).seconds, served, 1e6),
    relay_cpu_s_by_role: roleCpuDelta(r0, r1),
  };
}

/** Counters of /proc/net/netstat (TcpExt) that show a listen queue overflowing. */
const NETSTAT_KEYS = ["ListenOverflows", "ListenDrops", "SyncookiesSent", "TCPReqQFullDrop"];

function netstat(): Record<string, number> {
  let text = "";
  try {
    text = Deno.readTextFileSync("/proc/net/netstat");
  } catch {
    return {};
  }
  const lines = text.split("\n").filter((l) => l.startsWith("TcpExt:"));
  if (lines.length < 2) return {};
  const keys = lines[0]!.split(/\s+/).slice(1);
  const vals = lines[1]!.split(/\s+/).slice(1).map(Number);
  const all = Object.fromEntries(keys.map((k, i) => [k, vals[i] ?? 0]));
  return Object.fromEntries(NETSTAT_KEYS.map((k) => [k, all[k] ?? 0]));
}

interface BurstPart {
  attempted: number;
  handshakes: number;
  served: number;
  failed: number;
  errors: Record<string, number>;
  first_start: number | null;
  last_start: number | null;
  first_hello: number | null;
  last_hello: number | null;
  late_ms: number;
  cpu_ms: number;
  setup_ms: number[];
  connect_ms: number[];
  total_ms: number[];
}

/**
 * W7: a burst of `size` new TLS clients whose connect() calls all start within `w7WindowMs`
 * (`w7Procs` client processes on one schedule), each a verified handshake and one POST /jsonrpc,
 * then closed. Bounded: each client by `w7DeadlineMs`, each client process by its `--max-s` and
 * a kill 15 s after that.
 */
export async function w7(ctx: WorkloadContext, size: number): Promise<Record<string, unknown>> {
  const { w7WindowMs, w7Procs, w7DeadlineMs, w7Client } = ctx.params;
  const js = w7Client === "deno" ? [Deno.execPath(), "run", "-A"] : ctx.js;
  const procs = Math.max(1, Math.min(w7Procs, size));
  const maxS = Math.ceil((w7DeadlineMs + w7WindowMs) / 1000) + 10;
  // the client processes start up meanwhile (Node: about 0.1 s; Deno: more)
  const startAt = Date.now() + 2000;
  const r0 = cpuByRole(ctx);
  const c0 = cpuOf(ctx.relayPids());
  const n0 = netstat();
  const outs = await Promise.all(Array.from({ length: procs }, (_, p) =>
    run([
      ...js,
      join(ctx.tools, "burst.mjs"),
      "--port",
      String(ctx.port),
      "--sni",
      SNI,
      "--ca",
      ctx.caCrt,
      "--count",
      String(size),
      "--offset",
      String(p),
      "--stride",
      String(procs),
      "--start-at",
      String(startAt),
      "--window-ms",
      String(w7WindowMs),
      "--deadline-ms",
      String(w7DeadlineMs),
      "--max-s",
      String(maxS),
    ], (maxS + 15) * 1000)));
  const n1 = netstat();
  const cpu = cpuDelta(c0, cpuOf(ctx.relayPids()));
  const r1 = cpuByRole(ctx);
  const parts: BurstPart[] = [];
  const errors: Record<string, number> = {};
  let lost = 0;
  for (const [p, o] of outs.entries()) {
    try {
      parts.push(JSON.parse(o.stdout));
    } catch {
      // this process's clients count as failed, under what it said
      const mineN = Math.ceil((size - p) / procs);
      lost += mineN;
      const why = o.timedOut ? "client process killed at its deadline" : `client exit ${o.code}`;
      errors[why] = (errors[why] ?? 0) + mineN;
    }
    if (o.stderr.trim()) await ctx.logRaw("W7", `burst ${size}, client ${p}: ${o.stderr.trim()}`);
  }
  for (const q of parts) {
    for (const [k, v] of Object.entries(q.errors)) errors[k] = (errors[k] ?? 0) + v;
  }
  const sum = (f: (q: BurstPart) => number) => parts.reduce((s, q) => s + f(q), 0);
  const setup = parts.flatMap((q) => q.setup_ms);
  const connect = parts.flatMap((q) => q.connect_ms);
  const total = parts.flatMap((q) => q.total_ms);
  const spread = (a: (q: BurstPart) => number | null, b: (q: BurstPart) => number | null) => {
    const xs = parts.map(a).filter((x): x is number => x !== null);
    const ys = parts.map(b).filter((x): x is number => x !== null);
    return xs.length && ys.length ? round(Math.max(...ys) - Math.min(...xs), 1) : null;
  };
  const served = sum((q) => q.served);
  const res = {
    attempted: size,
    handshakes: sum((q) => q.handshakes),
    served,
    failed: sum((q) => q.failed) + lost,
    errors,
    client: w7Client === "deno" || js[0] !== "node" ? "deno" : "node",
    client_procs: procs,
    // first to last connect() call, and first to last ClientHello (TCP connected), all processes
    start_spread_ms: spread((q) => q.first_start, (q) => q.last_start),
    hello_spread_ms: spread((q) => q.first_hello, (q) => q.last_hello),
    start_late_ms: parts.length ? round(Math.max(...parts.map((q) => q.late_ms)), 1) : null,
    setup_p50_ms: percentile(setup, 50),
    setup_p99_ms: percentile(setup, 99),
    setup_max_ms: percentile(setup, 100),
    connect_p50_ms: percentile(connect, 50),
    connect_p99_ms: percentile(connect, 99),
    total_p50_ms: percentile(total, 50),
    total_p99_ms: percentile(total, 99),
    total_max_ms: percentile(total, 100),
    // the network namespace's counters: another program's connections count too
    netstat_delta: Object.fromEntries(
      Object.keys(n1).map((k) => [k, (n1[k] ?? 0) - (n0[k] ?? 0)]),
    ),
    relay_cpu_ms_per_client: ctx.relayPids().length ? cpuPer(cpu.seconds, size, 1e3) : null,
    // the clients' own CPU (node:tls costs about 1.5 ms per handshake here)
    client_cpu_ms_per_client: round(sum((q) => q.cpu_ms ?? 0) / size, 2),
    relay_cpu_s_by_role: roleCpuDelta(r0, r1),
  };
  await ctx.logRaw(
    "W7",
    `burst ${size}: ${
      JSON.stringify({ ...res, errors, netstat_delta: res.netstat_delta }).slice(0, 2000)
    }`,
  );
  return res;
}

export const WORKLOADS = { W1: w1, W2: w2, W3: w3, W4: w4, W5: w5, W6: w6 } as const;
export type WorkloadName = keyof typeof WORKLOADS;
