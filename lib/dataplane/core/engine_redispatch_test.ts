/**
 * Re-dispatch and per-instance pools in the public core (docs/architecture.md, "Re-dispatch",
 * "Several private instances"), with the simulated sockets and the virtual clock of _sim.ts.
 * @module
 */
import assert from "node:assert/strict";
import { encodePoolHeader } from "../../wire/pool_header.ts";
import { tlsAlert } from "../../wire/tls_alert.ts";
import type { Limits } from "../snapshot.ts";
import { concat, fixture, newToken, Sim, tokenBytes } from "./_sim.ts";

const HOST = "test.internal-server.local";
const CURL = fixture("curl_tls13");
const ROUTES = [[HOST, { operator: "op1", instances: ["a", "b"] }]] as const;
/** A pooled dial-back's first answer (a ServerHello's start): the core pipes after it. */
const ANSWER = Uint8Array.of(22, 3, 3, 0, 2, 2, 0);
const LIMITS: Partial<Limits> = {
  dialBackTimeoutMs: 10_000,
  redispatchAfterMs: 1000,
  maxDispatches: 3,
};

function pub(limits: Partial<Limits> = {}): Sim {
  return new Sim("public", { limits: { ...LIMITS, ...limits }, publicRoutes: ROUTES });
}

/** A client that sent its hello; its first needDialBack. */
function waiting(sim: Sim, host = "203.0.113.9") {
  const client = sim.accept("public", { hostname: host, port: 40_000 + sim.socks.size })!;
  sim.feed(client, CURL);
  const need = sim.take().filter((e) => e.type === "needDialBack");
  assert.equal(need.length, 1);
  return { client, need: need[0]! as Extract<typeof need[0], { type: "needDialBack" }> };
}

function needs(sim: Sim) {
  return sim.take().flatMap((e) => e.type === "needDialBack" ? [e] : []);
}

/** Counts of waiting clients the caps read: all must agree with `n`. */
function assertPending(sim: Sim, n: number, tokens: number): void {
  const e = sim.engine;
  assert.equal(e.waiting.size, n);
  assert.equal(e.pending.size, tokens);
  assert.equal(e.pendingPerOperator.get("op1") ?? 0, n);
  assert.equal(e.pendingPerName.get(HOST) ?? 0, n);
  assert.equal([...e.pendingPerClient.values()].reduce((a, b) => a + b, 0), n);
}

function dialBack(sim: Sim, token: string) {
  const db = sim.accept("private")!;
  sim.feed(db, tokenBytes(token));
  return db;
}

function idlePooled(sim: Sim, instance: string | undefined) {
  const t = newToken(sim.rng);
  sim.command({
    type: "grantPool",
    operator: "op1",
    domains: [HOST],
    tokens: [t.text],
    idleTimeoutMs: 60_000,
    ...(instance !== undefined ? { instance } : {}),
  });
  const db = sim.accept("private")!;
  sim.feed(db, t.raw);
  assert.deepEqual(sim.take(), [{
    type: "poolIdle",
    operator: "op1",
    ticket: false,
    ...(instance !== undefined ? { instance } : {}),
  }]);
  return db;
}

Deno.test("core re-dispatches a waiting client on the timer; the last token serves it", () => {
  const sim = pub();
  const { client, need } = waiting(sim);
  assert.equal(need.attempt, 1);
  assert.equal(need.why, undefined);
  assert.deepEqual(need.instances, ["a", "b"]);
  sim.advance(999);
  assert.deepEqual(needs(sim), []);
  sim.advance(1);
  const [second, ...more] = needs(sim);
  assert.deepEqual(more, []);
  assert.equal(second!.attempt, 2);
  assert.equal(second!.why, "timer");
  assert.equal(second!.conn, need.conn);
  assert.notEqual(second!.token, need.token);
  assertPending(sim, 1, 2);
  sim.advance(1000);
  const third = needs(sim);
  assert.deepEqual(third.map((e) => [e.attempt, e.why]), [[3, "timer"]]);
  sim.advance(5000); // maxDispatches reached: no fourth
  assert.deepEqual(needs(sim), []);
  assertPending(sim, 1, 3);
  // nothing was forwarded: the dial-back of the third notice gets the whole hello
  const db = dialBack(sim, third[0]!.token);
  assert.deepEqual(sim.written(db), CURL);
  assert.equal(sim.sock(client).peer, db);
  assert.deepEqual(sim.written(client), new Uint8Array(0));
  assert.equal(sim.ofType("piped")[0]!.attempt, 3); // which notice's instance came
  assertPending(sim, 0, 0);
  // the first notice's dial-back, too late: its token went with the client
  dialBack(sim, need.token);
  assert.deepEqual(sim.ofType("refused").map((e) => e.why), ["bad-token"]);
  assert.deepEqual(sim.violations, []);
});

