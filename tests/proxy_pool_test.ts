import assert from "node:assert/strict";
import { defaultInstanceName } from "../lib/settings/schema.ts";
import {
  clientHello,
  DOMAIN,
  NoticeInbox,
  POOL_OFF,
  readToEnd,
  startCluster,
  until,
  within,
} from "./_cluster.ts";
import { RpcCode, RpcError } from "../lib/errors.ts";
import { readExact } from "../lib/net/io.ts";
import { splice } from "../lib/net/splice.ts";
import { formatHostPort, type HostPort } from "../lib/role.ts";
import { decodePoolHeader } from "../lib/wire/pool_header.ts";
import { POOL_DEFAULTS } from "../lib/settings/private.ts";

const OP = "private-proxy-1";
/** A pool that opens one connection without traffic. */
const WARM = { pool: { ...POOL_DEFAULTS, minIdle: 1 } };

function tokenBytes(base64: string): Uint8Array {
  return Uint8Array.from(atob(base64), (ch) => ch.charCodeAt(0));
}

async function openPool(
  inbox: NoticeInbox,
  count: number,
  domains = [DOMAIN],
): Promise<string[]> {
  const r = await inbox.client.call<{ tokens: string[] }>("public-proxy-1.openPool", {
    domains,
    count,
    idle_timeout_ms: 30_000,
  });
  return r.tokens;
}

function rpcCode(code: number) {
  return (err: unknown) => {
    assert.ok(err instanceof RpcError, `expected RpcError, got ${err}`);
    assert.equal(err.code, code, err.message);
    return true;
  };
}

Deno.test("pool serves a client without a notice and refills itself", async () => {
  await using c = await startCluster({ private: WARM });
  await until(() => c.pub.pool.idle(OP) >= 1, "an idle pooled connection");
  const r = await c.request("/echo", JSON.stringify({ n: 1 }));
  assert.equal(r.status, 200);
  assert.deepEqual(JSON.parse(r.body), { n: 1 });
  // native sockets: the data-plane workers served it and tell the main threads a little later
  await until(() => c.pub.stats.poolHits === 1, "the pooled client counted");
  await until(() => c.priv!.pools.get("public-proxy-1")!.stats.used === 1, "the pool's count");
  assert.equal(c.pub.stats.notices, 0);
  assert.equal(c.priv!.stats.notices, 0);
  // the pool refills: the next client is served from a new pooled connection
  await until(() => c.pub.pool.idle(OP) >= 1, "a refilled pooled connection");
  assert.ok(c.pub.stats.pooled >= 2);
  assert.equal((await c.request("/")).status, 200);
  await until(() => c.pub.stats.poolHits === 2, "the second pooled client counted");
  assert.equal(c.pub.stats.notices, 0);
});

Deno.test("pool forms from traffic: notices first, then pooled connections", async () => {
  await using c = await startCluster(); // min_idle 0: no pool before the first client
  assert.equal(c.pub.pool.idle(OP), 0);
  assert.equal((await c.request("/")).status, 200);
  await until(() => c.pub.stats.notices === 1, "notices 1");
  await until(() => c.pub.pool.idle(OP) >= 1, "a pooled connection after an arrival");
  assert.equal((await c.request("/")).status, 200);
  await until(() => c.pub.stats.poolHits === 1, "the pooled client counted");
  await until(() => c.pub.stats.notices === 1, "notices 1");
});

Deno.test("pool is only used for the operator and domains it was opened for", async () => {
  await using c = await startCluster({ private: WARM, secondPrivate: true });
  await using other = await NoticeInbox.attach(c, "private-proxy-2");
  await other.announce(["two.example.com"]);
  await until(() => c.pub.pool.idle(OP) >= 1, "an idle pooled connection");
  // a client for private-proxy-2's name goes the notice path to private-proxy-2
  using client = await Deno.connect({ ...c.pub.addrs.public, transport: "tcp" });
  await client.write(clientHello("two.example.com"));
  const notice = await other.next();
  assert.equal(notice.domain, "two.example.com");
  assert.equal(c.pub.stats.poolHits, 0);
  assert.equal(c.pub.pool.idle(OP), 1);
  // an operator cannot open a pool for a name it does not hold
  await assert.rejects(openPool(other, 1, [DOMAIN]), rpcCode(RpcCode.DomainNotAllowed));
  await assert.rejects(
    openPool(other, 1, ["three.example.com"]),
    rpcCode(RpcCode.DomainNotAllowed),
  );
  // nor use a pool opened for one of its names for another one
  const [token] = await openPool(other, 1, ["two.example.com"]);
  using dial = await Deno.connect({ ...c.pub.addrs.private, transport: "tcp" });
  await dial.write(tokenBytes(token!));
  await until(() => c.pub.pool.idle("private-proxy-2") === 1, "private-proxy-2's pooled dial");
  // a client for a name of another operator does not take it: it takes that operator's own
  assert.equal((await c.request("/jsonrpc", "{}")).status, 200);
  await until(() => c.pub.stats.poolHits === 1, "the pooled client of private-proxy-1");
  assert.equal(c.pub.pool.idle("private-proxy-2"), 1);
});

