/**
 * The name-set measurement ("names" in `--workloads`, sizes from `--names`): the tls-pass
 * topology with a private proxy that announces N names (make_settings.ts `names`: N − 1
 * generated names `n1.bench.local` … and `test.internal-server.local` last, all to the bench
 * backend; the directory allows `.bench.local`). Measures, from the moment the private proxy is
 * spawned: when each role prints its `{"event":"ready"}` line (the private proxy's comes once the
 * public operator acknowledged every page of announcements), when `POST /jsonrpc` for
 * test.internal-server.local is first answered through :4433, and the RSS of every role after
 * start-up. The caps: the private settings take at most 100,000 announcements, and the public
 * proxy's `max_announcements_per_operator` defaults to 100,000.
 * @module
 */
import { join } from "node:path";
import { parseDocument } from "yaml";
import { SNI } from "./backend.ts";
import { makeSettings } from "./make_settings.ts";
import { memOf, type Proc, round, sleep, spawn } from "./proc.ts";
import {
  ensurePki,
  LISTEN_PORT,
  postJsonrpc,
  type Running,
  running,
  tlsPassRoles,
  type TopologyContext,
} from "./topologies.ts";

/** The private settings' cap (lib/settings/private.ts MAX_ANNOUNCEMENTS). */
export const MAX_NAMES = 100_000;

async function readyLine(p: Proc): Promise<boolean> {
  const text = await Deno.readTextFile(p.stdoutFile).catch(() => "");
  return text.split("\n").some((line) => {
    try {
      return line.includes('"ready"') && JSON.parse(line)?.event === "ready";
    } catch {
      return false;
    }
  });
}

const mib = (kib: number) => round(kib / 1024, 1);

/**
 * Starts the tls-pass roles with `n` announcements in `ctx.state`, measures start-up and RSS,
 * stops them. `onRunning` is told what runs (for a stop on Ctrl-C). Bounded: 60 s plus 1 s per
 * 1,000 names for the start-up.
 */
export async function measureNames(
  ctx: TopologyContext,
  n: number,
  onRunning: (r: Running | undefined) => void,
): Promise<Record<string, unknown>> {
  const pki = await ensurePki(ctx);
  const tWrite = performance.now();
  const dirs = await makeSettings(
    join(ctx.state, "settings"),
    pki,
    {
      host: "127.0.0.1",
      publicPort: LISTEN_PORT,
      privatePort: 4434,
      publicEpsPort: 4435,
      privateEpsPort: 4436,
      internal: "127.0.0.1:8888",
      domain: SNI,
    },
    join(ctx.state, "store"),
    true,
    n,
  );
  const writeS = round((performance.now() - tWrite) / 1000, 2);
  // what the private proxy's settings loader does first (YAML, as every bench settings file)
  const privateFile = join(dirs.private, "settings.yml");
  const text = await Deno.readTextFile(privateFile);
  const tParse = performance.now();
  parseDocument(text, { uniqueKeys: true }).toJS();
  const parseS = round((performance.now() - tParse) / 1000, 2);

  const roles = tlsPassRoles(dirs);
  const procs: Proc[] = [];
  const r = running(LISTEN_PORT, procs);
  onRunning(r);
  let t0 = 0;
  const since = () => round((performance.now() - t0) / 1000, 2);
  try {
    for (const [name, role, dir] of roles) {
      const extra = (ctx.extraSettings[role] ?? []).flatMap((f) => ["--settings", f]);
      if (name === "private") t0 = performance.now();
      procs.push(spawn(name, [
        ...ctx.tlsPass,
        "run",
        role,
        "--settings",
        dir,
        ...extra,
        "--log-level",
        ctx.logLevel,
      ], {
        stdoutFile: join(ctx.state, `${name}.out`),
        stderrFile: join(ctx.state, `${name}.log`),
        cwd: ctx.repo,
      }));
    }
    const deadline = Date.now() + 60_000 + n;
    const readyS: Record<string, number> = {};
    let servedS: number | undefined;
    let died: string | undefined;
    const readyLoop = async () => {
      while (Date.now() < deadline && !died && Object.keys(readyS).length < procs.length) {
        for (const p of procs) {
          if (readyS[p.name] === undefined && await readyLine(p)) readyS[p.name] = since();
          if (p.exited) died ??= `${p.name} exited with code ${p.exited.code}`;
        }
        await sleep(50);
      }
    };
    const routeLoop = async () => {
      while (Date.now() < deadline && !died && servedS === undefined) {
        if ((await postJsonrpc(LISTEN_PORT, ctx.certs.caCrt)).ok) servedS = since();
        else await sleep(100);
      }
    };
    await Promise.all([readyLoop(), routeLoop()]);
    const notReady = procs.filter((p) => readyS[p.name] === undefined).map((p) => p.name);
    if (died || notReady.length || servedS === undefined) {
      return {
        names: n,
        error: died ??
          (notReady.length ? `no ready line from ${notReady.join(", ")}` : "never served") +
            ` within ${Math.round((60_000 + n) / 1000)} s`,
        ready_s: readyS,
        served_s: servedS ?? null,
      };
    }
    const startupS = Math.max(readyS.private!, readyS.public!, servedS);
    const memAt = () =>
      Object.fromEntries(procs.map((p) => [p.name, p.exited ? null : memOf([p.pid]).rssKib]));
    const atStartup = memAt();
    await sleep(2000);
    const settled = memAt();
    const store = await Deno.stat(join(ctx.state, "store", "announcements.jsonl")).catch(() =>
      null
    );
    return {
      names: n,
      settings_bytes: text.length,
      settings_write_s: writeS,
      settings_parse_s: parseS,
      startup_s: startupS,
      ready_s: readyS,
      served_s: servedS,
      rss_mib: Object.fromEntries(
        Object.entries(settled).map(([k, v]) => [k, v === null ? null : mib(v)]),
      ),
      rss_mib_at_startup: Object.fromEntries(
        Object.entries(atStartup).map(([k, v]) => [k, v === null ? null : mib(v)]),
      ),
      public_store_bytes: store?.size ?? null,
    };
  } finally {
    onRunning(undefined);
    await r.stop();
  }
}
