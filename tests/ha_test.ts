/**
 * High availability and scale-out, with real processes and a real Redis (docs/architecture.md,
 * "Instances", "Re-dispatch", "Public replicas and the Redis store", "Private instances and public
 * replicas: the private side"): two private instances of one operator share its load; kill -9 of
 * one under load fails only what it carried and new clients go to the other; a dial-back that
 * never comes is re-dispatched; two public replicas share announcements through Redis; Redis
 * killed and restarted under load loses nothing.
 * @module
 */
import { lockLoad } from "./_dev_ports.ts";
import assert from "node:assert/strict";
import { DOMAIN, until, within } from "./_cluster.ts";
import { Ha, PrivateInstance } from "./_ha.ts";
import { connectEps } from "../lib/eps/client.ts";

Deno.test("HA: two private instances share the load of one name", async () => {
  await using _load = await lockLoad(); // one load test at a time (tests/_dev_ports.ts)
  await using ha = await Ha.start();
  const [a, b] = await ha.startInstances(["priv-a", "priv-b"]);
  // every instance keeps warm dial-backs at every replica (it learnt them from openPool answers)
  await until(
    () =>
      ha.replicas.every((r) =>
        ["priv-a", "priv-b"].every((i) => r.pool.idleBy("private-proxy-1", i) > 0)
      ),
    "idle pooled dial-backs of both instances at both replicas",
    15_000,
  );
  const statuses = await Promise.all(
    Array.from({ length: 10 }, async (_, w) => {
      const out = [];
      for (let i = 0; i < 20; i++) out.push(await ha.request((w + i) % 2));
      return out;
    }),
  );
  assert.deepEqual(statuses.flat().filter((s) => s !== 200), [], "every request answered");
  const [na, nb] = [await a!.connections(), await b!.connections()];
  assert.equal(na + nb, 200, `priv-a ${na} + priv-b ${nb}`);
  assert.ok(na >= 20 && nb >= 20, `both carry a share: priv-a ${na}, priv-b ${nb}`);
});

Deno.test("HA: kill -9 of one instance under 25 parallel clients fails only what it carried", async () => {
  await using _load = await lockLoad(); // one load test at a time (tests/_dev_ports.ts)
  await using ha = await Ha.start();
  const [a, b] = await ha.startInstances(["priv-a", "priv-b"]);
  let killedAt = 0;
  const stop = new AbortController();
  const results: { at: number; status: number }[] = [];
  const workers = Array.from({ length: 25 }, async (_, w) => {
    for (let n = 0; !stop.signal.aborted; n++) {
      const at = performance.now();
      results.push({ at, status: await ha.request((w + n) % 2) });
    }
  });
  try {
    await until(() => results.length >= 150, "150 requests before the kill", 30_000);
    const carried = await a!.connections();
    await a!.kill();
    killedAt = performance.now();
    const before = results.length;
    await until(() => results.length >= before + 300, "300 requests after the kill", 30_000);
    const failed = results.filter((r) => r.status !== 200);
    const late = failed.filter((r) => r.at >= killedAt);
    // the figures for the record
    // deno-lint-ignore no-console
    console.log(
      `kill -9 of priv-a (it had carried ${carried}): ${failed.length} of ${results.length} requests failed, ${late.length} of them started after the kill`,
    );
    const why = ha.errors.join("; ");
    assert.ok(
      failed.length <= 25,
      `at most one in flight per client failed: ${failed.length}: ${why}`,
    );
    assert.equal(late.length, 0, `every client that came after the kill was served: ${why}`);
    const bBefore = await b!.connections();
    assert.ok(bBefore > 0);
  } finally {
    stop.abort();
    await Promise.all(workers);
  }
  // it rejoins after a restart: announced again, and traffic reaches it
  await a!.start();
  await ha.routedBy(["priv-a", "priv-b"]);
  const after = await Promise.all(
    Array.from({ length: 10 }, async (_, w) => {
      const out = [];
      for (let i = 0; i < 10; i++) out.push(await ha.request((w + i) % 2));
      return out;
    }),
  );
  assert.deepEqual(after.flat().filter((s) => s !== 200), []);
  assert.ok((await a!.connections()) > 0, "the restarted instance carries connections again");
});

