/**
 * The dev ports (4433, 9999, 5556, 7776, 8888, 9101-9105) are one machine-wide resource: the tests
 * that bind them (tests/e2e_test.ts, tests/seed_commands_test.ts) hold this lock, so that
 * `deno test --parallel`, which runs files at once, runs them one after the other. The load
 * tests hold another ({@linkcode lockLoad}).
 * @module
 */
import { join } from "node:path";

/** Where the lock lives: the machine's temp folder, since the ports are the machine's. */
export const DEV_PORTS_LOCK: string = join(
  Deno.env.get("TMPDIR") ?? "/tmp",
  "tls-pass-dev-ports.lock",
);

/**
 * The lock of the tests that load the whole machine for a while (tests/ha_test.ts,
 * tests/burst_test.ts, tests/budget_test.ts: hundreds of clients, several child processes) and
 * assert that every client is served in time: run at once under `--parallel` on two cores they
 * starve each other into timeouts, so they take this lock and run one after the other.
 */
export const LOAD_LOCK: string = join(Deno.env.get("TMPDIR") ?? "/tmp", "tls-pass-load.lock");

/**
 * Takes the dev ports' lock (an exclusive flock, released when disposed or when the process
 * ends), waiting at most `timeoutMs` for another test that holds it.
 */
export function lockDevPorts(timeoutMs = 15 * 60_000): Promise<AsyncDisposable> {
  return lockFile(DEV_PORTS_LOCK, "The dev ports' lock", timeoutMs);
}

/** Takes {@linkcode LOAD_LOCK}, as {@linkcode lockDevPorts} takes its own. */
export function lockLoad(timeoutMs = 15 * 60_000): Promise<AsyncDisposable> {
  return lockFile(LOAD_LOCK, "The load tests' lock", timeoutMs);
}

async function lockFile(path: string, what: string, timeoutMs: number): Promise<AsyncDisposable> {
  const file = await Deno.open(path, { create: true, write: true });
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    await Promise.race([
      file.lock(true),
      new Promise((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`${what} ${path} was held for ${timeoutMs} ms`)),
          timeoutMs,
        );
      }),
    ]);
  } catch (err) {
    file.close();
    throw err;
  } finally {
    clearTimeout(timer);
  }
  return {
    [Symbol.asyncDispose]: async () => {
      await file.unlock();
      file.close();
    },
  };
}
