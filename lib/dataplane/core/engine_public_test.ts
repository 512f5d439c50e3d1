import assert from "node:assert/strict";
import { encodePoolHeader } from "../../wire/pool_header.ts";
import { tlsAlert } from "../../wire/tls_alert.ts";
import type { Limits } from "../snapshot.ts";
import { concat, fixture, helloFor, newToken, Sim, snapshotOf, tokenBytes } from "./_sim.ts";

const HOST = "test.internal-server.local";
const CURL = fixture("curl_tls13");
const EXTRA = Uint8Array.of(23, 3, 3, 0, 1, 0x42);
const ROUTES = [
  [HOST, { operator: "op1" }],
  ["*.example.com", { operator: "op2" }],
] as const;

function pub(limits: Partial<Limits> = {}, seed = 1): Sim {
  return new Sim("public", { seed, limits, publicRoutes: ROUTES });
}

function clean(sim: Sim): void {
  assert.deepEqual(sim.violations, []);
}

/** Accepts a client, feeds it `hello`; returns its socket and the needDialBack token. */
function waiting(sim: Sim, hello = CURL, remote?: { hostname: string; port: number }) {
  const client = sim.accept("public", remote)!;
  sim.feed(client, hello);
  const need = sim.take().filter((e) => e.type === "needDialBack");
  assert.equal(need.length, 1);
  return { client, token: need[0]!.type === "needDialBack" ? need[0]!.token : "" };
}

/** Grants one pool token and redeems it on a new dial-back; returns the dial-back socket. */
function idlePooled(sim: Sim, operator = "op1", domains = [HOST], idleTimeoutMs = 30_000) {
  const t = newToken(sim.rng);
  sim.command({ type: "grantPool", operator, domains, tokens: [t.text], idleTimeoutMs });
  const db = sim.accept("private")!;
  sim.feed(db, t.raw);
  assert.deepEqual(sim.take(), [{ type: "poolIdle", operator, ticket: false }]);
  assert.equal(sim.sock(db).reading, true);
  return db;
}

/** Asserts `sock` was refused with a TLS alert and lingers (alert, shutdown, reading). */
function assertLingering(sim: Sim, sock: number, alert: number): void {
  const s = sim.sock(sock);
  assert.deepEqual(sim.written(sock), tlsAlert(alert));
  assert.equal(s.shutdown, true);
  assert.equal(s.reading, true);
  assert.equal(s.closes, 0);
}

function refusals(sim: Sim): string[] {
  return sim.ofType("refused").map((e) => e.why);
}

Deno.test("core routes a ClientHello split in two at every byte offset", () => {
  const bytes = concat(CURL, EXTRA);
  for (let cut = 1; cut < bytes.length; cut++) {
    const sim = pub();
    const client = sim.accept("public")!;
    sim.feed(client, bytes.subarray(0, cut));
    // cut after the hello: the rest is read once the client is piped
    const later = sim.sock(client).reading ? new Uint8Array(0) : bytes.subarray(cut);
    if (later.length === 0) sim.feed(client, bytes.subarray(cut));
    const [need, ...rest] = sim.take();
    assert.equal(rest.length, 0, `cut ${cut}`);
    assert.equal(need?.type, "needDialBack", `cut ${cut}`);
    assert.equal(sim.sock(client).reading, false);
    const db = sim.accept("private")!;
    if (need?.type === "needDialBack") sim.feed(db, tokenBytes(need.token));
    sim.feed(client, later);
    assert.deepEqual(sim.written(db), bytes, `cut ${cut}`);
    clean(sim);
  }
});