Deno.test("public proxy writes the pool header and the hello on a pooled connection", async () => {
  await using c = await startCluster({ startPrivate: false });
  await using inbox = await NoticeInbox.attach(c);
  await inbox.announce();
  const [token] = await openPool(inbox, 1);
  using dial = await Deno.connect({ ...c.pub.addrs.private, transport: "tcp" });
  await dial.write(tokenBytes(token!));
  await until(() => c.pub.pool.idle(OP) === 1, "the pooled dial");
  using client = await Deno.connect({ ...c.pub.addrs.public, transport: "tcp" });
  const hello = clientHello(DOMAIN);
  await client.write(hello);
  // type 2: the fields' length, then the name and the connection id (docs/architecture.md)
  const start = new Uint8Array(3);
  assert.ok(await within(readExact(dial, start), 5000, "the pool header"));
  const got = new Uint8Array(3 + (start[1]! << 8) + start[2]! + hello.length);
  got.set(start);
  assert.ok(await within(readExact(dial, got.subarray(3)), 5000, "the pool header and hello"));
  const header = decodePoolHeader(got);
  assert.equal(header?.name, DOMAIN);
  assert.match(header?.conn ?? "", /^[0-9a-z]{5}-[0-9a-z]+$/);
  assert.deepEqual(got.subarray(header!.length), hello);
  // spliced both ways; no notice was sent
  await dial.write(new TextEncoder().encode("down"));
  const down = new Uint8Array(4);
  assert.ok(await within(readExact(client, down), 5000, "bytes to the client"));
  assert.equal(new TextDecoder().decode(down), "down");
  // with native sockets the data-plane worker served it and tells the main thread just after
  await until(() => c.pub.stats.poolHits === 1, "the pooled client counted");
  assert.equal(c.pub.stats.notices, 0);
});

Deno.test("public proxy refuses a forged or reused pool token", async () => {
  await using c = await startCluster({ startPrivate: false });
  await using inbox = await NoticeInbox.attach(c);
  await inbox.announce();
  const [token] = await openPool(inbox, 1);
  using first = await Deno.connect({ ...c.pub.addrs.private, transport: "tcp" });
  await first.write(tokenBytes(token!));
  await until(() => c.pub.stats.pooled === 1, "the pooled dial");
  using again = await Deno.connect({ ...c.pub.addrs.private, transport: "tcp" });
  await again.write(tokenBytes(token!));
  assert.equal((await readToEnd(again)).bytes.length, 0);
  using forged = await Deno.connect({ ...c.pub.addrs.private, transport: "tcp" });
  await forged.write(crypto.getRandomValues(new Uint8Array(32)));
  assert.equal((await readToEnd(forged)).bytes.length, 0);
  await until(() => c.pub.stats.badTokens === 2, "badTokens 2");
  await until(() => c.pub.stats.pooled === 1, "pooled 1");
  assert.equal(c.pub.pool.idle(OP), 1);
});

Deno.test("public proxy drops an idle pooled connection that closes or sends bytes", async () => {
  await using c = await startCluster({ startPrivate: false });
  await using inbox = await NoticeInbox.attach(c);
  await inbox.announce();
  const [a, b] = await openPool(inbox, 2);
  const closing = await Deno.connect({ ...c.pub.addrs.private, transport: "tcp" });
  await closing.write(tokenBytes(a!));
  using chatty = await Deno.connect({ ...c.pub.addrs.private, transport: "tcp" });
  await chatty.write(tokenBytes(b!));
  await until(() => c.pub.pool.idle(OP) === 2, "two pooled dials");
  closing.close();
  await chatty.write(new Uint8Array([1, 2, 3])); // nothing may come while idle
  assert.equal((await readToEnd(chatty)).bytes.length, 0);
  await until(() => c.pub.pool.idle(OP) === 0, "both dropped");
  await until(() => c.pub.stats.poolDropped === 2, "poolDropped 2");
  assert.equal(c.pub.pool.held(OP), 0);
});

