/**
 * The data-plane worker's front door (DataPlane.front and DataPlane.pool): it accepts on a
 * public port, serves a client with a whole ClientHello for a routed name from the newest idle
 * pooled connection (pool header, hello, splice), and hands every other client back with what it
 * read. Real sockets on loopback, real ClientHellos.
 */
import assert from "node:assert/strict";
import { clientHello, within } from "./_cluster.ts";
import { type Net, openNet } from "../lib/net/net.ts";
import { readAll, readExact, writeAll } from "../lib/net/io.ts";
import type { SpliceResult } from "../lib/net/splice.ts";
import type { NativeConn, NativeListener } from "../lib/net/native/reactor.ts";
import type { DataPlane, FrontOptions, FrontRoute, Parked } from "../lib/net/native/data_plane.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();
const FAR = Date.now() + 3_600_000;
const HELLO_TIMEOUT_MS = 400;

interface Served {
  pool: number;
  info: unknown;
  name: string;
  remoteAddr: Deno.NetAddr;
  ended: Promise<SpliceResult>;
}

interface Front {
  net: Net;
  plane: DataPlane;
  addr: Deno.NetAddr;
  served: Served[];
  clients: { conn: NativeConn; pre: Uint8Array }[];
  timeouts: { n: number; last: Deno.NetAddr }[];
  /** Sets the front door's routes and waits until the worker has them. */
  routes(list: FrontRoute[]): Promise<void>;
  /** Resolves on the next onServed or onClient. */
  next(): Promise<void>;
  close(): void;
  /** A pooled connection in `bucket`: [what the worker holds, its far end here]. */
  pooled(bucket: number, info?: unknown): Promise<{ parked: Parked; far: Deno.TcpConn }>;
}

async function withFront(fn: (f: Front) => Promise<void>, room = 100): Promise<void> {
  const net = await openNet("native");
  const pools = Deno.listen({ hostname: "127.0.0.1", port: 0 }); // stands in for a private port
  const fars: Deno.TcpConn[] = [];
  const clients: Front["clients"] = [];
  try {
    const listener = await net.listen({ hostname: "127.0.0.1", port: 0, deferAccept: true });
    const plane = (listener as NativeListener).reactor.dataPlane!;
    const served: Served[] = [];
    const timeouts: { n: number; last: Deno.NetAddr }[] = [];
    let wake: (() => void) | undefined;
    const options: FrontOptions = {
      maxHelloBytes: 16_384,
      helloTimeoutMs: HELLO_TIMEOUT_MS,
      onServed: (s, ended) => {
        served.push({ ...s, ended });
        wake?.();
      },
      onClient: (conn, pre) => {
        clients.push({ conn, pre });
        wake?.();
      },
      onAcceptFailed: (err) => {
        throw err;
      },
      onFailed: (err) => {
        throw err;
      },
      onHelloTimeouts: (n, last) => {
        timeouts.push({ n, last });
        wake?.();
      },
    };
    plane.setFrontRoom(room);
    const close = plane.front(listener as NativeListener, options);
    await fn({
      net,
      plane,
      addr: listener.addr,
      served,
      clients,
      timeouts,
      next: () => within(new Promise<void>((r) => (wake = r)), 3000, "front door event"),
      routes: async (list) => {
        plane.setFrontRoutes(list);
        const deadline = Date.now() + 3000;
        while (plane.routesPending) { // bounded by the deadline
          assert.ok(Date.now() < deadline, "routes not taken within 3 s");
          await new Promise((r) => setTimeout(r, 2)); // polling a flag, bounded above
        }
      },
      close,
      pooled: async (bucket, info) => {
        const accepted = pools.accept();
        const conn = await net.connect(pools.addr) as NativeConn;
        const far = await accepted;
        fars.push(far);
        const parked = plane.pool(conn, bucket, info);
        assert.ok(parked !== null);
        return { parked, far };
      },
    });
  } finally {
    for (const c of clients) c.conn.close();
    for (const far of fars) {
      try {
        far.close();
      } catch { /* closed by the test */ }
    }
    pools.close();
    await within(net.close(), 3000, "Net.close()");
  }
}

/** A client that sends `bytes` at once. */
async function client(addr: Deno.NetAddr, bytes: Uint8Array): Promise<Deno.TcpConn> {
  const c = await Deno.connect({ hostname: addr.hostname, port: addr.port });
  await writeAll(c, bytes);
  return c;
}

async function readN(conn: Deno.Conn, n: number): Promise<Uint8Array> {
  const buf = new Uint8Array(n);
  assert.ok(await readExact(conn, buf), "EOF before the bytes");
  return buf;
}

/** The bytes a pooled connection gets for a client: pool header, then what the client sent. */
function replayOf(name: string, sent: Uint8Array): Uint8Array {
  return new Uint8Array([1, name.length, ...enc.encode(name), ...sent]);
}

