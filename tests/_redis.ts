/**
 * A real redis-server for the tests in tests/: a child process in the foreground on a free loopback
 * port, without persistence (`--save "" --appendonly no`), ready once it says so on stdout (then
 * also checked with PING); `kill()` stops it by PID (SIGKILL, as a crash) and `start()` starts it
 * again on the same port, empty. Disposal stops it.
 * @module
 */
import { freePort } from "./_receivers.ts";

export const REDIS_SERVER = "/usr/bin/redis-server";
const READY_MS = 10_000;

export interface TestRedis extends AsyncDisposable {
  readonly port: number;
  /** `redis://127.0.0.1:PORT`. */
  readonly url: string;
  /** Whether the server runs now. */
  readonly running: boolean;
  /** Starts it (again) on the same port; resolves once it answers PING. */
  start(): Promise<void>;
  /** Kills it (SIGKILL) and waits for its exit. */
  kill(): Promise<void>;
  /** Runs redis-cli against it; resolves with its trimmed stdout. */
  cli(...args: string[]): Promise<string>;
}

/** Starts a redis-server on a free port. */
export async function startRedis(): Promise<TestRedis> {
  const port = freePort();
  let child: Deno.ChildProcess | undefined;
  let drained: Promise<void> = Promise.resolve();
  const cli = async (...args: string[]) => {
    const out = await new Deno.Command("redis-cli", {
      args: ["-h", "127.0.0.1", "-p", String(port), ...args],
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(READY_MS),
    }).output();
    return new TextDecoder().decode(out.stdout).trim();
  };
  const start = async () => {
    if (child !== undefined) throw new Error(`redis-server on ${port} runs already`);
    const c = new Deno.Command(REDIS_SERVER, {
      args: [
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
      ],
      stdout: "piped",
      stderr: "inherit",
      stdin: "null",
    }).spawn();
    child = c;
    let ready!: () => void;
    const isReady = new Promise<void>((res) => ready = res);
    // read stdout to its end (a full pipe would stall the server), noting the ready line
    drained = (async () => {
      let text: string | undefined = "";
      for await (const chunk of c.stdout.pipeThrough(new TextDecoderStream())) {
        if (text === undefined) continue;
        text += chunk;
        if (text.includes("Ready to accept connections")) {
          text = undefined;
          ready();
        }
      }
    })();
    const exited = c.status.then((s) => {
      throw new Error(`redis-server on ${port} exited (${s.code}) before it was ready`);
    });
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<never>((_, rej) =>
      timer = setTimeout(
        () => rej(new Error(`redis-server on ${port}: not ready in ${READY_MS} ms`)),
        READY_MS,
      )
    );
    try {
      await Promise.race([isReady, exited, late]);
    } finally {
      clearTimeout(timer);
      exited.catch(() => {});
    }
    const pong = await cli("PING");
    if (pong !== "PONG") throw new Error(`redis-server on ${port} answered PING with ${pong}`);
  };
  const kill = async () => {
    const c = child;
    if (c === undefined) return;
    child = undefined;
    try {
      c.kill("SIGKILL");
    } catch { /* already gone */ }
    await c.status;
    await drained;
  };
  await start();
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    get running() {
      return child !== undefined;
    },
    start,
    kill,
    cli,
    [Symbol.asyncDispose]: kill,
  };
}
