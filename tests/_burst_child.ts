/**
 * The other side of tests/burst_test.ts, in a child process so that the test's proxies do not
 * share their thread with 1,000 clients: an echo server (the internal server: every byte back
 * until the client half-closes), then, when told the public port on stdin, N simultaneous clients
 * that each send a real ClientHello (curl's, captured), half-close and check the echo.
 *
 * stdout: `{"echo": PORT}`, then `{"ok": n, "failed": n, "ms": t, "first": "error"}`.
 * @module
 */
import { writeAll } from "../lib/net/io.ts";

const HELLO = Deno.readFileSync(new URL("../lib/wire/testdata/curl_tls13.bin", import.meta.url));
const N = Number(Deno.args[0] ?? 1000);
const DEADLINE_MS = Number(Deno.args[1] ?? 90_000);

const listener = Deno.listen({ hostname: "127.0.0.1", port: 0, tcpBacklog: 4096 });
const echoes = (async () => {
  for await (const conn of listener) {
    (async () => {
      try {
        const buf = new Uint8Array(16_384);
        for (let n; (n = await conn.read(buf)) !== null;) await writeAll(conn, buf.subarray(0, n));
        await conn.closeWrite();
      } catch {
        // the client went away
      } finally {
        conn.close();
      }
    })();
  }
})();
// deno-lint-ignore no-console
console.log(JSON.stringify({ echo: listener.addr.port }));

const line = await new Response(Deno.stdin.readable).text();
const port = Number(line.trim());

async function oneClient(signal: AbortSignal): Promise<void> {
  using conn = await Deno.connect({ hostname: "127.0.0.1", port });
  signal.addEventListener("abort", () => {
    try {
      conn.close();
    } catch { /* closed */ }
  }, { once: true });
  await writeAll(conn, HELLO);
  await conn.closeWrite();
  const got: number[] = [];
  const buf = new Uint8Array(4096);
  for (let n; (n = await conn.read(buf)) !== null;) got.push(...buf.subarray(0, n));
  if (got.length !== HELLO.length || !got.every((b, i) => b === HELLO[i])) {
    throw new Error(`echo of ${got.length} bytes, want the ${HELLO.length} of the hello`);
  }
}

const signal = AbortSignal.timeout(DEADLINE_MS);
const started = performance.now();
const results = await Promise.allSettled(Array.from({ length: N }, () => oneClient(signal)));
const ms = Math.round(performance.now() - started);
const failed = results.filter((r) => r.status === "rejected") as PromiseRejectedResult[];
// deno-lint-ignore no-console
console.log(JSON.stringify({
  ok: N - failed.length,
  failed: failed.length,
  ms,
  first: failed[0] ? String(failed[0].reason) : null,
}));
listener.close();
await echoes;
