import assert from "node:assert/strict";
import { getLogger } from "@logtape/logtape";
import {
  ArrivalRate,
  decodePoolHeader,
  DialPool,
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
    [2, 10, 30_000, 0, 32, 1], // 60 per idle timeout: fewer than 4 × 16, no busy floor
    [150, 2, 30_000, 0, 32, 16], // 8 × 150/s × 2 ms = 3, but busy: 16 (calls of 8 or more)
    [150, 2, 30_000, 0, 8, 8], // the busy floor stays under max
    [150, 2, 400, 0, 32, 3], // 60 per idle timeout: no busy floor, 8 × 150/s × 2 ms
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

/** A connection that delivers what the test pushes and ends when closed. */
class FakeConn {
  closed = false;
  #waiter: ((n: number | null) => void) | undefined;
  #buf: Uint8Array | undefined;
  #pending: Uint8Array | undefined;
  readonly remoteAddr: Deno.Addr = { transport: "tcp", hostname: "127.0.0.1", port: 1 };
  read(buf: Uint8Array): Promise<number | null> {
    if (this.closed) return Promise.resolve(null);
    if (this.#pending) {
      const n = Math.min(buf.length, this.#pending.length);
      buf.set(this.#pending.subarray(0, n));
      this.#pending = undefined;
      return Promise.resolve(n);
    }
    this.#buf = buf;
    return new Promise((resolve) => this.#waiter = resolve);
  }
  push(bytes: Uint8Array): void {
    if (this.#waiter && this.#buf) {
      this.#buf.set(bytes);
      const w = this.#waiter;
      this.#waiter = undefined;
      w(bytes.length);
    } else this.#pending = bytes;
  }
  write(buf: Uint8Array): Promise<number> {
    return Promise.resolve(buf.length);
  }
  closeWrite(): Promise<void> {
    return Promise.resolve();
  }
  close(): void {
    this.closed = true;
    this.#waiter?.(null);
    this.#waiter = undefined;
  }
}

Deno.test("DialPool refills in batches, replaces what clients take, aims at min once arrivals stop", async () => {
  const stop = new AbortController();
  const opened: number[] = [];
  const conns: FakeConn[] = [];
  const served: string[] = [];
  const timers = new Set<ReturnType<typeof setTimeout>>();
  const pool = new DialPool({
    operator: "public-proxy-1",
    minIdle: 0,
    maxIdle: 32,
    idleTimeoutMs: 30_000,
    retryMs: 10,
    open: (count) => {
      opened.push(count);
      const tokens = Array.from({ length: count }, () => new Uint8Array(32));
      // a refill takes a few milliseconds, like the call through two EPS servers
      return new Promise((resolve) => {
        const t = setTimeout(() => {
          timers.delete(t);
          resolve({ tokens, idleTimeoutMs: 30_000 });
        }, 5);
        timers.add(t);
      });
    },
    dial: () => {
      const c = new FakeConn();
      conns.push(c);
      return Promise.resolve(c);
    },
    serve: (conn, name) => {
      served.push(name);
      conn.close();
    },
    room: () => 1000,
    signal: stop.signal,
    log: getLogger(["tls-pass", "test"]),
  });
  try {
    assert.equal(pool.target(), 0); // no traffic, min_idle 0: no pool
    const now = performance.now();
    for (let i = 0; i < 200; i++) pool.arrival(now - 1000 + i * 5); // 200/s for the last second
    await until(() => opened.length >= 2 && pool.opening === 0);
    assert.ok(pool.target() >= 4, `target ${pool.target()}`);
    assert.equal(pool.idle, conns.length);
    // one call at a time, and each after the first carries several tokens
    for (const n of opened.slice(1)) assert.ok(n >= 2, `calls asked for ${opened}`);
    // clients take every idle connection: each is served, and the pool refills
    const calls = opened.length;
    const taken = conns.filter((c) => !c.closed);
    for (const c of taken) c.push(encodePoolHeader("a.example"));
    await until(() => opened.length > calls && pool.opening === 0 && pool.idle > 0);
    assert.equal(served.length, taken.length);
    assert.deepEqual(new Set(served), new Set(["a.example"]));
    assert.equal(pool.stats.used, taken.length);
    // arrivals stop: the target falls to min_idle (surplus ages out at the idle timeout)
    assert.equal(pool.target(performance.now() + 10_000), 0);
  } finally {
    stop.abort();
    for (const t of timers) clearTimeout(t);
    await pool.settled();
  }
  assert.ok(conns.every((c) => c.closed));
});

async function until(cond: () => boolean, ms = 2000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error("Timed out waiting for the pool");
    await new Promise((r) => setTimeout(r, 1)); // polling state, bounded above
  }
}