Deno.test("core serves a re-dispatched client from the first notice's late dial-back", () => {
  const sim = pub();
  const { client, need } = waiting(sim);
  sim.advance(1000);
  const [second] = needs(sim);
  const db = dialBack(sim, need.token); // whichever comes first wins
  assert.equal(sim.sock(client).peer, db);
  assert.equal(sim.ofType("piped")[0]!.attempt, 1);
  assert.deepEqual(sim.written(db), CURL);
  assertPending(sim, 0, 0);
  sim.advance(5000);
  assert.deepEqual(needs(sim), []); // its re-dispatch timer went with it
  dialBack(sim, second!.token);
  assert.deepEqual(sim.ofType("refused").map((e) => e.why), ["bad-token"]);
  assert.deepEqual(sim.violations, []);
});

Deno.test("core re-dispatches at once on a failed notice with retry; the failed token dies", () => {
  const sim = pub();
  const { client, need } = waiting(sim);
  sim.command({ type: "noticeFailed", conn: need.conn, retry: true, attempt: 1 });
  const [second] = needs(sim);
  assert.deepEqual([second!.attempt, second!.why], [2, "failed"]);
  assertPending(sim, 1, 1);
  // the re-dispatch timer counts from the last notice
  sim.advance(999);
  assert.deepEqual(needs(sim), []);
  sim.command({ type: "noticeFailed", conn: need.conn, retry: true, attempt: 2 });
  const [third] = needs(sim);
  assert.equal(third!.attempt, 3);
  // attempts exhausted: a retry is refused as a plain failure
  sim.command({ type: "noticeFailed", conn: need.conn, retry: true, attempt: 3 });
  assert.deepEqual(sim.take().map((e) => e.type === "refused" ? e.why : e.type), [
    "notice-failed",
  ]);
  assert.deepEqual(sim.written(client), tlsAlert(80));
  assertPending(sim, 0, 0);
  dialBack(sim, need.token);
  assert.deepEqual(sim.take().map((e) => e.type === "refused" ? e.why : e.type), ["bad-token"]);
  assert.deepEqual(sim.violations, []);
});

Deno.test("core ignores the failure of a superseded notice; refuses when none is left", () => {
  const sim = pub();
  const { client, need } = waiting(sim);
  sim.advance(1000);
  const [second] = needs(sim);
  // the first notice's call fails after the timer re-dispatched: the second may still serve
  sim.command({ type: "noticeFailed", conn: need.conn, retry: false, attempt: 1 });
  assert.deepEqual(sim.take(), []);
  assertPending(sim, 1, 1);
  sim.command({ type: "noticeFailed", conn: need.conn, retry: false, attempt: 2 });
  assert.deepEqual(sim.ofType("refused").map((e) => e.why), ["notice-failed"]);
  assert.deepEqual(sim.written(client), tlsAlert(80));
  assertPending(sim, 0, 0);
  assert.equal(second!.attempt, 2);
  assert.deepEqual(sim.violations, []);
});

Deno.test("core keeps waiting for an earlier notice when the last one fails for good", () => {
  const sim = pub();
  const { client, need } = waiting(sim);
  sim.advance(1000);
  needs(sim);
  sim.command({ type: "noticeFailed", conn: need.conn, attempt: 2 }); // no retry
  assert.deepEqual(sim.take(), []);
  assertPending(sim, 1, 1);
  const db = dialBack(sim, need.token);
  assert.equal(sim.sock(client).peer, db);
  assert.deepEqual(sim.violations, []);
});

Deno.test("core keeps the dial-back deadline from the hello across re-dispatches", () => {
  const sim = pub({ dialBackTimeoutMs: 2500, redispatchAfterMs: 1000, maxDispatches: 5 });
  const { client } = waiting(sim);
  sim.advance(1000);
  sim.advance(1000);
  assert.deepEqual(needs(sim).map((e) => e.attempt), [2, 3]);
  sim.advance(499); // no re-dispatch whose notice could not be answered before the deadline
  assert.deepEqual(sim.take(), []);
  sim.advance(1);
  assert.deepEqual(sim.ofType("refused").map((e) => e.why), ["expired"]);
  assert.deepEqual(sim.written(client), tlsAlert(80));
  assertPending(sim, 0, 0);
  assert.equal(sim.engine.nextTimeout(), sim.now + 1000); // the linger only
  assert.deepEqual(sim.violations, []);
});