Deno.test("core routes every captured ClientHello with SNI fed byte by byte", () => {
  for (const name of ["curl_tls13", "curl_tls12", "openssl_tls13", "deno_rustls", "node_alpn"]) {
    const sim = pub();
    const hello = fixture(name);
    const client = sim.accept("public")!;
    sim.feedBytes(client, hello);
    const need = sim.ofType("needDialBack");
    assert.equal(need.length, 1, name);
    assert.deepEqual(
      { operator: need[0]!.operator, domain: need[0]!.domain },
      { operator: "op1", domain: HOST },
    );
    const db = sim.accept("private")!;
    sim.feedBytes(db, tokenBytes(need[0]!.token));
    assert.deepEqual(sim.written(db), hello, name);
    assert.equal(sim.ofType("piped")[0]?.via, "notice");
    clean(sim);
  }
});

Deno.test("core refuses an unknown SNI with alert 112, lingers, then closes", () => {
  const sim = pub({ lingerMs: 1000 });
  const client = sim.accept("public")!;
  sim.feed(client, helloFor("nope.example.org"));
  assert.deepEqual(sim.take(), [{
    type: "refused",
    why: "unknown-name",
    conn: 2,
    connId: "t-2",
    client: "203.0.113.9:40000",
    domain: "nope.example.org",
    alpn: [],
    detail: 'no announcement for "nope.example.org"',
  }]);
  assertLingering(sim, client, 112);
  sim.feed(client, new Uint8Array(100)); // the client may go on sending while it reads its alert
  sim.advance(999);
  assert.equal(sim.sock(client).closes, 0);
  sim.advance(1);
  assert.equal(sim.sock(client).closes, 1);
  assert.equal(sim.sock(client).abort, false);
  assert.equal(sim.engine.live, 0);
  clean(sim);
});

Deno.test("core refuses a hello with no SNI with alert 112 and closes at the client's EOF", () => {
  const sim = pub();
  const client = sim.accept("public")!;
  sim.feed(client, fixture("openssl_no_sni"));
  assert.equal(sim.ofType("refused")[0]?.detail, "no SNI");
  assertLingering(sim, client, 112);
  sim.eof(client);
  assert.equal(sim.sock(client).closes, 1);
  assert.equal(sim.sock(client).abort, false);
  assert.equal(sim.engine.nextTimeout(), Infinity);
  clean(sim);
});

Deno.test("core closes a lingering client that sends more than 64 KiB", () => {
  const sim = pub();
  const client = sim.accept("public")!;
  sim.feed(client, helloFor(null));
  sim.feed(client, new Uint8Array(64 * 1024));
  assert.equal(sim.sock(client).closes, 0);
  sim.feed(client, new Uint8Array(1));
  assert.equal(sim.sock(client).closes, 1);
  clean(sim);
});

Deno.test("core refuses a malformed hello with alert 50", () => {
  for (
    const bad of [new TextEncoder().encode("GET / HTTP/1.1\r\n"), Uint8Array.of(22, 3, 1, 0, 0)]
  ) {
    const sim = pub();
    const client = sim.accept("public")!;
    sim.feed(client, bad);
    assert.deepEqual(refusals(sim), ["bad-hello"]);
    assertLingering(sim, client, 50);
    clean(sim);
  }
});

Deno.test("core refuses a hello over maxClientHelloBytes with alert 50", () => {
  const sim = pub({ maxClientHelloBytes: 256 });
  const client = sim.accept("public")!;
  sim.feed(client, CURL.subarray(0, 5)); // the header announces 512 bytes
  assert.deepEqual(refusals(sim), ["bad-hello"]);
  assertLingering(sim, client, 50);
  clean(sim);
});

Deno.test("core closes a client that sends nothing, with no alert", () => {
  const sim = pub();
  const client = sim.accept("public")!;
  sim.eof(client);
  assert.deepEqual(sim.take(), [{
    type: "refused",
    why: "bad-hello",
    conn: 2,
    connId: "t-2",
    client: "203.0.113.9:40000",
    detail: "EOF",
  }]);
  assert.equal(sim.written(client).length, 0);
  assert.equal(sim.sock(client).closes, 1);
  assert.equal(sim.engine.nextTimeout(), Infinity);
  clean(sim);
});

