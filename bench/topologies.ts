/**
 * The topologies the benchmark compares: `direct` (no relay), `haproxy2` (two chained HAProxies
 * in tcp mode routing on req.ssl_sni, the reference), `haproxy2-splice` (the same with kernel
 * splicing, `option splice-auto`, as in ../shared/bench) and `tls-pass` (the real roles: public
 * proxy, private proxy and their two EPS servers, each its own process).
 * @module
 */
import { join } from "node:path";
import { BACKEND_PORT, type BenchCerts, SNI } from "./backend.ts";
import { makeSettings, replicaPrivatePort, type SettingsDirs } from "./make_settings.ts";
import { type Proc, run, sleep, spawn, stop, waitListeners, waitPort, which } from "./proc.ts";
import { getFdLimit } from "../lib/net/fd_limit.ts";

export const LISTEN_HOST = "127.0.0.1";
export const LISTEN_PORT = 4433;
/** The private ports of the tls-pass path: replica 1's is 4434; replicas 2… get 4437, 4438, …. */
export const TLS_PASS_PORTS = {
  host: "127.0.0.1",
  publicPort: LISTEN_PORT,
  privatePort: 4434,
  publicEpsPort: 4435,
  privateEpsPort: 4436,
  internal: `127.0.0.1:${BACKEND_PORT}`,
  domain: SNI,
};

/**
 * Every port a run with `replicas` relay processes per tier listens on besides the backend's:
 * 4433–4436, and the private ports of tls-pass replicas 2… (4437, …). HAProxy's tiers share
 * 4433 and 4434.
 */
export function benchPorts(replicas = 1): number[] {
  const ports = [LISTEN_PORT, 4434, 4435, 4436];
  for (let i = 1; i < replicas; i++) ports.push(replicaPrivatePort(TLS_PASS_PORTS, i));
  return ports;
}

/** What every topology gets. */
export interface TopologyContext {
  /** This topology's state folder for this round (configs, logs). */
  state: string;
  /** A folder shared by all rounds of this topology (e.g. a PKI made once). */
  cache: string;
  certs: BenchCerts;
  repo: string;
  /** `[deno, "run", "-A", cli.ts]` or `[$TLS_PASS_BIN]`. */
  tlsPass: string[];
  /** Extra settings files per role (appended as further `--settings`). */
  extraSettings: Partial<Record<TlsPassRole, string[]>>;
  logLevel: string;
  /** Connections a relay must accept at once (HAProxy's maxconn; default 8000). */
  maxConnections?: number;
  /**
   * Relay processes per tier on the same ports (`--replicas`, default 1): tls-pass runs that many
   * public replicas (`reuse_port`, `store: redis`, a redis-server of its own) and private
   * instances; haproxy2 that many HAProxies per tier (SO_REUSEPORT, HAProxy's default on Linux).
   */
  replicas?: number;
  log(msg: string): void;
}

/** A started topology. */
export interface Running {
  /** The port clients connect to (SNI test.internal-server.local). */
  port: number;
  /** The relay processes, by role name. */
  procs: Proc[];
  /** Live relay PIDs (their descendants are added when measuring). */
  pids(): number[];
  /** PIDs by role name, for the per-role breakdown. */
  rolePids(): Record<string, number[]>;
  stop(): Promise<void>;
}

export interface Topology {
  name: string;
  /** Why it cannot run here (e.g. "not installed"), or undefined. */
  unavailable(ctx: Pick<TopologyContext, "repo" | "tlsPass">): Promise<string | undefined>;
  start(ctx: TopologyContext): Promise<Running>;
}

/** A {@link Running} over `procs`, stopped newest first. */
export function running(port: number, procs: Proc[]): Running {
  return {
    port,
    procs,
    pids: () => procs.filter((p) => !p.exited).map((p) => p.pid),
    rolePids: () => Object.fromEntries(procs.map((p) => [p.name, p.exited ? [] : [p.pid]])),
    stop: async () => {
      // Newest first: the public hop stops before what it forwards to.
      for (const p of [...procs].reverse()) await stop(p);
    },
  };
}

async function tail(file: string, lines = 20): Promise<string> {
  const text = await Deno.readTextFile(file).catch(() => "");
  return text.split("\n").slice(-lines).join("\n");
}

export const direct: Topology = {
  name: "direct",
  unavailable: () => Promise.resolve(undefined),
  start: () => Promise.resolve(running(BACKEND_PORT, [])),
};