Deno.test("core: a client that fails while re-dispatched leaves no token, count or timer", () => {
  const sim = pub();
  const { client, need } = waiting(sim);
  sim.advance(1000);
  const [second] = needs(sim);
  sim.fail(client);
  assert.deepEqual(sim.ofType("refused").map((e) => e.why), ["expired"]);
  assertPending(sim, 0, 0);
  assert.equal(sim.engine.nextTimeout(), Infinity);
  sim.advance(10_000);
  assert.deepEqual(needs(sim), []);
  for (const t of [need.token, second!.token]) dialBack(sim, t);
  assert.equal(sim.ofType("refused").filter((e) => e.why === "bad-token").length, 2);
  assert.equal(sim.engine.live, 0);
  assert.deepEqual(sim.violations, []);
});

Deno.test("core: a stop while re-dispatched refuses the client and re-dispatches no more", () => {
  const sim = pub();
  waiting(sim);
  sim.advance(1000);
  needs(sim);
  sim.command({ type: "stop" });
  assert.deepEqual(sim.ofType("refused").map((e) => [e.why, e.detail]), [["expired", "stopping"]]);
  assertPending(sim, 0, 0);
  sim.advance(10_000);
  assert.deepEqual(needs(sim), []);
  assert.deepEqual(sim.ofType("drained").length, 1);
  assert.deepEqual(sim.violations, []);
});

Deno.test("core: without maxDispatches > 1 nothing re-dispatches (the defaults)", () => {
  const sim = new Sim("public", { limits: { dialBackTimeoutMs: 10_000 }, publicRoutes: ROUTES });
  const { need } = waiting(sim);
  sim.advance(9999);
  assert.deepEqual(sim.take(), []);
  sim.command({ type: "noticeFailed", conn: need.conn, retry: true });
  assert.deepEqual(sim.ofType("refused").map((e) => e.why), ["notice-failed"]);
  assert.deepEqual(sim.violations, []);
});

Deno.test("core: a re-dispatch takes an idle pooled dial-back that came meanwhile", () => {
  const sim = pub();
  const { client, need } = waiting(sim);
  const db = idlePooled(sim, "b");
  sim.advance(1000);
  assert.deepEqual(sim.take(), []); // taken: the pipe waits for its first answer
  sim.feed(db, ANSWER);
  const events = sim.take();
  assert.deepEqual(events.map((e) => e.type), ["piped"]);
  const piped = events[0]!;
  assert.ok(piped.type === "piped" && piped.via === "pool" && piped.instance === "b");
  assert.equal(piped.attempt, 1); // it had one notice: counted there, not again as a pool hit
  const header = encodePoolHeader(HOST, `t-${need.conn.toString(36)}`);
  assert.deepEqual(sim.written(db), new Uint8Array([...header, ...CURL]));
  assert.equal(sim.sock(client).peer, db);
  assertPending(sim, 0, 0);
  assert.equal(sim.engine.splicesOf("op1", "b"), 1);
  sim.eof(client);
  sim.eof(db);
  const ended = sim.ofType("ended")[0]!;
  assert.equal(ended.instance, "b");
  assert.equal(ended.up, CURL.length);
  assert.equal(ended.down, ANSWER.length);
  assert.equal(sim.engine.splicesOf("op1", "b"), 0);
  assert.deepEqual(sim.violations, []);
});

Deno.test("core: the pending caps count clients, not the tokens of their re-dispatches", () => {
  const sim = pub({ maxPending: 2, maxPendingPerOperator: 2, maxPendingPerClient: 2 });
  waiting(sim);
  sim.advance(1000);
  sim.advance(1000);
  assertPending(sim, 1, 3);
  sim.take();
  waiting(sim); // a second client fits: one waits
  const third = sim.accept("public")!;
  sim.feed(third, CURL);
  assert.deepEqual(sim.ofType("refused").map((e) => e.why), ["pending-total"]);
  assertPending(sim, 2, 4);
  assert.deepEqual(sim.violations, []);
});

