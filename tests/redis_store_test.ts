/**
 * The Redis store against a real redis-server (tests/_redis.ts): two replicas' tables share
 * announcements, per instance, through one Redis; expiry; an outage (killed, restarted empty) and
 * an unreachable Redis at start; bad `redis_url`; `/readyz` of a public proxy whose Redis is down.
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { Announcements } from "../lib/proxy/announcements.ts";
import type { AnnouncementStore } from "../lib/proxy/store.ts";
import { openRedisStore } from "../lib/proxy/store_redis.ts";
import { loadPublicSettings, parseRedisUrl } from "../lib/settings/public.ts";
import { SettingsError } from "../lib/errors.ts";
import { formatHostPort, type HostPort } from "../lib/role.ts";
import { Cluster, DOMAIN, LOOPBACK, NoticeInbox, until } from "./_cluster.ts";
import { startRedis, type TestRedis } from "./_redis.ts";
import { captureLogs } from "./_logs.ts";

const OP = "private-proxy-1";
const HOUR = 3_600_000;
const anyDomain = () => true;

/** A replica: its store (fast replica refresh) and its table. */
async function replica(r: TestRedis, instance: string, connectWaitMs = 5000) {
  const store = await openRedisStore(
    { url: parseRedisUrl(r.url, "redis_url", []), prefix: "t:" },
    { operator: "public-proxy-1", instance, endpoint: `127.0.0.1:${instance.length}0` },
    { replicaTtlMs: 600, connectWaitMs },
  );
  return { store, table: new Announcements(store, anyDomain) };
}

/** Resolves once the table changed from outside and `cond` holds; rejects after `ms`. */
function changed(table: Announcements, cond: () => boolean, what: string, ms = 1000) {
  return new Promise<void>((resolve, reject) => {
    if (cond()) return resolve();
    const timer = setTimeout(() => {
      off();
      reject(new Error(`Not within ${ms} ms: ${what}`));
    }, ms);
    const off = table.onChange(() => {
      if (!cond()) return;
      clearTimeout(timer);
      off();
      resolve();
    });
  });
}

async function closeAll(...stores: AnnouncementStore[]) {
  for (const s of stores) await s.close();
}

Deno.test("redis store: two replicas share announcements, per instance, within a second", async () => {
  await using r = await startRedis();
  const a = await replica(r, "pub-a");
  const b = await replica(r, "pub-b");
  try {
    assert.deepEqual(a.store.problems(), []);
    await a.table.announce(OP, [{ domain: "x.example.com", expiresAt: Date.now() + HOUR }], "p-1");
    await changed(b.table, () => b.table.match("x.example.com") !== undefined, "b sees x");
    assert.deepEqual(b.table.match("x.example.com")?.instances, ["p-1"]);
    // a second instance of the same operator announces through the other replica
    await b.table.announce(OP, [{
      domain: "x.example.com",
      expiresAt: Date.now() + HOUR,
      allow: ["10.0.0.0/8"],
    }], "p-2");
    await changed(
      a.table,
      () => a.table.instancesOf("x.example.com").length === 2,
      "a sees both instances",
    );
    assert.deepEqual(a.table.match("x.example.com")?.allow, ["10.0.0.0/8"]);
    assert.equal(await r.cli("HLEN", "t:announcements"), "2", "one field per instance");
    // one instance withdraws: the name still routes on both through the other
    await a.table.withdraw(OP, ["x.example.com"], "p-2");
    await changed(b.table, () => b.table.instancesOf("x.example.com").length === 1, "b: p-1 left");
    assert.deepEqual(a.table.instancesOf("x.example.com"), ["p-1"]);
    assert.deepEqual(b.table.instancesOf("x.example.com"), ["p-1"]);
    // withdrawal of every instance
    await b.table.withdraw(OP, ["x.example.com"]);
    await changed(a.table, () => a.table.match("x.example.com") === undefined, "a: x withdrawn");
    assert.equal(await r.cli("HLEN", "t:announcements"), "0");
    // the replica registry: both listed, each with its endpoint
    await until(() => a.store.replicas().length === 2, "a lists b", 3000);
    assert.deepEqual(a.store.replicas(), [
      { instance: "pub-a", endpoint: "127.0.0.1:50" },
      { instance: "pub-b", endpoint: "127.0.0.1:50" },
    ]);
    // a third replica starts: it loads everything at once
    await a.table.announce(OP, [{ domain: "y.example.com", expiresAt: Date.now() + HOUR }], "p-1");
    const c = await replica(r, "pub-c");
    assert.deepEqual(c.table.instancesOf("y.example.com"), ["p-1"]);
    await c.store.close();
    // a closed replica leaves the registry
    await until(() => a.store.replicas().length === 2, "pub-c left", 3000);
  } finally {
    await closeAll(a.store, b.store);
  }
});

