/**
 * Pool tickets in the public core (docs/architecture.md, "Pool tickets"): dial-backs presenting
 * a ticket token go idle without a per-connection grant; wrong MACs, replays, unknown or expired
 * tickets, stray bytes and a full pool are refused; a client takes a ticket's dial-back as it
 * takes a token's.
 */
import assert from "node:assert/strict";
import { encodeTicketToken, TICKET_ID_BYTES, ticketIdText } from "../../wire/ticket.ts";
import { encodePoolHeader } from "../../wire/pool_header.ts";
import { tokenText } from "../../wire/token.ts";
import type { Limits } from "../snapshot.ts";
import { concat, fixture, Sim } from "./_sim.ts";
import { MAX_TICKETS_PER_OPERATOR } from "./tickets.ts";

const HOST = "test.internal-server.local";
const CURL = fixture("curl_tls13");

function pub(limits: Partial<Limits> = {}): Sim {
  return new Sim("public", { seed: 7, limits, publicRoutes: [[HOST, { operator: "op1" }]] });
}

/** Grants a ticket in `sim`; returns a maker of its tokens. */
function ticket(
  sim: Sim,
  o: { cap?: number; ttlMs?: number; operator?: string; seed?: number } = {},
) {
  const id = new Uint8Array(TICKET_ID_BYTES).fill(o.seed ?? 1);
  const key = new Uint8Array(32).fill((o.seed ?? 1) + 100);
  sim.command({
    type: "grantTicket",
    operator: o.operator ?? "op1",
    domains: [],
    id: ticketIdText(id),
    key: tokenText(key),
    ttlMs: o.ttlMs ?? 600_000,
    cap: o.cap ?? 64,
    idleTimeoutMs: 30_000,
  });
  return (counter: number, k = key) => encodeTicketToken(id, k, counter);
}

function dialBack(sim: Sim, bytes: Uint8Array, cuts: number[] = []): number {
  const db = sim.accept("private")!;
  sim.feedAt(db, bytes, cuts);
  return db;
}

Deno.test("core: a ticket token (split at every offset) opens an idle pooled dial-back a client takes", () => {
  for (let cut = 0; cut < 32; cut++) {
    const sim = pub();
    const make = ticket(sim);
    const db = dialBack(sim, make(1), cut === 0 ? [] : [cut]);
    assert.deepEqual(
      sim.take(),
      [{ type: "poolIdle", operator: "op1", ticket: true }],
      `cut ${cut}`,
    );
    const client = sim.accept("public")!;
    sim.feed(client, CURL);
    sim.feed(db, Uint8Array.of(22)); // its first answer: the pipe
    assert.equal(sim.ofType("piped")[0]?.via, "pool");
    const id = sim.ofType("piped")[0]!.connId;
    assert.deepEqual(sim.written(db), concat(encodePoolHeader(HOST, id), CURL));
    sim.eof(client);
    sim.eof(db);
    assert.equal(sim.ofType("ended").length, 1);
    assert.deepEqual(sim.violations, []);
  }
});

Deno.test("core: ticket tokens out of order are each accepted once; a replay or a wrong MAC is refused", () => {
  const sim = pub();
  const make = ticket(sim);
  for (const c of [3, 1, 2]) dialBack(sim, make(c));
  assert.equal(sim.ofType("poolIdle").length, 3);
  sim.take();
  const replay = dialBack(sim, make(2));
  const forged = dialBack(sim, make(9, new Uint8Array(32).fill(5)));
  const refused = sim.ofType("refused");
  assert.deepEqual(refused.map((e) => [e.why, e.detail]), [
    ["bad-token", "ticket counter 2 replayed or too old"],
    ["bad-token", "ticket token with a wrong MAC"],
  ]);
  assert.equal(sim.sock(replay).closes, 1);
  assert.equal(sim.sock(forged).closes, 1);
  assert.deepEqual(sim.violations, []);
});

Deno.test("core: a ticket admits dial-backs while the operator holds fewer idle than its cap", () => {
  const sim = pub();
  const make = ticket(sim, { cap: 2 });
  dialBack(sim, make(1));
  dialBack(sim, make(2));
  const third = dialBack(sim, make(3));
  assert.equal(sim.ofType("poolIdle").length, 2);
  assert.deepEqual(sim.ofType("refused").map((e) => e.why), ["pool-full"]);
  assert.equal(sim.sock(third).closes, 1);
  // a client takes one: there is room again
  sim.take();
  const client = sim.accept("public")!;
  sim.feed(client, CURL);
  dialBack(sim, make(4));
  assert.equal(sim.ofType("poolIdle").length, 3);
});

/** Events of one type since the last take(). */
function since<T extends ReturnType<Sim["take"]>[number]["type"]>(sim: Sim, type: T) {
  return sim.take().filter((e) => e.type === type) as Extract<
    ReturnType<Sim["take"]>[number],
    { type: T }
  >[];
}

Deno.test("core: an expired ticket, stray bytes after its token, and tickets beyond two per operator are refused", () => {
  const sim = pub();
  const make = ticket(sim, { ttlMs: 1000 });
  dialBack(sim, concat(make(1), Uint8Array.of(1)));
  assert.deepEqual(since(sim, "refused").map((e) => e.detail), ["bytes after a ticket token"]);
  sim.advance(1001);
  dialBack(sim, make(2));
  assert.deepEqual(since(sim, "refused").map((e) => e.detail), [
    "unknown, expired or reused token",
  ]);
  // three tickets for one operator: the oldest goes
  const makers = Array.from(
    { length: MAX_TICKETS_PER_OPERATOR + 1 },
    (_, i) => ticket(sim, { seed: 10 + i }),
  );
  dialBack(sim, makers[0]!(1));
  assert.equal(since(sim, "refused").length, 1);
  for (const m of makers.slice(1)) dialBack(sim, m(1));
  assert.equal(since(sim, "poolIdle").length, MAX_TICKETS_PER_OPERATOR);
  // a stop ends every ticket
  sim.command({ type: "stop" });
  assert.equal(sim.engine.tickets.size, 0);
  assert.deepEqual(sim.violations, []);
});

Deno.test("core: idle pooled dial-backs of all operators stay within maxPooled, the budget's part for them", () => {
  const sim = new Sim("public", {
    seed: 3,
    limits: { maxPooled: 2, maxDialBacks: 4, maxConnections: 2 },
    publicRoutes: [[HOST, { operator: "op1" }], ["two.example.com", { operator: "op2" }]],
  });
  const one = ticket(sim, { operator: "op1", seed: 1 });
  const two = ticket(sim, { operator: "op2", seed: 2 });
  dialBack(sim, one(1));
  dialBack(sim, two(1));
  dialBack(sim, two(2));
  const ev = sim.take();
  assert.equal(ev.filter((e) => e.type === "poolIdle").length, 2);
  assert.deepEqual(ev.flatMap((e) => e.type === "refused" ? [e.why] : []), ["pool-full"]);
  // the refused one was closed: 2 dial-backs open; two more fill the dial-back budget
  const a = sim.accept("private");
  const b = sim.accept("private");
  assert.ok(a !== null && b !== null);
  assert.equal(sim.accept("private"), null);
  assert.deepEqual(since(sim, "refused").map((e) => e.why), ["dial-backs"]);
});
