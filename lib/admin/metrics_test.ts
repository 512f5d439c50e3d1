import assert from "node:assert/strict";
import type { DataEvent } from "../dataplane/mod.ts";
import { newRegistry, ProxyMetrics } from "./metrics.ts";

function need(attempt: number, why?: "timer" | "failed"): DataEvent {
  return {
    type: "needDialBack",
    conn: 7,
    connId: "t-7",
    operator: "op1",
    domain: "a.example.com",
    token: "x",
    client: "192.0.2.1:1",
    attempt,
    ...(why !== undefined ? { why } : {}),
  };
}

Deno.test("ProxyMetrics counts a re-dispatch by reason, and its client once", async () => {
  const registry = newRegistry();
  const m = new ProxyMetrics(registry, "public", () => undefined);
  const before = await registry.metrics();
  // both reasons show from the start, at 0 (docs/architecture.md, "Re-dispatch")
  assert.match(before, /^tls_pass_redispatches_total\{reason="timer"\} 0$/m);
  assert.match(before, /^tls_pass_redispatches_total\{reason="failed"\} 0$/m);
  m.onEvent(need(1));
  m.onEvent(need(2, "timer"));
  m.onEvent(need(3, "failed"));
  const text = await registry.metrics();
  assert.match(text, /^tls_pass_redispatches_total\{reason="timer"\} 1$/m);
  assert.match(text, /^tls_pass_redispatches_total\{reason="failed"\} 1$/m);
  // a re-dispatch that took a pooled dial-back: the same client, no pool hit
  const phases = { accepted: 1, hello: 1, dialBack: 2, internal: 0, piped: 2, ended: 0 };
  const piped = {
    type: "piped",
    conn: 7,
    connId: "t-7",
    via: "pool",
    operator: "op1",
    domain: "a.example.com",
    client: "192.0.2.1:1",
    phases,
  } as const;
  m.onEvent({ ...piped, attempt: 3 });
  assert.equal(m.accepted, 1);
  assert.deepEqual([...m.poolMisses], [["op1", 1]]);
  assert.deepEqual([...m.poolHits], []);
  m.onEvent({ ...piped, conn: 8 }); // a client served from the pool at once
  assert.equal(m.accepted, 2);
  assert.deepEqual([...m.poolHits], [["op1", 1]]);
});