Deno.test("core answers EOF in the middle of a hello with alert 50", () => {
  const sim = pub();
  const client = sim.accept("public")!;
  sim.feed(client, CURL.subarray(0, 100));
  sim.eof(client);
  assert.deepEqual(refusals(sim), ["bad-hello"]);
  assertLingering(sim, client, 50);
  sim.advance(DEFAULT_LINGER);
  assert.equal(sim.sock(client).closes, 1);
  clean(sim);
});
const DEFAULT_LINGER = 1000;

Deno.test("core closes a client with no complete hello at the hello timeout, with no alert", () => {
  const sim = pub({ helloTimeoutMs: 3000 });
  const client = sim.accept("public")!;
  sim.feed(client, CURL.subarray(0, 10));
  sim.advance(2999);
  assert.equal(sim.sock(client).closes, 0);
  sim.advance(1);
  assert.deepEqual(refusals(sim), ["hello-timeout"]);
  assert.equal(sim.written(client).length, 0);
  assert.equal(sim.sock(client).closes, 1);
  assert.equal(sim.engine.live, 0);
  clean(sim);
});

Deno.test("core pipes a client to an idle pooled dial-back (token split at every offset)", () => {
  for (let cut = 0; cut < 32; cut++) {
    const sim = pub();
    const t = newToken(sim.rng);
    sim.command({
      type: "grantPool",
      operator: "op1",
      domains: [HOST],
      tokens: [t.text],
      idleTimeoutMs: 30_000,
    });
    const db = sim.accept("private")!;
    sim.feedAt(db, t.raw, cut === 0 ? [] : [cut]);
    assert.deepEqual(
      sim.take(),
      [{ type: "poolIdle", operator: "op1", ticket: false }],
      `cut ${cut}`,
    );
    const client = sim.accept("public")!;
    sim.feed(client, concat(CURL, EXTRA));
    // the pipe starts with the dial-back's first answer (docs/architecture.md, "Pooled
    // dial-backs that close unanswered"); the client is not read meanwhile
    assert.deepEqual(sim.take(), []);
    assert.equal(sim.sock(client).reading, false);
    sim.feed(db, Uint8Array.of(4, 5));
    // the pool header names the client's connection, as its events do
    const [piped] = sim.take();
    assert.equal(piped?.type === "piped" && piped.via, "pool");
    const id = piped?.type === "piped" ? piped.connId : "";
    assert.match(id, /^t-[0-9a-z]+$/);
    assert.deepEqual(sim.written(db), concat(encodePoolHeader(HOST, id), CURL, EXTRA));
    sim.feed(client, Uint8Array.of(1, 2, 3));
    sim.eof(client);
    sim.eof(db);
    const ended = sim.ofType("ended");
    assert.equal(ended.length, 1);
    assert.equal(ended[0]!.up, CURL.length + EXTRA.length + 3);
    assert.equal(ended[0]!.down, 2);
    assert.deepEqual(sim.written(client), Uint8Array.of(4, 5));
    assert.equal(sim.engine.grants.size, 0);
    clean(sim);
  }
});

Deno.test("core pipes a client to the dial-back that presents its token (pool miss)", () => {
  const sim = pub();
  const { client, token } = waiting(sim, concat(CURL, EXTRA));
  const need = sim.ofType("needDialBack")[0]!;
  assert.deepEqual({ ...need, token: "" }, {
    type: "needDialBack",
    conn: need.conn,
    connId: `t-${need.conn.toString(36)}`,
    operator: "op1",
    domain: HOST,
    token: "",
    client: "203.0.113.9:40000",
    attempt: 1,
  });
  assert.equal(tokenBytes(token).length, 32);
  assert.equal(sim.engine.pending.size, 1);
  const db = sim.accept("private")!;
  sim.feedAt(db, tokenBytes(token), [7, 20]);
  assert.deepEqual(sim.written(db), concat(CURL, EXTRA));
  assert.equal(sim.sock(client).peer, db);
  assert.equal(sim.ofType("piped")[0]?.conn, need.conn);
  assert.equal(sim.engine.pending.size, 0);
  assert.equal(sim.engine.pendingPerClient.size, 0);
  assert.equal(sim.engine.pendingPerOperator.size, 0);
  clean(sim);
});