Deno.test("public proxy closes an idle pooled connection after its idle timeout", async () => {
  await using c = await startCluster({ startPrivate: false });
  await using inbox = await NoticeInbox.attach(c);
  await inbox.announce();
  const r = await inbox.client.call<{ tokens: string[]; idle_timeout_ms: number }>(
    "public-proxy-1.openPool",
    { domains: [DOMAIN], count: 1, idle_timeout_ms: 1 }, // raised to the 1000 ms floor
  );
  assert.equal(r.idle_timeout_ms, 1000);
  using dial = await Deno.connect({ ...c.pub.addrs.private, transport: "tcp" });
  const started = performance.now();
  await dial.write(tokenBytes(r.tokens[0]!));
  assert.equal((await readToEnd(dial, 5000)).bytes.length, 0);
  assert.ok(performance.now() - started >= 900);
  // with native sockets the data-plane worker closed it and reports the drop just after
  await until(() => c.pub.stats.poolDropped === 1, "the drop counted");
  assert.equal(c.pub.pool.held(OP), 0);
});

Deno.test("public proxy enforces max_pooled_per_operator", async () => {
  await using c = await startCluster({ startPrivate: false, public: { maxPooledPerOperator: 2 } });
  await using inbox = await NoticeInbox.attach(c);
  await inbox.announce();
  const tokens = await openPool(inbox, 3);
  assert.equal(tokens.length, 2);
  await assert.rejects(openPool(inbox, 1), rpcCode(RpcCode.Unavailable));
  // redeemed tokens become idle connections: still counted
  using dial = await Deno.connect({ ...c.pub.addrs.private, transport: "tcp" });
  await dial.write(tokenBytes(tokens[0]!));
  await until(() => c.pub.pool.idle(OP) === 1, "the pooled dial");
  await assert.rejects(openPool(inbox, 1), rpcCode(RpcCode.Unavailable));
  await until(() => c.pub.stats.refusedPool === 2, "refusedPool 2");
  await until(() => c.pub.stats.poolTokens === 2, "poolTokens 2");
});

Deno.test("public proxy refuses every openPool when max_pooled_per_operator is 0", async () => {
  await using c = await startCluster({ startPrivate: false, public: { maxPooledPerOperator: 0 } });
  await using inbox = await NoticeInbox.attach(c);
  await inbox.announce();
  await assert.rejects(openPool(inbox, 1), rpcCode(RpcCode.Unavailable));
  await until(() => c.pub.stats.refusedPool === 1, "refusedPool 1");
});