Deno.test("core takes the idle pooled dial-back of the least loaded instance; ties: newest", () => {
  const sim = pub({ redispatchAfterMs: 0 });
  const a1 = idlePooled(sim, "a");
  const b1 = idlePooled(sim, "b");
  const a2 = idlePooled(sim, "a");
  const b2 = idlePooled(sim, "b");
  assert.deepEqual([...sim.engine.idleInstances("op1")], [["a", 2], ["b", 2]]);
  const take = () => {
    const c = sim.accept("public")!;
    sim.feed(c, CURL);
    // the one that got the pool header answers: the pipe
    const db = [...sim.socks.values()].find((s) =>
      s.port === "private" && s.peer === undefined && s.closes === 0 && sim.written(s.id).length > 0
    )!;
    sim.feed(db.id, ANSWER);
    const p = sim.take().find((e) => e.type === "piped");
    assert.ok(p?.type === "piped");
    return [sim.sock(c).peer, p.instance];
  };
  // no splices yet: the newest (b2); then a has fewer splices: its newest (a2); a tie: newest
  assert.deepEqual(take(), [b2, "b"]);
  assert.deepEqual(take(), [a2, "a"]);
  assert.deepEqual(take(), [b1, "b"]);
  assert.deepEqual(take(), [a1, "a"]);
  assert.equal(sim.engine.splicesOf("op1", "a"), 2);
  assert.equal(sim.engine.splicesOf("op1", "b"), 2);
  assert.equal(sim.engine.idle.size, 0);
  assert.equal(sim.engine.idleInstances("op1").size, 0);
  // a's splices end: its next idle one is taken before b's newer one
  for (const s of [a1, a2]) sim.fail(s);
  assert.deepEqual(sim.take().map((e) => [e.type, e.type === "ended" && e.instance]), [
    ["ended", "a"],
    ["ended", "a"],
  ]);
  assert.equal(sim.engine.splicesOf("op1", "a"), 0);
  const b3 = idlePooled(sim, "b");
  const a3 = idlePooled(sim, "a");
  const b4 = idlePooled(sim, "b");
  assert.deepEqual(take(), [a3, "a"]);
  assert.deepEqual(take(), [b4, "b"]);
  assert.deepEqual(take(), [b3, "b"]);
  assert.deepEqual(sim.violations, []);
});

Deno.test("core: pool events carry the instance of the grant or ticket", () => {
  const sim = pub();
  const db = idlePooled(sim, "a");
  sim.eof(db);
  assert.deepEqual(sim.take(), [{
    type: "poolDropped",
    operator: "op1",
    why: "eof",
    instance: "a",
  }]);
  sim.command({
    type: "grantPool",
    operator: "op1",
    domains: [],
    tokens: [newToken(sim.rng).text],
    idleTimeoutMs: 1000,
    instance: "b",
  });
  sim.advance(10_000);
  assert.deepEqual(sim.take(), [{
    type: "poolTokensExpired",
    operator: "op1",
    count: 1,
    instance: "b",
  }]);
  // an instance-less grant (an older control plane) shows none
  idlePooled(sim, undefined);
  assert.deepEqual(sim.violations, []);
});

// -- pooled dial-backs that close unanswered (docs/architecture.md) ------------------------------

/** A client whose hello took an idle pooled dial-back: the client and the events so far. */
function taking(sim: Sim) {
  const client = sim.accept("public", { hostname: "203.0.113.7", port: 41_000 + sim.socks.size })!;
  sim.feed(client, CURL);
  return client;
}

Deno.test("core: a pooled dial-back that closes before answering costs the client nothing", () => {
  for (const close of ["eof", "reset"] as const) {
    const sim = pub();
    const db = idlePooled(sim, "a");
    const client = taking(sim);
    assert.deepEqual(sim.take(), [], "taken: no pipe before its first answer");
    assert.equal(sim.sock(client).reading, false);
    assert.equal(sim.engine.splicesOf("op1", "a"), 1, "it counts for its instance meanwhile");
    if (close === "eof") sim.eof(db);
    else sim.fail(db, "write", "ECONNRESET");
    const [dropped, need, ...more] = sim.take();
    assert.deepEqual(more, []);
    assert.ok(dropped?.type === "poolDropped" && need?.type === "needDialBack");
    assert.deepEqual(
      [dropped.why, dropped.instance, dropped.conn, dropped.retry, dropped.domain],
      [close === "eof" ? "eof" : "error", "a", need.conn, true, HOST],
    );
    assert.deepEqual([need.attempt, need.why], [1, "pooled"]);
    assert.deepEqual([sim.sock(db).closes, sim.sock(db).abort], [1, true]);
    assert.equal(sim.engine.splicesOf("op1", "a"), 0);
    assertPending(sim, 1, 1);
    // its dial-back gets the whole hello; the client got nothing from the one that closed
    const db2 = dialBack(sim, need.token);
    assert.deepEqual(sim.written(db2), CURL);
    assert.equal(sim.sock(client).peer, db2);
    assert.deepEqual(sim.written(client), new Uint8Array(0));
    assert.equal(sim.ofType("piped")[0]!.attempt, 1);
    assertPending(sim, 0, 0);
    assert.deepEqual(sim.violations, []);
  }
});