Deno.test("core gives bytes sent with the token to the client and counts them down", () => {
  for (const mode of ["data", "fast"] as const) {
    const sim = pub();
    sim.mode = mode;
    const { client, token } = waiting(sim);
    const db = sim.accept("private")!;
    sim.feed(db, concat(tokenBytes(token), Uint8Array.of(9, 8, 7)));
    sim.feed(db, Uint8Array.of(6));
    assert.deepEqual(sim.written(client), Uint8Array.of(9, 8, 7, 6));
    sim.eof(db);
    sim.eof(client);
    const ended = sim.ofType("ended")[0]!;
    assert.deepEqual([ended.up, ended.down], [CURL.length, 4], mode);
    clean(sim);
  }
});

Deno.test("core refuses a waiting client with alert 80 at the dial-back timeout", () => {
  const sim = pub({ dialBackTimeoutMs: 4000, helloTimeoutMs: 60_000 });
  const { client, token } = waiting(sim);
  sim.advance(3999);
  assert.equal(refusals(sim).length, 0);
  sim.advance(1);
  assert.deepEqual(refusals(sim), ["expired"]);
  assertLingering(sim, client, 80);
  assert.equal(sim.engine.pending.size, 0);
  const db = sim.accept("private")!; // a late dial-back finds nobody
  sim.feed(db, tokenBytes(token));
  assert.deepEqual(refusals(sim), ["expired", "bad-token"]);
  assert.equal(sim.sock(db).abort, true);
  clean(sim);
});

Deno.test("core refuses a waiting client with alert 80 on noticeFailed", () => {
  const sim = pub();
  const { client } = waiting(sim);
  const conn = sim.ofType("needDialBack")[0]!.conn;
  sim.command({ type: "noticeFailed", conn: conn + 1000 }); // unknown: nothing
  assert.deepEqual(refusals(sim), []);
  sim.command({ type: "noticeFailed", conn });
  assert.deepEqual(refusals(sim), ["notice-failed"]);
  assertLingering(sim, client, 80);
  assert.equal(sim.engine.waiting.size, 0);
  sim.command({ type: "noticeFailed", conn }); // twice: nothing
  assert.equal(refusals(sim).length, 1);
  clean(sim);
});

Deno.test("core refuses a wrong or reused token as bad-token", () => {
  const sim = pub();
  const { token } = waiting(sim);
  const wrong = sim.accept("private")!;
  sim.feed(wrong, new Uint8Array(32));
  assert.deepEqual(refusals(sim), ["bad-token"]);
  assert.equal(sim.sock(wrong).closes, 1);
  assert.equal(sim.sock(wrong).abort, true);
  const good = sim.accept("private")!;
  sim.feed(good, tokenBytes(token));
  assert.equal(sim.ofType("piped").length, 1);
  const again = sim.accept("private")!;
  sim.feed(again, tokenBytes(token));
  assert.deepEqual(refusals(sim), ["bad-token", "bad-token"]);
  const short = sim.accept("private")!;
  sim.feed(short, new Uint8Array(5));
  sim.eof(short);
  assert.deepEqual(refusals(sim), ["bad-token", "bad-token", "bad-token"]);
  clean(sim);
});

Deno.test("core refuses a dial-back with no token at the token timeout", () => {
  const sim = pub({ tokenTimeoutMs: 2500 });
  const db = sim.accept("private")!;
  sim.feed(db, new Uint8Array(31));
  sim.advance(2499);
  assert.equal(sim.sock(db).closes, 0);
  sim.advance(1);
  assert.deepEqual(refusals(sim), ["token-timeout"]);
  assert.equal(sim.sock(db).closes, 1);
  clean(sim);
});