/**
 * HAProxy's maxconn for `conns` connections: with splicing (`option splice-auto`) each relayed
 * connection may also hold a pipe (two descriptors; HAProxy's maxpipes defaults to maxconn / 4),
 * so HAProxy counts 2.5 descriptors per connection; it refuses to start when it cannot raise its
 * open-file limit that far. The shared harness uses 6000 for the splice topology for this reason.
 */
export function haproxyPairMaxconn(conns: number, splice: boolean, fdHard: number): number {
  if (!splice) return conns;
  return Math.max(1000, Math.min(conns, Math.floor((fdHard - 200) / 2.5)));
}

/** Two chained HAProxies (see the module doc); with `splice`, `option splice-auto` on both. */
function haproxyPair(name: string, splice: boolean): Topology {
  return {
    name,
    unavailable: () => Promise.resolve(which("haproxy") ? undefined : "not installed"),
    async start(ctx) {
      const hop = 4434;
      // maxconn: global and per frontend (HAProxy's default for a frontend is the global one,
      // said here). backlog: the listen() backlog, by default the frontend's maxconn; the kernel
      // caps it at net.core.somaxconn (4096 here), enough for W7's bursts of 2,000 new clients.
      const maxconn = haproxyPairMaxconn(ctx.maxConnections ?? 8000, splice, fdHardLimit());
      const common = (role: string) =>
        `global
  maxconn ${maxconn}
  pidfile ${ctx.state}/${role}.haproxy.pid
defaults
  mode tcp
  maxconn ${maxconn}
  backlog ${maxconn}
  timeout connect 5s
  timeout client 5m
  timeout server 5m
${splice ? "  option splice-auto\n" : ""}`;
      const privateCfg = (proc: string) =>
        common(proc) + `frontend private
  bind 127.0.0.1:${hop}
  default_backend internal
backend internal
  server internal 127.0.0.1:${BACKEND_PORT}
`;
      const publicCfg = (proc: string) =>
        common(proc) + `frontend public
  bind ${LISTEN_HOST}:${LISTEN_PORT}
  tcp-request inspect-delay 5s
  tcp-request content accept if { req.ssl_hello_type 1 }
  use_backend private if { req.ssl_sni -i ${SNI} }
backend private
  server private 127.0.0.1:${hop}
`;
      const n = ctx.replicas ?? 1;
      const procs: Proc[] = [];
      const r = running(LISTEN_PORT, procs);
      // the private tier first: the public one forwards to it
      for (const [role, port] of [["private", hop], ["public", LISTEN_PORT]] as const) {
        for (let i = 0; i < n; i++) {
          // one process per tier: "private", "public" as before; several: "private-1", …
          const proc = n === 1 ? role : `${role}-${i + 1}`;
          const cfg = join(ctx.state, `${proc}.cfg`);
          await Deno.writeTextFile(cfg, role === "private" ? privateCfg(proc) : publicCfg(proc));
          const check = await run(["haproxy", "-c", "-q", "-f", cfg], 10_000);
          if (check.code !== 0) {
            await r.stop();
            throw new Error(`haproxy config ${cfg} is invalid: ${check.stderr}`);
          }
          const log = join(ctx.state, `${proc}.log`);
          procs.push(spawn(proc, ["haproxy", "-db", "-f", cfg], { stdoutFile: log }));
          // each process binds its own socket (SO_REUSEPORT): wait for the (i + 1)th listener
          const up = i === 0
            ? await waitPort("127.0.0.1", port, 10_000)
            : await waitListeners(port, i + 1, 10_000);
          if (!up) {
            await r.stop();
            throw new Error(`${name} ${proc} does not listen on :${port}\n${await tail(log)}`);
          }
        }
      }
      return r;
    },
  };
}

function fdHardLimit(): number {
  try {
    return getFdLimit().hard;
  } catch {
    return Infinity; // not Linux: leave it to HAProxy
  }
}

export const haproxy2: Topology = haproxyPair("haproxy2", false);
/** haproxy2 with kernel splicing (`option splice-auto`), as ../shared/bench's haproxy2-splice. */
export const haproxy2Splice: Topology = haproxyPair("haproxy2-splice", true);

/**
 * Two chained bare relays of bench/splice_bench.ts (no SNI routing, no EPS): diagnostics that
 * split the cost of tls-pass into "a Deno relay" and "what the proxies add". `loop2` is the
 * naive read/write loop with 16 KiB buffers (../shared/bench relay-loop.ts), `splice2` is
 * lib/net/splice.ts with its defaults.
 */
