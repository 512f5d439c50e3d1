import assert from "node:assert/strict";
import { encodePoolHeader, encodePoolHeaderV1 } from "../../wire/pool_header.ts";
import type { Limits } from "../snapshot.ts";
import { concat, fixture, helloFor, newToken, type PipeMode, Sim } from "./_sim.ts";
import { IDLE_SLACK_MS } from "./private_conns.ts";

const HOST = "test.internal-server.local";
const CURL = fixture("curl_tls13");
const ENDPOINT = { hostname: "192.0.2.1", port: 7443 };
const INTERNAL = { hostname: "10.1.0.5", port: 8443 };
const WILD_INTERNAL = { hostname: "fd00::6", port: 443 };
const ROUTES = [
  [HOST, { internal: INTERNAL }],
  ["*.example.com", { internal: WILD_INTERNAL }],
] as const;

function priv(limits: Partial<Limits> = {}, mode: PipeMode = "data"): Sim {
  return new Sim("private", { limits, privateRoutes: ROUTES, mode });
}

function clean(sim: Sim): void {
  assert.deepEqual(sim.violations, []);
}

/** Sends a dialBack command; returns the token bytes and the dial-back and internal sockets. */
function dialBack(sim: Sim, token = newToken(sim.rng)) {
  sim.command({
    type: "dialBack",
    operator: "op1",
    domain: HOST,
    endpoint: ENDPOINT,
    token: token.text,
    internal: INTERNAL,
  });
  const [db, internal] = sim.connecting();
  assert.deepEqual([db?.to, internal?.to], [ENDPOINT, INTERNAL]);
  return { raw: token.raw, db: db!.id, internal: internal!.id };
}

/** Opens one pooled dial-back and connects it; returns its socket and token bytes. */
function pooled(sim: Sim, idleTimeoutMs = 30_000) {
  const t = newToken(sim.rng);
  sim.command({
    type: "openPooled",
    operator: "op1",
    endpoint: ENDPOINT,
    tokens: [t.text],
    idleTimeoutMs,
  });
  const [db] = sim.connecting();
  assert.deepEqual(db?.to, ENDPOINT);
  sim.connected(db!.id);
  assert.deepEqual(sim.written(db!.id), t.raw);
  assert.equal(sim.sock(db!.id).reading, true);
  assert.deepEqual(sim.take().filter((e) => e.type === "poolIdle"), [{
    type: "poolIdle",
    operator: "op1",
    at: sim.now, // when it went idle, on the data plane's clock
  }]);
  return { db: db!.id, raw: t.raw };
}

Deno.test("core dials back and connects the internal server, completions in either order", () => {
  for (const order of [["db", "internal"], ["internal", "db"]] as const) {
    for (const mode of ["data", "fast"] as const) {
      const sim = priv({}, mode);
      const { raw, db, internal } = dialBack(sim);
      for (const side of order) {
        assert.equal(sim.ofType("piped").length, 0);
        sim.connected(side === "db" ? db : internal);
      }
      assert.deepEqual(sim.written(db), raw);
      assert.equal(sim.written(internal).length, 0);
      assert.equal(sim.sock(db).peer, internal);
      const piped = sim.ofType("piped");
      assert.deepEqual(piped.map((e) => [e.via, e.operator, e.domain]), [["notice", "op1", HOST]]);
      sim.feed(db, CURL);
      sim.feed(internal, Uint8Array.of(1, 2, 3));
      sim.eof(db);
      sim.feed(internal, Uint8Array.of(4));
      sim.eof(internal);
      assert.deepEqual(sim.written(internal), CURL);
      assert.deepEqual(sim.written(db), concat(raw, Uint8Array.of(1, 2, 3, 4)));
      const [ended, ...more] = sim.ofType("ended");
      assert.equal(more.length, 0);
      assert.deepEqual([ended!.up, ended!.down, ended!.reason.kind], [CURL.length, 4, "done"]);
      assert.equal(ended!.conn, piped[0]!.conn);
      assert.ok(ended!.phases.dialBack > 0 && ended!.phases.internal > 0);
      assert.equal(sim.engine.live, 0);
      assert.equal(sim.engine.nextTimeout(), Infinity);
      clean(sim);
    }
  }
});

