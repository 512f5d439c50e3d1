import assert from "node:assert/strict";
import type { Logger } from "@logtape/logtape";
import { RateLimitedLog } from "./log.ts";

/** A logger that records its warnings and resolves `next` on each one. */
function recorder() {
  const lines: { message: string; props: Record<string, unknown> }[] = [];
  let wake: (() => void) | undefined;
  const log = {
    warn(message: string, props: Record<string, unknown>) {
      lines.push({ message, props });
      wake?.();
    },
  } as unknown as Logger;
  const next = (ms: number) =>
    new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`no warning within ${ms} ms`)), ms);
      wake = () => {
        clearTimeout(t);
        wake = undefined;
        resolve();
      };
    });
  return { log, lines, next };
}

Deno.test("RateLimitedLog.warn() logs the first event at once and holds the rest for the interval", () => {
  const r = recorder();
  let now = 1000;
  const l = new RateLimitedLog(r.log, 10_000, () => now);
  l.warn("k", "Refused {count}: {why}", { why: "a" });
  assert.equal(r.lines.length, 1);
  assert.equal(r.lines[0]!.props.count, 1);
  now += 5000;
  l.warn("k", "Refused {count}: {why}", { why: "b" });
  l.warn("other", "Other {count}", {});
  assert.equal(r.lines.length, 2); // another kind has its own interval
  now += 5000;
  l.warn("k", "Refused {count}: {why}", { why: "c" });
  assert.equal(r.lines.length, 3);
  assert.deepEqual(r.lines[2]!.props, { why: "c", count: 2 }); // the last event's details
  l.close();
});

Deno.test("RateLimitedLog flushes a held summary on its timer, with no further event", async () => {
  const r = recorder();
  const l = new RateLimitedLog(r.log, 50);
  l.warn("k", "Refused {count}", {});
  l.warn("k", "Refused {count}", {});
  l.warn("k", "Refused {count}", {});
  assert.equal(r.lines.length, 1);
  await r.next(5000); // the timer's line: nothing else happens in between
  assert.equal(r.lines.length, 2);
  assert.equal(r.lines[1]!.props.count, 2);
  l.close();
});

Deno.test("RateLimitedLog.close() logs what is held back and stops its timers", () => {
  const r = recorder();
  const l = new RateLimitedLog(r.log, 60_000);
  l.warn("k", "Refused {count}", {});
  l.warn("k", "Refused {count}", {});
  l.close(); // the sanitizer fails the test if a timer were left
  assert.equal(r.lines.length, 2);
  assert.equal(r.lines[1]!.props.count, 1);
});