Deno.test("redis store: an expired entry is dropped on both replicas and from Redis", async () => {
  await using r = await startRedis();
  const a = await replica(r, "pub-a");
  const b = await replica(r, "pub-b");
  try {
    await a.table.announce(OP, [{ domain: "e.example.com", expiresAt: Date.now() + 800 }], "p-1");
    await changed(b.table, () => b.table.match("e.example.com") !== undefined, "b sees e");
    await Promise.all([
      changed(a.table, () => a.table.match("e.example.com") === undefined, "a: e expired", 3000),
      changed(b.table, () => b.table.match("e.example.com") === undefined, "b: e expired", 3000),
    ]);
    const deadline = Date.now() + 3000;
    while (await r.cli("HLEN", "t:announcements") !== "0") {
      if (Date.now() > deadline) throw new Error("the expired field stays in Redis");
      await new Promise((res) => setTimeout(res, 50)); // polling Redis, bounded above
    }
  } finally {
    await closeAll(a.store, b.store);
  }
});

Deno.test("redis store: killed and restarted empty, both replicas route from cache and catch up", async () => {
  await using logs = await captureLogs("info");
  await using r = await startRedis();
  const a = await replica(r, "pub-a");
  const b = await replica(r, "pub-b");
  const said = (part: string) =>
    logs.records.filter((x) => x.rawMessage.toString().includes(part)).length;
  try {
    await a.table.announce(OP, [{ domain: "a.example.com", expiresAt: Date.now() + HOUR }], "p-1");
    await b.table.announce(OP, [{ domain: "b.example.com", expiresAt: Date.now() + HOUR }], "p-2");
    await changed(a.table, () => a.table.match("b.example.com") !== undefined, "a sees b");
    await changed(b.table, () => b.table.match("a.example.com") !== undefined, "b sees a");
    await r.kill();
    const down = `store: redis at 127.0.0.1:${r.port} unreachable`;
    await until(() => a.store.problems().includes(down), "a notices the outage");
    await until(() => b.store.problems().includes(down), "b notices the outage");
    for (const t of [a.table, b.table]) {
      assert.equal(t.match("a.example.com")?.operator, OP, "routes from the cache");
      assert.equal(t.match("b.example.com")?.operator, OP, "routes from the cache");
    }
    // a write during the outage is answered (within the write timeout) and queued
    const t0 = Date.now();
    await a.table.announce(OP, [{ domain: "n.example.com", expiresAt: Date.now() + HOUR }], "p-1");
    assert.ok(Date.now() - t0 < 1500, "answered from the cache");
    assert.equal(b.table.match("n.example.com"), undefined);
    await r.start(); // empty: no persistence
    await changed(b.table, () => b.table.match("n.example.com") !== undefined, "b sees n", 10_000);
    await until(() => a.store.problems().length === 0 && b.store.problems().length === 0, "up");
    // each replica wrote back its own entries: nothing lost with the restart
    const deadline = Date.now() + 5000;
    while (await r.cli("HLEN", "t:announcements") !== "3") {
      if (Date.now() > deadline) throw new Error("entries not written back");
      await new Promise((res) => setTimeout(res, 50)); // polling Redis, bounded above
    }
    // the loss logged once by each replica (not at each reconnect attempt), and the return
    assert.equal(said("unreachable"), 2);
    assert.equal(said("reachable again"), 2);
    for (const t of [a.table, b.table]) {
      assert.deepEqual(t.all().map((x) => x.domain).sort(), [
        "a.example.com",
        "b.example.com",
        "n.example.com",
      ]);
    }
  } finally {
    await closeAll(a.store, b.store);
  }
});