Deno.test("core reports a failed dial-back or internal connect, before or after the other", () => {
  for (const failing of ["db", "internal"] as const) {
    for (const otherFirst of [false, true]) {
      const sim = priv();
      const { db, internal } = dialBack(sim);
      const [bad, good] = failing === "db" ? [db, internal] : [internal, db];
      if (otherFirst) sim.connected(good);
      sim.connectFailed(bad, "ECONNREFUSED");
      const side = failing === "db" ? "dial-back" : "internal";
      const [f, ...more] = sim.take().filter((e) => e.type !== "poolIdle");
      assert.equal(more.length, 0);
      assert.deepEqual(f, {
        type: "connectFailed",
        conn: f?.type === "connectFailed" ? f.conn : 0,
        // a notice without an id: the data plane names the connection itself
        connId: f?.type === "connectFailed" ? `t-${f.conn.toString(36)}` : "",
        via: "notice",
        side,
        operator: "op1",
        domain: HOST,
        target: failing === "db" ? "192.0.2.1:7443" : "10.1.0.5:8443",
        reason: { kind: "error", side, op: "connect", code: "ECONNREFUSED" },
      });
      for (const s of [db, internal]) {
        assert.deepEqual([sim.sock(s).closes, sim.sock(s).abort], [1, true]);
      }
      if (!otherFirst) sim.connected(good); // a late completion finds nobody: ignored
      assert.equal(sim.engine.live, 0);
      assert.equal(sim.engine.nextTimeout(), Infinity);
      clean(sim);
    }
  }
});

Deno.test("core times out a dial-back or internal connect and names the side", () => {
  const cases = [
    { done: "none", dial: 3000, connect: 2000, at: 2000, side: "internal" },
    { done: "none", dial: 2000, connect: 3000, at: 2000, side: "dial-back" },
    { done: "db", dial: 2000, connect: 3000, at: 3000, side: "internal" },
    { done: "internal", dial: 3000, connect: 2000, at: 3000, side: "dial-back" },
  ] as const;
  for (const c of cases) {
    const sim = priv({ dialTimeoutMs: c.dial, connectTimeoutMs: c.connect });
    const start = sim.now;
    const { db, internal } = dialBack(sim);
    sim.advance(100);
    if (c.done === "db") sim.connected(db);
    if (c.done === "internal") sim.connected(internal);
    sim.advance(c.at - 101);
    assert.equal(sim.ofType("connectFailed").length, 0, JSON.stringify(c));
    sim.advance(1);
    const [f] = sim.ofType("connectFailed");
    assert.equal(sim.now - start, c.at);
    assert.deepEqual(
      [f?.side, f?.reason],
      [c.side, { kind: "timeout", phase: "connect", side: c.side }],
      JSON.stringify(c),
    );
    assert.equal(sim.open().length, 0);
    clean(sim);
  }
});

Deno.test("core refuses a dialBack whose token is not 32 bytes of base64", () => {
  const sim = priv();
  const { db, internal } = dialBack(sim, { text: "bm90IGEgdG9rZW4=", raw: new Uint8Array(0) });
  sim.connected(internal);
  sim.connected(db);
  const [f] = sim.ofType("connectFailed");
  assert.equal(f?.side, "dial-back");
  assert.equal(sim.written(db).length, 0);
  assert.equal(sim.open().length, 0);
  clean(sim);
});

Deno.test("core opens pooled dial-backs: connect, token, poolIdle; a failed dial drops one", () => {
  const sim = priv({ dialTimeoutMs: 1000 });
  const toks = [newToken(sim.rng), newToken(sim.rng), newToken(sim.rng)];
  sim.command({
    type: "openPooled",
    operator: "op1",
    endpoint: ENDPOINT,
    tokens: toks.map((t) => t.text),
    idleTimeoutMs: 30_000,
  });
  const [a, b, c] = sim.connecting().map((s) => s.id);
  assert.equal(sim.connecting().length, 3);
  sim.connected(b!);
  assert.deepEqual(sim.written(b!), toks[1]!.raw);
  sim.connectFailed(a!);
  sim.advance(1000);
  // idle when its connect completed, before the second the timeout took
  assert.deepEqual(sim.ofType("poolIdle"), [{ type: "poolIdle", operator: "op1", at: 1000 }]);
  assert.deepEqual(sim.ofType("poolDropped").map((e) => [e.why, e.detail]), [
    ["failed", "connect failed: ECONNREFUSED"],
    ["failed", "connect timed out"],
  ]);
  assert.deepEqual([sim.sock(c!).closes, sim.sock(b!).closes], [1, 0]);
  clean(sim);
});

