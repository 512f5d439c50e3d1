import assert from "node:assert/strict";
import type { Command, DataEvent } from "../dataplane/mod.ts";
import { PoolGrants } from "./public_pool.ts";

const phases = { accepted: 1, hello: 1, dialBack: 1, internal: 0, piped: 1, ended: 0 };

function piped(instance?: string): DataEvent {
  return {
    type: "piped",
    conn: 1,
    connId: "t-1",
    via: "pool",
    operator: "op1",
    domain: "a.example.com",
    client: "192.0.2.1:1",
    phases,
    ...(instance !== undefined ? { instance } : {}),
  };
}

Deno.test("PoolGrants counts per instance; the cap stays per operator", () => {
  // docs/architecture.md, "Several private instances"
  const sent: Command[] = [];
  const g = new PoolGrants(3, (cmd) => void sent.push(cmd), (b) => b.fill(1));
  const a = g.mint("op1", [], 2, 5000, "a");
  assert.ok(a.ok);
  assert.equal(sent[0]?.type === "grantPool" && sent[0].instance, "a");
  const b = g.mint("op1", [], 5, 5000, "b");
  assert.ok(b.ok && b.tokens.length === 1, "the operator's cap: 3 across its instances");
  assert.deepEqual(g.mint("op1", [], 1, 5000, "b"), { ok: false, why: "cap" });
  assert.deepEqual([g.held("op1"), g.heldBy("op1", "a"), g.heldBy("op1", "b")], [3, 2, 1]);
  g.onEvent({ type: "poolIdle", operator: "op1", ticket: false, instance: "a" });
  g.onEvent({ type: "poolIdle", operator: "op1", ticket: false, instance: "b" });
  assert.deepEqual([g.idle("op1"), g.idleBy("op1", "a"), g.idleBy("op1", "b")], [2, 1, 1]);
  g.onEvent(piped("a"));
  assert.deepEqual([g.held("op1"), g.heldBy("op1", "a"), g.idleBy("op1", "a")], [2, 1, 0]);
  g.onEvent({ type: "poolTokensExpired", operator: "op1", count: 1, instance: "a" });
  g.onEvent({ type: "poolDropped", operator: "op1", why: "eof", instance: "b" });
  assert.deepEqual([g.held("op1"), g.heldBy("op1", "a"), g.heldBy("op1", "b")], [0, 0, 0]);
  // a ticket carries the instance to the data plane; an instance-less mint carries none
  g.ticket("op1", [], 5000, "b");
  const last = sent.at(-1);
  assert.equal(last?.type === "grantTicket" && last.instance, "b");
  g.mint("op1", [], 1, 5000);
  assert.ok(!("instance" in sent.at(-1)!));
  g.onEvent(piped());
  assert.equal(g.held("op1"), 0);
});