Deno.test("redis store: the replica registry outlives an outage longer than its expiry, and a restart", async () => {
  // docs/architecture.md, "Public replicas and the Redis store": a replica listing only itself
  // would make the private instances close their pools at the other
  await using r = await startRedis();
  const a = await replica(r, "pub-a");
  const b = await replica(r, "pub-b");
  const names = () => a.store.replicas().map((x) => x.instance);
  try {
    await until(() => names().length === 2, "a lists b", 3000);
    await r.kill();
    await until(() => a.store.problems().length > 0, "a notices the outage");
    // the registry's expiry (600 ms here) passes while nobody can refresh: time itself is the
    // subject, bounded
    const past = Date.now() + 2 * 600;
    await until(() => Date.now() > past, "twice the expiry", 3000);
    assert.deepEqual(names(), ["pub-a", "pub-b"], "the last known list stands during the outage");
    await r.start(); // empty: b's entry is gone
    await until(() => a.store.problems().length === 0, "a back", 10_000);
    assert.deepEqual(names(), ["pub-a", "pub-b"], "b stays listed until it registers again");
    // b registers again at its reconnect: listed from Redis, past the grace
    for (
      const deadline = Date.now() + 5000;
      (await r.cli("HEXISTS", "t:replicas", "pub-b")) !== "1";
    ) {
      if (Date.now() > deadline) throw new Error("b did not register again");
      await new Promise((res) => setTimeout(res, 50)); // polling Redis, bounded above
    }
    const graceOver = Date.now() + 600;
    await until(() => Date.now() > graceOver, "the grace over", 3000);
    await until(() => names().length === 2, "a lists b from Redis", 3000);
    // a replica that leaves while Redis is up is gone at once (its entry deleted)
    await b.store.close();
    await until(() => names().length === 1, "b left", 3000);
  } finally {
    await closeAll(a.store, b.store);
  }
});

Deno.test("redis store: unreachable at start, it serves from what it has and syncs when Redis comes", async () => {
  await using r = await startRedis();
  await r.kill();
  const a = await replica(r, "pub-a", 300);
  try {
    assert.deepEqual(a.store.problems(), [`store: redis at 127.0.0.1:${r.port} unreachable`]);
    await a.table.announce(OP, [{ domain: "s.example.com", expiresAt: Date.now() + HOUR }], "p-1");
    assert.equal(a.table.match("s.example.com")?.operator, OP);
    await r.start();
    await until(() => a.store.problems().length === 0, "connected", 10_000);
    const deadline = Date.now() + 5000;
    while (await r.cli("HLEN", "t:announcements") !== "1") {
      if (Date.now() > deadline) throw new Error("the queued write did not reach Redis");
      await new Promise((res) => setTimeout(res, 50)); // polling Redis, bounded above
    }
  } finally {
    await a.store.close();
  }
});

