import assert from "node:assert/strict";
import { encodePoolHeader } from "../../wire/pool_header.ts";
import { tlsAlert } from "../../wire/tls_alert.ts";
import type { Limits } from "../snapshot.ts";
import { concat, fixture, newToken, type PipeMode, Sim, tokenBytes } from "./_sim.ts";

const HOST = "test.internal-server.local";
const CURL = fixture("curl_tls13");
const EXTRA = Uint8Array.of(23, 3, 3, 0, 2, 0xaa, 0xbb);
const ENDPOINT = { hostname: "192.0.2.1", port: 7443 };
const INTERNAL = { hostname: "10.1.0.5", port: 8443 };
const MODES: readonly PipeMode[] = ["data", "fast"];
/** The start of a ServerHello: a pooled dial-back's first answer, after which the core pipes. */
const ANSWER = Uint8Array.of(22, 3, 3, 0, 2, 2, 0);

function clean(sim: Sim): void {
  assert.deepEqual(sim.violations, []);
}

function pub(mode: PipeMode, limits: Partial<Limits> = {}): Sim {
  return new Sim("public", { mode, limits, publicRoutes: [[HOST, { operator: "op1" }]] });
}

/**
 * Public pipe through the pool: the client (a), the dial-back (b), what b got first, and its first
 * answer (`ANSWER`, already at a: the pipe starts with it).
 */
function poolPipe(sim: Sim): { a: number; b: number; head: Uint8Array } {
  const t = newToken(sim.rng);
  sim.command({
    type: "grantPool",
    operator: "op1",
    domains: [HOST],
    tokens: [t.text],
    idleTimeoutMs: 60_000,
  });
  const b = sim.accept("private")!;
  sim.feed(b, t.raw);
  const a = sim.accept("public")!;
  sim.feed(a, concat(CURL, EXTRA));
  assert.equal(sim.sock(a).peer, undefined, "no pipe before the pooled dial-back answers");
  sim.feed(b, ANSWER);
  assert.equal(sim.sock(a).peer, b);
  assert.deepEqual(sim.written(a), ANSWER);
  const id = sim.ofType("piped").at(-1)!.connId;
  return { a, b, head: concat(encodePoolHeader(HOST, id), CURL, EXTRA) };
}

/** Public pipe through a notice. */
function noticePipe(sim: Sim): { a: number; b: number; head: Uint8Array } {
  const a = sim.accept("public")!;
  sim.feed(a, CURL);
  const need = sim.ofType("needDialBack").at(-1)!;
  const b = sim.accept("private")!;
  sim.feed(b, tokenBytes(need.token));
  assert.equal(sim.sock(a).peer, b);
  return { a, b, head: CURL };
}

/** Private pipe for a notice: the dial-back (a) and the internal server (b). */
function privatePipe(sim: Sim): { a: number; b: number } {
  const t = newToken(sim.rng);
  sim.command({
    type: "dialBack",
    operator: "op1",
    domain: HOST,
    endpoint: ENDPOINT,
    token: t.text,
    internal: INTERNAL,
  });
  const [a, b] = sim.connecting().map((s) => s.id);
  sim.connected(b!);
  sim.connected(a!);
  return { a: a!, b: b! };
}

Deno.test("core ends a pipe after EOF both ways, in either order, with the right counts", () => {
  for (const mode of MODES) {
    for (const first of ["a", "b"] as const) {
      const sim = pub(mode);
      const { a, b, head } = poolPipe(sim);
      const up = Uint8Array.of(1, 2, 3, 4, 5);
      const down = Uint8Array.of(6);
      sim.feedAt(a, up, [2]);
      sim.feed(b, down);
      const [x, y] = first === "a" ? [a, b] : [b, a];
      sim.eof(x);
      assert.equal(sim.sock(y).shutdown, true, `${mode} ${first}`);
      assert.equal(sim.sock(x).shutdown, false);
      assert.deepEqual([sim.sock(a).closes, sim.sock(b).closes], [0, 0]);
      assert.equal(sim.ofType("ended").length, 0);
      // the other direction goes on (half-close)
      const more = Uint8Array.of(9, 10);
      sim.feed(y, more);
      sim.eof(y);
      assert.equal(sim.sock(x).shutdown, true);
      for (const s of [a, b]) assert.deepEqual([sim.sock(s).closes, sim.sock(s).abort], [1, false]);
      const ended = sim.ofType("ended");
      assert.equal(ended.length, 1);
      const upBytes = first === "a" ? up : concat(up, more);
      const downBytes = concat(ANSWER, first === "a" ? concat(down, more) : down);
      assert.deepEqual(sim.written(b), concat(head, upBytes));
      assert.deepEqual(sim.written(a), downBytes);
      assert.deepEqual(
        [ended[0]!.reason, ended[0]!.up, ended[0]!.down, ended[0]!.via],
        [{ kind: "done" }, CURL.length + EXTRA.length + upBytes.length, downBytes.length, "pool"],
      );
      assert.ok(ended[0]!.phases.ended >= ended[0]!.phases.piped);
      assert.equal(sim.engine.live, 0);
      clean(sim);
    }
  }
});