// the public proxy's id, or (a header without one: an older peer) one of this data plane's
const HEADERS: [string, Uint8Array, string | undefined][] = [
  ["type 2 with an id", encodePoolHeader(HOST, "k3f9x-1a"), "k3f9x-1a"],
  ["type 2 without an id", encodePoolHeader(HOST), undefined],
  ["type 1", encodePoolHeaderV1(HOST), undefined],
];
for (const [what, header, id] of HEADERS) {
  Deno.test(`core reads a pool header (${what}) split at every offset, connects the route, replays the hello`, () => {
    const bytes = concat(header, CURL);
    for (let cut = 1; cut < bytes.length; cut++) {
      const sim = priv();
      const { db, raw } = pooled(sim);
      sim.feedAt(db, bytes, [cut]);
      const [used, ...rest] = sim.take();
      assert.equal(rest.length, 0);
      const connId = id ?? `t-${used?.type === "poolUsed" ? used.conn.toString(36) : ""}`;
      assert.deepEqual(
        used,
        { type: "poolUsed", conn: 1, connId, operator: "op1", domain: HOST },
        `cut ${cut}`,
      );
      const [internal] = sim.connecting();
      assert.deepEqual(internal?.to, INTERNAL);
      sim.connected(internal!.id);
      assert.deepEqual(sim.written(internal!.id), CURL, `cut ${cut}`);
      assert.equal(sim.sock(db).peer, internal!.id);
      sim.feed(db, Uint8Array.of(7));
      sim.feed(internal!.id, Uint8Array.of(8, 9));
      sim.eof(internal!.id);
      sim.eof(db);
      assert.deepEqual(sim.written(db), concat(raw, Uint8Array.of(8, 9)));
      const [piped] = sim.ofType("piped");
      assert.deepEqual([piped?.via, piped?.domain, piped?.connId], ["pool", HOST, connId]);
      const [ended] = sim.ofType("ended");
      assert.deepEqual([ended?.up, ended?.down, ended?.reason.kind], [CURL.length + 1, 2, "done"]);
      assert.equal(ended?.connId, connId);
      assert.equal(sim.engine.live, 0);
      clean(sim);
    }
  });
}

Deno.test("core carries a notice's connection id to its piped and ended events", () => {
  const sim = priv();
  sim.command({
    type: "dialBack",
    conn: "k3f9x-2b",
    operator: "op1",
    domain: HOST,
    endpoint: ENDPOINT,
    token: newToken(sim.rng).text,
    internal: INTERNAL,
  });
  const [db, internal] = sim.connecting();
  sim.connected(db!.id);
  sim.connected(internal!.id);
  sim.eof(db!.id);
  sim.eof(internal!.id);
  assert.deepEqual(
    sim.take().filter((e) => e.type !== "poolIdle").map((e) => [e.type, "connId" in e && e.connId]),
    [["piped", "k3f9x-2b"], ["ended", "k3f9x-2b"]],
  );
  clean(sim);
});

Deno.test("core pipes a pooled dial-back whose hello comes after the internal connect", () => {
  const sim = priv();
  const { db } = pooled(sim);
  const hello = helloFor("x.example.com");
  sim.feed(db, encodePoolHeader("x.example.com"));
  const [internal] = sim.connecting();
  assert.deepEqual(internal?.to, WILD_INTERNAL);
  sim.connected(internal!.id);
  assert.equal(sim.written(internal!.id).length, 0);
  sim.feedRandom(db, hello, 7);
  assert.deepEqual(sim.written(internal!.id), hello);
  sim.fail(internal!.id, "write", "EPIPE");
  const [ended] = sim.ofType("ended");
  assert.deepEqual(ended?.reason, { kind: "error", side: "internal", op: "write", code: "EPIPE" });
  assert.equal(ended?.up, hello.length);
  clean(sim);
});

