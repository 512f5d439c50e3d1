// deno-lint-ignore-file no-console -- console is this script's output
/**
 * EPS benchmark: `deno task bench:eps [OUT.json]` (`deno run -A` with the shipped V8 flags, as the
 * proxies whose side this process plays run). Bounded (well under 60 s).
 *
 * 1. Calls: two EPS processes (`tls-pass run eps`: cli.ts, or `$TLS_PASS_BIN`) linked on
 *    loopback; two proxy clients in this process; `proxy A → EPS A → EPS B → proxy B` echo calls,
 *    with 1 and 25 concurrent callers: calls/s, p50, p99.
 * 2. Stream throughput, in this process: one yamux stream over an mTLS link (node:tls, as EPS
 *    links are) against a plain TLS connection of the same kind, and a Deno.TlsConn for scale.
 *
 * Call figures include the CPU time (user + system, from /proc on Linux) each EPS process spent
 * per call, the cost the dial-back notice adds to every new client connection, and this process's
 * (both proxies' EPS clients and the callers). The EPS processes run with the shipped V8 flags
 * (tools/v8_flags.ts, as `deno task bench` runs the roles; `EPS_BENCH_V8_FLAGS=` for V8's
 * defaults).
 *
 * Prints a Markdown table; writes the figures as JSON to OUT.json when given.
 * @module
 */
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { stringify } from "yaml";
import { createPki, type Pki, writePki } from "../lib/certs/pki.ts";
import { connectEps, type EpsClient } from "../lib/eps/client.ts";
import { Session } from "../lib/eps/session.ts";
import { connectNodeTls, listenNodeTls } from "../lib/net/node_tls_conn.ts";
import type { ByteConn } from "../lib/net/conn.ts";
import { SHIPPED_V8_FLAGS } from "../tools/v8_flags.ts";

const CLI = fileURLToPath(new URL("../cli.ts", import.meta.url));
const LOOPBACK = { hostname: "127.0.0.1", port: 0 };
const ALPN = ["tls-pass-eps/1"];

/** The EPS processes' V8 flags: the shipped ones unless EPS_BENCH_V8_FLAGS says ("": V8's defaults). */
const EPS_V8_FLAGS = Deno.env.get("EPS_BENCH_V8_FLAGS") ?? SHIPPED_V8_FLAGS;

/** Every EPS process started, so that the watchdog and Ctrl-C can stop them too. */
const started: Deno.ChildProcess[] = [];

function killAll(): void {
  for (const c of started) {
    try {
      c.kill("SIGKILL");
    } catch { /* exited */ }
  }
}

interface Child {
  addrs: Record<string, string>;
  pid: number;
  stop(): Promise<void>;
}

async function spawnEps(settingsDir: string): Promise<Child> {
  const bin = Deno.env.get("TLS_PASS_BIN");
  const run = ["run", "eps", "--settings", settingsDir, "--log-level", "warning"];
  // e.g. EPS_BENCH_DENO_FLAGS="--cpu-prof --cpu-prof-dir=/tmp/prof" to profile the EPS processes
  const flags = (Deno.env.get("EPS_BENCH_DENO_FLAGS") ?? "").split(" ").filter((f) => f !== "");
  const v8Args = EPS_V8_FLAGS === "" ? [] : [`--v8-flags=${EPS_V8_FLAGS}`];
  const [cmd, args] = bin
    ? [bin, run]
    : [Deno.execPath(), ["run", "-A", ...v8Args, ...flags, CLI, ...run]];
  const child = new Deno.Command(cmd, {
    args,
    stdin: "null",
    stdout: "piped",
    stderr: Deno.env.get("EPS_BENCH_STDERR") ? "inherit" : "null",
  })
    .spawn();
  started.push(child);
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  const deadline = Date.now() + 30_000;
  while (!buf.includes("\n")) {
    if (Date.now() > deadline) throw new Error("EPS not ready within 30 s");
    const { value, done } = await reader.read();
    if (done) throw new Error("EPS exited before ready");
    buf += value;
  }
  const drained = (async () => {
    while (!(await reader.read()).done) { /* drain */ }
  })();
  const ready = JSON.parse(buf.slice(0, buf.indexOf("\n")));
  return {
    addrs: ready.addrs,
    pid: child.pid,
    async stop() {
      try {
        child.kill("SIGTERM");
      } catch { /* gone */ }
      await child.status;
      await drained;
    },
  };
}