Deno.test("front door: a whole hello for a routed name takes the newest pooled connection", () =>
  withFront(async (f) => {
    const older = await f.pooled(0, "older");
    const newer = await f.pooled(0, "newer");
    await f.pooled(1, "other bucket");
    await f.routes([
      { name: "a.test", expiresAt: FAR, buckets: [0] },
      { name: "b.test", expiresAt: FAR, buckets: [1] },
    ]);
    const hello = clientHello("a.test");
    const sent = new Uint8Array([...hello, ...enc.encode("early")]);
    const got = f.next();
    const c = await client(f.addr, sent);
    try {
      await got;
      assert.equal(f.clients.length, 0, "not handed back");
      const s = f.served[0]!;
      assert.equal(s.name, "a.test");
      assert.equal(s.info, "newer");
      assert.equal(s.remoteAddr.port, (c.localAddr as Deno.NetAddr).port);
      assert.deepEqual(
        await readN(newer.far, replayOf("a.test", sent).length),
        replayOf("a.test", sent),
      );
      assert.equal(await newer.parked.result, null);
      await writeAll(newer.far, enc.encode("server hello"));
      assert.equal(dec.decode(await readN(c, 12)), "server hello");
      await c.closeWrite();
      assert.equal((await readAll(newer.far)).length, 0);
      await newer.far.closeWrite();
      assert.equal((await readAll(c)).length, 0);
      const r = await within(s.ended, 3000, "splice end");
      assert.equal(r.reason, "eof");
      assert.equal(r.aToB, sent.length);
      assert.equal(r.bToA, 12);
      // the older one is still idle: a second client gets it
      const got2 = f.next();
      const c2 = await client(f.addr, clientHello("a.test"));
      await got2;
      assert.equal(f.served[1]!.info, "older");
      assert.equal(await older.parked.result, null);
      c2.close();
    } finally {
      c.close();
    }
  }));

Deno.test("front door: a wildcard route serves its names; the name in the header is the client's", () =>
  withFront(async (f) => {
    const p = await f.pooled(3);
    await f.routes([{ name: "*.w.test", expiresAt: FAR, buckets: [3] }]);
    const hello = clientHello("x.w.test");
    const got = f.next();
    const c = await client(f.addr, hello);
    try {
      await got;
      assert.equal(f.served[0]!.name, "x.w.test");
      assert.deepEqual(await readN(p.far, 10 + hello.length), replayOf("x.w.test", hello));
    } finally {
      c.close();
    }
  }));

Deno.test("front door: hands back what it cannot serve, with the bytes it read", async () => {
  const cases: [string, (f: Front) => Promise<Uint8Array>][] = [
    ["no route", async (f) => {
      await f.pooled(0);
      await f.routes([{ name: "a.test", expiresAt: FAR, buckets: [0] }]);
      return clientHello("unknown.test");
    }],
    ["no idle pooled connection", async (f) => {
      await f.routes([{ name: "a.test", expiresAt: FAR, buckets: [0] }]);
      return await Promise.resolve(clientHello("a.test"));
    }],
    ["an expired route", async (f) => {
      await f.pooled(0);
      await f.routes([{ name: "a.test", expiresAt: Date.now() - 1, buckets: [0] }]);
      return clientHello("a.test");
    }],
    ["no SNI", async (f) => {
      await f.pooled(0);
      await f.routes([{ name: "a.test", expiresAt: FAR, buckets: [0] }]);
      return clientHello(null);
    }],
    ["not TLS", async (f) => {
      await f.pooled(0);
      await f.routes([{ name: "a.test", expiresAt: FAR, buckets: [0] }]);
      return enc.encode("GET / HTTP/1.1\r\n\r\n");
    }],
  ];
  for (const [what, setUp] of cases) {
    await withFront(async (f) => {
      const sent = await setUp(f);
      const got = f.next();
      const c = await client(f.addr, sent);
      try {
        await got;
        assert.equal(f.served.length, 0, what);
        assert.equal(f.clients.length, 1, what);
        assert.deepEqual(f.clients[0]!.pre, sent, what);
        // the connection is the caller's now: it can answer
        await writeAll(f.clients[0]!.conn, enc.encode("alert"));
        assert.equal(dec.decode(await readN(c, 5)), "alert", what);
      } finally {
        c.close();
      }
    });
  }
});

Deno.test("front door: without room (max_connections) every client is handed back", () =>
  withFront(async (f) => {
    await f.pooled(0);
    await f.routes([{ name: "a.test", expiresAt: FAR, buckets: [0] }]);
    const got = f.next();
    const c = await client(f.addr, clientHello("a.test"));
    try {
      await got;
      assert.equal(f.served.length, 0);
      assert.equal(f.clients.length, 1);
    } finally {
      c.close();
    }
  }, 0));

