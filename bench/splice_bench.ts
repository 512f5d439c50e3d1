/**
 * Micro-benchmark of one relay process: CPU µs per small round trip (the W2 pattern) and RSS per
 * held connection (the W4 pattern), for `splice()` variants next to the naive read/write loop of
 * ../shared/bench/topologies/relay-loop.ts. Plain TCP: a passthrough relay never looks at the
 * bytes, so TLS would only add client and server CPU.
 *
 *   deno run -A bench/splice_bench.ts [--variants loop64,splice,...] [--seconds 3] [--reps 3]
 *       [--conns 25] [--bytes 256] [--hold 2000]
 *
 * Every variant is its own relay process (`relay` mode of this file), measured from
 * /proc/PID/stat and /proc/PID/status; variants alternate within each repetition so that a drift
 * of the (shared, 2-core) machine hits all of them. The echo server and the clients run in this
 * process.
 * @module
 */
// deno-lint-ignore-file no-console
import { parseArgs } from "node:util";
import { BufferPool, splice } from "../lib/net/splice.ts";
import { tryClose } from "../lib/net/conn.ts";

/** Variant name → relay arguments. */
const VARIANTS: Record<string, string[]> = {
  loop64: ["--impl", "loop", "--buf", "65536"],
  loop1k: ["--impl", "loop", "--buf", "1024"],
  splice: ["--impl", "splice"],
  splice256: ["--impl", "splice", "--small", "256"],
  splice512: ["--impl", "splice", "--small", "512"],
  splice4k: ["--impl", "splice", "--small", "4096"],
  splice16k: ["--impl", "splice", "--small", "16384"],
  "splice+node": ["--impl", "splice", "--node"],
  "loop64+node": ["--impl", "loop", "--buf", "65536", "--node"],
  "splice+mod": ["--impl", "splice", "--import", "../mod.ts"],
  "splice+yamux": ["--impl", "splice", "--import", "@chainsafe/libp2p-yamux"],
  "splice+x509": ["--impl", "splice", "--import", "reflect-metadata", "--import", "@peculiar/x509"],
  "splice+logtape": ["--impl", "splice", "--import", "@logtape/logtape"],
  "splice+heap": ["--impl", "splice", "--ballast-mib", "30"],
};

async function loopPump(src: Deno.Conn, dst: Deno.Conn, bytes: number): Promise<void> {
  const buf = new Uint8Array(bytes);
  try {
    for (;;) {
      const n = await src.read(buf);
      if (n === null) break;
      for (let off = 0; off < n;) off += await dst.write(buf.subarray(off, n));
    }
    await dst.closeWrite();
  } catch {
    tryClose(src);
    tryClose(dst);
  }
}

async function relayMain(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      to: { type: "string" },
      listen: { type: "string", default: "0" },
      impl: { type: "string", default: "splice" },
      buf: { type: "string", default: "65536" },
      small: { type: "string" },
      node: { type: "boolean", default: false },
      import: { type: "string", multiple: true, default: [] },
      "ballast-mib": { type: "string", default: "0" },
    },
  });
  const to = { hostname: "127.0.0.1", port: Number(values.to) };
  if (values.node) {
    // what a proxy process also has: node: modules loaded and an idle node:net socket (EPS link)
    const net = await import("node:net");
    const s = net.connect(to.port, "127.0.0.1");
    s.on("error", () => {});
  }
  // what else a role process holds: the whole module graph of tls-pass (a larger heap)
  for (const m of values.import) await import(m);
  // a heap as large as a role's, without its code: small objects that live as long as the process
  const ballast: unknown[] = [];
  for (let i = 0; i < Number(values["ballast-mib"]) * 16_384; i++) ballast.push({ i, s: `k${i}` });
  (globalThis as Record<string, unknown>).__ballast = ballast;
  const pool = new BufferPool();
  const small = values.small === undefined ? undefined : Number(values.small);
  const listener = Deno.listen({ hostname: "127.0.0.1", port: Number(values.listen) });
  console.log(JSON.stringify({ port: (listener.addr as Deno.NetAddr).port }));
  Deno.addSignalListener("SIGTERM", () => Deno.exit(0));
  for await (const conn of listener) {
    (async () => {
      let up: Deno.TcpConn;
      try {
        up = await Deno.connect(to);
      } catch {
        tryClose(conn);
        return;
      }
      if (values.impl === "loop") {
        conn.setNoDelay(true);
        up.setNoDelay(true);
        const bytes = Number(values.buf);
        await Promise.all([loopPump(conn, up, bytes), loopPump(up, conn, bytes)]);
        tryClose(conn);
        tryClose(up);
      } else {
        await splice(conn, up, { pool, ...(small ? { smallBytes: small } : {}) });
      }
    })();
  }
}

function startEcho(): { port: number; close(): void } {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  (async () => {
    try {
      for await (const conn of listener) {
        (async () => {
          const buf = new Uint8Array(16384);
          try {
            for (let n; (n = await conn.read(buf)) !== null;) {
              for (let off = 0; off < n;) off += await conn.write(buf.subarray(off, n));
            }
          } catch {
            // client gone
          } finally {
            tryClose(conn);
          }
        })();
      }
    } catch {
      // closed
    }
  })();
  return { port: (listener.addr as Deno.NetAddr).port, close: () => tryClose(listener) };
}