function bareRelays(name: string, impl: string[]): Topology {
  return {
    name,
    unavailable: () => Promise.resolve(undefined),
    async start(ctx) {
      const hop = 4434;
      const procs: Proc[] = [];
      const r = running(LISTEN_PORT, procs);
      const script = join(ctx.repo, "bench", "splice_bench.ts");
      for (
        const [role, port, to] of [["private", hop, BACKEND_PORT], ["public", LISTEN_PORT, hop]]
      ) {
        const log = join(ctx.state, `${role}.log`);
        procs.push(spawn(String(role), [
          Deno.execPath(),
          "run",
          "-A",
          script,
          "relay",
          "--listen",
          String(port),
          "--to",
          String(to),
          ...impl,
        ], { stdoutFile: log }));
        if (!(await waitPort("127.0.0.1", Number(port), 30_000))) {
          await r.stop();
          throw new Error(`${name} ${role} does not listen on :${port}\n${await tail(log)}`);
        }
      }
      return r;
    },
  };
}

export const loop2: Topology = bareRelays("loop2", ["--impl", "loop", "--buf", "16384"]);
export const splice2: Topology = bareRelays("splice2", ["--impl", "splice"]);

export type TlsPassRole = "eps" | "public" | "private";

/**
 * The tls-pass processes of a path, in start order: name, role, settings folder. The four of
 * one path; with several replicas (`dirs.publics`, `dirs.privates`), every private instance
 * (`private-1`, `private-2`, …) and every public replica (`public-1`, …) in their places.
 */
export function tlsPassRoles(
  dirs:
    & Record<"publicEps" | "privateEps" | "private" | "public", string>
    & Partial<Pick<SettingsDirs, "publics" | "privates">>,
): [string, TlsPassRole, string][] {
  const each = (role: "private" | "public", all: string[] | undefined, one: string) =>
    !all || all.length <= 1
      ? [[role, role, one] as [string, TlsPassRole, string]]
      : all.map((d, i) => [`${role}-${i + 1}`, role, d] as [string, TlsPassRole, string]);
  return [
    ["public-eps", "eps", dirs.publicEps],
    ["private-eps", "eps", dirs.privateEps],
    ...each("private", dirs.privates, dirs.private),
    ...each("public", dirs.publics, dirs.public),
  ];
}

/** A free loopback TCP port (bound to port 0, then closed). */
function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** Debian's redis-server, as the tests use it (tests/_redis.ts). */
export const REDIS_SERVER = "/usr/bin/redis-server";

/**
 * A redis-server for the public replicas of one topology start: on a free loopback port, no
 * persistence (`--save "" --appendonly no`), started and stopped by PID, its log in `state`.
 */
export async function startRedis(state: string): Promise<{ proc: Proc; url: string }> {
  const port = freePort();
  const log = join(state, "redis.log");
  const proc = spawn("redis", [
    REDIS_SERVER,
    "--port",
    String(port),
    "--bind",
    "127.0.0.1",
    "--save",
    "",
    "--appendonly",
    "no",
    "--logfile",
    "",
  ], { stdoutFile: log });
  if (!(await waitPort("127.0.0.1", port, 10_000))) {
    await stop(proc);
    throw new Error(`redis-server does not listen on :${port}\n${await tail(log)}`);
  }
  return { proc, url: `redis://127.0.0.1:${port}` };
}

/** Waits for `{"event":"ready"}` on a process's stdout file; returns the parsed line. */
export async function waitReady(p: Proc, deadline: number): Promise<Record<string, unknown>> {
  while (Date.now() < deadline) {
    const text = await Deno.readTextFile(p.stdoutFile).catch(() => "");
    for (const line of text.split("\n")) {
      if (!line.includes('"ready"')) continue;
      try {
        const v = JSON.parse(line);
        if (v?.event === "ready") return v;
      } catch {
        // a partial line; read again
      }
    }
    if (p.exited) {
      const err = (await tail(p.stderrFile)).trim();
      const last = err.split("\n").at(-1) ?? "";
      throw new Error(
        `${p.name} exited with code ${p.exited.code} before it was ready: ${last}\n${err}`,
      );
    }
    await sleep(50);
  }
  throw new Error(`${p.name} printed no ready line in time:\n${await tail(p.stderrFile)}`);
}