/** A TCP forwarder whose connections the test can cut, standing between the proxies. */
class Forwarder implements AsyncDisposable {
  #listener: Deno.TcpListener;
  #pairs = new Set<[Deno.TcpConn, Deno.TcpConn]>();
  #tasks = new Set<Promise<unknown>>();
  #loop: Promise<void>;
  constructor(upstream: () => HostPort) {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    this.#listener = listener;
    this.#loop = (async () => {
      for await (const down of listener) {
        const t = (async () => {
          let up: Deno.TcpConn;
          try {
            up = await Deno.connect({ ...upstream(), transport: "tcp" });
          } catch {
            down.close();
            return;
          }
          const pair: [Deno.TcpConn, Deno.TcpConn] = [down, up];
          this.#pairs.add(pair);
          await splice(down, up);
          this.#pairs.delete(pair);
        })();
        this.#tasks.add(t);
        t.finally(() => this.#tasks.delete(t));
      }
    })();
  }
  get addr(): HostPort {
    return { hostname: "127.0.0.1", port: this.#listener.addr.port };
  }
  /** Cuts every forwarded connection (both sides see EOF). */
  cutAll(): void {
    for (const [a, b] of this.#pairs) {
      try {
        a.close();
        b.close();
      } catch { /* closed */ }
    }
  }
  async [Symbol.asyncDispose](): Promise<void> {
    this.#listener.close();
    await this.#loop;
    this.cutAll();
    await Promise.all(this.#tasks);
  }
}

Deno.test("private proxy replaces a pooled connection that dies while idle", async () => {
  const upstream: { addr?: HostPort } = {}; // the public private port, known once it is bound
  await using fwd = new Forwarder(() => upstream.addr!);
  const endpoint = fwd.addr;
  await using cluster = await startCluster({
    startPrivate: false,
    public: { privateEndpoint: endpoint },
  });
  upstream.addr = cluster.pub.addrs.private;
  cluster.options.private = { ...WARM, endpoints: { "public-proxy-1": [endpoint] } };
  await cluster.startPrivate();
  const pool = cluster.priv!.pools.get("public-proxy-1")!;
  await until(() => cluster.pub.pool.idle(OP) === 1, "an idle pooled connection");
  fwd.cutAll();
  await until(() => pool.stats.dropped === 1, "the private side noticing the cut");
  await until(() => cluster.pub.stats.poolDropped === 1, "the public side noticing the cut");
  await until(
    () => pool.stats.pooled >= 2 && cluster.pub.pool.idle(OP) === 1,
    "the replacement",
  );
  const r = await cluster.request("/jsonrpc", "{}");
  assert.equal(r.status, 200);
  await until(() => cluster.pub.stats.poolHits === 1, "the pooled client counted");
  assert.equal(cluster.pub.stats.notices, 0);
  assert.equal(formatHostPort(cluster.pub.privateEndpoint), formatHostPort(endpoint));
});

Deno.test("private proxy with the pool off takes the notice path only", async () => {
  await using c = await startCluster({ private: POOL_OFF });
  for (let i = 0; i < 3; i++) assert.equal((await c.request("/")).status, 200);
  await until(() => c.pub.stats.notices === 3, "notices 3");
  await until(() => c.priv!.stats.notices === 3, "notices 3");
  assert.equal(c.pub.stats.poolTokens, 0);
  assert.equal(c.pub.stats.poolHits, 0);
  assert.equal(c.priv!.pools.size, 0);
});

Deno.test("private proxy takes the notice path when the directory does not permit openPool", async () => {
  await using c = await startCluster({ noOpenPool: true });
  for (let i = 0; i < 3; i++) assert.equal((await c.request("/")).status, 200);
  await until(
    () => c.priv!.pools.get("public-proxy-1")!.stats.failedRefills >= 1,
    "the refused openPool",
  );
  await until(() => c.pub.stats.notices === 3, "notices 3");
  assert.equal(c.pub.stats.poolTokens, 0);
});

Deno.test("private proxy refuses a pooled client for a name it did not announce", async () => {
  // a stand-in for the public proxy's private port: it takes the pooled dial and sends a pool
  // header for a name the private proxy never announced
  using fake = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const endpoint = { hostname: "127.0.0.1", port: fake.addr.port };
  await using c = await startCluster({
    startPrivate: false,
    public: { privateEndpoint: endpoint },
  });
  c.options.private = {
    ...WARM,
    pool: { ...WARM.pool, minIdle: 1, maxIdle: 1 },
    endpoints: { "public-proxy-1": [endpoint] },
  };
  await c.startPrivate();
  using conn = await within(fake.accept(), 5000, "the pooled dial");
  assert.ok(await within(readExact(conn, new Uint8Array(32)), 5000, "the token"));
  await conn.write(Uint8Array.from([1, 9, ...new TextEncoder().encode("evil.test")]));
  const buf = new Uint8Array(1);
  assert.equal(await within(conn.read(buf), 5000, "the close"), null);
  await until(() => c.priv!.stats.refusedPooled === 1, "the refusal counted");
});

Deno.test("private proxy counts and logs a pooled client whose internal server is down", async () => {
  // with native sockets the data-plane worker connects the internal server: its failure must
  // still be counted and logged as on the main thread
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const dead = { hostname: "127.0.0.1", port: (l.addr as Deno.NetAddr).port };
  l.close();
  await using c = await startCluster({
    private: {
      ...WARM,
      announcements: [{ domain: DOMAIN, internal: dead, expiresInMs: 3_600_000 }],
    },
  });
  await until(() => c.pub.pool.idle(OP) >= 1, "an idle pooled connection");
  await assert.rejects(c.request("/"));
  // the pooled dial-back closed unanswered: the client went on to its next dispatch (another
  // pooled one or a notice; docs/architecture.md, "Pooled dial-backs that close unanswered"),
  // whose connect failed too
  await until(() => c.priv!.stats.failedConnections >= 2, "both failed connects counted");
  assert.equal(c.priv!.stats.spliced, 0);
  assert.equal(c.pub.stats.poolHits, 0); // never spliced to a pooled dial-back
});

Deno.test("openPool answers this replica's instance and endpoint, and the replicas to pool at", async () => {
  // docs/architecture.md, "Several private instances": one replica lists itself
  await using c = await startCluster({ startPrivate: false });
  await using inbox = await NoticeInbox.attach(c);
  await inbox.announce();
  const r = await inbox.client.call<Record<string, unknown>>("public-proxy-1.openPool", {
    domains: [DOMAIN],
    count: 1,
    idle_timeout_ms: 30_000,
  });
  const endpoint = `${c.pub.addrs.private.hostname}:${c.pub.addrs.private.port}`;
  assert.equal((r.tokens as string[]).length, 1);
  const instance = defaultInstanceName(); // the cluster's public proxy sets none
  assert.equal(r.instance, instance);
  assert.equal(r.endpoint, endpoint);
  assert.deepEqual(r.replicas, [{ instance, endpoint }]);
  // count 0, no ticket: a private instance's probe for the replicas, no token minted
  const probe = await inbox.client.call<Record<string, unknown>>("public-proxy-1.openPool", {
    count: 0,
    idle_timeout_ms: 30_000,
  });
  assert.deepEqual(probe, {
    tokens: [],
    idle_timeout_ms: 30_000,
    instance,
    endpoint,
    replicas: [{ instance, endpoint }],
  });
  assert.equal(c.pub.stats.poolTokens, 1);
});
