/**
 * Crash and restart of an EPS process (rathole's crash/restart sequence): kill -9 of one EPS makes
 * calls fail fast with "unavailable"; once it is started again the link comes back by itself and
 * calls work, with no other process restarted. The EPS servers are child processes
 * (`tls-pass run eps`: `deno run -A cli.ts`, or `$TLS_PASS_BIN`); the proxies are clients in
 * this process.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { RpcCode, RpcError } from "../lib/errors.ts";
import { cliCommand } from "./_cli.ts";
import { eventually, Fixture, withTimeout } from "./_eps_cluster.ts";

interface Child extends AsyncDisposable {
  pid: number;
  addrs: Record<string, string>;
  kill(signal: Deno.Signal): Promise<Deno.CommandStatus>;
}

/** Starts an EPS child process and waits (bounded) for its ready line. */
async function spawnEps(settingsDir: string): Promise<Child> {
  const [cmd, pre] = cliCommand(); // `deno run -A cli.ts`, or $TLS_PASS_BIN
  const child = new Deno.Command(cmd, {
    args: [...pre, "run", "eps", "--settings", settingsDir],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const verbose = Boolean(Deno.env.get("TLS_PASS_LOG"));
  let errText = "";
  const errDone = (async () => {
    for await (const chunk of child.stderr.pipeThrough(new TextDecoderStream())) {
      errText += chunk;
      if (verbose) Deno.stderr.writeSync(new TextEncoder().encode(chunk));
    }
  })();
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let status: Deno.CommandStatus | undefined;
  const statusP = child.status.then((s) => (status = s));
  let outDone: Promise<void> = Promise.resolve();
  const kill = async (signal: Deno.Signal) => {
    if (status === undefined) {
      try {
        child.kill(signal);
      } catch { /* exited already */ }
    }
    const s = await statusP;
    await outDone;
    await errDone;
    return s;
  };
  try {
    let buffered = "";
    const line = await withTimeout(
      (async () => {
        for (;;) {
          const nl = buffered.indexOf("\n");
          if (nl >= 0) return buffered.slice(0, nl);
          const { value, done } = await lines.read();
          if (done) throw new Error(`EPS exited before ready; stderr:\n${errText}`);
          buffered += value;
        }
      })(),
      30_000,
      `EPS ready line from ${settingsDir}`,
    );
    outDone = (async () => {
      while (!(await lines.read()).done) { /* drain */ }
    })();
    const ready = JSON.parse(line) as { pid?: number; addrs: Record<string, string> };
    return {
      pid: child.pid,
      addrs: ready.addrs,
      kill,
      [Symbol.asyncDispose]: async () => {
        await kill("SIGTERM");
      },
    };
  } catch (err) {
    await lines.cancel().catch(() => {});
    await kill("SIGKILL");
    throw err;
  }
}

function hostPort(s: string): { hostname: string; port: number } {
  const i = s.lastIndexOf(":");
  return { hostname: s.slice(0, i), port: Number(s.slice(i + 1)) };
}

async function writeSettings(fx: Fixture, operator: string, listen: string): Promise<string> {
  const dir = join(fx.dir, `roles/${operator}`);
  await Deno.mkdir(dir, { recursive: true });
  await Deno.writeTextFile(
    join(dir, "settings.yml"),
    [
      `operator: ${operator}`,
      `listen: ${listen}`,
      `certificate_file: ${fx.cert(operator)}`,
      `key_file: ${fx.key(operator)}`,
      `directory_dir: ${fx.directoryDir}`,
      `call_timeout_ms: 4000`,
      `keepalive_interval_ms: 1000`,
    ].join("\n") + "\n",
  );
  return dir;
}

Deno.test("EPS killed with -9 makes calls fail fast; restarted, its link comes back by itself", async () => {
  await using fx = await Fixture.create(["eps-a", "eps-b"]);
  const directory = (b?: string) =>
    fx.writeDirectory({
      "eps-a": { permissions: [{ method: "ping", from: ["eps-b"] }] },
      "eps-b": {
        ...(b ? { address: hostPort(b) } : {}),
        permissions: [{ method: "echo", from: ["eps-a"] }],
      },
    });
  await directory();
  let b: Child | undefined = await spawnEps(await writeSettings(fx, "eps-b", "127.0.0.1:0"));
  try {
    const bAddr = b.addrs.links!;
    await directory(bAddr);
    await using a = await spawnEps(await writeSettings(fx, "eps-a", "127.0.0.1:0"));
    const aPid = a.pid;
    await using pa = await fx.attach("eps-a", hostPort(a.addrs.links!));
    pa.serve("ping", () => null);
    await using pb = await fx.attach("eps-b", hostPort(bAddr));
    pb.serve("echo", (params, ctx) => ({ params, caller: ctx.caller }));

    assert.deepEqual(
      await withTimeout(pa.call("eps-b.echo", { n: 1 }), 10_000, "first call"),
      { params: { n: 1, _client: { name: "eps-a", instance: pa.instance } }, caller: "eps-a" },
    );

    await b.kill("SIGKILL");
    b = undefined;
    const t0 = performance.now();
    const err = await withTimeout(
      pa.call("eps-b.echo", { n: 2 }).then(() => undefined, (e) => e),
      4000,
      "call after the kill",
    );
    const ms = performance.now() - t0;
    assert.ok(err instanceof RpcError, String(err));
    assert.equal(err.code, RpcCode.Unavailable, err.message);
    assert.ok(ms < 2000, `failed fast (${Math.round(ms)} ms), not at the deadline`);

    // same address again; nothing else is restarted
    b = await spawnEps(await writeSettings(fx, "eps-b", bAddr));
    const r = await eventually(
      () => pa.call("eps-b.echo", { n: 3 }, { timeoutMs: 2000 }),
      25_000,
      "a call through the restarted EPS",
    );
    assert.deepEqual(r, {
      params: { n: 3, _client: { name: "eps-a", instance: pa.instance } },
      caller: "eps-a",
    });
    assert.equal(a.pid, aPid);
    // and the other way
    assert.deepEqual(
      await withTimeout(pb.call("eps-a.ping", {}), 10_000, "eps-a.ping"),
      null,
    );
  } finally {
    await b?.kill("SIGTERM");
  }
});
