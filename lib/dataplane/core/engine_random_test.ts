/**
 * Seeded random runs of the core: several connections at once, their bytes cut at random, the
 * two directions and the connections interleaved at random, either pipe mode. Invariants: no
 * byte lost, reordered or duplicated end to end; one outcome per connection; every socket closed
 * exactly once; the timer heap bounded and empty at the end. A failing seed replays exactly.
 * @module
 */
import assert from "node:assert/strict";
import { encodePoolHeader } from "../../wire/pool_header.ts";
import { tlsAlert } from "../../wire/tls_alert.ts";
import type { DataEvent } from "../events.ts";
import { concat, fixture, helloFor, newToken, Rng, Sim, tokenBytes } from "./_sim.ts";
import { Timers } from "./timers.ts";

const SEEDS = 300;
/** Deadlines far beyond a run (which moves the clock a few ms per turn); the end jumps past them. */
const LONG = 10_000_000;
/** `redispatch_after_ms` of the runs: a few turns, so that waiting clients get re-dispatched. */
const REDISPATCH_MS = 4;
const MAX_DISPATCHES = 3;
const HOST = "test.internal-server.local";
const CURL = fixture("curl_tls13");
const ENDPOINT = { hostname: "192.0.2.1", port: 7443 };
const TERMINAL = new Set(["ended", "refused", "connectFailed", "poolDropped"]);

type End = "eof" | "fail" | "hang";

/** Bytes one side sends, cut in chunks, and how it ends. */
interface Stream {
  sock: number;
  chunks: Uint8Array[];
  next: number;
  fed: Uint8Array[];
  end: End;
  /** Chunks from here on (and the end) wait for the pipe. */
  pipedFrom: number;
  /** The end (EOF, failure) may come once this holds. */
  endReady: () => boolean;
  done: boolean;
}

type Kind =
  | "notice"
  | "pool"
  | "refuse"
  | "badtoken"
  | "redispatch"
  | "pnotice"
  | "ppool"
  | "pfail"
  | "punknown";

interface Actor {
  readonly k: number;
  readonly kind: Kind;
  readonly operator: string;
  readonly domain: string;
  readonly host: string;
  /** Socket towards the client (public client; private dial-back) and towards the server. */
  a?: number;
  b?: number;
  up?: Stream;
  down?: Stream;
  /** What was written first on each side besides the other side's bytes. */
  headA: Uint8Array;
  headB: Uint8Array;
  /** Bytes of the up stream that are not passed on (the pool header on the private side). */
  skipUp: number;
  /** Bytes of the down stream that are not passed on (the token on the public side). */
  skipDown: number;
  step: number;
  /** Pool: its pooled dial-back closed unanswered, and the notice's dial-back came instead. */
  retried?: boolean;
}

function cutAll(rng: Rng, bytes: Uint8Array): Uint8Array[] {
  return rng.chunks(bytes, rng.pick([1, 3, 16, 64, 700]));
}

/** Index of the first chunk after the one that completes `n` bytes. */
function after(chunks: Uint8Array[], n: number): number {
  let got = 0;
  for (let i = 0; i < chunks.length; i++) {
    got += chunks[i]!.length;
    if (got >= n) return i + 1;
  }
  return chunks.length;
}

function newStream(
  sim: Sim,
  sock: number,
  bytes: Uint8Array | Uint8Array[],
  setup: number,
  o: Partial<Stream> = {},
): Stream {
  const rng = sim.rng;
  const chunks = Array.isArray(bytes) ? bytes : cutAll(rng, bytes);
  const end: End = o.end ?? rng.pick(["eof", "eof", "eof", "fail", "hang"]);
  // a failure comes after the set-up, anywhere in the rest
  const need = Math.max(after(chunks, setup), o.pipedFrom ?? 0);
  const n = end === "fail" ? rng.int(Math.min(need, chunks.length), chunks.length) : chunks.length;
  return {
    sock,
    chunks: chunks.slice(0, n),
    next: 0,
    fed: [],
    pipedFrom: Infinity,
    endReady: () => sim.sock(sock).peer !== undefined,
    done: false,
    ...o,
    end,
  };
}

function canStep(sim: Sim, s: Stream): boolean {
  if (s.done) return false;
  const ss = sim.sock(s.sock);
  if (ss.closes > 0 || ss.ended) {
    s.done = true;
    return false;
  }
  if (s.next >= s.chunks.length) return s.endReady();
  // a pooled dial-back answers once a client took it (the pool header written to it)
  if (s.next >= s.pipedFrom && ss.peer === undefined && ss.writes.length === 0) return false;
  return ss.reading || ss.peer !== undefined;
}

