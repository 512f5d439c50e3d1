/**
 * Process helpers for the benchmark: start a process by PID with its output in log files and
 * the open-file limit raised, stop it by PID (and only its own descendants), and read CPU time
 * and memory of a process tree from /proc. Linux only.
 * @module
 */

const decoder = new TextDecoder();

/** Every child this process started and that has not exited yet (for a stop on Ctrl-C). */
const live = new Set<Deno.ChildProcess>();
function track(child: Deno.ChildProcess): void {
  live.add(child);
  child.status.finally(() => live.delete(child));
}

/** Sends SIGTERM to every child started by {@link spawn} or {@link run} that is still running. */
export function terminateAllStarted(): void {
  for (const child of live) {
    try {
      child.kill("SIGTERM");
    } catch {
      // already gone
    }
  }
}

/** A process started by {@link spawn}. */
export interface Proc {
  readonly name: string;
  readonly pid: number;
  readonly stdoutFile: string;
  readonly stderrFile: string;
  readonly child: Deno.ChildProcess;
  /** Set once the process has exited. */
  exited: Deno.CommandStatus | undefined;
}

/** Options for {@link spawn}. */
export interface SpawnOptions {
  /** Log files; stdout and stderr share one file when `stderrFile` is not given. */
  stdoutFile: string;
  stderrFile?: string;
  cwd?: string;
  env?: Record<string, string>;
}

/**
 * Starts `argv` through `bash -c` so that the open-file limit is raised to the hard limit and
 * stdout/stderr go straight to files (nothing in this process has to drain a pipe). `exec`
 * keeps the PID: the returned PID is the command's own.
 */
export function spawn(name: string, argv: readonly string[], options: SpawnOptions): Proc {
  const stderrFile = options.stderrFile ?? options.stdoutFile;
  const script = 'ulimit -n "$(ulimit -Hn)" 2>/dev/null; out=$1; err=$2; shift 2; ' +
    'if [ "$out" = "$err" ]; then exec "$@" >"$out" 2>&1; else exec "$@" >"$out" 2>"$err"; fi';
  const child = new Deno.Command("bash", {
    args: ["-c", script, "bench-spawn", options.stdoutFile, stderrFile, ...argv],
    stdin: "null",
    stdout: "null",
    stderr: "null",
    ...(options.cwd ? { cwd: options.cwd } : {}),
    ...(options.env ? { env: options.env } : {}),
  }).spawn();
  track(child);
  const proc: Proc = {
    name,
    pid: child.pid,
    stdoutFile: options.stdoutFile,
    stderrFile,
    child,
    exited: undefined,
  };
  child.status.then((s) => (proc.exited = s));
  return proc;
}

