import assert from "node:assert/strict";
import type { DataEvent } from "../dataplane/mod.ts";
import { LiveConnections } from "./live.ts";

/** A connection number per id, as the data plane would give. */
function numberOf(connId: string): number {
  return [...connId].reduce((h, c) => (h * 31 + c.charCodeAt(0)) % 1_000_000_007, 7);
}

function piped(connId: string, domain = "a.example.com"): DataEvent {
  return {
    type: "piped",
    conn: numberOf(connId),
    connId,
    via: "pool",
    operator: "op1",
    domain,
    client: "192.0.2.7:4000",
    phases: { accepted: 1, hello: 1, dialBack: 1, internal: 0, piped: 1, ended: 0 },
  };
}

function ended(connId: string, domain = "a.example.com"): DataEvent {
  return {
    type: "ended",
    conn: numberOf(connId),
    connId,
    via: "pool",
    operator: "op1",
    domain,
    client: "192.0.2.7:4000",
    up: 1,
    down: 2,
    reason: { kind: "done" },
    phases: { accepted: 0, hello: 0, dialBack: 0, internal: 0, piped: 0, ended: 0 },
  };
}

Deno.test("LiveConnections adds on piped, removes on ended, lists newest first with ages", () => {
  let now = 1000;
  const live = new LiveConnections(100, () => now);
  live.onEvent(piped("x-1"));
  now = 1250;
  live.onEvent(piped("x-2", "b.example.com"));
  live.onEvent({ type: "poolIdle", operator: "op1" }); // not a splice: ignored
  now = 1500;
  assert.equal(live.size, 2);
  assert.deepEqual(live.list(), [
    {
      id: "x-2",
      domain: "b.example.com",
      client: "192.0.2.7:4000",
      operator: "op1",
      via: "pool",
      sinceMs: 250,
    },
    {
      id: "x-1",
      domain: "a.example.com",
      client: "192.0.2.7:4000",
      operator: "op1",
      via: "pool",
      sinceMs: 500,
    },
  ]);
  assert.deepEqual(live.list(1).map((c) => c.id), ["x-2"]);
  assert.deepEqual(live.list(0), []);
  live.onEvent(ended("x-1"));
  live.onEvent(ended("x-1")); // twice, or an unknown id: nothing happens
  live.onEvent(ended("nope"));
  assert.equal(live.size, 1);
  assert.deepEqual([...live.countsByDomain()], [["b.example.com", 1]]);
  live.onEvent(ended("x-2", "b.example.com"));
  assert.equal(live.size, 0);
  assert.deepEqual(live.list(), []);
  assert.equal(live.countsByDomain().size, 0);
});

Deno.test("LiveConnections counts per domain also past its bound, and lists only what it keeps", () => {
  const live = new LiveConnections(2);
  for (const id of ["1", "2", "3", "4"]) {
    live.add(Number(id), { id, domain: "d", client: "", operator: "o", via: "notice" });
  }
  live.add(5, { id: "5", domain: "e", client: "", operator: "o", via: "notice" });
  live.add(5, { id: "5", domain: "e", client: "", operator: "o", via: "notice" }); // a repeat: once
  assert.equal(live.size, 5);
  assert.deepEqual([...live.countsByDomain()], [["d", 4], ["e", 1]]);
  assert.deepEqual(live.list().map((c) => c.id), ["2", "1"]);
  for (const id of ["3", "5", "1"]) live.remove(Number(id));
  assert.equal(live.size, 2);
  assert.deepEqual([...live.countsByDomain()], [["d", 2]]);
  assert.deepEqual(live.list().map((c) => c.id), ["2"]);
  // room again: a new connection is listed
  live.add(6, { id: "6", domain: "d", client: "", operator: "o", via: "pool" });
  assert.deepEqual(live.list().map((c) => c.id), ["6", "2"]);
  assert.throws(() => new LiveConnections(-1), RangeError);
});