Deno.test("front door: an idle pooled connection ends on EOF, stray bytes or unpark()", () =>
  withFront(async (f) => {
    const eof = await f.pooled(0);
    const data = await f.pooled(0);
    const timeout = await f.pooled(0);
    eof.far.close();
    assert.equal(await within(eof.parked.result, 3000, "eof"), "eof");
    await writeAll(data.far, new Uint8Array([1, 2, 3]));
    assert.equal(await within(data.parked.result, 3000, "data"), "data");
    assert.equal((await readAll(data.far)).length, 0);
    timeout.parked.unpark("timeout");
    assert.equal(await within(timeout.parked.result, 3000, "timeout"), "timeout");
    assert.equal((await readAll(timeout.far)).length, 0);
    // none is left for a client
    await f.routes([{ name: "a.test", expiresAt: FAR, buckets: [0] }]);
    const got = f.next();
    const c = await client(f.addr, clientHello("a.test"));
    await got;
    assert.equal(f.clients.length, 1);
    c.close();
  }));

Deno.test("front door: closing it stops accepting; Net.close() ends idle pooled connections", () =>
  withFront(async (f) => {
    const { parked } = await f.pooled(0);
    f.close();
    // the worker closes the listening socket when it reads the command: wait for the refusal
    const deadline = Date.now() + 3000;
    for (;;) {
      try {
        const c = await Deno.connect({ hostname: f.addr.hostname, port: f.addr.port });
        c.close();
      } catch (err) {
        // refused, or reset when an earlier probe sat in the queue of the socket being closed
        assert.ok(
          err instanceof Deno.errors.ConnectionRefused ||
            err instanceof Deno.errors.ConnectionReset,
          String(err),
        );
        break;
      }
      assert.ok(Date.now() < deadline, "still accepting 3 s after close");
      await new Promise((r) => setTimeout(r, 10)); // polling for the refusal, bounded above
    }
    await within(f.net.close(), 3000, "Net.close()"); // before the far ends close
    assert.equal(await within(parked.result, 3000, "result"), "stopping");
  }));

Deno.test("front door: a hello in pieces is read on in the worker and served from the pool", () =>
  withFront(async (f) => {
    const p = await f.pooled(0);
    await f.routes([{ name: "a.test", expiresAt: FAR, buckets: [0] }]);
    const hello = clientHello("a.test", 1500); // longer than one segment on a real network
    const c = await Deno.connect({ hostname: f.addr.hostname, port: f.addr.port });
    try {
      c.setNoDelay(true);
      const got = f.next();
      for (const [from, to] of [[0, 20], [20, 700], [700, hello.length]]) {
        await writeAll(c, hello.subarray(from, to));
        // spaced out, so that the worker reads them apart (not synchronisation: any split works)
        await new Promise((r) => setTimeout(r, 30));
      }
      await got;
      assert.equal(f.clients.length, 0, "not handed back");
      assert.equal(f.served[0]!.name, "a.test");
      const want = replayOf("a.test", hello);
      assert.deepEqual(await readN(p.far, want.length), want);
    } finally {
      c.close();
    }
  }));

Deno.test("front door: a hello that does not complete in time is closed and counted", () =>
  withFront(async (f) => {
    await f.pooled(0);
    await f.routes([{ name: "a.test", expiresAt: FAR, buckets: [0] }]);
    const got = f.next();
    const started = performance.now();
    const c = await client(f.addr, clientHello("a.test").subarray(0, 20));
    try {
      await got;
      assert.ok(performance.now() - started >= HELLO_TIMEOUT_MS - 50, "not before the timeout");
      assert.equal(f.timeouts.length, 1);
      assert.equal(f.timeouts[0]!.n, 1);
      assert.equal(f.timeouts[0]!.last.port, (c.localAddr as Deno.NetAddr).port);
      assert.equal((await readAll(c)).length, 0); // closed
      assert.equal(f.served.length + f.clients.length, 0);
    } finally {
      c.close();
    }
  }));

Deno.test("front door: a client that closes before its hello is complete is handed back", () =>
  withFront(async (f) => {
    await f.routes([{ name: "a.test", expiresAt: FAR, buckets: [0] }]);
    const part = clientHello("a.test").subarray(0, 20);
    const got = f.next();
    const c = await client(f.addr, part);
    await c.closeWrite();
    await got;
    assert.equal(f.clients.length, 1);
    assert.deepEqual(f.clients[0]!.pre, part);
    c.close();
  }));

Deno.test("front door: without room a client with a part of its hello is handed back, not held", () =>
  withFront(async (f) => {
    await f.pooled(0);
    await f.routes([{ name: "a.test", expiresAt: FAR, buckets: [0] }]);
    const part = clientHello("a.test").subarray(0, 20);
    const got = f.next();
    const c = await client(f.addr, part);
    try {
      await got; // at once: the main thread counts it against max_connections
      assert.equal(f.timeouts.length, 0);
      assert.equal(f.clients.length, 1);
      assert.deepEqual(f.clients[0]!.pre, part);
    } finally {
      c.close();
    }
  }, 0));
