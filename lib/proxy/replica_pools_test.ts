import assert from "node:assert/strict";
import { RpcCode, RpcError } from "../errors.ts";
import { logger, RateLimitedLog } from "../log.ts";
import type { HostPort } from "../role.ts";
import type { Command } from "../dataplane/mod.ts";
import { tokenText } from "../wire/token.ts";
import { captureLogs } from "../../tests/_logs.ts";
import { ReplicaPools } from "./replica_pools.ts";

// The pools' control-plane logic against a stand-in for the public replicas' openPool answers
// (docs/architecture.md, "Private instances and public replicas: the private side"); the data
// plane's events are fed back by hand, as the data plane would send them.

const OP = "public-proxy-1";
const A = { hostname: "127.0.0.1", port: 9001 };
const B = { hostname: "127.0.0.1", port: 9002 };
const C = { hostname: "127.0.0.1", port: 9003 };

type OpenPooled = Extract<Command, { type: "openPooled" }>;

/** Things recorded in order; `next` resolves once one matches, within a deadline. */
class Recorder<T> {
  readonly items: T[] = [];
  #waiters: { pred: (x: T) => boolean; resolve: (x: T) => void; from: number }[] = [];
  push(x: T): void {
    this.items.push(x);
    for (const w of [...this.#waiters]) {
      if (this.items.length - 1 >= w.from && w.pred(x)) {
        this.#waiters.splice(this.#waiters.indexOf(w), 1);
        w.resolve(x);
      }
    }
  }
  /** The first item at index `from` or later that matches `pred`. */
  next(what: string, pred: (x: T) => boolean = () => true, from = 0): Promise<T> {
    const found = this.items.slice(from).find(pred);
    if (found !== undefined) return Promise.resolve(found);
    const { promise, resolve, reject } = Promise.withResolvers<T>();
    const w = { pred, resolve, from };
    this.#waiters.push(w);
    const t = setTimeout(() => reject(new Error(`Timed out: ${what}`)), 3000);
    return promise.finally(() => clearTimeout(t));
  }
}

/**
 * The public side: replicas by instance and their private ports; `unboundTo` answers a call
 * that names no instance; `old` answers as a public proxy from before replicas.
 */
class FakePublic {
  replicas = new Map<string, string>();
  unboundTo = "a";
  old = false;
  readonly calls = new Recorder<{ instance?: string; count: number }>();
  /** The params of each probe (count 0). */
  readonly probes: Record<string, unknown>[] = [];
  #n = 0;
  answer(params: Record<string, unknown>, instance: string | undefined): unknown {
    this.calls.push({
      ...(instance !== undefined ? { instance } : {}),
      count: params.count as number,
    });
    if (params.count === 0) this.probes.push(params);
    const tokens = Array.from(
      { length: params.count as number },
      () => tokenText(new Uint8Array(32).fill(++this.#n % 256)),
    );
    if (this.old) return { tokens, idle_timeout_ms: 30_000 };
    const self = instance ?? this.unboundTo;
    const endpoint = this.replicas.get(self);
    if (endpoint === undefined) {
      throw new RpcError(`instance "${self}" of "${OP}" is not attached`, RpcCode.Unavailable);
    }
    return {
      tokens,
      idle_timeout_ms: 30_000,
      instance: self,
      endpoint,
      replicas: [...this.replicas].map(([i, e]) => ({ instance: i, endpoint: e })),
    };
  }
}

function setUp(fake: FakePublic, endpoints: HostPort[] = [A, B]) {
  const stop = new AbortController();
  const sent = new Recorder<Command>();
  const log = logger("proxy", "private");
  const refusals = new RateLimitedLog(log);
  const pools = new ReplicaPools({
    operator: OP,
    endpoints,
    sizes: () => ({ minIdle: 1, maxIdle: 1, idleTimeoutMs: 30_000, retryMs: 1 }),
    signal: stop.signal,
    log,
    refusals,
    room: () => 100,
    call: (params, o) => {
      try {
        return Promise.resolve(fake.answer(params, o.instance));
      } catch (err) {
        return Promise.reject(err);
      }
    },
    resolve: (a) => a,
    send: (cmd) => sent.push(cmd),
  });
  const dials = (instance?: string) =>
    sent.items.filter((c): c is OpenPooled => c.type === "openPooled" && c.instance === instance);
  /** The data plane: every token of the openPooled commands so far goes idle. */
  let idled = 0;
  const idleAll = () => {
    const all = sent.items.filter((c): c is OpenPooled => c.type === "openPooled");
    for (const c of all.slice(idled)) {
      for (const _ of c.tokens) {
        pools.onEvent({
          type: "poolIdle",
          operator: OP,
          ...(c.instance !== undefined ? { instance: c.instance } : {}),
        });
      }
    }
    idled = all.length;
  };
  /** One idle dial-back at `instance` ends (the public side closed it): the pool refills. */
  const drop = (instance: string) =>
    pools.onEvent({ type: "poolDropped", operator: OP, instance, why: "eof", idleMs: 5000 });
  const close = async () => {
    stop.abort();
    await pools.settled();
    refusals.close();
  };
  return { pools, sent, dials, idleAll, drop, close };
}

Deno.test("ReplicaPools: the unbound pool binds to the replica that answered and pools at every allowed one", async () => {
  await using logs = await captureLogs("info");
  const fake = new FakePublic();
  fake.replicas.set("a", "127.0.0.1:9001").set("b", "127.0.0.1:9002").set("c", "127.0.0.1:9003");
  const t = setUp(fake);
  try {
    t.pools.refill();
    const first = await t.sent.next("a's dial", (c) => c.type === "openPooled");
    assert.deepEqual(first, {
      type: "openPooled",
      operator: OP,
      instance: "a",
      endpoint: A,
      tokens: (first as OpenPooled).tokens,
      idleTimeoutMs: 30_000,
    });
    await t.sent.next("b's dial", (c) => c.type === "openPooled" && c.instance === "b");
    assert.equal(fake.calls.items[0]!.instance, undefined); // the first call names no instance
    assert.equal(fake.calls.items[1]!.instance, "b");
    assert.deepEqual([...t.pools.replicas.keys()].sort(), ["a", "b"]);
    assert.deepEqual((t.dials("b")[0]!).endpoint, B);
    // c's private port is not in endpoints: one warning, no pool, even after more answers
    t.idleAll();
    const from = t.sent.items.length;
    t.drop("a");
    await t.sent.next("a's refill", (c) => c.type === "openPooled" && c.instance === "a", from);
    t.idleAll();
    const warnings = logs.records.filter((r) =>
      r.level === "warning" && String(r.message.join("")).includes("No dial-back pool at replica")
    );
    assert.equal(warnings.length, 1);
    assert.equal(warnings[0]!.properties.replica, "c");
    assert.equal(warnings[0]!.properties.allowed, "127.0.0.1:9001, 127.0.0.1:9002");
    assert.equal(t.pools.replicas.has("c"), false);
    assert.equal(t.pools.idle, 2);
    assert.equal(t.pools.stats.pooled, 3);
  } finally {
    await t.close();
  }
});

Deno.test("ReplicaPools: a replica missing from two answers in a row has its pool and idle dial-backs closed", async () => {
  const fake = new FakePublic();
  fake.replicas.set("a", "127.0.0.1:9001").set("b", "127.0.0.1:9002");
  const t = setUp(fake, [A, B, C]);
  try {
    t.pools.refill();
    await t.sent.next("b's dial", (c) => c.type === "openPooled" && c.instance === "b");
    t.idleAll();
    assert.equal(t.pools.idle, 2);
    fake.replicas.delete("b"); // b left the registry (but is still up: its calls are answered)
    const from = t.sent.items.length;
    t.drop("a"); // answer 1 without b
    await t.sent.next("a's refill", (c) => c.type === "openPooled" && c.instance === "a", from);
    assert.equal(t.pools.replicas.has("b"), true, "one answer without it is not enough");
    const two = t.sent.items.length;
    t.idleAll();
    t.drop("a"); // answer 2 without b
    const closed = await t.sent.next("b closed", (c) => c.type === "close", two);
    assert.deepEqual(closed, { type: "close", conns: [], idleOf: [`${OP}@b`] });
    assert.deepEqual([...t.pools.replicas.keys()], ["a"]);
    // its counts stay in the sums; a dial-back of b that still opens is closed
    assert.equal(t.pools.stats.pooled, 3); // a twice, b once
    const stray = t.sent.items.length;
    t.pools.onEvent({ type: "poolIdle", operator: OP, instance: "b" });
    assert.deepEqual(t.sent.items.slice(stray), [{
      type: "close",
      conns: [],
      idleOf: [`${OP}@b`],
    }]);
    // b back in the registry: a new pool at it from the next answer
    fake.replicas.set("b", "127.0.0.1:9002");
    const three = t.sent.items.length;
    t.idleAll();
    t.drop("a");
    await t.sent.next("b again", (c) => c.type === "openPooled" && c.instance === "b", three);
    assert.deepEqual([...t.pools.replicas.keys()].sort(), ["a", "b"]);
  } finally {
    await t.close();
  }
});

Deno.test("ReplicaPools: a replica that is not attached backs off, then closes; the last one comes back unbound", async () => {
  await using logs = await captureLogs("debug");
  const fake = new FakePublic();
  fake.replicas.set("a", "127.0.0.1:9001");
  const t = setUp(fake);
  try {
    t.pools.refill();
    await t.sent.next("a's dial", (c) => c.type === "openPooled" && c.instance === "a");
    t.idleAll();
    fake.replicas.delete("a"); // a is gone: its calls fail with -32003
    fake.replicas.set("b", "127.0.0.1:9002");
    fake.unboundTo = "b";
    const from = t.sent.items.length;
    t.drop("a");
    // two failed calls at a (the second after a backoff), then an unbound pool finds b
    const b = await t.sent.next("b's dial", (c) => c.type === "openPooled", from);
    assert.equal((b as OpenPooled).instance, "b");
    assert.deepEqual((b as OpenPooled).endpoint, B);
    const aCalls = fake.calls.items.filter((x) => x.instance === "a").length;
    assert.equal(aCalls, 2); // after the first (unbound) call: two not attached
    assert.deepEqual(fake.calls.items.at(-1), { count: 1 }); // unbound
    assert.deepEqual([...t.pools.replicas.keys()], ["b"]);
    assert.ok(t.pools.stats.failedRefills >= 1); // the second ended the pool: not retried
    assert.ok(
      t.sent.items.some((c) =>
        c.type === "close" && c.idleOf?.length === 1 && c.idleOf[0] === `${OP}@a`
      ),
    );
    const refill = logs.records.find((r) =>
      r.level === "warning" && r.message.join("").includes("Cannot refill the dial-back pool")
    );
    assert.equal(refill?.properties.replica, "a");
  } finally {
    await t.close();
  }
});

Deno.test("ReplicaPools: a public proxy from before replicas leaves the pool unbound, dialling the first endpoint", async () => {
  const fake = new FakePublic();
  fake.old = true;
  const t = setUp(fake, [B, A]);
  try {
    t.pools.refill();
    const d = await t.sent.next("the dial", (c) => c.type === "openPooled");
    assert.equal("instance" in d, false);
    assert.deepEqual((d as OpenPooled).endpoint, B);
    t.idleAll();
    assert.equal(t.pools.idle, 1);
    assert.deepEqual([...t.pools.replicas.keys()], [""]);
    // a notice through any endpoint counts for the one pool
    t.pools.arrival(A);
    assert.ok(t.pools.replicas.get("")!.pool.rate.perSecond(performance.now()) > 0);
  } finally {
    await t.close();
  }
});

Deno.test("ReplicaPools: an answer naming a private port outside endpoints dials nothing", async () => {
  const fake = new FakePublic();
  fake.replicas.set("a", "127.0.0.1:9009").set("b", "127.0.0.1:9002");
  fake.unboundTo = "a";
  const t = setUp(fake, [A, B]);
  try {
    t.pools.refill();
    // a's answer is refused (its endpoint is not allowed); b, listed in it, gets a pool
    const d = await t.sent.next("b's dial", (c) => c.type === "openPooled");
    assert.equal((d as OpenPooled).instance, "b");
    assert.equal(t.dials(undefined).length + t.dials("a").length, 0);
    assert.ok(t.pools.stats.failedRefills >= 1);
    assert.equal(t.pools.replicas.get("")?.instance, undefined); // still unbound
  } finally {
    await t.close();
  }
});

Deno.test("ReplicaPools: a notice counts for the replica whose endpoint it names", async () => {
  const fake = new FakePublic();
  fake.replicas.set("a", "127.0.0.1:9001").set("b", "127.0.0.1:9002");
  const t = setUp(fake);
  try {
    t.pools.refill();
    await t.sent.next("b's dial", (c) => c.type === "openPooled" && c.instance === "b");
    t.idleAll();
    t.pools.arrival(B);
    const now = performance.now();
    assert.ok(t.pools.replicas.get("b")!.pool.rate.perSecond(now) > 0);
    assert.equal(t.pools.replicas.get("a")!.pool.rate.perSecond(now), 0);
    // a pooled client at b: b's counts
    t.pools.onEvent({
      type: "poolUsed",
      conn: 1,
      connId: "x",
      operator: OP,
      instance: "b",
      domain: "d",
    });
    assert.equal(t.pools.replicas.get("b")!.pool.stats.used, 1);
    assert.equal(t.pools.replicas.get("a")!.pool.stats.used, 0);
  } finally {
    await t.close();
  }
});

Deno.test("ReplicaPools: a probe (openPool count 0) finds a replica that joined while no refill was due", async () => {
  const fake = new FakePublic();
  fake.replicas.set("a", "127.0.0.1:9001");
  const t = setUp(fake);
  try {
    // unbound: a probe waits for the first refill's answer
    await t.pools.probe();
    assert.equal(fake.probes.length, 0);
    t.pools.refill();
    await t.sent.next("a's dial", (c) => c.type === "openPooled" && c.instance === "a");
    t.idleAll();
    fake.replicas.set("b", "127.0.0.1:9002"); // joins; a's pool is full: no refill comes
    await t.pools.probe();
    assert.equal(fake.probes.length, 1);
    assert.equal(fake.probes[0]!.ticket, undefined, "a probe asks for no ticket");
    const probe = fake.calls.items.find((c) => c.count === 0)!;
    assert.equal(probe.instance, undefined, "any replica may answer a probe");
    await t.sent.next("b's dial", (c) => c.type === "openPooled" && c.instance === "b");
    assert.deepEqual([...t.pools.replicas.keys()].sort(), ["a", "b"]);
  } finally {
    await t.close();
  }
});