/** One POST /jsonrpc through `port` with SNI test.internal-server.local (curl, 2 s at most). */
export async function postJsonrpc(
  port: number,
  caCrt: string,
): Promise<{ ok: boolean; text: string }> {
  const r = await run([
    "curl",
    "-sS",
    "--http1.1",
    "--max-time",
    "2",
    "--cacert",
    caCrt,
    "--resolve",
    `${SNI}:${port}:127.0.0.1`,
    "-X",
    "POST",
    "-H",
    "Content-Type: application/json",
    "-d",
    '{"jsonrpc":"2.0","method":"demo.ping","params":[],"id":1}',
    `https://${SNI}:${port}/jsonrpc`,
  ], 5000);
  return {
    ok: r.stdout.trim() === '{"message":"success"}',
    text: (r.stdout + r.stderr).trim(),
  };
}

/** Waits until POST /jsonrpc through `port` answers {"message":"success"}. */
export async function waitRoute(
  port: number,
  caCrt: string,
  deadline: number,
): Promise<string> {
  let last = "";
  while (Date.now() < deadline) {
    const r = await postJsonrpc(port, caCrt);
    if (r.ok) return "";
    last = r.text;
    await sleep(200);
  }
  return last || "no answer";
}

/** True once `count` POSTs in a row through `port` are answered (each a new connection). */
async function routeInARow(
  port: number,
  caCrt: string,
  count: number,
  deadline: number,
): Promise<boolean> {
  let inARow = 0;
  while (Date.now() < deadline) {
    if ((await postJsonrpc(port, caCrt)).ok) {
      if (++inARow >= count) return true;
    } else {
      inARow = 0;
      await sleep(200);
    }
  }
  return false;
}

/** The tls-pass PKI of `tls-pass certs --out`, made once in the topology's cache folder. */
export async function ensurePki(
  ctx: Pick<TopologyContext, "cache" | "tlsPass" | "repo">,
): Promise<string> {
  const pki = join(ctx.cache, "pki");
  try {
    await Deno.stat(join(pki, "root.crt"));
  } catch {
    const r = await run([...ctx.tlsPass, "certs", "--out", pki], 60_000, { cwd: ctx.repo });
    if (r.code !== 0) {
      throw new Error(`tls-pass certs --out ${pki} failed (${r.code}):\n${r.stderr}${r.stdout}`);
    }
  }
  return pki;
}

/**
 * tls-pass; with `admin`, every role also serves its admin endpoint and the bench scrapes each
 * role's `/metrics` once a second (four times Prometheus's usual rate) while it runs, so the
 * relay CPU includes what the metrics and the scrapes cost.
 */
function tlsPassTopology(name: string, admin: boolean, publicExtra?: string): Topology {
  return {
    name,
    unavailable: tlsPassUnavailable,
    start: (ctx) => startTlsPass(ctx, admin, publicExtra),
  };
}

/**
 * The public proxy's admission checks all on, none ever hit by the bench's clients (one address,
 * thousands of connections a second): what the checks cost, not what they refuse.
 */
const LIMITS_ON = `limits:
  max_connections_per_client: 1000000
  client_rate: 1000000
  max_pending_per_name: 1000000
  name_rate: 1000000
allow: [127.0.0.0/8, "::1/128"]
deny: [10.0.0.0/8, "2001:db8::/32"]
`;

async function tlsPassUnavailable(ctx: Pick<TopologyContext, "repo" | "tlsPass">) {
  const bin = Deno.env.get("TLS_PASS_BIN");
  if (bin) {
    return which(bin) || (await Deno.stat(bin).catch(() => null)) ? undefined : `${bin} not found`;
  }
  try {
    await Deno.stat(join(ctx.repo, "cli.ts"));
    return undefined;
  } catch {
    return "cli.ts not found";
  }
}

/** Scrapes every `/metrics` of `addrs` once a second until the returned stop is called. */
function scrapeEverySecond(addrs: string[], log: (msg: string) => void): () => Promise<void> {
  let failures = 0;
  let scrapes = 0;
  const tick = async () => {
    await Promise.all(addrs.map(async (a) => {
      try {
        const r = await fetch(`http://${a}/metrics`, { signal: AbortSignal.timeout(5000) });
        await r.text();
        scrapes++;
      } catch {
        failures++;
      }
    }));
  };
  let running = tick();
  const timer = setInterval(() => {
    running = running.then(tick);
  }, 1000);
  return async () => {
    clearInterval(timer);
    await running;
    log(`  metrics: ${scrapes} scrapes of ${addrs.length} endpoints, ${failures} failed`);
  };
}