Deno.test("core ends a private pipe after EOF both ways and counts no token", () => {
  for (const mode of MODES) {
    const sim = new Sim("private", { mode });
    const { a, b } = privatePipe(sim);
    sim.eof(b);
    assert.equal(sim.sock(a).shutdown, true);
    sim.feed(a, Uint8Array.of(1, 2));
    sim.eof(a);
    const [ended] = sim.ofType("ended");
    assert.deepEqual([ended?.up, ended?.down, ended?.reason.kind], [2, 0, "done"]);
    for (const s of [a, b]) assert.deepEqual([sim.sock(s).closes, sim.sock(s).abort], [1, false]);
    clean(sim);
  }
});

Deno.test("core aborts both sockets of a pipe when either fails, naming the side", () => {
  const cases = [
    { role: "public", fails: "a", side: "client" },
    { role: "public", fails: "b", side: "dial-back" },
    { role: "private", fails: "a", side: "dial-back" },
    { role: "private", fails: "b", side: "internal" },
  ] as const;
  for (const mode of MODES) {
    for (const c of cases) {
      for (const afterEof of [false, true]) {
        const sim = c.role === "public" ? pub(mode) : new Sim("private", { mode });
        const { a, b } = c.role === "public" ? noticePipe(sim) : privatePipe(sim);
        const [bad, other] = c.fails === "a" ? [a, b] : [b, a];
        if (afterEof) sim.eof(other);
        sim.fail(bad, "read", "ECONNRESET");
        const ended = sim.ofType("ended");
        assert.equal(ended.length, 1);
        assert.deepEqual(ended[0]!.reason, {
          kind: "error",
          side: c.side,
          op: "read",
          code: "ECONNRESET",
        });
        for (const s of [a, b]) {
          assert.deepEqual([sim.sock(s).closes, sim.sock(s).abort], [1, true]);
        }
        assert.equal(sim.engine.nextTimeout(), Infinity);
        clean(sim);
      }
    }
  }
});

Deno.test("core ends a pipe idle for idleTimeoutMs; bytes moved push the deadline out", () => {
  for (const mode of MODES) {
    const sim = pub(mode, { idleTimeoutMs: 1000 });
    const { a, b } = noticePipe(sim);
    const t0 = sim.now;
    sim.advance(600);
    sim.feed(b, Uint8Array.of(1)); // moved (fast) or data: activity at t0 + 600
    sim.advance(999);
    assert.equal(sim.ofType("ended").length, 0, mode);
    sim.advance(1);
    assert.equal(sim.now - t0, 1600);
    const [ended] = sim.ofType("ended");
    assert.deepEqual(ended?.reason, { kind: "timeout", phase: "idle", side: "client" });
    assert.equal(ended?.down, 1);
    for (const s of [a, b]) assert.deepEqual([sim.sock(s).closes, sim.sock(s).abort], [1, true]);
    assert.ok(sim.maxTimers <= 4, `timer heap ${sim.maxTimers}`);
    clean(sim);
  }
  const sim = pub("fast", { idleTimeoutMs: 0 });
  noticePipe(sim);
  assert.equal(sim.engine.nextTimeout(), Infinity);
});

