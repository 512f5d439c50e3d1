import assert from "node:assert/strict";
import { encodePoolHeader } from "../../wire/pool_header.ts";
import { concat, fixture, newToken, Sim } from "./_sim.ts";

const HOST = "test.internal-server.local";
const CURL = fixture("curl_tls13");
const ENDPOINT = { hostname: "192.0.2.1", port: 7443 };
const INTERNAL = { hostname: "10.1.0.5", port: 8443 };

function priv(): Sim {
  return new Sim("private", { privateRoutes: [[HOST, { internal: INTERNAL }]] });
}

/** A notice's dial-back, connected both ways and piped; returns its conn id and sockets. */
function splice(sim: Sim) {
  sim.command({
    type: "dialBack",
    operator: "op1",
    domain: HOST,
    endpoint: ENDPOINT,
    token: newToken(sim.rng).text,
    internal: INTERNAL,
  });
  const [db, internal] = sim.connecting();
  sim.connected(db!.id);
  sim.connected(internal!.id);
  const piped = sim.take().find((e) => e.type === "piped");
  assert.ok(piped?.type === "piped");
  return { conn: piped.conn, db: db!.id, internal: internal!.id };
}

function openPooled(sim: Sim, operator: string, instance?: string) {
  sim.command({
    type: "openPooled",
    operator,
    ...(instance !== undefined ? { instance } : {}),
    endpoint: ENDPOINT,
    tokens: [newToken(sim.rng).text],
    idleTimeoutMs: 30_000,
  });
  const [db] = sim.connecting();
  sim.connected(db!.id);
  return db!.id;
}

Deno.test("core close ends the named splices only (reason stopped), skips unknown ids", () => {
  const sim = priv();
  const a = splice(sim);
  const b = splice(sim);
  sim.command({ type: "close", conns: [a.conn, 9999] });
  const ended = sim.take().filter((e) => e.type === "ended");
  assert.deepEqual(ended.map((e) => [e.conn, e.reason]), [[a.conn, { kind: "stopped" }]]);
  assert.ok(sim.sock(a.db).closes > 0 && sim.sock(a.internal).closes > 0);
  // the other one still flows both ways
  assert.equal(sim.sock(b.db).closes, 0);
  sim.feed(b.db, CURL);
  assert.deepEqual(sim.written(b.internal), CURL);
  // closing an ended one again does nothing
  sim.command({ type: "close", conns: [a.conn] });
  assert.deepEqual(sim.take(), []);
  assert.deepEqual(sim.violations, []);
});

Deno.test("core close fails a connection still being set up", () => {
  const sim = priv();
  sim.command({
    type: "dialBack",
    operator: "op1",
    domain: HOST,
    endpoint: ENDPOINT,
    token: newToken(sim.rng).text,
    internal: INTERNAL,
  });
  const [db, internal] = sim.connecting();
  sim.connected(db!.id);
  // its id is known from NoticeDialBack's first id: the connection's, before the sockets'
  const conn = db!.id - 1;
  sim.command({ type: "close", conns: [conn] });
  const [f, ...more] = sim.take();
  assert.equal(more.length, 0);
  assert.ok(f?.type === "connectFailed");
  assert.deepEqual([f.conn, f.reason], [conn, { kind: "stopped" }]);
  assert.ok(sim.sock(db!.id).closes > 0 && sim.sock(internal!.id).closes > 0);
  assert.deepEqual(sim.violations, []);
});

Deno.test("core close with idleOf drops that operator's idle pooled dial-backs, not a used one", () => {
  const sim = priv();
  const idle1 = openPooled(sim, "op1");
  const idle2 = openPooled(sim, "op2");
  const used = openPooled(sim, "op1");
  sim.take();
  // a client comes on `used`: it is a connection now, not idle
  sim.feed(used, concat(encodePoolHeader(HOST), CURL));
  const [internal] = sim.connecting();
  sim.connected(internal!.id);
  sim.take();
  sim.command({ type: "close", conns: [], idleOf: ["op1"] });
  const events = sim.take();
  assert.deepEqual(events, [{ type: "poolDropped", operator: "op1", why: "stopping", idleMs: 0 }]);
  assert.ok(sim.sock(idle1).closes > 0);
  assert.equal(sim.sock(idle2).closes, 0);
  assert.equal(sim.sock(used).closes, 0);
  assert.deepEqual(sim.written(internal!.id), CURL);
  assert.deepEqual(sim.violations, []);
});

Deno.test("core close with idleOf operator@instance drops only those pooled at that replica; events name it", () => {
  const sim = priv();
  const a = openPooled(sim, "op1", "a");
  const b = openPooled(sim, "op1", "b");
  const unbound = openPooled(sim, "op1");
  assert.deepEqual(sim.take(), [
    { type: "poolIdle", operator: "op1", instance: "a", at: sim.now },
    { type: "poolIdle", operator: "op1", instance: "b", at: sim.now },
    { type: "poolIdle", operator: "op1", at: sim.now },
  ]);
  sim.command({ type: "close", conns: [], idleOf: ["op1@a"] });
  assert.deepEqual(sim.take(), [
    { type: "poolDropped", operator: "op1", instance: "a", why: "stopping", idleMs: 0 },
  ]);
  assert.ok(sim.sock(a).closes > 0);
  assert.equal(sim.sock(b).closes + sim.sock(unbound).closes, 0);
  // a client at b: poolUsed names the replica
  sim.feed(b, concat(encodePoolHeader(HOST), CURL));
  const used = sim.take().find((e) => e.type === "poolUsed");
  assert.ok(used?.type === "poolUsed" && used.instance === "b");
  // the operator alone: every replica's (and the unbound one's)
  sim.command({ type: "close", conns: [], idleOf: ["op1"] });
  assert.deepEqual(sim.take().map((e) => e.type), ["poolDropped"]);
  assert.ok(sim.sock(unbound).closes > 0);
  assert.deepEqual(sim.violations, []);
});
