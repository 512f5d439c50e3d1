/**
 * The dev ports (4433, 9999, 5556, 7776, 8888, 9101-9105) are one machine-wide resource: the tests
 * that bind them (tests/e2e_test.ts, tests/seed_commands_test.ts) hold this lock, so that
 * `deno test --parallel`, which runs files at once, runs them one after the other.
 * @module
 */
import { join } from "node:path";

/** Where the lock lives: the machine's temp folder, since the ports are the machine's. */
export const DEV_PORTS_LOCK: string = join(
  Deno.env.get("TMPDIR") ?? "/tmp",
  "tls-pass-dev-ports.lock",
);

/**
 * Takes the dev ports' lock (an exclusive flock, released when disposed or when the process
 * ends), waiting at most `timeoutMs` for another test that holds it.
 */
export async function lockDevPorts(timeoutMs = 15 * 60_000): Promise<AsyncDisposable> {
  const file = await Deno.open(DEV_PORTS_LOCK, { create: true, write: true });
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    await Promise.race([
      file.lock(true),
      new Promise((_, reject) => {
        timer = setTimeout(
          () =>
            reject(new Error(`The dev ports' lock ${DEV_PORTS_LOCK} was held for ${timeoutMs} ms`)),
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
