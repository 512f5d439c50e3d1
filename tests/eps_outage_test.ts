/**
 * Static stability (docs/architecture.md, "Pool tickets"): while either EPS server is down —
 * killed with -9, a child process — clients keep being served from the pool, because the private
 * proxy opens pooled dial-backs with its ticket instead of asking openPool; once the EPS is
 * started again on its port, the links come back by themselves and nothing else restarts.
 *
 * The outage lasts TLS_PASS_OUTAGE_MS (default 3000) under TLS_PASS_OUTAGE_PARALLEL clients
 * (default 8) doing one HTTPS request per new connection; the closing note's 60 s figure is
 * `TLS_PASS_OUTAGE_MS=60000 TLS_PASS_OUTAGE_PARALLEL=25 deno test -A tests/eps_outage_test.ts`.
 * @module
 */
import assert from "node:assert/strict";
import { type Cluster, startCluster, until } from "./_cluster.ts";
import { eventually } from "./_eps_cluster.ts";

const OUTAGE_MS = Number(Deno.env.get("TLS_PASS_OUTAGE_MS") ?? 3000);
const PARALLEL = Number(Deno.env.get("TLS_PASS_OUTAGE_PARALLEL") ?? 8);
const BODY = JSON.stringify({ jsonrpc: "2.0", id: 1, method: "ping" });

/** `PARALLEL` clients, each a new TLS connection per request, until `stop` aborts. */
async function load(c: Cluster, stop: AbortSignal) {
  const r = { ok: 0, failed: 0, errors: new Map<string, number>() };
  await Promise.all(Array.from({ length: PARALLEL }, async () => {
    while (!stop.aborted) {
      try {
        const res = await c.request("/jsonrpc", BODY, undefined, AbortSignal.timeout(10_000));
        if (res.status === 200) r.ok++;
        else throw new Error(`status ${res.status}`);
      } catch (err) {
        r.failed++;
        const k = err instanceof Error ? err.message.slice(0, 80) : String(err);
        r.errors.set(k, (r.errors.get(k) ?? 0) + 1);
      }
    }
  }));
  return r;
}

for (const operator of ["public-proxy-1", "private-proxy-1"] as const) {
  Deno.test(`clients are served from the pool while the EPS of ${operator} is down (kill -9, then restart)`, async () => {
    await using c = await startCluster({
      epsProcess: operator,
      secondPrivate: true, // its EPS client checks the links after the restart
      callTimeoutMs: 5000,
      public: { helloTimeoutMs: 10_000, dialBackTimeoutMs: 10_000, noticeTimeoutMs: 5000 },
      private: {
        dialTimeoutMs: 5000,
        connectTimeoutMs: 5000,
        pool: { enabled: true, minIdle: 32, maxIdle: 64, idleTimeoutMs: 60_000 },
      },
    });
    const pool = () => c.priv!.pools.get("public-proxy-1")!;
    await until(() => pool().idle >= 32, "a warm pool", 15_000);
    const calls = () => pool().stats.refills - pool().stats.ticketRefills;
    const callsBefore = calls();
    const announced = c.priv!.stats.announced;

    const eps = c.epsChild();
    await eps.kill();
    // the outage lasts OUTAGE_MS, and at least until more clients came than the pool held
    // (bounded: 60 s more at most), so that it must have refilled on its own
    const held = pool().idle;
    const usedBefore = pool().stats.used;
    const stop = new AbortController();
    const started = Date.now();
    const watch = (async () => {
      while (!stop.signal.aborted) {
        const long = Date.now() - started >= OUTAGE_MS;
        if (
          long &&
          (pool().stats.used - usedBefore > held || Date.now() - started > OUTAGE_MS + 60_000)
        ) {
          stop.abort();
        }
        await new Promise((r) => setTimeout(r, 20)); // polling a counter, bounded above
      }
    })();
    const r = await load(c, stop.signal);
    await watch;
    const used = pool().stats.used - usedBefore;
    assert.ok(r.ok > 0, "no request during the outage");
    assert.equal(
      r.failed,
      0,
      `${r.failed} of ${r.ok + r.failed} failed during the outage: ${
        JSON.stringify([...r.errors])
      }`,
    );
    // the pool refilled itself from its ticket: more clients came than it held at the kill
    assert.ok(used > held, `only ${used} clients came on pooled dial-backs, ${held} were idle`);
    assert.equal(calls(), callsBefore, "openPool was called during the outage");
    assert.ok(pool().stats.ticketRefills > 0, "no refill from the ticket");

    await eps.restart(c.epsSettings(operator));
    // the links come back by themselves
    if (operator === "private-proxy-1") {
      // the private proxy's link to its EPS is back: it announces again
      await until(
        () => c.priv!.stats.announced > announced,
        "re-announced after the restart",
        20_000,
      );
    } else {
      // the public proxy is attached to its EPS again, and the EPS links to it: a call routes
      const other = await c.attach("private-proxy-2", c.epsPrivate2!);
      await eventually(
        () => other.call("public-proxy-1.getAnnouncements", {}),
        20_000,
        "a call to the public proxy after the restart",
      );
    }
    const after = await c.request("/jsonrpc", BODY);
    assert.equal(after.status, 200);
    // deno-lint-ignore no-console
    console.log(
      `EPS of ${operator} down ${OUTAGE_MS} ms, ${PARALLEL} parallel: ${r.ok} served, ${r.failed} failed, ${used} on pooled dial-backs (${c.pub.driver})`,
    );
  });
}