Deno.test("core: after a pooled dial-back closed unanswered, another instance's idle one first", () => {
  const sim = pub();
  const a1 = idlePooled(sim, "a");
  const b1 = idlePooled(sim, "b");
  const a2 = idlePooled(sim, "a");
  const client = taking(sim);
  assert.ok(sim.written(a2).length > 0, "the newest of the tie took it");
  sim.eof(a2); // a's pool closing: a1 may be closing too
  const events = sim.take();
  assert.deepEqual(events.map((e) => e.type), ["poolDropped"]);
  const id = events[0]!.type === "poolDropped" ? events[0]!.connId! : "";
  assert.deepEqual(sim.written(a1), new Uint8Array(0));
  assert.deepEqual(sim.written(b1), concat(encodePoolHeader(HOST, id), CURL));
  sim.feed(b1, ANSWER);
  const [piped] = sim.ofType("piped");
  assert.deepEqual([piped?.via, piped?.instance, piped?.attempt], ["pool", "b", undefined]);
  assert.deepEqual(sim.written(client), ANSWER);
  assert.equal(sim.engine.splicesOf("op1", "b"), 1);
  assert.deepEqual([...sim.engine.idleInstances("op1")], [["a", 1]]);
  assert.deepEqual(sim.violations, []);
});

Deno.test("core: pooled dial-backs that close unanswered spend dispatches; none left: an alert", () => {
  const sim = pub({ maxDispatches: 2 });
  const p1 = idlePooled(sim, "a");
  const p2 = idlePooled(sim, "a");
  const client = taking(sim);
  sim.eof(p2);
  sim.fail(p1, "read", "ECONNRESET");
  const events = sim.take();
  assert.deepEqual(events.map((e) => [e.type, "retry" in e ? e.retry : "why" in e && e.why]), [
    ["poolDropped", true],
    ["poolDropped", false],
    ["refused", "dial-back-closed"],
  ]);
  const refused = events[2]!;
  assert.ok(refused.type === "refused");
  assert.equal(refused.attempt, undefined); // it had no notice: counted as a client here
  assert.match(
    refused.detail ?? "",
    /instance a closed before answering \(error read ECONNRESET\)/,
  );
  assert.deepEqual(sim.written(client), tlsAlert(80));
  assertPending(sim, 0, 0);
  sim.advance(60_000);
  assert.equal(sim.sock(client).closes, 1);
  assert.equal(sim.engine.live, 0);
  assert.deepEqual(sim.violations, []);
});

Deno.test("core: a notice's client that then took a pooled dial-back keeps its count of notices", () => {
  const sim = pub({ maxDispatches: 2 });
  const { need } = waiting(sim);
  const db = idlePooled(sim, "b");
  sim.advance(1000); // the re-dispatch takes it
  assert.deepEqual(sim.take(), []);
  sim.eof(db);
  const events = sim.take();
  assert.deepEqual(events.map((e) => e.type), ["poolDropped", "refused"]);
  const refused = events[1]!;
  assert.ok(refused.type === "refused");
  assert.deepEqual([refused.why, refused.conn, refused.attempt], [
    "dial-back-closed",
    need.conn,
    1,
  ]);
  assert.deepEqual(sim.violations, []);
});

Deno.test("core: a pooled dial-back that does not answer within dial_back_timeout_ms is piped anyway", () => {
  const sim = pub();
  const db = idlePooled(sim, "a");
  const client = taking(sim);
  sim.advance(9999);
  assert.deepEqual(sim.take(), []);
  sim.advance(1);
  const [piped] = sim.take();
  assert.ok(piped?.type === "piped" && piped.via === "pool");
  assert.equal(sim.sock(client).peer, db);
  assert.equal(sim.engine.splicesOf("op1", "a"), 1);
  sim.feed(db, ANSWER);
  assert.deepEqual(sim.written(client), ANSWER);
  sim.eof(db); // now an end like any splice's, not a retry
  sim.eof(client);
  const ended = sim.ofType("ended");
  assert.deepEqual([ended.length, ended[0]?.reason.kind, ended[0]?.down], [
    1,
    "done",
    ANSWER.length,
  ]);
  assert.equal(sim.ofType("needDialBack").length, 0);
  assert.deepEqual(sim.violations, []);
});