function cpuTicks(pid: number): number {
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return Number(f[11]) + Number(f[12]); // utime + stime (fields 14, 15)
}

function rssKiB(pid: number): number {
  const m = Deno.readTextFileSync(`/proc/${pid}/status`).match(/VmRSS:\s+(\d+)/);
  return m ? Number(m[1]) : NaN;
}

const TICK_US = 10_000; // USER_HZ 100

interface Relay {
  pid: number;
  port: number;
  child: Deno.ChildProcess;
}

async function startRelay(variant: string, echoPort: number): Promise<Relay> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      import.meta.filename!,
      "relay",
      "--to",
      String(echoPort),
      ...VARIANTS[variant]!,
    ],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.getReader();
  let text = "";
  while (!text.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`relay ${variant} exited before it listened`);
    text += new TextDecoder().decode(value);
  }
  reader.releaseLock();
  child.stdout.cancel().catch(() => {});
  return { pid: child.pid, port: JSON.parse(text).port, child };
}

async function stopRelay(r: Relay): Promise<void> {
  try {
    r.child.kill("SIGTERM");
  } catch {
    // gone
  }
  await r.child.status;
}

/** `conns` clients doing round trips of `bytes` for `seconds`; returns the round trips. */
async function roundTrips(port: number, conns: number, bytes: number, seconds: number) {
  const msg = new Uint8Array(bytes).fill(7);
  const end = performance.now() + seconds * 1000;
  let total = 0;
  await Promise.all(Array.from({ length: conns }, async () => {
    const c = await Deno.connect({ hostname: "127.0.0.1", port });
    c.setNoDelay(true);
    const buf = new Uint8Array(bytes);
    try {
      while (performance.now() < end) {
        await c.write(msg);
        for (let got = 0; got < bytes;) {
          const n = await c.read(buf.subarray(got));
          if (n === null) throw new Error("relay closed");
          got += n;
        }
        total++;
      }
    } finally {
      tryClose(c);
    }
  }));
  return total;
}

/** Holds `count` idle connections through the relay; returns RSS KiB per connection. */
async function holdKiB(r: Relay, count: number): Promise<number> {
  const idle = rssKiB(r.pid);
  const conns: Deno.TcpConn[] = [];
  const ping = new Uint8Array(100);
  for (let i = 0; i < count; i++) {
    const c = await Deno.connect({ hostname: "127.0.0.1", port: r.port });
    conns.push(c);
    await c.write(ping); // one round trip, as a TLS handshake would start
    await c.read(new Uint8Array(100));
  }
  await new Promise((res) => setTimeout(res, 500));
  const held = rssKiB(r.pid);
  for (const c of conns) tryClose(c);
  return (held - idle) / count;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      variants: { type: "string", default: "loop64,splice" },
      seconds: { type: "string", default: "3" },
      reps: { type: "string", default: "3" },
      conns: { type: "string", default: "25" },
      bytes: { type: "string", default: "256" },
      hold: { type: "string", default: "0" },
    },
  });
  const variants = values.variants.split(",");
  for (const v of variants) if (!VARIANTS[v]) throw new Error(`unknown variant ${v}`);
  const echo = startEcho();
  const results: Record<string, { us: number[]; rps: number[]; kib: number[] }> = {};
  for (const v of variants) results[v] = { us: [], rps: [], kib: [] };
  try {
    for (let rep = 0; rep < Number(values.reps); rep++) {
      const order = rep % 2 === 0 ? variants : [...variants].reverse();
      for (const v of order) {
        const r = await startRelay(v, echo.port);
        try {
          await roundTrips(r.port, Number(values.conns), Number(values.bytes), 0.5); // warm-up
          const t0 = cpuTicks(r.pid);
          const n = await roundTrips(
            r.port,
            Number(values.conns),
            Number(values.bytes),
            Number(values.seconds),
          );
          const us = (cpuTicks(r.pid) - t0) * TICK_US / n;
          results[v]!.us.push(us);
          results[v]!.rps.push(n / Number(values.seconds));
          if (Number(values.hold) > 0) results[v]!.kib.push(await holdKiB(r, Number(values.hold)));
        } finally {
          await stopRelay(r);
        }
      }
    }
  } finally {
    echo.close();
  }
  const med = (a: number[]) => a.length ? [...a].sort((x, y) => x - y)[a.length >> 1]! : NaN;
  console.log("| variant | CPU µs/round trip (median) | all | round trips/s | KiB/held conn |");
  console.log("| --- | ---: | --- | ---: | ---: |");
  for (const v of variants) {
    const r = results[v]!;
    console.log(
      `| ${v} | ${med(r.us).toFixed(2)} | ${r.us.map((x) => x.toFixed(1)).join(" ")} | ${
        med(r.rps).toFixed(0)
      } | ${med(r.kib).toFixed(1)} |`,
    );
  }
}

if (import.meta.main) {
  if (Deno.args[0] === "relay") await relayMain(Deno.args.slice(1));
  else await main();
}