function doStep(sim: Sim, s: Stream): void {
  if (s.next < s.chunks.length) {
    const c = s.chunks[s.next++]!;
    s.fed.push(c);
    sim.feed(s.sock, c);
    return;
  }
  s.done = true;
  if (s.end === "eof") sim.eof(s.sock);
  else if (s.end === "fail") sim.fail(s.sock, "read", "ECONNRESET");
}

function newActor(sim: Sim, k: number, kind: Kind): Actor {
  const domain = k === 0 && sim.rng.bool() ? HOST : `h${k}.example.net`;
  const empty = new Uint8Array(0);
  return {
    k,
    kind,
    operator: `op${k}`,
    domain,
    host: `10.9.${k}.1`,
    headA: empty,
    headB: empty,
    skipUp: 0,
    skipDown: 0,
    step: 0,
  };
}

function helloOf(sim: Sim, x: Actor, name = x.domain): Uint8Array {
  if (name === HOST && sim.rng.bool()) return CURL;
  const sizes = sim.rng.bool() ? [] : [sim.rng.int(1, 30), sim.rng.int(1, 30)];
  return helloFor(name, sizes);
}

const has = (sim: Sim, type: DataEvent["type"], operator: string) =>
  sim.events.some((e) => e.type === type && "operator" in e && e.operator === operator);

/** The moves actor `x` can make now (each a closure that makes one). */
function moves(sim: Sim, x: Actor): (() => void)[] {
  const out: (() => void)[] = [];
  const rng = sim.rng;
  const remote = () => ({ hostname: x.host, port: 1000 + x.step++ });
  for (const s of [x.up, x.down]) {
    if (s !== undefined && canStep(sim, s)) out.push(() => doStep(sim, s));
  }
  const payload = () => rng.bytes(rng.pick([0, 1, 100, 3000]));
  switch (x.kind) {
    case "notice":
    case "pool":
    case "refuse":
    case "redispatch":
      if (x.kind === "redispatch" && x.b === undefined) redispatchMoves(sim, x, out, payload);
      if (x.kind === "pool" && x.b === undefined) {
        out.push(() => {
          const t = newToken(rng);
          sim.command({
            type: "grantPool",
            operator: x.operator,
            domains: [x.domain],
            tokens: [t.text],
            idleTimeoutMs: LONG,
          });
          x.b = sim.accept("private", remote())!;
          const tokChunks = cutAll(rng, t.raw);
          const chunks = [...tokChunks, ...cutAll(rng, payload())];
          const b = x.b;
          x.down = newStream(sim, b, chunks, 32, {
            pipedFrom: tokChunks.length,
            // taken (the pool header written): it may answer, or close unanswered
            endReady: () => sim.sock(b).peer !== undefined || sim.sock(b).writes.length > 0,
          });
          x.skipDown = 32;
        });
      }
      if (x.a === undefined && (x.kind !== "pool" || has(sim, "poolIdle", x.operator))) {
        out.push(() => {
          x.a = sim.accept("public", remote())!;
          const hello = helloOf(sim, x, x.kind === "refuse" ? `nope${x.k}.example.org` : x.domain);
          x.up = x.kind === "refuse"
            ? newStream(sim, x.a, hello, hello.length, {
              end: rng.pick(["eof", "hang"]),
              endReady: () => sim.sock(x.a!).shutdown,
            })
            : newStream(sim, x.a, concat(hello, payload()), hello.length);
          // the client's connection number is the one after its socket's (Engine.accept)
          if (x.kind === "pool") {
            x.headB = encodePoolHeader(x.domain, `t-${(x.a + 1).toString(36)}`);
          }
        });
      }
      // its pooled dial-back closed before answering (docs/architecture.md, "Pooled dial-backs
      // that close unanswered"): the client got a notice; its dial-back comes
      if (
        x.kind === "pool" && x.b !== undefined && !x.retried && sim.sock(x.b).closes > 0 &&
        has(sim, "needDialBack", x.operator)
      ) {
        out.push(() => {
          const need = sim.ofType("needDialBack").find((e) => e.operator === x.operator)!;
          x.retried = true;
          x.b = sim.accept("private", remote())!;
          x.down = newStream(sim, x.b, concat(tokenBytes(need.token), payload()), 32);
          x.skipDown = 32;
          x.headB = new Uint8Array(0); // the hello alone, as to any notice's dial-back
        });
      }
      if (x.kind === "notice" && x.b === undefined && has(sim, "needDialBack", x.operator)) {
        out.push(() => {
          const need = sim.ofType("needDialBack").find((e) => e.operator === x.operator)!;
          x.b = sim.accept("private", remote())!;
          x.down = newStream(sim, x.b, concat(tokenBytes(need.token), payload()), 32);
          x.skipDown = 32;
        });
      }
      break;
    case "badtoken":
      if (x.a === undefined) {
        out.push(() => {
          x.a = sim.accept("private", remote())!;
          x.up = newStream(sim, x.a, rng.bytes(32), 32, { end: "hang" });
        });
      }
      break;
    case "pnotice":
    case "pfail":
      if (x.a === undefined) {
        out.push(() => {
          const t = newToken(rng);
          sim.command({
            type: "dialBack",
            operator: x.operator,
            domain: x.domain,
            endpoint: ENDPOINT,
            token: t.text,
            internal: internalOf(x),
          });
          const [a, b] = sim.connecting().slice(-2);
          x.a = a!.id;
          x.b = b!.id;
          x.headA = t.raw;
          x.up = newStream(sim, x.a, concat(helloOf(sim, x), payload()), 0);
          x.down = newStream(sim, x.b, payload(), 0);
        });
      }
      for (const s of [x.a, x.b]) {
        if (s === undefined || sim.sock(s).settled || sim.sock(s).closes > 0) continue;
        out.push(() => sim.connected(s));
        if (x.kind === "pfail") out.push(() => sim.connectFailed(s));
      }
      break;
    case "ppool":
    case "punknown":
      if (x.a === undefined) {
        out.push(() => {
          const t = newToken(rng);
          sim.command({
            type: "openPooled",
            operator: x.operator,
            endpoint: ENDPOINT,
            tokens: [t.text],
            idleTimeoutMs: LONG,
          });
          x.a = sim.connecting().at(-1)!.id;
          x.headA = t.raw;
          const name = x.kind === "ppool" ? x.domain : `nope${x.k}.example.org`;
          const header = encodePoolHeader(name);
          const bytes = concat(header, helloOf(sim, x, name), payload());
          const o: Partial<Stream> = x.kind === "punknown" ? { end: "hang" } : {};
          x.up = newStream(sim, x.a, bytes, header.length, o);
          x.skipUp = header.length;
        });
      } else if (!sim.sock(x.a).settled && sim.sock(x.a).closes === 0) {
        out.push(() => sim.connected(x.a!));
      }
      if (x.b === undefined && x.kind === "ppool" && has(sim, "poolUsed", x.operator)) {
        const c = sim.connecting().find((s) => s.to?.hostname === internalOf(x).hostname);
        if (c !== undefined) {
          out.push(() => {
            x.b = c.id;
            sim.connected(c.id);
            x.down = newStream(sim, x.b, payload(), 0);
          });
        }
      }
      break;
  }
  return out;
}

