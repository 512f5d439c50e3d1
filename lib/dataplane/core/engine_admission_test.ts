import assert from "node:assert/strict";
import { ALERT_INTERNAL_ERROR, ALERT_UNRECOGNIZED_NAME, tlsAlert } from "../../wire/tls_alert.ts";
import { type Admission, NO_ADMISSION, type Snapshot } from "../snapshot.ts";
import { fixture, helloFor, Sim, snapshotOf, tokenBytes } from "./_sim.ts";
import { RateTable } from "./admission.ts";

const HOST = "test.internal-server.local";
const CURL = fixture("curl_tls13");

function pub(a: Partial<Admission>, routes?: Snapshot["publicRoutes"]) {
  return new Sim("public", {
    limits: { admission: { ...NO_ADMISSION, ...a } },
    publicRoutes: routes ?? [[HOST, { operator: "op1" }], ["*.example.com", { operator: "op2" }]],
  });
}

const at = (hostname: string, port = 1) => ({ hostname, port });

function refusals(sim: Sim): string[] {
  return sim.ofType("refused").map((e) => e.why);
}

/** Accepts a client from `hostname` and feeds its hello; returns its socket. */
function hello(sim: Sim, hostname: string, bytes = CURL, port = 1) {
  const c = sim.accept("public", at(hostname, port));
  if (c !== null) sim.feed(c, bytes);
  return c;
}

Deno.test("deny wins over allow; both checked at accept before any byte, IPv4 and IPv6", () => {
  const sim = pub({ allow: ["127.0.0.0/8", "::1/128"], deny: ["127.0.0.2/32"] });
  assert.notEqual(sim.accept("public", at("127.0.0.1")), null);
  assert.equal(sim.accept("public", at("127.0.0.2")), null); // in both: deny wins
  assert.notEqual(sim.accept("public", at("::1")), null);
  assert.equal(sim.accept("public", at("::2")), null); // not in allow
  assert.equal(sim.accept("public", at("10.0.0.1")), null);
  assert.notEqual(sim.accept("public", at("::ffff:127.0.0.9")), null); // IPv4-mapped
  assert.deepEqual(sim.ofType("refused").map((e) => [e.why, e.client, e.detail]), [
    ["denied", "127.0.0.2:1", "in deny 127.0.0.2/32"],
    ["denied", "[::2]:1", "not in allow"],
    ["denied", "10.0.0.1:1", "not in allow"],
  ]);
  // a dial-back on the private port is no client: the lists do not apply
  assert.notEqual(sim.accept("private", at("10.0.0.1")), null);
  assert.deepEqual(sim.violations, []);
});

Deno.test("a new snapshot changes the lists for new clients; accepted ones go on", () => {
  const sim = pub({});
  const c = hello(sim, "127.0.0.2")!;
  assert.equal(sim.ofType("needDialBack").length, 1);
  sim.command({
    type: "snapshot",
    snapshot: snapshotOf({
      limits: { admission: { ...NO_ADMISSION, deny: ["127.0.0.2/32"] } },
      publicRoutes: [[HOST, { operator: "op1" }]],
    }, 2),
  });
  assert.equal(sim.accept("public", at("127.0.0.2")), null);
  const db = sim.accept("private")!;
  sim.feed(db, tokenBytes(sim.ofType("needDialBack")[0]!.token));
  assert.equal(sim.ofType("piped").length, 1); // the one waiting still got its dial-back
  assert.equal(sim.sock(c).closes, 0);
  assert.deepEqual(refusals(sim), ["denied"]);
});

Deno.test("max_connections_per_client: over it refused at accept, others flow, a close frees one", () => {
  const sim = pub({ maxConnectionsPerClient: 2 });
  const a = sim.accept("public", at("10.0.0.1", 1))!;
  sim.accept("public", at("10.0.0.1", 2));
  assert.equal(sim.accept("public", at("10.0.0.1", 3)), null);
  assert.notEqual(sim.accept("public", at("10.0.0.2", 1)), null); // another address
  assert.notEqual(sim.accept("public", at("::1", 1)), null);
  assert.deepEqual(refusals(sim), ["client-connections"]);
  assert.equal(
    sim.ofType("refused")[0]!.detail,
    "2 open from this address (max_connections_per_client)",
  );
  sim.eof(a); // a client that sent nothing is closed: room again
  assert.notEqual(sim.accept("public", at("10.0.0.1", 4)), null);
  assert.equal(sim.engine.clientsPerHost.get("10.0.0.1"), 2);
  assert.deepEqual(sim.violations, []);
});

