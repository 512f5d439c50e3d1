/**
 * Bursts: new clients that arrive at once are all served while `max_pending` has room — notices
 * beyond the warm pool go in batches and wait for stream credit instead of failing. Each client
 * sends a real ClientHello (curl's, captured); the internal server here echoes what it gets, so
 * every client proves its bytes went through both proxies and back, without the CPU of 1,000 TLS
 * handshakes on a test machine (the bench's burst workload does real handshakes).
 * @module
 */
import { lockLoad } from "./_dev_ports.ts";
import assert from "node:assert/strict";
import { DOMAIN, startCluster, within } from "./_cluster.ts";

/** Timeouts a loaded two-core machine meets; the cluster's SHORT ones are for fault tests. */
const PATIENT = {
  // the portable driver's data plane shares this thread with three EPS servers: with the whole
  // suite running on two cores, a burst takes seconds to set up
  helloTimeoutMs: 60_000,
  dialBackTimeoutMs: 60_000,
  noticeTimeoutMs: 20_000,
  tokenTimeoutMs: 20_000,
};

/** Reads one JSON line from the child's stdout. */
async function line(reader: ReadableStreamDefaultReader<string>, buf: { s: string }) {
  for (;;) {
    const nl = buf.s.indexOf("\n");
    if (nl >= 0) {
      const l = buf.s.slice(0, nl);
      buf.s = buf.s.slice(nl + 1);
      return JSON.parse(l);
    }
    const { value, done } = await reader.read();
    if (done) throw new Error("the burst's client process ended early");
    buf.s += value;
  }
}

Deno.test("proxies serve a burst of 1,000 simultaneous new clients from one address", async () => {
  await using _load = await lockLoad(); // docs: tests/_dev_ports.ts, LOAD_LOCK
  // the echo server and the 1,000 clients run in a child process (tests/_burst_child.ts), so that
  // the proxies here (on the portable driver: one thread with three EPS servers) do not also carry
  // them; the child is bounded by its own deadline and killed in finally
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL("./_burst_child.ts", import.meta.url).pathname, "1000", "90000"],
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const buf = { s: "" };
  try {
    const { echo } = await within(line(reader, buf), 30_000, "the burst's echo server");
    // a loaded machine (the whole suite at once) can take longer than SHORT's 1 s for a batched
    // notice of 256 clients
    await using c = await startCluster({
      startPrivate: false,
      public: PATIENT,
      callTimeoutMs: 20_000,
    });
    c.options.private = {
      dialTimeoutMs: 20_000,
      connectTimeoutMs: 20_000,
      announcements: [{
        domain: DOMAIN,
        internal: { hostname: "127.0.0.1", port: echo },
        expiresInMs: 3_600_000,
      }],
    };
    await c.startPrivate();
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode(`${c.pub.addrs.public.port}\n`));
    await w.close();
    const r = await within(line(reader, buf), 120_000, "the burst's result");
    const s = c.pub.stats;
    assert.equal(
      r.ok,
      1000,
      `${r.failed} of 1000 failed (first: ${r.first}); refused ${s.refusedPending} pending, ${s.refusedConnections} connections, ${s.failedNotices} notices failed, ${s.expired} expired; public ${
        JSON.stringify(s)
      }; private ${JSON.stringify(c.priv!.stats)}`,
    );
    // deno-lint-ignore no-console
    console.log(`burst: ${r.ok}/1000 served in ${r.ms} ms (${c.pub.driver})`);
  } finally {
    try {
      child.kill("SIGKILL");
    } catch { /* exited */ }
    await reader.cancel().catch(() => {});
    await child.status;
  }
});