Deno.test("core applies the pending caps (total, per operator, per client host)", () => {
  const host = (h: string, port: number) => ({ hostname: h, port });
  {
    const sim = pub({ maxPending: 2 });
    waiting(sim, CURL, host("10.0.0.1", 1));
    waiting(sim, helloFor("a.example.com"), host("10.0.0.2", 1));
    const c = sim.accept("public", host("10.0.0.3", 1))!;
    sim.feed(c, CURL);
    assert.deepEqual(refusals(sim), ["pending-total"]);
    assert.deepEqual([sim.sock(c).closes, sim.sock(c).abort], [1, true]);
  }
  {
    const sim = pub({ maxPendingPerOperator: 1 });
    waiting(sim, CURL, host("10.0.0.1", 1));
    waiting(sim, helloFor("a.example.com"), host("10.0.0.2", 1)); // another operator
    const c = sim.accept("public", host("10.0.0.3", 1))!;
    sim.feed(c, CURL);
    const r = sim.ofType("refused");
    assert.deepEqual(r.map((e) => [e.why, e.operator]), [["pending-operator", "op1"]]);
  }
  {
    const sim = pub({ maxPendingPerClient: 2 });
    waiting(sim, CURL, host("10.0.0.1", 1));
    waiting(sim, CURL, host("10.0.0.1", 2));
    waiting(sim, CURL, host("2001:db8::1", 2));
    const c = sim.accept("public", host("10.0.0.1", 3))!;
    sim.feed(c, CURL);
    assert.deepEqual(refusals(sim), ["pending-client"]);
    // a dial-back frees a place
    const db = sim.accept("private")!;
    sim.feed(db, tokenBytes(sim.ofType("needDialBack")[0]!.token));
    waiting(sim, CURL, host("10.0.0.1", 4));
    clean(sim);
  }
});

Deno.test("Engine.accept() keeps two budgets: clients cannot take the dial-backs' descriptors", () => {
  const sim = pub({ maxConnections: 2, maxDialBacks: 1 });
  const a = sim.accept("public")!;
  sim.accept("public");
  assert.equal(sim.accept("public"), null); // the clients' budget is spent
  assert.deepEqual(sim.take(), [{
    type: "refused",
    why: "connections",
    client: "203.0.113.9:40002",
    detail: "2 open on the public port, the limit is 2",
  }]);
  const d = sim.accept("private"); // a dial-back still gets in
  assert.notEqual(d, null);
  assert.equal(sim.accept("private"), null); // its own budget
  assert.equal(sim.ofType("refused").at(-1)?.detail, "1 open on the private port, the limit is 1");
  sim.eof(a);
  assert.notEqual(sim.accept("public"), null); // room again at once
  clean(sim);
});

Deno.test("core drops an idle pooled dial-back on data, EOF, failure and timeout", () => {
  for (const [how, why] of [["data", "data"], ["eof", "eof"], ["fail", "error"]] as const) {
    const sim = pub();
    const db = idlePooled(sim);
    if (how === "data") sim.feed(db, Uint8Array.of(1));
    else if (how === "eof") sim.eof(db);
    else sim.fail(db);
    assert.deepEqual(sim.ofType("poolDropped").map((e) => e.why), [why]);
    assert.deepEqual([sim.sock(db).closes, sim.sock(db).abort], [1, true]);
    assert.equal(sim.engine.idle.size, 0);
    // the next client waits for a notice instead
    waiting(sim);
    clean(sim);
  }
  const sim = pub();
  const db = idlePooled(sim, "op1", [HOST], 7000);
  sim.advance(6999);
  assert.equal(sim.sock(db).closes, 0);
  sim.advance(1);
  assert.deepEqual(sim.ofType("poolDropped").map((e) => e.why), ["timeout"]);
  assert.equal(sim.engine.live, 0);
  clean(sim);
});

