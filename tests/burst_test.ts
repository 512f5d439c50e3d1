/**
 * Bursts: new clients that arrive at once are all served while `max_pending` has room — notices
 * beyond the warm pool go in batches and wait for stream credit instead of failing. Each client
 * sends a real ClientHello (curl's, captured); the internal server here echoes what it gets, so
 * every client proves its bytes went through both proxies and back, without the CPU of 1,000 TLS
 * handshakes on a test machine (the bench's burst workload does real handshakes).
 * @module
 */
import assert from "node:assert/strict";
import { DOMAIN, readToEnd, startCluster } from "./_cluster.ts";
import { writeAll } from "../lib/net/io.ts";

const HELLO = Deno.readFileSync(new URL("../lib/wire/testdata/curl_tls13.bin", import.meta.url));

/** Timeouts a loaded two-core machine meets; the cluster's SHORT ones are for fault tests. */
const PATIENT = {
  // the portable driver accepts on the main thread: with the whole suite running, its listen
  // backlog overflows and the kernel's SYN retries (1, 3, 7, 15, 31 s) decide how long it takes
  helloTimeoutMs: 60_000,
  dialBackTimeoutMs: 60_000,
  noticeTimeoutMs: 20_000,
  tokenTimeoutMs: 20_000,
};

/** A TCP server that sends back every byte until the client half-closes. */
function startEcho(): {
  addr: { hostname: string; port: number };
  done: Promise<void>;
  close(): void;
} {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const tasks = new Set<Promise<void>>();
  const done = (async () => {
    for await (const conn of listener) {
      const t = (async () => {
        try {
          const buf = new Uint8Array(16_384);
          for (let n; (n = await conn.read(buf)) !== null;) {
            await writeAll(conn, buf.subarray(0, n));
          }
          await conn.closeWrite();
        } catch {
          // the client went away
        } finally {
          conn.close();
        }
      })();
      tasks.add(t);
      t.finally(() => tasks.delete(t));
    }
    await Promise.all(tasks);
  })();
  return {
    addr: { hostname: "127.0.0.1", port: listener.addr.port },
    done,
    close: () => listener.close(),
  };
}

async function oneClient(addr: { hostname: string; port: number }): Promise<boolean> {
  using conn = await Deno.connect({ ...addr, transport: "tcp" });
  await writeAll(conn, HELLO);
  await conn.closeWrite();
  const r = await readToEnd(conn, 90_000);
  return r.bytes.length === HELLO.length && r.bytes.every((b, i) => b === HELLO[i]);
}

Deno.test({
  name: "proxies serve a burst of 1,000 simultaneous new clients from one address",
  // Both drivers listen with a backlog of 4096 (LISTEN_BACKLOG). On the portable driver this
  // in-process cluster runs the 1,000 clients, both proxies' data planes and three EPS servers on
  // one thread: alone it serves the burst in about 4 s, but beside the rest of the suite on two
  // cores it takes 17 s to over a minute, past its deadlines. Not run there; the bench's burst
  // workload measures real processes.
  ignore: Deno.env.get("TLS_PASS_SOCKETS") === "deno",
  fn: burst,
});

async function burst(): Promise<void> {
  const echo = startEcho();
  try {
    // a loaded machine (the whole suite at once, the portable driver on this thread) can take
    // longer than SHORT's 1 s for a batched notice of 256 clients
    await using c = await startCluster({
      startPrivate: false,
      public: PATIENT,
      callTimeoutMs: 20_000,
    });
    c.options.private = {
      dialTimeoutMs: 20_000,
      connectTimeoutMs: 20_000,
      announcements: [{ domain: DOMAIN, internal: echo.addr, expiresInMs: 3_600_000 }],
    };
    await c.startPrivate();
    const n = 1000;
    const started = performance.now();
    const results = await Promise.allSettled(
      Array.from({ length: n }, () => oneClient(c.pub.addrs.public)),
    );
    const ms = performance.now() - started;
    const ok = results.filter((r) => r.status === "fulfilled" && r.value).length;
    const failed = results.find((r) => r.status === "rejected") as
      | PromiseRejectedResult
      | undefined;
    const s = c.pub.stats;
    assert.equal(
      ok,
      n,
      `${
        n - ok
      } of ${n} failed (first: ${failed?.reason}); refused ${s.refusedPending} pending, ${s.refusedConnections} connections, ${s.failedNotices} notices failed, ${s.expired} expired; public ${
        JSON.stringify(s)
      }; private ${JSON.stringify(c.priv!.stats)}`,
    );
    // deno-lint-ignore no-console
    console.log(`burst: ${ok}/${n} served in ${Math.round(ms)} ms (${c.pub.driver})`);
  } finally {
    echo.close();
    await echo.done;
  }
}