Deno.test("core refuses a pool header for a name not announced here, or a bad header", () => {
  for (
    const bytes of [
      encodePoolHeader("a.b.example.com", "k3f9x-1a"),
      Uint8Array.of(3, 3),
      Uint8Array.of(2, 0xff, 0xff),
      Uint8Array.of(1, 0),
    ]
  ) {
    const sim = priv();
    const { db } = pooled(sim);
    sim.feed(db, concat(bytes, CURL));
    const r = sim.ofType("refused");
    assert.deepEqual(r.map((e) => [e.why, e.operator]), [["unknown-pooled-name", "op1"]]);
    // a header that named its connection: the refusal names it too
    assert.equal(r[0]?.connId, bytes[0] === 2 && bytes.length > 3 ? "k3f9x-1a" : undefined);
    assert.deepEqual([sim.sock(db).closes, sim.sock(db).abort], [1, true]);
    assert.equal(sim.connecting().length, 0);
    assert.equal(sim.engine.live, 0);
    clean(sim);
  }
});

Deno.test("core drops an idle pooled dial-back after idleTimeoutMs + IDLE_SLACK_MS, or at EOF", () => {
  const sim = priv();
  const { db } = pooled(sim, 10_000);
  sim.advance(10_000 + IDLE_SLACK_MS - 1);
  assert.equal(sim.sock(db).closes, 0);
  sim.advance(1);
  assert.deepEqual(sim.ofType("poolDropped").map((e) => e.why), ["timeout"]);
  assert.deepEqual([sim.sock(db).closes, sim.sock(db).abort], [1, true]);
  const other = pooled(sim);
  sim.eof(other.db);
  const third = pooled(sim);
  sim.fail(third.db);
  assert.deepEqual(sim.ofType("poolDropped").map((e) => e.why), ["timeout", "eof", "error"]);
  assert.equal(sim.engine.live, 0);
  clean(sim);
});

Deno.test("core reports a pooled dial-back whose internal connect fails or times out", () => {
  for (const how of ["refused", "timeout"] as const) {
    const sim = priv({ connectTimeoutMs: 1500 });
    const { db } = pooled(sim);
    sim.feed(db, concat(encodePoolHeader(HOST), CURL));
    const [internal] = sim.connecting();
    if (how === "refused") sim.connectFailed(internal!.id);
    else sim.advance(1500);
    const [f, ...more] = sim.ofType("connectFailed");
    assert.equal(more.length, 0);
    const side = "internal";
    assert.deepEqual([f?.via, f?.side, f?.domain], ["pool", side, HOST], how);
    assert.equal(f?.target, side === "internal" ? "10.1.0.5:8443" : "192.0.2.1:7443");
    assert.equal(f?.reason.kind, how === "timeout" ? "timeout" : "error");
    assert.equal(sim.open().length, 0, how);
    assert.equal(sim.engine.nextTimeout(), Infinity);
    clean(sim);
  }
});

Deno.test("core passes on a client's EOF that came while the internal server connected", () => {
  const sim = priv();
  const { db } = pooled(sim);
  sim.feed(db, concat(encodePoolHeader(HOST), CURL));
  const [internal] = sim.connecting();
  sim.eof(db); // the client half-closed right after its hello
  assert.equal(sim.ofType("connectFailed").length, 0);
  sim.connected(internal!.id);
  assert.deepEqual(sim.written(internal!.id), CURL); // the hello first
  assert.equal(sim.sock(internal!.id).shutdown, true); // then the EOF
  sim.eof(internal!.id);
  assert.equal(sim.ofType("ended")[0]?.reason.kind, "done");
  clean(sim);
});

Deno.test("core ignores dialBack and openPooled once stopping, and drains", () => {
  const sim = priv();
  const { db } = pooled(sim);
  const n = dialBack(sim);
  sim.command({ type: "stop" });
  assert.deepEqual(sim.ofType("poolDropped").map((e) => e.why), ["stopping"]);
  assert.equal(sim.sock(db).closes, 1);
  sim.command({
    type: "openPooled",
    operator: "op1",
    endpoint: ENDPOINT,
    tokens: [newToken(sim.rng).text],
    idleTimeoutMs: 1,
  });
  sim.command({
    type: "dialBack",
    operator: "op1",
    domain: HOST,
    endpoint: ENDPOINT,
    token: newToken(sim.rng).text,
    internal: INTERNAL,
  });
  assert.equal(sim.connecting().length, 2); // only the dial-back under way
  sim.connected(n.db);
  sim.connected(n.internal);
  assert.equal(sim.ofType("drained").length, 0);
  sim.eof(n.db);
  sim.eof(n.internal);
  assert.equal(sim.ofType("drained").length, 1);
  clean(sim);
});
