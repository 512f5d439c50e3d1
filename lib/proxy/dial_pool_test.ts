import assert from "node:assert/strict";
import {
  ArrivalRate,
  decodePoolHeader,
  encodePoolHeader,
  poolTarget,
  readPoolHeader,
} from "./dial_pool.ts";
import { ProtocolError } from "../errors.ts";

Deno.test("encodePoolHeader() and decodePoolHeader() round-trip names of 1 to 255 bytes", () => {
  for (const name of ["a", "test.internal-server.local", "x".repeat(255)]) {
    const bytes = encodePoolHeader(name);
    assert.equal(bytes.length, 2 + name.length);
    assert.deepEqual(decodePoolHeader(bytes), { name, length: bytes.length });
    // every proper prefix asks for more
    for (let i = 0; i < bytes.length; i++) {
      assert.equal(decodePoolHeader(bytes.subarray(0, i)), null);
    }
  }
});

Deno.test("encodePoolHeader() refuses empty, long and non-ASCII names", () => {
  for (const name of ["", "x".repeat(256), "ä.example"]) {
    assert.throws(() => encodePoolHeader(name), RangeError);
  }
});

Deno.test("decodePoolHeader() refuses a wrong type, an empty name and control bytes", () => {
  for (const bytes of [[0, 1, 97], [2, 1, 97], [1, 0], [1, 2, 97, 10], [1, 1, 200]]) {
    assert.throws(() => decodePoolHeader(Uint8Array.from(bytes)), ProtocolError);
  }
});

Deno.test("readPoolHeader() reads a header split across reads and keeps what follows", async () => {
  const all = Uint8Array.from([...encodePoolHeader("a.example"), 22, 3, 1]);
  const chunks = [all.subarray(0, 1), all.subarray(1, 5), all.subarray(5)];
  const conn = {
    read(buf: Uint8Array): Promise<number | null> {
      const c = chunks.shift();
      if (c === undefined) return Promise.resolve(null);
      buf.set(c);
      return Promise.resolve(c.length);
    },
  };
  const h = await readPoolHeader(conn);
  assert.deepEqual(h, { name: "a.example", rest: Uint8Array.from([22, 3, 1]) });
  assert.equal(await readPoolHeader(conn), null); // EOF before a byte: the idle end
});

Deno.test("poolTarget() follows the arrival rate within [min, max]", () => {
  // [rate/s, refill ms, idle timeout ms, min, max, expected]
  const cases: [number, number, number, number, number, number][] = [
    [0, 10, 30_000, 0, 32, 0], // no traffic: min
    [0, 10, 30_000, 2, 32, 2],
    [0.01, 10, 30_000, 0, 32, 0], // fewer than one client per idle timeout
    [0.05, 10, 30_000, 0, 32, 1], // 1.5 per idle timeout: keep one
    [400, 5, 30_000, 0, 32, 16], // 8 × 400/s × 5 ms
    [400, 50, 30_000, 0, 32, 32], // 160, clamped to max
    [400, 5, 30_000, 20, 32, 20], // below min: min
  ];
  for (const [rate, refill, idle, min, max, want] of cases) {
    assert.equal(poolTarget(rate, refill, idle, min, max), want, `${rate}/s, ${refill} ms`);
  }
});

Deno.test("ArrivalRate converges to a steady rate and decays when arrivals stop", () => {
  const r = new ArrivalRate(1000);
  assert.equal(r.perSecond(0), 0);
  let t = 0;
  for (; t < 10_000; t += 10) r.hit(t); // 100 per second for 10 windows
  assert.ok(Math.abs(r.perSecond(t) - 100) < 5, `rate ${r.perSecond(t)}`);
  assert.ok(r.perSecond(t + 5000) < 1); // e^-5 of it
  assert.ok(r.perSecond(t + 5000) > 0);
});
