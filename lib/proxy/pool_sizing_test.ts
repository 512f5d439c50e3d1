import assert from "node:assert/strict";
import { getLogger } from "@logtape/logtape";
import { DialPool, poolTarget, TICKET_BUSY_TARGET } from "./pool_sizing.ts";

Deno.test("poolTarget: the busy floor is the one given (the ticket's), within max", () => {
  // 500 clients/s, 2 ms per refill, 30 s idle timeout: need = ceil(8 · 500 · 0.002) = 8
  assert.equal(poolTarget(500, 2, 30_000, 0, 32), 16);
  assert.equal(poolTarget(500, 2, 30_000, 0, 32, TICKET_BUSY_TARGET), 32);
  assert.equal(poolTarget(500, 2, 30_000, 0, 20, TICKET_BUSY_TARGET), 20);
  // too few clients per idle timeout: min, whatever the floor
  assert.equal(poolTarget(0.01, 2, 30_000, 2, 32, TICKET_BUSY_TARGET), 2);
});

/** A pool at a steady 500 clients/s whose refills take no time, `fromTicket` as given. */
function busyPool(fromTicket: boolean | undefined) {
  const asked: number[] = [];
  const ac = new AbortController();
  const pool = new DialPool({
    operator: "op",
    minIdle: 0,
    maxIdle: 32,
    idleTimeoutMs: 30_000,
    retryMs: 100,
    signal: ac.signal,
    log: getLogger(["test"]),
    room: () => 1000,
    open: (count) => {
      asked.push(count);
      return Promise.resolve({ tokens: Array(count).fill("t"), idleTimeoutMs: 30_000 });
    },
    dial: () => {},
    ...(fromTicket === undefined ? {} : { fromTicket: () => fromTicket }),
  });
  const t0 = performance.now();
  for (let i = 0; i < 100; i++) pool.rate.hit(t0 - 200 + 2 * i); // ≈ 500/s over the window
  return { pool, asked, ac, now: t0 };
}

Deno.test("DialPool: refills from the ticket start at three quarters of a target of 32", async () => {
  const { pool, asked, ac, now } = busyPool(true);
  assert.equal(pool.target(now), 32);
  pool.idle = 25; // above 24: nothing to do
  pool.refill();
  assert.deepEqual(asked, []);
  pool.idle = 24;
  pool.refill();
  await Promise.resolve();
  assert.deepEqual(asked, [8]);
  ac.abort();
  await pool.settled();
});

Deno.test("DialPool: refills by call keep half of a target of 16", async () => {
  for (const fromTicket of [false, undefined]) {
    const { pool, asked, ac, now } = busyPool(fromTicket);
    assert.equal(pool.target(now), 16);
    pool.idle = 9;
    pool.refill();
    assert.deepEqual(asked, []);
    pool.idle = 8;
    pool.refill();
    await Promise.resolve();
    assert.deepEqual(asked, [8]);
    ac.abort();
    await pool.settled();
  }
});

Deno.test("DialPool: a refill is timed to when the data plane saw it idle, not to its event", async () => {
  const { pool, asked, ac } = busyPool(true);
  pool.idle = 0;
  pool.refill();
  for (let i = 0; i < 3; i++) await Promise.resolve(); // the tokens are handed to the dial
  assert.deepEqual(asked, [32]);
  const at = performance.now();
  // its event arrives a second after it went idle (gathered, a busy main thread)
  pool.onEvent({ type: "poolIdle", operator: "op", at }, at + 1000);
  assert.ok(pool.refillMs < 10, `refill time ${pool.refillMs} ms`);
  // without the time (an older data plane), its arrival is when it went idle
  pool.onEvent({ type: "poolIdle", operator: "op" }, performance.now() + 1000);
  assert.ok(pool.refillMs > 100, `refill time ${pool.refillMs} ms`);
  ac.abort();
  await pool.settled();
});