Deno.test("core: a kill ends a client whose pooled dial-back has not answered yet", () => {
  const sim = pub();
  const db = idlePooled(sim, "a");
  const client = taking(sim);
  sim.command({ type: "kill" });
  const types = sim.take().map((e) => e.type);
  assert.deepEqual(types, ["piped", "ended", "drained"]);
  for (const s of [client, db]) {
    assert.deepEqual([sim.sock(s).closes, sim.sock(s).abort], [1, true]);
  }
  assert.equal(sim.engine.splicesOf("op1", "a"), 0);
  assert.deepEqual(sim.violations, []);
});

Deno.test("core: back to waiting after a re-dispatch's pooled dial-back closed, its tokens keep their attempts", () => {
  const sim = pub();
  const { client, need } = waiting(sim);
  const db = idlePooled(sim, "b");
  sim.advance(1000); // the re-dispatch takes it
  sim.eof(db);
  const [second] = needs(sim);
  assert.deepEqual([second?.attempt, second?.why], [2, "pooled"]);
  // notice 1's call fails late: notice 2's token stays good
  sim.command({ type: "noticeFailed", conn: need.conn, retry: false, attempt: 1 });
  assert.deepEqual(sim.ofType("refused"), []);
  assertPending(sim, 1, 1);
  const db2 = dialBack(sim, second!.token);
  assert.equal(sim.sock(client).peer, db2);
  assert.equal(sim.ofType("piped")[0]!.attempt, 2); // whose notice came
  assert.deepEqual(sim.written(db2), CURL);
  assert.deepEqual(sim.violations, []);
});

Deno.test("core: a pooled dial-back that closes unanswered during a stop refuses its client, no notice", () => {
  const sim = pub();
  const db = idlePooled(sim, "a");
  const client = taking(sim);
  sim.command({ type: "stop" });
  assert.deepEqual(sim.take(), []); // taken: a splice in the making, it goes on
  sim.eof(db);
  const events = sim.take();
  assert.deepEqual(
    events.map((e) => [e.type, "retry" in e ? e.retry : e.type === "refused" && e.why]),
    [
      ["poolDropped", false],
      ["refused", "dial-back-closed"],
    ],
  );
  assert.match((events[1] as { detail?: string }).detail ?? "", /; stopping$/);
  assert.deepEqual(sim.written(client), tlsAlert(80));
  sim.advance(60_000);
  assert.equal(sim.ofType("needDialBack").length, 0);
  assert.equal(sim.ofType("drained").length, 1);
  assert.deepEqual(sim.violations, []);
});

Deno.test("core: back from a closed pooled dial-back, a pending cap or the hello's deadline refuses it", () => {
  // the cap: it was routed (and counted) already, so it is refused as dial-back-closed
  const sim = pub({ maxPending: 1 });
  const { need } = waiting(sim);
  const db = idlePooled(sim, "b");
  sim.advance(1000); // the re-dispatch takes it: it waits no more
  waiting(sim, "203.0.113.10"); // another client takes the one pending place
  sim.eof(db);
  const refused = sim.ofType("refused");
  assert.deepEqual(refused.map((e) => [e.why, e.conn, e.attempt, e.detail]), [
    ["dial-back-closed", need.conn, 1, "then pending-total"],
  ]);
  // no retry was made: the event says so (a redispatch it would count did not happen)
  assert.deepEqual(sim.ofType("poolDropped").map((e) => e.retry), [false]);
  // the deadline: a re-dispatch near its end takes a pooled dial-back that closes after it
  const late = pub({ redispatchAfterMs: 9000 });
  const w = waiting(late);
  late.advance(8000);
  const p = idlePooled(late, "b");
  late.advance(1000); // the re-dispatch at 9 s takes the pooled one
  assert.deepEqual(late.take(), []);
  late.advance(1000); // past the hello's deadline (10 s), still unanswered
  late.eof(p);
  const after = late.take();
  assert.deepEqual(after.filter((e) => e.type === "needDialBack"), []);
  assert.deepEqual(
    after.flatMap((e) => e.type === "refused" ? [[e.why, e.conn]] : []),
    [["expired", w.need.conn]],
  );
  assert.deepEqual(late.written(w.client), tlsAlert(80));
  assert.deepEqual([sim.violations, late.violations], [[], []]);
});