function hostPort(s: string) {
  const i = s.lastIndexOf(":");
  return { hostname: s.slice(0, i), port: Number(s.slice(i + 1)) };
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!;
}

interface CallFigures {
  concurrency: number;
  calls: number;
  callsPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  /** CPU µs per call of each EPS process on the path (null where /proc is not readable). */
  epsCpuUsPerCall: (number | null)[];
  /** CPU µs per call of this process: the two proxies' EPS clients and the callers. */
  callersCpuUsPerCall: number | null;
}

/** CPU time (user + system) of a process in µs, from /proc/PID/stat; null when unavailable. */
function cpuUs(pid: number): number | null {
  try {
    const fields = Deno.readTextFileSync(`/proc/${pid}/stat`).split(") ")[1]!.split(" ");
    return (Number(fields[11]) + Number(fields[12])) * 10_000; // clock ticks of 10 ms
  } catch {
    return null;
  }
}

async function callLoad(
  client: EpsClient,
  concurrency: number,
  seconds: number,
  method: string,
  eps: Child[],
): Promise<CallFigures> {
  const lat: number[] = [];
  const cpu0 = eps.map((c) => cpuUs(c.pid));
  const own0 = cpuUs(Deno.pid);
  const end = performance.now() + seconds * 1000;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async (_, w) => {
      for (let i = 0; performance.now() < end; i++) {
        const s = performance.now();
        await client.call(method, { w, i });
        lat.push(performance.now() - s);
      }
    }),
  );
  const elapsed = (performance.now() - t0) / 1000;
  const cpu = eps.map((c, i) => {
    const [a, b] = [cpu0[i], cpuUs(c.pid)];
    return a === null || a === undefined || b === null ? null : Math.round((b - a) / lat.length);
  });
  const own1 = cpuUs(Deno.pid);
  lat.sort((a, b) => a - b);
  return {
    concurrency,
    calls: lat.length,
    callsPerSecond: Math.round(lat.length / elapsed),
    p50Ms: +percentile(lat, 0.5).toFixed(3),
    p99Ms: +percentile(lat, 0.99).toFixed(3),
    epsCpuUsPerCall: cpu,
    callersCpuUsPerCall: own0 === null || own1 === null
      ? null
      : Math.round((own1 - own0) / lat.length),
  };
}

/** Sends `bytes` from `w` to `r` in 64 KiB writes; returns MB/s (10^6 B/s). */
async function pump(
  w: Pick<ByteConn, "write" | "closeWrite">,
  r: Pick<ByteConn, "read">,
  bytes: number,
): Promise<number> {
  const chunk = new Uint8Array(64 * 1024).fill(7);
  const t0 = performance.now();
  const send = (async () => {
    for (let sent = 0; sent < bytes;) {
      const n = Math.min(chunk.length, bytes - sent);
      for (let off = 0; off < n;) off += await w.write(chunk.subarray(off, n));
      sent += n;
    }
    await w.closeWrite();
  })();
  const rbuf = new Uint8Array(64 * 1024);
  let got = 0;
  for (let n; (n = await r.read(rbuf)) !== null;) got += n;
  await send;
  if (got !== bytes) throw new Error(`received ${got} of ${bytes} bytes`);
  return bytes / 1e6 / ((performance.now() - t0) / 1000);
}

async function nodeTlsPair(pki: Pki) {
  const s = pki.leaves["eps-a"]!;
  const c = pki.leaves["eps-b"]!;
  const listener = await listenNodeTls(LOOPBACK, {
    cert: s.certPem,
    key: s.keyPem,
    ca: [pki.rootPem],
    alpnProtocols: ALPN,
    // the plain reference has no flow control of its own: let the receiver buffer the burst
    maxBufferBytes: 512 * 1024 * 1024,
  });
  const accepted = listener.accept();
  const client = await connectNodeTls(listener.addr, {
    servername: "eps-a",
    cert: c.certPem,
    key: c.keyPem,
    ca: [pki.rootPem],
    alpnProtocols: ALPN,
  });
  const server = (await accepted)!;
  return {
    client,
    server,
    async close() {
      const closing = listener.close();
      for (const x of [client, server]) {
        try {
          x.close();
        } catch { /* closed */ }
        await x.closed;
      }
      await closing;
    },
  };
}

