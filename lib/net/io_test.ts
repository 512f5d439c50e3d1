import assert from "node:assert/strict";
import { withDeadline } from "./io.ts";

Deno.test("withDeadline() resolves with fn's value and leaves no timer behind", async () => {
  let aborted = false;
  // a 60 s deadline: the op sanitizer fails this test if its timer outlives the call
  const v = await withDeadline(60_000, undefined, () => aborted = true, () => Promise.resolve(7));
  assert.equal(v, 7);
  assert.equal(aborted, false);
});

Deno.test("withDeadline() aborts at the deadline with a TimeoutError and calls onAbort", async () => {
  let wake!: (err: Error) => void;
  await assert.rejects(
    withDeadline(10, undefined, () => wake(new Error("closed")), (signal) => {
      assert.equal(signal.aborted, false);
      return new Promise((_, reject) => (wake = reject));
    }),
    (err: unknown) => err instanceof DOMException && err.name === "TimeoutError",
  );
});

Deno.test("withDeadline() passes a parent's abort reason on, also when already aborted", async () => {
  const parent = new AbortController();
  let calls = 0;
  const p = withDeadline(
    60_000,
    parent.signal,
    () => calls++,
    (signal) =>
      new Promise((_, reject) => {
        signal.addEventListener("abort", () => reject(new Error("closed")), { once: true });
      }),
  );
  parent.abort(new Error("stopping"));
  await assert.rejects(p, { message: "stopping" });
  assert.equal(calls, 1);
  await assert.rejects(
    withDeadline(60_000, parent.signal, () => calls++, () => Promise.resolve(1)),
    { message: "stopping" },
  );
  assert.equal(calls, 2);
});