Deno.test("core stop ends waiting clients, idle pooled and unclaimed dial-backs; pipes go on", () => {
  for (const mode of MODES) {
    const sim = pub(mode, { lingerMs: 500 });
    const piped = noticePipe(sim);
    const idle = (() => {
      const t = newToken(sim.rng);
      sim.command({
        type: "grantPool",
        operator: "op1",
        domains: ["other"],
        tokens: [t.text],
        idleTimeoutMs: 60_000,
      });
      const db = sim.accept("private")!;
      sim.feed(db, t.raw);
      return db;
    })();
    const wait = sim.accept("public")!;
    sim.feed(wait, CURL);
    const hello = sim.accept("public")!;
    sim.feed(hello, CURL.subarray(0, 9));
    const unclaimed = sim.accept("private")!;
    sim.feed(unclaimed, new Uint8Array(3));
    sim.take();

    sim.command({ type: "stop" });
    const events = sim.take();
    assert.deepEqual(events.map((e) => e.type).sort(), ["poolDropped", "refused"]);
    assert.deepEqual(sim.ofType("refused").map((e) => [e.why, e.detail]), [[
      "expired",
      "stopping",
    ]]);
    assert.deepEqual(sim.written(wait), tlsAlert(80));
    assert.equal(sim.sock(wait).closes, 0); // lingers
    for (const s of [idle, hello, unclaimed]) assert.equal(sim.sock(s).closes, 1);
    assert.equal(sim.accept("public"), null);
    assert.equal(sim.accept("private"), null);
    assert.deepEqual(sim.take(), []); // no refusal for connections turned away while stopping

    sim.feed(piped.a, Uint8Array.of(1));
    assert.deepEqual(sim.written(piped.b), concat(CURL, Uint8Array.of(1)));
    sim.advance(500);
    assert.equal(sim.sock(wait).closes, 1);
    assert.equal(sim.ofType("drained").length, 0);
    sim.eof(piped.a);
    sim.eof(piped.b);
    assert.deepEqual(sim.take().map((e) => e.type), ["ended", "drained"]);
    sim.command({ type: "stop" });
    sim.advance(100_000);
    assert.equal(sim.ofType("drained").length, 1);
    clean(sim);
  }
});

Deno.test("core kill ends every pipe with reason stopped and drains", () => {
  const sim = pub("fast");
  const p1 = noticePipe(sim);
  const p2 = poolPipe(sim);
  const wait = sim.accept("public")!;
  sim.feed(wait, CURL);
  sim.command({
    type: "grantPool",
    operator: "op1",
    domains: [HOST],
    tokens: [newToken(sim.rng).text],
    idleTimeoutMs: 1000,
  });
  sim.take();
  sim.command({ type: "kill" });
  const ended = sim.ofType("ended");
  assert.deepEqual(ended.map((e) => e.reason), [{ kind: "stopped" }, { kind: "stopped" }]);
  for (const s of [p1.a, p1.b, p2.a, p2.b, wait]) {
    assert.deepEqual([sim.sock(s).closes, sim.sock(s).abort], [1, true]);
  }
  assert.equal(sim.ofType("drained").length, 1);
  assert.equal(sim.engine.live, 0);
  assert.equal(sim.engine.grants.size, 0);
  sim.advance(1_000_000);
  assert.equal(sim.ofType("poolTokensExpired").length, 0);
  assert.equal(sim.engine.timers.size, 0);
  clean(sim);
});

Deno.test("core kill ends a private proxy's connects under way and its pipes", () => {
  const sim = new Sim("private", { privateRoutes: [[HOST, { internal: INTERNAL }]] });
  const p = privatePipe(sim);
  const t = newToken(sim.rng);
  sim.command({
    type: "dialBack",
    operator: "op1",
    domain: HOST,
    endpoint: ENDPOINT,
    token: t.text,
    internal: INTERNAL,
  });
  sim.command({
    type: "openPooled",
    operator: "op1",
    endpoint: ENDPOINT,
    tokens: [t.text, t.text],
    idleTimeoutMs: 9000,
  });
  const dialing = sim.connecting();
  assert.equal(dialing.length, 4);
  sim.connected(dialing[2]!.id);
  sim.connected(dialing[3]!.id);
  sim.feed(dialing[3]!.id, concat(encodePoolHeader(HOST), CURL)); // connecting its internal server
  sim.take();
  sim.command({ type: "kill" });
  const events = sim.take();
  assert.deepEqual(events.map((e) => e.type), [
    "poolDropped",
    "ended",
    "connectFailed",
    "connectFailed",
    "drained",
  ]);
  for (const e of events) {
    if (e.type === "ended" || e.type === "connectFailed") {
      assert.deepEqual(e.reason, { kind: "stopped" });
    }
  }
  assert.equal(sim.sock(p.a).abort, true);
  assert.equal(sim.open().length, 0);
  assert.equal(sim.engine.nextTimeout(), Infinity);
  clean(sim);
});