async function throughput(pki: Pki, bytes: number) {
  // plain node:tls connection (the kind an EPS link uses)
  let p = await nodeTlsPair(pki);
  const plainNode = await pump(p.client, p.server, bytes);
  await p.close();
  // one yamux stream over the same kind of connection
  p = await nodeTlsPair(pki);
  const a = new Session(p.client, { client: true, keepaliveIntervalMs: 0 });
  const b = new Session(p.server, { client: false, keepaliveIntervalMs: 0 });
  const sa = a.open();
  await sa.write(new Uint8Array(1)); // SYN reaches the peer
  const sb = (await b.accept())!;
  await sb.read(new Uint8Array(1));
  const yamux = await pump(sa, sb, bytes);
  await a.close();
  await b.close();
  await p.close();
  // Deno's own TLS, for scale (no client certificates: Deno.listenTls cannot ask for them)
  const leaf = pki.leaves["eps-a"]!;
  const l = Deno.listenTls({
    ...LOOPBACK,
    cert: leaf.certPem,
    key: leaf.keyPem,
    alpnProtocols: ALPN,
  });
  const acc = l.accept();
  const dc = await Deno.connectTls({
    hostname: "127.0.0.1",
    port: l.addr.port,
    caCerts: [pki.rootPem],
    alpnProtocols: ALPN,
    unsafelyDisableHostnameVerification: true,
  });
  const ds = await acc;
  const denoTls = await pump(dc, ds, bytes);
  dc.close();
  ds.close();
  l.close();
  return { plainNodeTls: plainNode, yamuxStream: yamux, denoTls };
}

const step = (what: string) => console.error(`eps bench: ${what}`);

/** The --v8-flags this process was started with ("" when none). */
function ownV8Flags(): string {
  try {
    const argv = Deno.readTextFileSync("/proc/self/cmdline").split("\0");
    return argv.find((a) => a.startsWith("--v8-flags="))?.slice("--v8-flags=".length) ?? "";
  } catch {
    return "";
  }
}