/**
 * A client re-dispatched (docs/architecture.md, "Re-dispatch"): by the timer as the clock moves,
 * or by a failed notice (`noticeFailed`, with or without retry, naming any attempt so far); its
 * dial-back presents any one of its tokens (an earlier one comes late), or none comes.
 */
function redispatchMoves(sim: Sim, x: Actor, out: (() => void)[], payload: () => Uint8Array) {
  const rng = sim.rng;
  const needs = sim.ofType("needDialBack").filter((e) => e.operator === x.operator);
  if (needs.length === 0) return;
  const last = needs.at(-1)!;
  if (sim.engine.waiting.has(last.conn)) {
    out.push(() =>
      sim.command({
        type: "noticeFailed",
        conn: last.conn,
        retry: rng.bool(0.8),
        attempt: rng.int(1, last.attempt),
      })
    );
  }
  out.push(() => {
    const need = rng.pick(needs);
    // from another host: a dial-back too late (bad-token) is no outcome of the client
    x.b = sim.accept("private", { hostname: `10.8.${x.k}.1`, port: 1000 + x.step++ })!;
    x.down = newStream(sim, x.b, concat(tokenBytes(need.token), payload()), 32);
    x.skipDown = 32;
  });
}

/** The public core's counts agree with its tables at every turn. */
function checkCounts(sim: Sim, ctx: string): void {
  const e = sim.engine;
  const sum = (m: Map<string, number>) => [...m.values()].reduce((a, b) => a + b, 0);
  assert.equal(sum(e.pendingPerOperator), e.waiting.size, `${ctx}: per operator`);
  assert.equal(sum(e.pendingPerClient), e.waiting.size, `${ctx}: per client`);
  assert.equal(sum(e.pendingPerName), e.waiting.size, `${ctx}: per name`);
  const owners = new Set(e.pending.values());
  assert.equal(owners.size, e.waiting.size, `${ctx}: tokens of waiting clients`);
  for (const c of owners) assert.equal(e.waiting.get(c.id), c, `${ctx}: token of a gone client`);
  assert.ok(e.pending.size <= MAX_DISPATCHES * e.waiting.size, `${ctx}: tokens per client`);
}