async function startTlsPass(
  ctx: TopologyContext,
  admin: boolean,
  publicExtra?: string,
): Promise<Running> {
  const pki = await ensurePki(ctx);
  const n = ctx.replicas ?? 1;
  // several public replicas share their announcements through a Redis of their own
  const redis = n > 1 ? await startRedis(ctx.state) : undefined;
  if (redis) ctx.log(`  redis-server ${redis.url} (PID ${redis.proc.pid})`);
  const procs: Proc[] = [];
  const r = running(LISTEN_PORT, procs);
  if (redis) {
    // after every relay: the replicas are stopped first
    const stopRelays = r.stop;
    r.stop = async () => {
      await stopRelays();
      await stop(redis.proc);
    };
  }
  const deadline = Date.now() + 60_000;
  try {
    const dirs = await makeSettings(
      join(ctx.state, "settings"),
      pki,
      TLS_PASS_PORTS,
      join(ctx.state, "store"),
      true,
      1,
      redis ? { count: n, redisUrl: redis.url } : undefined,
    );
    const roles = tlsPassRoles(dirs);
    const adminFile = join(ctx.state, "admin.yml");
    if (admin) await Deno.writeTextFile(adminFile, "admin_listen: 127.0.0.1:0\n");
    const publicFile = join(ctx.state, "public-extra.yml");
    if (publicExtra) await Deno.writeTextFile(publicFile, publicExtra);
    for (const [name, role, dir] of roles) {
      const extra = (ctx.extraSettings[role] ?? []).flatMap((f) => ["--settings", f]);
      if (admin) extra.push("--settings", adminFile);
      if (publicExtra && role === "public") extra.push("--settings", publicFile);
      const argv = [
        ...ctx.tlsPass,
        "run",
        role,
        "--settings",
        dir,
        ...extra,
        "--log-level",
        ctx.logLevel,
      ];
      procs.push(spawn(name, argv, {
        stdoutFile: join(ctx.state, `${name}.out`),
        stderrFile: join(ctx.state, `${name}.log`),
        cwd: ctx.repo,
      }));
    }
    const admins: string[] = [];
    for (const p of procs) {
      const ready = await waitReady(p, deadline);
      ctx.log(`  ${p.name} ready ${JSON.stringify(ready.addrs ?? {})}`);
      const a = (ready.addrs as Record<string, string> | undefined)?.admin;
      if (admin && a === undefined) {
        throw new Error(`${p.name}: no admin address in its ready line`);
      }
      if (a !== undefined) admins.push(a);
    }
    const why = await waitRoute(LISTEN_PORT, ctx.certs.caCrt, deadline);
    if (why) throw new Error(`no route through :${LISTEN_PORT} after 60 s: ${why}`);
    if (n > 1) {
      // every replica must route, not only the one the first answer came from: the kernel
      // spreads connections over the listeners by their source port, so 12 answers in a row
      // (each a new connection) leave about 2^-11 odds that one replica was never asked
      const routed = await routeInARow(LISTEN_PORT, ctx.certs.caCrt, 12, deadline);
      if (!routed) throw new Error(`the replicas on :${LISTEN_PORT} do not all route in 60 s`);
    }
    if (admin) {
      const stopScraping = scrapeEverySecond(admins, ctx.log);
      const stopRelays = r.stop;
      r.stop = async () => {
        await stopScraping();
        await stopRelays();
      };
    }
  } catch (err) {
    await r.stop();
    throw err;
  }
  return r;
}

export const tlsPass: Topology = tlsPassTopology("tls-pass", false);
/** tls-pass with every admin endpoint on and scraped once a second. */
export const tlsPassAdmin: Topology = tlsPassTopology("tls-pass-admin", true);
/** tls-pass with every admission check of the public proxy on (never hit). */
export const tlsPassLimits: Topology = tlsPassTopology("tls-pass-limits", false, LIMITS_ON);

export const TOPOLOGIES: Record<string, Topology> = {
  direct,
  haproxy2,
  "haproxy2-splice": haproxy2Splice,
  "tls-pass": tlsPass,
  "tls-pass-admin": tlsPassAdmin,
  "tls-pass-limits": tlsPassLimits,
  loop2,
  splice2,
};