Deno.test("client_rate: a burst, then the refill rate over virtual time, per address", () => {
  const sim = pub({ clientRate: 10, clientBurst: 5 });
  for (let i = 0; i < 5; i++) assert.notEqual(sim.accept("public", at("10.0.0.1", i)), null);
  assert.equal(sim.accept("public", at("10.0.0.1", 9)), null);
  assert.notEqual(sim.accept("public", at("10.0.0.2", 1)), null); // its own bucket
  sim.advance(99); // 0.99 of a token
  assert.equal(sim.accept("public", at("10.0.0.1", 10)), null);
  sim.advance(1); // one token refilled (10/s)
  assert.notEqual(sim.accept("public", at("10.0.0.1", 11)), null);
  assert.equal(sim.accept("public", at("10.0.0.1", 12)), null);
  sim.advance(10_000); // refills only up to the burst
  for (let i = 0; i < 5; i++) assert.notEqual(sim.accept("public", at("10.0.0.1", 20 + i)), null);
  assert.equal(sim.accept("public", at("10.0.0.1", 30)), null);
  assert.deepEqual(refusals(sim).filter((w) => w === "client-rate").length, 4);
});

Deno.test("max_pending_per_name: over it an internal_error alert, other names and the pool flow", () => {
  const sim = pub({ maxPendingPerName: 2 });
  hello(sim, "10.0.0.1", CURL, 1);
  hello(sim, "10.0.0.2", CURL, 1);
  const c = hello(sim, "10.0.0.3", CURL, 1)!;
  assert.deepEqual(refusals(sim), ["name-pending"]);
  assert.deepEqual(sim.written(c), tlsAlert(ALERT_INTERNAL_ERROR));
  assert.equal(sim.sock(c).shutdown, true);
  // another name still waits
  hello(sim, "10.0.0.3", helloFor("a.example.com"), 2);
  assert.equal(sim.ofType("needDialBack").length, 3);
  // a dial-back frees a place for the first name
  const db = sim.accept("private")!;
  sim.feed(db, tokenBytes(sim.ofType("needDialBack")[0]!.token));
  hello(sim, "10.0.0.4");
  assert.equal(sim.ofType("needDialBack").length, 4);
  assert.deepEqual(refusals(sim), ["name-pending"]);
  assert.equal(sim.engine.pendingPerName.get(HOST), 2);
  assert.deepEqual(sim.violations, []);
});

Deno.test("name_rate: per routed name, refill over virtual time, internal_error alert", () => {
  const sim = pub({ nameRate: 2, nameBurst: 3 });
  for (let i = 0; i < 3; i++) hello(sim, "10.0.0.1", CURL, i);
  const c = hello(sim, "10.0.0.2")!;
  assert.deepEqual(sim.written(c), tlsAlert(ALERT_INTERNAL_ERROR));
  // a wildcard route is one name: its own bucket
  hello(sim, "10.0.0.1", helloFor("a.example.com"), 10);
  hello(sim, "10.0.0.1", helloFor("b.example.com"), 11);
  sim.advance(500); // 2/s: one token
  hello(sim, "10.0.0.1", CURL, 20);
  hello(sim, "10.0.0.1", CURL, 21);
  assert.deepEqual(refusals(sim), ["name-rate", "name-rate"]);
  const r = sim.ofType("refused")[0]!;
  assert.equal(r.domain, HOST);
  assert.equal(r.detail, `over 2/s, burst 3, for "${HOST}" (name_rate)`);
  assert.equal(sim.ofType("needDialBack").length, 6);
});

Deno.test("an announcement's allow narrows who reaches its name (unrecognized_name), others open", () => {
  const sim = pub({}, [
    [HOST, { operator: "op1", allow: ["127.0.0.2/32", "::1/128"] }],
    ["*.example.com", { operator: "op2" }],
  ]);
  hello(sim, "127.0.0.2");
  hello(sim, "::1");
  const c = hello(sim, "127.0.0.1")!;
  assert.deepEqual(sim.written(c), tlsAlert(ALERT_UNRECOGNIZED_NAME));
  hello(sim, "127.0.0.1", helloFor("a.example.com"), 2); // no allow on this name
  assert.deepEqual(refusals(sim), ["name-denied"]);
  assert.equal(sim.ofType("refused")[0]!.detail, `not in the allow of "${HOST}"`);
  assert.equal(sim.ofType("needDialBack").length, 3);
});

Deno.test("no admission block: nothing is checked (a burst of 2,000 from one address)", () => {
  const sim = new Sim("public", { publicRoutes: [[HOST, { operator: "op1" }]] });
  for (let i = 0; i < 2000; i++) assert.notEqual(sim.accept("public", at("10.0.0.1", i)), null);
  assert.deepEqual(refusals(sim), []);
});

Deno.test("RateTable stays bounded: full buckets evicted first, else the least recently used", () => {
  const t = new RateTable(4);
  // a flood of addresses: the table never holds more than 4
  for (let i = 0; i < 100; i++) assert.equal(t.take(`a${i}`, 1, 1, 0), true);
  assert.equal(t.size, 4);
  // buckets that refilled are dropped before a live one
  const u = new RateTable(3);
  u.take("busy", 1, 2, 0);
  u.take("busy", 1, 2, 0); // empty now
  u.take("idle", 1, 2, 0); // one token left
  u.take("x", 1, 2, 0);
  u.take("new", 1, 2, 1000); // idle and x are full again by now: both dropped
  assert.equal(u.size, 2);
  // busy kept its state: one token refilled by the `now` given, not a fresh bucket of 2
  assert.equal(u.take("busy", 1, 2, 1000), true);
  assert.equal(u.take("busy", 1, 2, 1000), false);
});