Deno.test("HA: a notice whose dial-back never comes is re-dispatched to another instance", async () => {
  await using _load = await lockLoad(); // one load test at a time (tests/_dev_ports.ts)
  await using ha = await Ha.start(1);
  // a ghost instance of private-proxy-1: it takes notices and never dials back
  const ghost = connectEps(
    ha.cluster.epsClientSettings("private-proxy-1", ha.cluster.epsPrivate.addrs.links),
    undefined,
    "ghost",
  );
  let ghostNotices = 0;
  ghost.serve("incomingConnection", () => {
    ghostNotices++;
    return { ok: true };
  });
  try {
    await within(ghost.ready, 10_000, "ghost attach");
    await ghost.call("public-proxy-1.announceConnections", { connections: [{ domain: DOMAIN }] });
    ha.instances.push(await PrivateInstance.start(ha, "priv-b", false)); // no pool: all by notice
    await ha.routedBy(["ghost", "priv-b"]);
    for (let i = 0; i < 10; i++) assert.equal(await ha.request(0), 200, `request ${i}`);
    assert.ok(ghostNotices > 0, "the ghost was sent notices (and never dialled back)");
    const redispatched = await ha.metric(0, "tls_pass_redispatches_total");
    assert.ok(redispatched >= 1, `re-dispatches counted: ${redispatched}`);
  } finally {
    await ghost.close();
  }
});

Deno.test("HA: two public replicas share announcements through Redis: announce, withdraw, expiry", async () => {
  await using _load = await lockLoad(); // one load test at a time (tests/_dev_ports.ts)
  await using ha = await Ha.start();
  const [r0, r1] = ha.replicas as [typeof ha.replicas[0], typeof ha.replicas[0]];
  // an announcement sent to one replica routes on the other: the time it takes
  const raw = connectEps(
    ha.cluster.epsClientSettings("private-proxy-1", ha.cluster.epsPrivate.addrs.links),
    undefined,
    "raw",
  );
  try {
    await within(raw.ready, 10_000, "raw attach");
    const t0 = performance.now();
    await raw.call("public-proxy-1.announceConnections", {
      connections: [{ domain: "short.internal-server.local", expires_at: Date.now() + 2000 }],
    }, { instance: "pub-a" });
    assert.ok(
      r0.announcements.match("short.internal-server.local"),
      "routes on the replica called",
    );
    while (!r1.announcements.match("short.internal-server.local")) await ha.changed();
    const ms = performance.now() - t0;
    // deno-lint-ignore no-console
    console.log(`an announcement to pub-a routed on pub-b ${ms.toFixed(1)} ms after the call`);
    assert.ok(ms < 1000, `within a second: ${ms} ms`);
    // expiry on both (and gone from Redis)
    await within(
      (async () => {
        while (
          r0.announcements.match("short.internal-server.local") ||
          r1.announcements.match("short.internal-server.local")
        ) await ha.changed();
      })(),
      5000,
      "expiry on both replicas",
    );
  } finally {
    await raw.close();
  }
  // a real instance: its announcement routes through both replicas; its withdrawal stops both
  const [a] = await ha.startInstances(["priv-a"]);
  assert.equal(await ha.request(0), 200);
  assert.equal(await ha.request(1), 200);
  await a!.stop(); // SIGTERM: withdraws
  await within(
    (async () => {
      while (r0.announcements.match(DOMAIN) || r1.announcements.match(DOMAIN)) await ha.changed();
    })(),
    2000,
    "the withdrawal reaching both replicas",
  );
  assert.equal(await ha.request(0), 0, "replica a refuses the withdrawn name");
  assert.equal(await ha.request(1), 0, "replica b refuses the withdrawn name");
  // the withdrawal deleted its fields; the expired entry goes at the next sweep (every second)
  await within(
    (async () => {
      while (await ha.redis.cli("HKEYS", "tls-pass:ha-test:announcements") !== "") {
        await ha.changed();
      }
    })(),
    3000,
    "nothing left in Redis",
  );
});

Deno.test("HA: Redis killed and restarted under load: routing goes on, nothing is lost", async () => {
  await using _load = await lockLoad(); // one load test at a time (tests/_dev_ports.ts)
  await using ha = await Ha.start();
  await ha.startInstances(["priv-a", "priv-b"]);
  const stop = new AbortController();
  const results: { at: number; status: number }[] = [];
  const workers = Array.from({ length: 10 }, async (_, w) => {
    for (let n = 0; !stop.signal.aborted; n++) {
      results.push({ at: performance.now(), status: await ha.request((w + n) % 2) });
    }
  });
  try {
    await until(() => results.length >= 50, "50 requests before Redis dies", 30_000);
    await ha.redis.kill();
    let n = results.length;
    await until(() => results.length >= n + 100, "100 requests without Redis", 30_000);
    await ha.redis.start(); // empty: it kept nothing
    n = results.length;
    await until(() => results.length >= n + 100, "100 requests after Redis is back", 30_000);
  } finally {
    stop.abort();
    await Promise.all(workers);
  }
  assert.deepEqual(
    results.filter((r) => r.status !== 200),
    [],
    `no request failed: ${ha.errors.join("; ")}`,
  );
  // the replicas wrote their announcements back into the new Redis
  await within(
    (async () => {
      while (Number(await ha.redis.cli("HLEN", "tls-pass:ha-test:announcements")) < 2) {
        await ha.changed();
      }
    })(),
    10_000,
    "both instances' entries back in Redis",
  );
});
