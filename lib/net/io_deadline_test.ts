import assert from "node:assert/strict";
import { DeadlineQueue } from "./io.ts";
import { within } from "./_testing.ts";

Deno.test("DeadlineQueue lets work that settles in time through and leaves nothing live", async () => {
  const q = new DeadlineQueue(5000);
  let expired = 0;
  const results = await Promise.all(
    [1, 2, 3].map((n) => q.run(() => expired++, () => Promise.resolve(n))),
  );
  assert.deepEqual(results, [1, 2, 3]);
  assert.equal(q.size, 0);
  assert.equal(expired, 0);
  q.abortAll(new Error("stop")); // clears the timer: --trace-leaks sees none
});

Deno.test("DeadlineQueue expires late work in start order, each once, with a TimeoutError", async () => {
  const q = new DeadlineQueue(50);
  const order: number[] = [];
  const runs = [0, 1, 2].map((i) =>
    q.run(
      () => order.push(i),
      () => new Promise<never>((_, reject) => setTimeout(() => reject(new Error("late")), 2000)),
    ).catch((err) => err)
  );
  const quick = q.run(() => order.push(99), () => Promise.resolve("quick"));
  assert.equal(await quick, "quick");
  const started = performance.now();
  const errs = await within(Promise.all(runs), 5000, "expiry");
  assert.ok(performance.now() - started >= 40);
  for (const e of errs) {
    assert.ok(e instanceof DOMException && e.name === "TimeoutError", String(e));
  }
  assert.deepEqual(order, [0, 1, 2]);
  assert.equal(q.size, 0);
});

Deno.test("DeadlineQueue.abortAll ends live work with the reason, and later runs at once", async () => {
  const q = new DeadlineQueue(60_000);
  let closed = 0;
  let release!: () => void;
  const hanging = q.run(() => {
    closed++;
    release();
  }, () => new Promise<void>((resolve) => release = resolve));
  const reason = new DOMException("stopping", "AbortError");
  q.abortAll(reason);
  await assert.rejects(hanging, (e) => e === reason);
  assert.equal(closed, 1);
  await assert.rejects(q.run(() => closed++, () => Promise.resolve(1)), (e) => e === reason);
  assert.equal(closed, 2);
});
