import assert from "node:assert/strict";
import { BufferPool, splice, type SpliceOptions, type SpliceResult } from "./splice.ts";
import { readAll, writeAll } from "./io.ts";
import { tryClose } from "./conn.ts";
import { type HostPort, hostPortOf } from "../role.ts";

const LOOPBACK = { hostname: "127.0.0.1", port: 0 } as const;

/** A server that echoes each connection, half-closing when its client does. */
function startEcho(): AsyncDisposable & { addr: HostPort } {
  const listener = Deno.listen(LOOPBACK);
  const tasks = new Set<Promise<void>>();
  const loop = (async () => {
    for await (const conn of listener) {
      const t = (async () => {
        try {
          const buf = new Uint8Array(8192);
          for (let n; (n = await conn.read(buf)) !== null;) {
            await writeAll(conn, buf.subarray(0, n));
          }
          await conn.closeWrite();
          await conn.read(buf); // until the relay closes
        } catch {
          // the relay went away
        } finally {
          tryClose(conn);
        }
      })();
      tasks.add(t);
      t.finally(() => tasks.delete(t));
    }
  })();
  return {
    addr: hostPortOf(listener.addr),
    async [Symbol.asyncDispose]() {
      tryClose(listener);
      await loop;
      await Promise.all(tasks);
    },
  };
}

/** Accepts one connection, dials `target`, splices them; `result` is the splice's result. */
function startRelay(
  target: HostPort,
  options: SpliceOptions = {},
): AsyncDisposable & { addr: HostPort; result: Promise<SpliceResult> } {
  const listener = Deno.listen(LOOPBACK);
  const result = (async () => {
    const a = await listener.accept();
    tryClose(listener);
    const b = await Deno.connect(target);
    return await splice(a, b, options);
  })();
  return {
    addr: hostPortOf(listener.addr),
    result,
    async [Symbol.asyncDispose]() {
      tryClose(listener);
      await result.catch(() => {});
    },
  };
}

function withTimeout<T>(p: Promise<T>, ms = 5000): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`Timed out after ${ms} ms`)), ms);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

Deno.test("splice() carries bytes both ways and keeps half-close", async () => {
  await using echo = startEcho();
  await using relay = startRelay(echo.addr, { names: ["client", "server"] });
  using client = await Deno.connect(relay.addr);
  await writeAll(client, new TextEncoder().encode("ping"));
  await client.closeWrite(); // our side is done; the reply must still come back
  assert.equal(new TextDecoder().decode(await withTimeout(readAll(client))), "ping");
  const r = await withTimeout(relay.result);
  assert.deepEqual(r, { aToB: 4, bToA: 4, reason: "eof" });
});

Deno.test("splice() moves a large transfer intact and returns large buffers to the pool", async () => {
  await using echo = startEcho();
  const pool = new BufferPool(64 * 1024, 4);
  await using relay = startRelay(echo.addr, { pool, smallBytes: 1024 });
  using client = await Deno.connect(relay.addr);
  const data = new Uint8Array(4 * 1024 * 1024);
  for (let i = 0; i < data.length; i += 65536) {
    crypto.getRandomValues(data.subarray(i, i + 65536));
  }
  const [, echoed] = await withTimeout(
    Promise.all([
      writeAll(client, data).then(() => client.closeWrite()),
      readAll(client, data.length),
    ]),
    20_000,
  );
  assert.equal(echoed.length, data.length);
  assert.deepEqual(
    new Uint8Array(await crypto.subtle.digest("SHA-256", echoed.slice())),
    new Uint8Array(await crypto.subtle.digest("SHA-256", data)),
  );
  const r = await withTimeout(relay.result);
  assert.equal(r.aToB, data.length);
  assert.equal(r.bToA, data.length);
  assert.equal(r.reason, "eof");
  assert.ok(pool.idle >= 1, "flowing data borrowed a large buffer and gave it back");
});

Deno.test("splice() waits for the other direction after one side's EOF", async () => {
  // the far side reads one chunk and closes: its EOF is passed on, the client may still send
  const far = Deno.listen(LOOPBACK);
  const farTask = (async () => {
    const c = await far.accept();
    tryClose(far);
    await c.read(new Uint8Array(16));
    c.close();
  })();
  await using relay = startRelay(hostPortOf(far.addr), { names: ["client", "server"] });
  const client = await Deno.connect(relay.addr);
  await writeAll(client, new Uint8Array(100));
  assert.equal(await withTimeout(client.read(new Uint8Array(16))), null); // the far EOF, passed on
  client.close(); // now the client is done too
  const r = await withTimeout(relay.result);
  await farTask;
  assert.equal(r.aToB, 100);
  assert.equal(r.bToA, 0);
});

Deno.test("splice() closes both sides when a write fails", async () => {
  const far = Deno.listen(LOOPBACK);
  const farTask = (async () => {
    const c = await far.accept();
    tryClose(far);
    c.close(); // gone at once: the relay's writes to it end in a reset
  })();
  await using relay = startRelay(hostPortOf(far.addr), { names: ["client", "server"] });
  using client = await Deno.connect(relay.addr);
  const chunk = new Uint8Array(1024);
  let failedAt = -1;
  for (let i = 0; i < 100_000; i++) { // bounded: the relay gives up after a write or two
    try {
      await withTimeout(client.write(chunk));
    } catch {
      failedAt = i;
      break;
    }
  }
  assert.ok(failedAt >= 0, "the relay closed the client once its write to the server failed");
  const r = await withTimeout(relay.result);
  await farTask;
  assert.match(r.reason, /^server (write|close-write) failed: /);
});

Deno.test("splice() stops on abort and reports it", async () => {
  await using echo = startEcho();
  const ctl = new AbortController();
  await using relay = startRelay(echo.addr, { signal: ctl.signal });
  using client = await Deno.connect(relay.addr);
  await writeAll(client, new TextEncoder().encode("x"));
  const one = new Uint8Array(1);
  assert.equal(await withTimeout(client.read(one)), 1); // the splice is live
  ctl.abort();
  const end = await withTimeout(client.read(one).catch((err) => err));
  assert.ok(end === null || end instanceof Error);
  const r = await withTimeout(relay.result);
  assert.equal(r.reason, "aborted");
});

Deno.test("BufferPool keeps at most maxIdle buffers", () => {
  const pool = new BufferPool(16, 2);
  const bufs = [pool.take(), pool.take(), pool.take()];
  for (const b of bufs) pool.give(b);
  assert.equal(pool.idle, 2);
  pool.give(new Uint8Array(8)); // wrong size: not kept
  assert.equal(pool.idle, 2);
  assert.throws(() => new BufferPool(0), RangeError);
});