Deno.test("core expires pool tokens that are never redeemed (after dial_back_timeout_ms)", () => {
  const sim = pub({ dialBackTimeoutMs: 5000 });
  const t1 = newToken(sim.rng);
  const t2 = newToken(sim.rng);
  sim.command({
    type: "grantPool",
    operator: "op1",
    domains: [HOST],
    tokens: [t1.text, t2.text],
    idleTimeoutMs: 30_000,
  });
  sim.advance(4999);
  assert.equal(sim.ofType("poolTokensExpired").length, 0);
  sim.advance(1);
  const expired = sim.ofType("poolTokensExpired");
  assert.equal(expired.reduce((n, e) => n + e.count, 0), 2);
  assert.ok(expired.every((e) => e.operator === "op1"));
  const db = sim.accept("private")!;
  sim.feed(db, t1.raw);
  assert.deepEqual(refusals(sim), ["bad-token"]);
  clean(sim);
});

Deno.test("core matches *.example.com for a.example.com, not for a.b.example.com", () => {
  const sim = pub();
  waiting(sim, helloFor("a.example.com"));
  const need = sim.ofType("needDialBack")[0]!;
  assert.deepEqual([need.operator, need.domain], ["op2", "a.example.com"]);
  for (const name of ["a.b.example.com", "example.com"]) {
    const c = sim.accept("public")!;
    sim.feed(c, helloFor(name));
    assertLingering(sim, c, 112);
  }
  assert.deepEqual(refusals(sim), ["unknown-name", "unknown-name"]);
  sim.take();
  // a pooled dial-back granted for the wildcard serves a name under it, with that name's header
  const db = idlePooled(sim, "op2", ["*.example.com"]);
  const c = sim.accept("public")!;
  sim.feed(c, helloFor("B.Example.com"));
  sim.feed(db, Uint8Array.of(22)); // its first answer: the pipe
  assert.deepEqual(
    sim.written(db),
    concat(
      encodePoolHeader("b.example.com", sim.ofType("piped").at(-1)!.connId),
      helloFor("B.Example.com"),
    ),
  );
  clean(sim);
});

Deno.test("core keeps a routed connection going when the snapshot is replaced", () => {
  const sim = pub();
  const { client, token } = waiting(sim);
  const db0 = idlePooled(sim);
  const c0 = sim.accept("public")!;
  sim.feed(c0, CURL);
  sim.feed(db0, Uint8Array.of(22)); // its first answer: the pipe
  assert.equal(sim.sock(c0).peer, db0);
  const id0 = sim.ofType("piped").at(-1)!.connId;
  sim.command({ type: "snapshot", snapshot: snapshotOf({ limits: { lingerMs: 5 } }, 2) });
  const db = sim.accept("private")!;
  sim.feed(db, tokenBytes(token));
  assert.equal(sim.sock(client).peer, db);
  sim.feed(client, Uint8Array.of(1));
  sim.feed(c0, Uint8Array.of(2));
  assert.deepEqual(sim.written(db), concat(CURL, Uint8Array.of(1)));
  assert.deepEqual(sim.written(db0), concat(encodePoolHeader(HOST, id0), CURL, Uint8Array.of(2)));
  const late = sim.accept("public")!;
  sim.feed(late, CURL);
  assert.deepEqual(refusals(sim), ["unknown-name"]);
  assertLingering(sim, late, 112);
  sim.advance(5);
  assert.equal(sim.sock(late).closes, 1);
  clean(sim);
});

Deno.test("Timers keeps its heap bounded when many connections end long before their deadlines", () => {
  const sim = pub();
  for (let i = 0; i < 5000; i++) {
    const { client, token } = waiting(sim); // arms the hello, then the dial-back deadline
    const db = sim.accept("private")!; // arms the token deadline
    sim.feed(db, tokenBytes(token));
    sim.eof(client);
    sim.eof(db);
  }
  assert.equal(sim.ofType("ended").length, 5000);
  assert.equal(sim.engine.live, 0);
  assert.ok(sim.maxTimers <= 2048, `timer heap grew to ${sim.maxTimers}`);
  assert.equal(sim.engine.nextTimeout(), Infinity);
  clean(sim);
});