/** Resolves true when `p` exits within `ms`, false otherwise. */
async function exitsWithin(p: Proc, ms: number): Promise<boolean> {
  if (p.exited) return true;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<false>((r) => (timer = setTimeout(() => r(false), ms)));
  try {
    return await Promise.race([p.child.status.then(() => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function signal(pid: number, sig: Deno.Signal): void {
  try {
    Deno.kill(pid, sig);
  } catch {
    // already gone
  }
}

/**
 * Stops `p`: SIGTERM to its PID, SIGKILL after `graceMs`; then SIGTERM/SIGKILL to any of its own
 * descendants that outlived it (nginx and haproxy masters normally stop their workers).
 */
export async function stop(p: Proc, graceMs = 5000): Promise<void> {
  const tree = treePids([p.pid]).filter((x) => x !== p.pid);
  if (!p.exited) {
    signal(p.pid, "SIGTERM");
    if (!(await exitsWithin(p, graceMs))) {
      // deno-lint-ignore no-console
      console.error(`bench: ${p.name} (PID ${p.pid}) ignored SIGTERM for ${graceMs} ms; killing`);
      signal(p.pid, "SIGKILL");
      await exitsWithin(p, 2000);
    }
  }
  for (let i = 0; i < 40; i++) {
    const alive = tree.filter(isAlive);
    if (alive.length === 0) return;
    if (i === 20) { for (const x of alive) signal(x, "SIGTERM"); }
    await sleep(50);
  }
  for (const x of tree.filter(isAlive)) signal(x, "SIGKILL");
}

/** True while /proc/PID exists and is not a zombie. */
export function isAlive(pid: number): boolean {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    return afterComm(stat)[0] !== "Z";
  } catch {
    return false;
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** The fields of /proc/PID/stat after the `(comm)` field: state, ppid, ... */
function afterComm(stat: string): string[] {
  return stat.slice(stat.lastIndexOf(")") + 2).split(" ");
}

/** PID → parent PID for every process. */
function processTable(): Map<number, number> {
  const table = new Map<number, number>();
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    try {
      const f = afterComm(Deno.readTextFileSync(`/proc/${e.name}/stat`));
      table.set(Number(e.name), Number(f[1]));
    } catch {
      // exited while we looked
    }
  }
  return table;
}

/** The given PIDs and all their live descendants. */
export function treePids(roots: readonly number[]): number[] {
  const table = processTable();
  const want = new Set(roots.filter((p) => table.has(p)));
  for (let changed = true; changed;) {
    changed = false;
    for (const [pid, ppid] of table) {
      if (!want.has(pid) && want.has(ppid)) {
        want.add(pid);
        changed = true;
      }
    }
  }
  return [...want];
}

let clockTicks: number | undefined;
function ticksPerSecond(): number {
  if (clockTicks === undefined) {
    const out = new Deno.Command("getconf", { args: ["CLK_TCK"] }).outputSync();
    clockTicks = Number(decoder.decode(out.stdout).trim()) || 100;
  }
  return clockTicks;
}

/** CPU seconds used so far (user, system) by the PIDs and their descendants, all threads. */
export interface CpuTime {
  user: number;
  sys: number;
}

export function cpuOf(roots: readonly number[]): CpuTime {
  let user = 0;
  let sys = 0;
  for (const pid of treePids(roots)) {
    try {
      const f = afterComm(Deno.readTextFileSync(`/proc/${pid}/stat`));
      // After comm: state(0) ppid(1) ... utime is field 14 of the line, i.e. index 11 here.
      user += Number(f[11]);
      sys += Number(f[12]);
    } catch {
      // exited
    }
  }
  const hz = ticksPerSecond();
  return { user: user / hz, sys: sys / hz };
}

/** CPU used between two readings: total seconds and the kernel's share (null when none). */
export function cpuDelta(a: CpuTime, b: CpuTime): { seconds: number; sysShare: number | null } {
  const u = b.user - a.user;
  const s = b.sys - a.sys;
  return { seconds: u + s, sysShare: u + s > 0 ? round(s / (u + s), 2) : null };
}

/** Memory summed over the PIDs and their descendants. */
export interface Mem {
  rssKib: number;
  pssKib: number;
  procs: number;
}

export function memOf(roots: readonly number[]): Mem {
  let rssKib = 0;
  let pssKib = 0;
  let procs = 0;
  for (const pid of treePids(roots)) {
    try {
      const status = Deno.readTextFileSync(`/proc/${pid}/status`);
      const rss = /^VmRSS:\s+(\d+)/m.exec(status);
      if (!rss) continue; // kernel thread or zombie
      rssKib += Number(rss[1]);
      procs++;
      const rollup = Deno.readTextFileSync(`/proc/${pid}/smaps_rollup`);
      const pss = /^Pss:\s+(\d+)/m.exec(rollup);
      if (pss) pssKib += Number(pss[1]);
    } catch {
      // exited
    }
  }
  return { rssKib, pssKib, procs };
}

export function round(x: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

/** True when something accepts a TCP connection on host:port. */
export async function portOpen(hostname: string, port: number): Promise<boolean> {
  try {
    const c = await Deno.connect({ hostname, port });
    c.close();
    return true;
  } catch {
    return false;
  }
}

/** Waits until host:port accepts (true) or `ms` passes (false). */
export async function waitPort(hostname: string, port: number, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await portOpen(hostname, port)) return true;
    await sleep(50);
  }
  return false;
}

/**
 * TCP sockets listening on `port` (any address, IPv4 and IPv6), from /proc/net/tcp{,6}: with
 * SO_REUSEPORT each process on the port has its own.
 */
export function listenerCount(port: number): number {
  const hex = `:${port.toString(16).toUpperCase().padStart(4, "0")}`;
  let n = 0;
  for (const f of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    let text = "";
    try {
      text = Deno.readTextFileSync(f);
    } catch {
      continue; // no IPv6
    }
    for (const line of text.split("\n").slice(1)) {
      const [, local, , state] = line.trim().split(/\s+/);
      if (state === "0A" && local?.endsWith(hex)) n++;
    }
  }
  return n;
}

/** Waits until `port` has at least `n` listening sockets (true) or `ms` passes (false). */
export async function waitListeners(port: number, n: number, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (listenerCount(port) >= n) return true;
    await sleep(50);
  }
  return false;
}

/** Open descriptors of one process (the entries of /proc/PID/fd); null when it is gone. */
export function fdCount(pid: number): number | null {
  try {
    let n = 0;
    for (const _ of Deno.readDirSync(`/proc/${pid}/fd`)) n++;
    return n;
  } catch {
    return null;
  }
}

/** A process's open-file limit (soft, hard) from /proc/PID/limits; null when unknown. */
export function fdLimitOf(pid: number): { soft: number; hard: number } | null {
  try {
    const text = Deno.readTextFileSync(`/proc/${pid}/limits`);
    const m = /^Max open files\s+(\S+)\s+(\S+)/m.exec(text);
    if (!m) return null;
    const num = (v: string) => (v === "unlimited" ? Infinity : Number(v));
    return { soft: num(m[1]!), hard: num(m[2]!) };
  } catch {
    return null;
  }
}

/** Waits until nothing accepts on host:port (true) or `ms` passes (false). */
export async function waitPortFree(hostname: string, port: number, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (!(await portOpen(hostname, port))) return true;
    await sleep(50);
  }
  return false;
}

/** Runs a command to completion with a time bound; returns its exit code and text output. */
export async function run(
  argv: readonly string[],
  timeoutMs: number,
  options: { cwd?: string; env?: Record<string, string> } = {},
): Promise<{ code: number; stdout: string; stderr: string; timedOut: boolean }> {
  const [cmd, ...args] = argv;
  if (cmd === undefined) throw new TypeError("Cannot run a command: argv is empty");
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(), timeoutMs);
  try {
    const child = new Deno.Command(cmd, {
      args,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      signal: ac.signal,
      ...(options.cwd ? { cwd: options.cwd } : {}),
      ...(options.env ? { env: options.env } : {}),
    }).spawn();
    track(child);
    const out = await child.output();
    return {
      code: out.code,
      stdout: decoder.decode(out.stdout),
      stderr: decoder.decode(out.stderr),
      timedOut: ac.signal.aborted,
    };
  } finally {
    clearTimeout(timer);
  }
}

/** True when `name` is an executable on PATH. */
export function which(name: string): string | undefined {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    const p = `${dir}/${name}`;
    try {
      const st = Deno.statSync(p);
      if (st.isFile && st.mode !== null && (st.mode & 0o111) !== 0) return p;
    } catch {
      // not here
    }
  }
  return undefined;
}
