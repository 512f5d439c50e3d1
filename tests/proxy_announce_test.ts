import assert from "node:assert/strict";
import { DOMAIN, NoticeInbox, startCluster } from "./_cluster.ts";
import { RpcCode, RpcError } from "../lib/errors.ts";

function rpcCode(code: number) {
  return (err: unknown) => {
    assert.ok(err instanceof RpcError, `expected RpcError, got ${err}`);
    assert.equal(err.code, code, err.message);
    return true;
  };
}

Deno.test("public proxy refuses an announcement outside allowed_domains (-32010)", async () => {
  await using c = await startCluster({ secondPrivate: true });
  await using two = await NoticeInbox.attach(c, "private-proxy-2");
  await assert.rejects(two.announce(["evil.example.org"]), rpcCode(RpcCode.DomainNotAllowed));
  await assert.rejects(two.announce(["*.example.com"]), rpcCode(RpcCode.DomainNotAllowed));
  assert.equal(c.pub.announcements.match("evil.example.org"), undefined);
});

Deno.test("public proxy refuses a domain another operator holds (-32009)", async () => {
  await using c = await startCluster({ secondPrivate: true });
  await using two = await NoticeInbox.attach(c, "private-proxy-2");
  // private-proxy-1 announced DOMAIN at start; it is allowed for both
  await assert.rejects(two.announce([DOMAIN]), rpcCode(RpcCode.Conflict));
  assert.equal(c.pub.announcements.match(DOMAIN)?.operator, "private-proxy-1");
  // a free one is fine, and each operator sees only its own
  const ok = await two.announce(["two.example.com"]) as { connections: { domain: string }[] };
  assert.deepEqual(ok.connections.map((a) => a.domain), ["two.example.com"]);
  const mine = await two.client.call("public-proxy-1.getAnnouncements", {}) as {
    connections: { domain: string; expires_at: string }[];
  };
  assert.deepEqual(mine.connections.map((a) => a.domain), ["two.example.com"]);
  assert.ok(Date.parse(mine.connections[0]!.expires_at) > Date.now());
  // withdrawing frees it
  const w = await two.client.call("public-proxy-1.withdrawConnections", {}) as {
    withdrawn: string[];
  };
  assert.deepEqual(w.withdrawn, ["two.example.com"]);
  assert.equal(c.pub.announcements.match("two.example.com"), undefined);
});

Deno.test("public proxy restarted keeps its announcements from the file store", async () => {
  await using c = await startCluster();
  assert.equal((await c.request("/")).status, 200);
  const before = c.pub.announcements.all();
  await c.restartPublic();
  // straight from the store, before the private proxy could announce again
  assert.deepEqual(c.pub.announcements.all(), before);
  const r = await c.request("/");
  assert.equal(r.status, 200);
  assert.deepEqual(JSON.parse(r.body), { message: "success" });
});
