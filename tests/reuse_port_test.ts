/**
 * `reuse_port` (docs/settings.md; docs/architecture.md, "Private instances and public replicas:
 * the private side"): two public proxies on one machine share the public port, each with its own
 * private port, and the kernel spreads clients over both; without it the second one cannot
 * start, and its error names the key. Runs on the driver the suite's TLS_PASS_SOCKETS chooses.
 * @module
 */
import assert from "node:assert/strict";
import { LOOPBACK, readToEnd, startCluster, until } from "./_cluster.ts";
import { type PublicHandle, startPublic } from "../lib/proxy/public.ts";
import type { PublicSettings } from "../lib/settings/public.ts";
import type { Cluster } from "./_cluster.ts";

const CLIENTS = 32;

/** A port nothing listens on: the second replica's EPS link retries there quietly. */
function closedPort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/**
 * A second public replica's settings: the cluster's public port, a private port of its own, a
 * memory store. Its EPS link goes nowhere: this test is about the public port, and without
 * per-instance links the EPS would let the two replicas' links replace each other.
 */
function secondReplica(c: Cluster, reusePort: boolean): PublicSettings {
  const s = c.publicSettings();
  return {
    ...s,
    publicListen: c.pub.addrs.public,
    privateListen: LOOPBACK,
    reusePort,
    store: { kind: "memory" },
    eps: { ...s.eps, address: { hostname: "127.0.0.1", port: closedPort() } },
  };
}

/** Not TLS: each replica that takes one refuses it at once (`bad-hello`), counted `accepted`. */
async function knock(addr: { hostname: string; port: number }): Promise<void> {
  using conn = await Deno.connect({ ...addr, transport: "tcp" });
  await conn.write(new TextEncoder().encode("GET / HTTP/1.0\r\n\r\n"));
  await readToEnd(conn);
}

Deno.test("reuse_port: two public replicas share the public port, each with its own private port", async () => {
  await using c = await startCluster({ startPrivate: false, public: { reusePort: true } });
  let b: PublicHandle | undefined;
  try {
    b = await startPublic(secondReplica(c, true));
    assert.equal(b.addrs.public.port, c.pub.addrs.public.port);
    assert.notEqual(b.addrs.private.port, c.pub.addrs.private.port);
    for (let i = 0; i < CLIENTS; i++) await knock(c.pub.addrs.public);
    const a = c.pub;
    const second = b;
    await until(
      () => a.stats.accepted + second.stats.accepted === CLIENTS,
      `${CLIENTS} clients accepted over both replicas`,
    );
    // the kernel hashes each connection's addresses: all 32 on one replica has odds of 2^-31
    assert.ok(a.stats.accepted > 0, `first replica accepted ${a.stats.accepted}`);
    assert.ok(second.stats.accepted > 0, `second replica accepted ${second.stats.accepted}`);
  } finally {
    await b?.close();
  }
});

Deno.test("reuse_port: without it a second public proxy on the port fails, naming the key", async () => {
  await using c = await startCluster({ startPrivate: false });
  const err = await startPublic(secondReplica(c, false)).then(
    (h) => h.close().then(() => new Error("the second proxy started")),
    (e: unknown) => e,
  );
  assert.ok(err instanceof Error);
  const port = c.pub.addrs.public.port;
  assert.match(
    err.message,
    new RegExp(`^Cannot listen on public_listen 127\\.0\\.0\\.1:${port}: `),
  );
  assert.match(err.message, /in use/i);
  assert.match(err.message, /replicas that share the public port need reuse_port: true on each$/);
  // the first one still serves its port
  await knock(c.pub.addrs.public);
  await until(() => c.pub.stats.accepted === 1, "the first proxy's client");
});
