import assert from "node:assert/strict";
import { DOMAIN, startCluster } from "./_cluster.ts";

Deno.test("proxies carry a GET and a POST end to end", async () => {
  await using c = await startCluster();
  const get = await c.request("/jsonrpc");
  assert.equal(get.status, 200);
  assert.deepEqual(JSON.parse(get.body), { message: "success" });
  const post = await c.request("/jsonrpc", JSON.stringify({ hello: "world", n: 1 }));
  assert.equal(post.status, 200);
  assert.deepEqual(JSON.parse(post.body), { hello: "world", n: 1 });
  assert.equal(c.pub.stats.spliced, 2);
  assert.equal(c.pub.announcements.match(DOMAIN)?.operator, "private-proxy-1");
});