function internalOf(x: Actor) {
  return { hostname: `10.2.${x.k}.1`, port: 443 };
}

function whose(e: DataEvent, actors: Actor[]): Actor | undefined {
  if ("operator" in e && e.operator !== undefined) {
    return actors.find((x) => x.operator === e.operator);
  }
  if ("client" in e && e.client !== undefined) {
    const client = e.client;
    return actors.find((x) => client.startsWith(`${x.host}:`));
  }
  return undefined;
}

/** What the runs covered, so that the test fails if the re-dispatch paths went unexercised. */
const covered = { redispatched: 0, servedAfterRedispatch: 0, pooledRetried: 0 };

function run(seed: number): void {
  const probe = new Sim("public", { seed });
  const role = probe.rng.bool() ? "public" : "private";
  const mode = probe.rng.bool() ? "data" : "fast";
  const idleTimeoutMs = probe.rng.pick([0, LONG]);
  const n = probe.rng.int(1, 5);
  const kinds: Kind[] = role === "public"
    ? ["notice", "notice", "pool", "pool", "refuse", "badtoken", "redispatch"]
    : ["pnotice", "pnotice", "ppool", "ppool", "pfail", "punknown"];
  const actors: Actor[] = [];
  for (let k = 0; k < n; k++) actors.push(newActor(probe, k, probe.rng.pick(kinds)));
  const sim = new Sim(role, {
    seed: seed * 7919 + 1,
    mode,
    limits: {
      idleTimeoutMs,
      helloTimeoutMs: LONG,
      tokenTimeoutMs: LONG,
      dialBackTimeoutMs: LONG,
      dialTimeoutMs: LONG,
      connectTimeoutMs: LONG,
      redispatchAfterMs: REDISPATCH_MS,
      maxDispatches: MAX_DISPATCHES,
    },
    publicRoutes: actors.map((x) => [x.domain, { operator: x.operator }] as const),
    privateRoutes: actors.map((x) => [x.domain, { internal: internalOf(x) }] as const),
  });
  const rng = sim.rng;
  const ctx = `seed ${seed} (${role}, ${mode}, idle ${idleTimeoutMs}, ${
    actors.map((x) => x.kind)
  })`;

  for (let turns = 0;; turns++) {
    assert.ok(turns < 100_000, `${ctx}: no end`);
    const all = actors.flatMap((x) => moves(sim, x));
    if (all.length === 0) break;
    rng.pick(all)();
    if (rng.bool(0.3)) sim.advance(rng.int(0, 5));
    assert.ok(sim.maxTimers <= 8 * n + 4, `${ctx}: timer heap ${sim.maxTimers}`);
    checkCounts(sim, ctx);
  }
  // what hangs: lingering clients and idle splices time out; the rest is killed
  sim.advance(1e9);
  if (sim.open().length > 0) sim.command({ type: "kill" });
  sim.advance(1e9);

  assert.deepEqual(sim.violations, [], ctx);
  for (const s of sim.socks.values()) assert.equal(s.closes, 1, `${ctx}: socket ${s.id} closes`);
  assert.equal(sim.engine.live, 0, ctx);
  assert.equal(sim.engine.nextTimeout(), Infinity, ctx);
  assert.equal(sim.engine.timers.size, 0, ctx);
  assert.equal(sim.engine.pending.size + sim.engine.waiting.size + sim.engine.idle.size, 0, ctx);
  checkCounts(sim, ctx);
  for (const x of actors) {
    const attempts = sim.ofType("needDialBack").filter((e) => e.operator === x.operator)
      .map((e) => e.attempt);
    assert.deepEqual(attempts, attempts.map((_, i) => i + 1), `${ctx}: attempts of ${x.k}`);
    assert.ok(attempts.length <= MAX_DISPATCHES, `${ctx}: attempts of ${x.k}`);
    if (attempts.length > 1) covered.redispatched++;
    if (attempts.length > 1 && x.kind === "redispatch" && has(sim, "piped", x.operator)) {
      covered.servedAfterRedispatch++;
    }
  }

  for (const x of actors) {
    const mine = sim.events.filter((e) => whose(e, actors) === x);
    // a pooled dial-back that closed unanswered is a step of its client, not its outcome
    const outcomes = mine.filter((e) =>
      TERMINAL.has(e.type) && !(e.type === "poolDropped" && e.conn !== undefined)
    );
    if (x.retried === true && outcomes[0]?.type === "ended") covered.pooledRetried++;
    const c = `${ctx}: actor ${x.k} ${x.kind}: ${JSON.stringify(mine)}`;
    assert.equal(outcomes.length, 1, c);
    const o = outcomes[0]!;
    const expected: Record<Kind, string> = {
      notice: "ended",
      // a client whose pooled dial-back closed unanswered may expire before its notice's comes
      pool: o.type === "refused" && x.retried !== undefined ? "refused" : "ended",
      refuse: "refused",
      badtoken: "refused",
      // its notices may all fail (refused), or a dial-back comes (ended)
      redispatch: o.type === "refused" ? "refused" : "ended",
      pnotice: "ended",
      ppool: "ended",
      pfail: "connectFailed",
      punknown: "refused",
    };
    if (x.kind === "pfail" && o.type === "ended") continue; // both connects happened to succeed
    assert.equal(o.type, expected[x.kind], c);
    if (x.kind === "refuse") assert.deepEqual(sim.written(x.a!), tlsAlert(112), c);
    if (o.type !== "ended") continue;
    // end to end: what each side got is exactly what the other sent, after the heads
    const up = concat(...x.up!.fed).subarray(x.skipUp);
    const down = concat(...x.down!.fed).subarray(x.skipDown);
    assert.deepEqual(sim.written(x.b!), concat(x.headB, up), `${c}: up bytes`);
    assert.deepEqual(sim.written(x.a!), concat(x.headA, down), `${c}: down bytes`);
    assert.deepEqual([o.up, o.down], [up.length, down.length], `${c}: counts`);
    const ends = [x.up!, x.down!].map((s) => s.done && s.next === s.chunks.length ? s.end : "cut");
    const reason = ends.includes("fail")
      ? "error"
      : ends.every((e) => e === "eof")
      ? "done"
      : idleTimeoutMs > 0
      ? "timeout"
      : "stopped";
    assert.equal(
      o.reason.kind,
      reason,
      `${c}: ${JSON.stringify(ends)} ${JSON.stringify(o.reason)}`,
    );
    assert.equal(sim.sock(x.a!).abort, reason !== "done", c);
  }
}