async function main() {
  const out = Deno.args[0];
  const dir = await Deno.makeTempDir({ prefix: "tls-pass-eps-bench-" });
  const children: Child[] = [];
  const clients: EpsClient[] = [];
  try {
    const pki = await createPki(["eps-a", "eps-b"]);
    await writePki(pki, join(dir, "certs"));
    await Deno.mkdir(join(dir, "directory"));
    const writeDirectory = (bAddr?: string) =>
      Deno.writeTextFile(
        join(dir, "directory", "operators.yml"),
        stringify({
          ca_certificate_files: [join(dir, "certs", "root.crt")],
          operators: {
            "eps-a": {},
            "eps-b": {
              ...(bAddr ? { address: bAddr } : {}),
              permissions: [{ method: "echo", from: ["eps-a"] }],
            },
          },
        }),
      );
    const writeSettings = async (op: string) => {
      const d = join(dir, "roles", op);
      await Deno.mkdir(d, { recursive: true });
      await Deno.writeTextFile(
        join(d, "settings.yml"),
        stringify({
          operator: op,
          listen: "127.0.0.1:0",
          certificate_file: join(dir, "certs", `${op}.crt`),
          key_file: join(dir, "certs", `${op}.key`),
          directory_dir: join(dir, "directory"),
        }),
      );
      return d;
    };
    await writeDirectory();
    step("starting two EPS processes");
    const b = await spawnEps(await writeSettings("eps-b"));
    children.push(b);
    await writeDirectory(b.addrs.links);
    const a = await spawnEps(await writeSettings("eps-a"));
    children.push(a);
    const client = (op: string, addr: string) =>
      connectEps({
        address: hostPort(addr),
        certificateFile: join(dir, "certs", `${op}.crt`),
        keyFile: join(dir, "certs", `${op}.key`),
        caCertificateFiles: [join(dir, "certs", "root.crt")],
        callTimeoutMs: 5000,
        maxMessageBytes: 1 << 20,
      });
    const pa = client("eps-a", a.addrs.links!);
    const pb = client("eps-b", b.addrs.links!);
    clients.push(pa, pb);
    pb.serve("echo", (params) => params);
    pa.serve("self", (params) => params);
    await Promise.all([pa.ready, pb.ready]);
    step("proxies attached");
    // the A→B link may still be coming up: the first call waits for it
    await pa.call("eps-b.echo", {}, { timeoutMs: 10_000 });
    await callLoad(pa, 25, 1, "eps-b.echo", []); // warm-up
    step("calls, 1 caller");
    const calls1 = await callLoad(pa, 1, 3, "eps-b.echo", [a, b]);
    step("calls, 25 callers");
    const calls25 = await callLoad(pa, 25, 5, "eps-b.echo", [a, b]);
    step("calls to the own proxy, 1 and 25 callers");
    const self1 = await callLoad(pa, 1, 2, "eps-a.self", [a]);
    const self25 = await callLoad(pa, 25, 3, "eps-a.self", [a]);
    step("stream throughput");
    const tput = await throughput(pki, 256 * 1024 * 1024);

    const result = {
      date: new Date().toISOString(),
      deno: Deno.version.deno,
      machine: { cpus: navigator.hardwareConcurrency, loadavg: Deno.loadavg() },
      v8Flags: {
        eps: Deno.env.get("TLS_PASS_BIN") ? "(the binary's)" : EPS_V8_FLAGS || "(V8's defaults)",
        callers: Deno.env.get("DENO_V8_FLAGS") ?? (ownV8Flags() || "(V8's defaults)"),
      },
      path: "proxy A → EPS A → EPS B → proxy B (two EPS processes, one link, loopback)",
      calls: [calls1, calls25],
      callsOneEps: [self1, self25],
      throughputMBps: {
        yamuxStreamOverNodeTls: +tput.yamuxStream.toFixed(1),
        plainNodeTls: +tput.plainNodeTls.toFixed(1),
        plainDenoTls: +tput.denoTls.toFixed(1),
        ratioToPlainNodeTls: +(tput.yamuxStream / tput.plainNodeTls).toFixed(2),
        ratioToPlainDenoTls: +(tput.yamuxStream / tput.denoTls).toFixed(2),
      },
    };
    const t = result.throughputMBps;
    const row = (path: string) => (c: CallFigures) =>
      `| ${path} | ${c.concurrency} | ${c.calls} | ${c.callsPerSecond} | ${c.p50Ms} | ${c.p99Ms} | ${
        c.epsCpuUsPerCall.map((x) => x ?? "n/a").join(" / ")
      } | ${c.callersCpuUsPerCall ?? "n/a"} |`;
    console.log(`## EPS benchmark (${result.date}, Deno ${result.deno})

${result.machine.cpus} CPUs, load average ${
      result.machine.loadavg.map((x) => x.toFixed(1)).join(" ")
    } at the end. Calls echo a small JSON object; the proxies are clients in the bench process. V8
flags: EPS processes ${result.v8Flags.eps}; the bench process ${result.v8Flags.callers}.

| path | concurrent callers | calls | calls/s | p50 ms | p99 ms | CPU µs per call (EPS A / EPS B) | CPU µs per call (the proxies' side) |
|---|---:|---:|---:|---:|---:|---:|---:|
${result.calls.map(row("proxy A → EPS A → EPS B → proxy B")).join("\n")}
${result.callsOneEps.map(row("proxy A → EPS A → proxy A")).join("\n")}

Stream throughput, 256 MiB one way, sender and receiver in one process:

| path | MB/s | ratio |
|---|---:|---:|
| one yamux stream over mTLS (node:tls, as EPS links) | ${t.yamuxStreamOverNodeTls} | 1.00 |
| plain TLS connection, node:tls (same stack) | ${t.plainNodeTls} | ${t.ratioToPlainNodeTls} (stream / plain) |
| plain TLS connection, Deno.TlsConn | ${t.plainDenoTls} | ${t.ratioToPlainDenoTls} (stream / plain) |
`);
    if (out) await Deno.writeTextFile(out, JSON.stringify(result, null, 2) + "\n");
  } finally {
    for (const c of clients) await c.close();
    for (const c of children) await c.stop();
    await Deno.remove(dir, { recursive: true });
  }
}

const timer = setTimeout(() => {
  console.error("EPS benchmark: over 90 s, giving up");
  killAll();
  Deno.exit(1);
}, 90_000);
const onInterrupt = () => {
  killAll();
  Deno.exit(130);
};
Deno.addSignalListener("SIGINT", onInterrupt);
try {
  await main();
} finally {
  clearTimeout(timer);
  Deno.removeSignalListener("SIGINT", onInterrupt);
}
