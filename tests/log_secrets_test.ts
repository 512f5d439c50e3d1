/**
 * Nothing secret in logs: with every logger at debug, clients served by notice and from the pool
 * (tokens, pool tokens, ticket tokens, the ticket key) leave no token or key in any log record —
 * message or properties. A token or key is 32 bytes in base64 (44 characters ending in "="); the
 * redacted hints the logs carry are short.
 * @module
 */
import assert from "node:assert/strict";
import { DOMAIN, POOL_OFF, startCluster, until } from "./_cluster.ts";
import { captureLogs } from "./_logs.ts";

const SECRET = /[A-Za-z0-9+/]{43}=/;

Deno.test("tokens, pool tokens and ticket keys never reach a log record, even at debug", async () => {
  const logs = await captureLogs("debug");
  const records = logs.records;
  try {
    // first by notice only, then with the pool (tokens and a ticket)
    for (const pool of [false, true]) {
      await using c = await startCluster({
        private: pool
          ? { pool: { enabled: true, minIdle: 4, maxIdle: 8, idleTimeoutMs: 30_000 } }
          : POOL_OFF,
        public: { helloTimeoutMs: 10_000, dialBackTimeoutMs: 10_000, noticeTimeoutMs: 5000 },
        callTimeoutMs: 5000,
      });
      if (pool) await until(() => (c.priv!.pools.get("public-proxy-1")?.idle ?? 0) > 0, "a pool");
      for (let i = 0; i < 20; i++) {
        const r = await c.request("/jsonrpc", '{"jsonrpc":"2.0","id":1,"method":"x"}', DOMAIN);
        assert.equal(r.status, 200);
      }
      if (pool) assert.ok(c.pub.stats.poolHits > 0, "no client came from the pool");
      else assert.ok(c.pub.stats.notices >= 20);
    }
  } finally {
    await logs.close();
  }
  assert.ok(records.length > 50, `only ${records.length} log records`);
  for (const r of records) {
    const text = r.message.map(String).join("") + " " + JSON.stringify(r.properties);
    assert.doesNotMatch(text, SECRET, `a log record carries a secret: ${text}`);
  }
});
