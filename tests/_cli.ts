/**
 * Runs the tls-pass CLI as a child process: `deno run -A cli.ts`, or `$TLS_PASS_BIN` when set
 * (a compiled binary). Test helpers only.
 * @module
 */
import { fileURLToPath as fromFileUrl } from "node:url";

export const REPO_ROOT: string = fromFileUrl(new URL("..", import.meta.url));
export const CLI_PATH: string = fromFileUrl(new URL("../cli.ts", import.meta.url));

/** The command and leading arguments that run the CLI. */
export function cliCommand(): [string, string[]] {
  const bin = Deno.env.get("TLS_PASS_BIN");
  return bin ? [bin, []] : [Deno.execPath(), ["run", "-A", CLI_PATH]];
}

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the CLI to completion (bounded by `timeoutMs`). */
export async function runCli(
  args: string[],
  options: { cwd?: string; env?: Record<string, string>; timeoutMs?: number } = {},
): Promise<CliResult> {
  const [cmd, pre] = cliCommand();
  const out = await new Deno.Command(cmd, {
    args: [...pre, ...args],
    cwd: options.cwd ?? REPO_ROOT,
    env: options.env ?? {},
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(options.timeoutMs ?? 30_000),
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

export interface ReadyLine {
  event: "ready";
  role: string;
  pid: number;
  addrs: Record<string, string>;
}

/** A running CLI role; disposing it sends SIGTERM and reaps it. */
export interface SpawnedCli extends AsyncDisposable {
  child: Deno.ChildProcess;
  ready: ReadyLine;
  /** Everything the process wrote on stderr so far (logs). */
  stderr(): string;
  /** Sends `signal`, waits for exit, returns the status. */
  stop(signal?: Deno.Signal): Promise<Deno.CommandStatus>;
}

/**
 * Spawns the CLI and waits for its ready line on stdout (bounded by `timeoutMs`). If the process
 * exits first, throws with its stderr.
 */
export async function spawnCli(
  args: string[],
  options: {
    cwd?: string;
    env?: Record<string, string>;
    timeoutMs?: number;
    /** A command that runs the CLI (it must exec it), e.g. `["prlimit", "--nofile=256:256", "--"]`. */
    wrapper?: string[];
    /**
     * The whole command line instead of the CLI and `args` (`args` then only names it in errors),
     * e.g. `["bash", "-c", "internal-server"]`: the seed's commands from bin/.
     */
    command?: string[];
  } = {},
): Promise<SpawnedCli> {
  const [cli, pre] = options.command
    ? [options.command[0]!, options.command.slice(1)]
    : cliCommand();
  const [cmd, ...lead] = [...(options.wrapper ?? []), cli];
  const child = new Deno.Command(cmd!, {
    args: [...lead, ...pre, ...(options.command ? [] : args)],
    cwd: options.cwd ?? REPO_ROOT,
    env: options.env ?? {},
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let errText = "";
  const errDone = (async () => {
    const dec = new TextDecoder();
    for await (const chunk of child.stderr) {
      errText += dec.decode(chunk, { stream: true });
      if (Deno.env.get("TLS_PASS_LOG")) Deno.stderr.writeSync(chunk);
    }
  })();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let buffered = "";
  let stdoutDone: Promise<void> = Promise.resolve();
  let status: Deno.CommandStatus | undefined;
  const statusP = child.status.then((s) => (status = s));
  const stop = async (signal: Deno.Signal = "SIGTERM") => {
    if (status === undefined) {
      try {
        child.kill(signal);
      } catch { /* already exited */ }
    }
    const s = await statusP;
    await stdoutDone;
    await errDone;
    return s;
  };
  try {
    const timeout = AbortSignal.timeout(options.timeoutMs ?? 30_000);
    const line = await new Promise<string>((resolve, reject) => {
      const onAbort = () =>
        reject(new Error(`CLI ${args.join(" ")} not ready in time; stderr:\n${errText}`));
      timeout.addEventListener("abort", onAbort, { once: true });
      (async () => {
        while (true) {
          const nl = buffered.indexOf("\n");
          if (nl >= 0) {
            const l = buffered.slice(0, nl);
            buffered = buffered.slice(nl + 1);
            if (l.startsWith("{")) return resolve(l);
            continue;
          }
          const { value, done } = await reader.read();
          if (done) {
            await statusP;
            await errDone;
            return reject(
              new Error(
                `CLI ${args.join(" ")} exited before ready (${status?.code}); stderr:\n${errText}`,
              ),
            );
          }
          buffered += value;
        }
      })().catch(reject).finally(() => timeout.removeEventListener("abort", onAbort));
    });
    // keep draining stdout so the child never blocks on a full pipe
    stdoutDone = (async () => {
      while (!(await reader.read()).done) { /* drain */ }
    })();
    const ready = JSON.parse(line) as ReadyLine;
    return {
      child,
      ready,
      stderr: () => errText,
      stop,
      [Symbol.asyncDispose]: async () => {
        await stop("SIGTERM");
      },
    };
  } catch (err) {
    await reader.cancel().catch(() => {});
    await stop("SIGKILL");
    throw err;
  }
}

/** Splits a ready line's "host:port" into a HostPort. */
export function parseAddr(s: string): { hostname: string; port: number } {
  const i = s.lastIndexOf(":");
  return { hostname: s.slice(0, i).replace(/^\[|\]$/g, ""), port: Number(s.slice(i + 1)) };
}
