/**
 * Large name sets: announcements go in pages, so any number of names up to the public proxy's
 * `max_announcements_per_operator` fits, and a page over the cap is refused alone.
 * @module
 */
import assert from "node:assert/strict";
import { startCluster, until } from "./_cluster.ts";
import type { PrivateAnnouncement } from "../lib/settings/private.ts";

function names(
  c: { internal: { addrs: { main: { hostname: string; port: number } } } },
  n: number,
) {
  const out: PrivateAnnouncement[] = [];
  for (let i = 0; i < n; i++) {
    out.push({
      domain: `n${i}.internal-server.local`,
      internal: c.internal.addrs.main,
      expiresInMs: 3_600_000,
    });
  }
  return out;
}

Deno.test("proxies route any of 10,000 announced names (sent in pages)", async () => {
  await using c = await startCluster({ startPrivate: false });
  c.options.private = { announcements: names(c, 10_000) };
  await c.startPrivate();
  assert.equal(c.pub.announcements.count("private-proxy-1"), 10_000);
  for (const i of [0, 4321, 9999]) {
    const r = await c.request("/jsonrpc", undefined, `n${i}.internal-server.local`);
    assert.equal(r.status, 200);
  }
  assert.equal(c.pub.stats.unknownNames, 0);
});

Deno.test("public proxy refuses a page of announcements over max_announcements_per_operator alone", async () => {
  await using c = await startCluster({
    startPrivate: false,
    public: { maxAnnouncementsPerOperator: 3000 },
  });
  // pages of 2,000: the first fits, the second would make 4,000 and is refused, the third fits
  c.options.private = { announcements: names(c, 5000) };
  await c.startPrivate();
  await until(() => c.pub.announcements.count("private-proxy-1") === 3000, "3,000 names held");
  assert.equal((await c.request("/jsonrpc", undefined, "n1999.internal-server.local")).status, 200);
  assert.equal((await c.request("/jsonrpc", undefined, "n4999.internal-server.local")).status, 200);
  await assert.rejects(c.request("/jsonrpc", undefined, "n2000.internal-server.local"));
  await until(() => c.pub.stats.unknownNames === 1, "the refused page's name unknown");
});
