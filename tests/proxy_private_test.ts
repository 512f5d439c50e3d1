import assert from "node:assert/strict";
import { DOMAIN, startCluster, until, within } from "./_cluster.ts";
import { RpcCode, RpcError } from "../lib/errors.ts";
import { formatHostPort } from "../lib/role.ts";
import { startEps } from "../lib/eps/server.ts";
import { startPrivate } from "../lib/proxy/private.ts";

function rpcCode(code: number) {
  return (err: unknown) => {
    assert.ok(err instanceof RpcError, `expected RpcError, got ${err}`);
    assert.equal(err.code, code, err.message);
    return true;
  };
}

const TOKEN = btoa(String.fromCharCode(...new Uint8Array(32)));

Deno.test("private proxy refuses notices for another endpoint, domain or token", async () => {
  await using c = await startCluster();
  const endpoint = formatHostPort(c.pub.addrs.private);
  // stand in for the public proxy: same operator, same EPS
  await c.pub.close();
  const pub = await c.attach("public-proxy-1", c.epsPublic);
  const notice = (params: Record<string, unknown>) =>
    pub.call("private-proxy-1.incomingConnection", {
      domain: DOMAIN,
      token: TOKEN,
      endpoint,
      ...params,
    });
  // an address from the network is never dialled unless the settings allow it
  await assert.rejects(notice({ endpoint: "127.0.0.1:1" }), rpcCode(RpcCode.NotPermitted));
  await assert.rejects(
    notice({ endpoint: "evil.example.com:9999" }),
    rpcCode(RpcCode.NotPermitted),
  );
  await assert.rejects(notice({ domain: "other.example.com" }), rpcCode(RpcCode.InvalidParams));
  await assert.rejects(notice({ token: "c2hvcnQ=" }), rpcCode(RpcCode.InvalidParams));
  await until(() => c.priv!.stats.refusedNotices === 4, "refusedNotices 4");
  assert.equal(c.priv!.stats.notices, 0);
  // a valid notice is answered at once; the dial-back then fails (nobody listens): counted
  assert.deepEqual(await notice({}), { ok: true });
  await until(() => c.priv!.stats.notices === 1, "notices 1");
});

Deno.test("private proxy waits for its EPS and announces once it is up", async () => {
  await using c = await startCluster({ startPrivate: false });
  // stop the private EPS, start the private proxy: it must wait, not fail
  const links = c.epsPrivate.addrs.links;
  await c.epsPrivate.close();
  const priv = await startPrivate(c.privateSettings());
  c.priv = priv;
  // (ready cannot resolve now: no EPS is listening on the port the proxy dials)
  // the EPS comes back on the same port: the announcement goes through
  c.epsPrivate = await startEps({ ...c.epsSettings("private-proxy-1"), listen: links });
  await within(priv.ready, 10_000, "the announcement after the EPS came up");
  const r = await c.request("/");
  assert.equal(r.status, 200);
});

Deno.test("private proxy announces again when its EPS link comes back", async () => {
  // a memory store: a public restart forgets, only a fresh announcement brings the name back
  await using c = await startCluster({ public: { store: { kind: "memory" } } });
  await c.restartPublic();
  assert.equal(c.pub.announcements.match(DOMAIN), undefined);
  const announced = c.priv!.stats.announced;
  // restart the private EPS: the private proxy re-attaches and announces at once
  const links = c.epsPrivate.addrs.links;
  await c.epsPrivate.close();
  c.epsPrivate = await startEps({ ...c.epsSettings("private-proxy-1"), listen: links });
  const deadline = Date.now() + 10_000;
  while (c.priv!.stats.announced === announced) { // bounded by the deadline
    assert.ok(Date.now() < deadline, "no new announcement within 10 s");
    await new Promise((r) => setTimeout(r, 20)); // polling a counter, bounded above
  }
  assert.equal(c.pub.announcements.match(DOMAIN)?.operator, "private-proxy-1");
  assert.equal((await c.request("/")).status, 200);
});

Deno.test("private proxy closes the dial-back when the internal server is down", async () => {
  // a port that nobody listens on: bind, note, close
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const dead = { hostname: "127.0.0.1", port: (l.addr as Deno.NetAddr).port };
  l.close();
  await using c = await startCluster({
    private: { announcements: [{ domain: DOMAIN, internal: dead, expiresInMs: 3_600_000 }] },
  });
  await assert.rejects(c.request("/"));
  await until(() => c.priv!.stats.failedConnections === 1, "failedConnections 1");
  assert.equal(c.priv!.stats.spliced, 0);
});
