import assert from "node:assert/strict";
import {
  type Parked,
  PendingExpiredError,
  PendingTable,
  TOKEN_BYTES,
  tokenText,
} from "./pending.ts";
import type { ByteConn } from "../net/conn.ts";

const LIMITS = { maxTotal: 3, maxPerOperator: 2, maxPerClient: 2, timeoutMs: 10_000 };

/** A stand-in for the dial-back connection: claim() only passes it on. */
const FAKE_CONN = { remoteAddr: { transport: "tcp", hostname: "127.0.0.1", port: 1 } } as ByteConn;

function parked(table: PendingTable, operator: string, client: string): Parked {
  const r = table.park(operator, client);
  assert.ok(r.ok, `expected admission for ${operator} from ${client}`);
  return r.parked;
}

Deno.test("PendingTable.park() mints distinct 32-byte tokens", () => {
  const table = new PendingTable(LIMITS);
  const a = parked(table, "op", "10.0.0.1");
  const b = parked(table, "op", "10.0.0.2");
  assert.equal(a.tokenBytes.length, TOKEN_BYTES);
  assert.equal(a.token, tokenText(a.tokenBytes));
  assert.equal(atob(a.token).length, TOKEN_BYTES);
  assert.notEqual(a.token, b.token);
  table.releaseAll(new Error("test over"));
  assert.equal(table.size, 0);
});

Deno.test("PendingTable.park() enforces the caps per client, per operator and in total", () => {
  const table = new PendingTable(LIMITS);
  parked(table, "op-a", "c1");
  parked(table, "op-b", "c1");
  assert.deepEqual(table.park("op-c", "c1"), { ok: false, cap: "client" });
  parked(table, "op-a", "c2");
  // op-a now holds 2 and the table 3
  assert.deepEqual(table.park("op-c", "c3"), { ok: false, cap: "total" });
  table.releaseAll(new Error("test over"));
  parked(table, "op-a", "c1");
  parked(table, "op-a", "c2");
  assert.deepEqual(table.park("op-a", "c3"), { ok: false, cap: "operator" });
  table.releaseAll(new Error("test over"));
});

Deno.test("PendingTable.claim() hands over the connection once", async () => {
  const table = new PendingTable(LIMITS);
  const p = parked(table, "op", "c1");
  assert.equal(table.claim("bm90IGEgdG9rZW4=", FAKE_CONN), null); // unknown
  assert.equal(table.claim(p.token, FAKE_CONN), "op");
  assert.equal(await p.dialBack, FAKE_CONN);
  assert.equal(table.claim(p.token, FAKE_CONN), null); // reused
  assert.equal(table.size, 0);
  // the slot is free again
  parked(table, "op", "c1");
  parked(table, "op", "c1");
  table.releaseAll(new Error("test over"));
});

Deno.test("PendingTable entries expire after timeoutMs and cannot be claimed then", async () => {
  const table = new PendingTable({ ...LIMITS, timeoutMs: 20 });
  const p = parked(table, "op", "c1");
  await assert.rejects(p.dialBack, PendingExpiredError);
  assert.equal(table.size, 0);
  assert.equal(table.claim(p.token, FAKE_CONN), null);
});

Deno.test("Parked.release() rejects the waiter with the reason and frees the slot", async () => {
  const table = new PendingTable(LIMITS);
  const p = parked(table, "op", "c1");
  const reason = new Error("notice failed");
  p.release(reason);
  await assert.rejects(p.dialBack, (err) => err === reason);
  assert.equal(table.size, 0);
  assert.equal(table.claim(p.token, FAKE_CONN), null);
  p.release(); // idempotent
});

Deno.test("PendingTable rejects nonsense limits", () => {
  assert.throws(() => new PendingTable({ ...LIMITS, maxTotal: 0 }), RangeError);
});