Deno.test(`core keeps every byte and ends every connection once (${SEEDS} seeded runs)`, () => {
  for (let seed = 1; seed <= SEEDS; seed++) run(seed);
  assert.ok(covered.redispatched > 10, JSON.stringify(covered));
  assert.ok(covered.servedAfterRedispatch > 5, JSON.stringify(covered));
  assert.ok(covered.pooledRetried > 5, JSON.stringify(covered));
});

Deno.test("Timers.fire() fires each live deadline once, in order, through compactions", () => {
  for (let seed = 1; seed <= 20; seed++) {
    const rng = new Rng(seed);
    const timers = new Timers();
    const fired: [number, number][] = [];
    const owners = Array.from({ length: 3000 }, (_, i) => ({
      timerGen: 0,
      at: 0,
      live: false,
      onTimeout(now: number) {
        assert.ok(this.live, `owner ${i} fired while disarmed`);
        this.live = false;
        fired.push([now, this.at]);
      },
    }));
    for (let n = 0; n < 20_000; n++) {
      const o = rng.pick(owners);
      if (rng.bool(0.3)) {
        timers.disarm(o);
        o.live = false;
      } else {
        o.at = rng.int(0, 100_000);
        o.live = true;
        timers.arm(o, o.at);
      }
      assert.ok(timers.size <= Math.max(1024, 2 * owners.length) + 1, `heap ${timers.size}`);
    }
    const expected = owners.filter((o) => o.live).map((o) => o.at).sort((x, y) => x - y);
    for (let now = 0; now <= 100_000; now += rng.int(1, 5000)) timers.fire(now);
    timers.fire(100_000);
    assert.deepEqual(fired.map(([, at]) => at), expected);
    assert.ok(fired.every(([now, at]) => now >= at));
    assert.equal(timers.next(), Infinity);
  }
});
