/**
 * Bursts: new clients that arrive at once are all served while `max_pending` has room — notices
 * beyond the warm pool go in batches and wait for stream credit instead of failing.
 * @module
 */
import assert from "node:assert/strict";
import { DOMAIN, startCluster } from "./_cluster.ts";

/** Timeouts a loaded two-core machine meets; the cluster's SHORT ones are for fault tests. */
const PATIENT = {
  helloTimeoutMs: 20_000,
  dialBackTimeoutMs: 20_000,
  noticeTimeoutMs: 10_000,
  tokenTimeoutMs: 10_000,
};

Deno.test("proxies serve a burst of 1,000 simultaneous new TLS clients from one address", async () => {
  await using c = await startCluster({
    public: PATIENT,
    private: { dialTimeoutMs: 10_000, connectTimeoutMs: 10_000 },
  });
  const n = 1000;
  const started = performance.now();
  const results = await Promise.allSettled(
    Array.from(
      { length: n },
      () => c.request("/jsonrpc", undefined, DOMAIN, AbortSignal.timeout(60_000)),
    ),
  );
  const ms = performance.now() - started;
  const ok = results.filter((r) => r.status === "fulfilled" && r.value.status === 200).length;
  const failed = results.find((r) => r.status === "rejected") as PromiseRejectedResult | undefined;
  assert.equal(ok, n, `${n - ok} of ${n} failed, first: ${failed?.reason}`);
  assert.equal(c.pub.stats.refusedPending, 0);
  assert.equal(c.pub.stats.failedNotices, 0);
  // deno-lint-ignore no-console
  console.log(
    `burst: ${ok}/${n} served in ${
      Math.round(ms)
    } ms; ${c.pub.stats.poolHits} from the pool, ${c.pub.stats.notices} by notice`,
  );
});