Deno.test("redis_url: a bad one is named at load; store redis needs it", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.mkdir(join(dir, "directory"));
    for (const f of ["a.crt", "a.key", "root.crt"]) await Deno.writeTextFile(join(dir, f), "x");
    const base = `operator: public-proxy-1
public_listen: 127.0.0.1:4433
private_listen: 127.0.0.1:9999
eps: {address: 127.0.0.1:5556, certificate_file: a.crt, key_file: a.key, ca_certificate_files: [root.crt]}
directory_dir: directory
store: redis
`;
    const file = join(dir, "settings.yml");
    const problems = async (extra: string) => {
      await Deno.writeTextFile(file, base + extra);
      const err = await loadPublicSettings([file]).then(() => null, (e) => e);
      assert.ok(err instanceof SettingsError, `expected SettingsError, got ${err}`);
      return err.message;
    };
    for (const url of ["http://h:1", "redis://h", "redis://:pw@h:1/99", "not a url"]) {
      const m = await problems(`redis_url: "${url}"\n`);
      assert.match(m, /settings\.yml/);
      assert.match(m, /redis_url: must be redis:\/\/\[user:pass@\]host:port\[\/db\]/, url);
    }
    assert.doesNotMatch(await problems(`redis_url: "redis://u:secret@h:1/99"\n`), /secret/);
    assert.match(await problems(""), /redis_url: is required with store "redis"/);
    assert.match(
      await problems(`redis_url: redis://h:1\nstore_path: x.jsonl\n`),
      /store_path: is only used with store "file"/,
    );
    await Deno.writeTextFile(file, base + "redis_url: redis://u:pw@127.0.0.1:6380/2\n");
    const s = await loadPublicSettings([file]);
    assert.equal(s.store.kind, "redis");
    if (s.store.kind !== "redis") return;
    assert.equal(s.store.prefix, "tls-pass:public-proxy-1:");
    assert.equal(s.store.url.password, "pw");
    assert.deepEqual(s.store.url, { hostname: "127.0.0.1", port: 6380, username: "u", db: 2 });
    assert.doesNotMatch(JSON.stringify(s), /pw/, "the password is in no dump of the settings");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

async function get(admin: HostPort, path: string) {
  const res = await fetch(`http://${formatHostPort(admin)}${path}`, {
    signal: AbortSignal.timeout(10_000),
  });
  return { status: res.status, body: await res.text() };
}

Deno.test("a public proxy whose Redis is unreachable starts, and /readyz says so until it connects", async () => {
  await using r = await startRedis();
  await r.kill();
  await using c = await Cluster.start({
    startPrivate: false,
    public: {
      adminListen: LOOPBACK,
      store: {
        kind: "redis",
        url: parseRedisUrl(r.url, "redis_url", []),
        prefix: "tls-pass:public-proxy-1:",
      },
    },
  });
  const admin = (c.pub.addrs as { admin?: HostPort }).admin!;
  await using inbox = await NoticeInbox.attach(c);
  // announced all the same: answered from its cache, naming this replica
  const endpoint = formatHostPort(c.pub.privateEndpoint);
  const answer = await inbox.announce() as {
    connections: unknown[];
    instance: string;
    endpoint: string;
    replicas: { instance: string; endpoint: string }[];
  };
  assert.equal(answer.connections.length, 1);
  assert.equal(answer.endpoint, endpoint);
  assert.deepEqual(answer.replicas, [{ instance: answer.instance, endpoint }]);
  assert.equal(c.pub.announcements.match(DOMAIN)?.operator, "private-proxy-1");
  const notReady = await get(admin, "/readyz");
  assert.equal(notReady.status, 503);
  assert.match(notReady.body, new RegExp(`store: redis at 127\\.0\\.0\\.1:${r.port} unreachable`));
  await r.start();
  const deadline = Date.now() + 10_000;
  for (;;) {
    const res = await get(admin, "/readyz");
    if (res.status === 200) break;
    if (Date.now() > deadline) throw new Error(`still not ready: ${res.body}`);
    await new Promise((res) => setTimeout(res, 50)); // polling the endpoint, bounded above
  }
  // what it held while Redis was away is in Redis now, and it is registered as a replica
  assert.equal(await r.cli("HLEN", "tls-pass:public-proxy-1:announcements"), "1");
  assert.match(
    await r.cli("HGET", "tls-pass:public-proxy-1:replicas", answer.instance),
    /endpoint/,
  );
});
