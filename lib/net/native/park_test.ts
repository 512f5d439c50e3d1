/**
 * Parked pooled dial-backs in the data-plane worker (DataPlane.park): the worker reads the pool
 * header, connects the internal server and splices, or hands the socket back. Real sockets on
 * loopback: the "public side" is a Deno listener the parked connection was dialled to.
 */
import assert from "node:assert/strict";
import { type Net, openNet } from "../net.ts";
import type { SpliceResult } from "../splice.ts";
import { readAll, readExact as readInto, writeAll } from "../io.ts";
import { within } from "../_testing.ts";
import type { NativeConn } from "./reactor.ts";
import type { DataPlane, Parked, ParkOptions } from "./data_plane.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** Reads exactly `n` bytes. */
async function readExact(conn: Deno.Conn | NativeConn, n: number): Promise<Uint8Array> {
  const buf = new Uint8Array(n);
  assert.ok(await readInto(conn, buf), "EOF before the bytes");
  return buf;
}

function header(name: string): Uint8Array {
  return new Uint8Array([1, name.length, ...enc.encode(name)]);
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

interface Setup {
  net: Net;
  plane: DataPlane;
  /** The parked connection's far end (what a public proxy holds). */
  pub: Deno.TcpConn;
  /** The private side's end, not parked yet. */
  conn: NativeConn;
}

/** A native Net, a pooled-like connection to a Deno listener; all closed afterwards. */
async function withParkable(fn: (s: Setup) => Promise<void>): Promise<void> {
  const net = await openNet("native");
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  let pub: Deno.TcpConn | undefined;
  try {
    const accepted = listener.accept();
    const conn = await net.connect(listener.addr) as NativeConn;
    pub = await accepted;
    const plane = conn.reactor.dataPlane!;
    await fn({ net, plane, pub, conn });
  } finally {
    try {
      pub?.close();
    } catch { /* closed by the test */ }
    listener.close();
    await within(net.close(), 3000, "Net.close()");
  }
}

/** Parks with handlers that record what happened. */
function parkRecording(plane: DataPlane, conn: NativeConn, extra: Partial<ParkOptions> = {}) {
  let served: ((v: { index: number; ended: Promise<SpliceResult> }) => void) | undefined;
  const servedP = new Promise<{ index: number; ended: Promise<SpliceResult> }>((r) => (served = r));
  let handed: ((v: { conn: NativeConn; name: string; rest: Uint8Array }) => void) | undefined;
  const handedP = new Promise<{ conn: NativeConn; name: string; rest: Uint8Array }>((r) =>
    handed = r
  );
  const parked = plane.park(conn, {
    names: ["dial-back", "internal"],
    onServed: (index, ended) => served!({ index, ended }),
    onHandback: (c, name, rest) => handed!({ conn: c, name, rest }),
    ...extra,
  });
  assert.ok(parked !== null, "park() took the connection");
  return { parked: parked as Parked, served: servedP, handed: handedP };
}

Deno.test("park: the worker serves a client for a routed name: connects, replays, splices", () =>
  withParkable(async ({ plane, pub, conn }) => {
    const internal = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    try {
      plane.setRoutes([
        { name: "other.test", hostname: "127.0.0.1", port: 1 },
        { name: "a.test", hostname: "127.0.0.1", port: internal.addr.port },
      ], 5000);
      const { parked, served } = parkRecording(plane, conn);
      assert.equal(plane.parked, 1);
      const accepted = internal.accept();
      await writeAll(pub, concat(header("a.test"), enc.encode("hello")));
      const server = await within(accepted, 3000, "internal accept");
      try {
        assert.equal(dec.decode(await readExact(server, 5)), "hello");
        assert.equal(await within(parked.result, 3000, "result"), null);
        const { index, ended } = await within(served, 3000, "onServed");
        assert.equal(index, 1);
        await writeAll(server, enc.encode("world"));
        assert.equal(dec.decode(await readExact(pub, 5)), "world");
        await writeAll(pub, enc.encode("!"));
        assert.equal(dec.decode(await readExact(server, 1)), "!");
        await pub.closeWrite();
        assert.equal((await readAll(server)).length, 0);
        await server.closeWrite();
        assert.equal((await readAll(pub)).length, 0);
        const r = await within(ended, 3000, "splice end");
        assert.equal(r.reason, "eof");
        assert.equal(r.aToB, 6); // the replayed hello and "!"
        assert.equal(r.bToA, 5);
        assert.equal(plane.parked, 0);
      } finally {
        server.close();
      }
    } finally {
      internal.close();
    }
  }));

Deno.test("park: a header in two pieces is still read", () =>
  withParkable(async ({ plane, pub, conn }) => {
    const internal = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    try {
      plane.setRoutes(
        [{ name: "split.test", hostname: "127.0.0.1", port: internal.addr.port }],
        5000,
      );
      const { served } = parkRecording(plane, conn);
      const accepted = internal.accept();
      const bytes = concat(header("split.test"), enc.encode("hi"));
      pub.setNoDelay(true);
      await writeAll(pub, bytes.subarray(0, 4));
      // the worker has read the first piece (it is waiting for the rest) once a later one arrives
      await new Promise((r) => setTimeout(r, 20)); // not synchronisation: a split on the wire
      await writeAll(pub, bytes.subarray(4));
      const server = await within(accepted, 3000, "internal accept");
      try {
        assert.equal(dec.decode(await readExact(server, 2)), "hi");
        const { ended } = await within(served, 3000, "onServed");
        pub.close();
        await server.closeWrite();
        const r = await within(ended, 3000, "splice end");
        assert.match(r.reason, /eof|failed/);
      } finally {
        server.close();
      }
    } finally {
      internal.close();
    }
  }));

Deno.test("park: a name without a route is handed back with what followed the header", () =>
  withParkable(async ({ plane, pub, conn }) => {
    plane.setRoutes([{ name: "a.test", hostname: "127.0.0.1", port: 1 }], 5000);
    const { parked, handed } = parkRecording(plane, conn);
    await writeAll(pub, concat(header("b.test"), enc.encode("rest")));
    const h = await within(handed, 3000, "onHandback");
    assert.equal(await parked.result, null);
    assert.equal(h.name, "b.test");
    assert.equal(dec.decode(h.rest), "rest");
    try {
      await writeAll(h.conn, enc.encode("back"));
      assert.equal(dec.decode(await readExact(pub, 4)), "back");
    } finally {
      h.conn.close();
    }
  }));

Deno.test("park: a wildcard or host-name route is left to the main thread (handed back)", () =>
  withParkable(async ({ plane, pub, conn }) => {
    plane.setRoutes([
      { name: "*.w.test", hostname: "127.0.0.1", port: 1 },
      { name: "h.test", hostname: "localhost", port: 1 },
    ], 5000);
    const { handed } = parkRecording(plane, conn);
    await writeAll(pub, concat(header("h.test"), enc.encode("x")));
    const h = await within(handed, 3000, "onHandback");
    assert.equal(h.name, "h.test");
    h.conn.close();
  }));

Deno.test("park: EOF, a bad header and unpark() end a parked connection with why", async () => {
  await withParkable(async ({ plane, pub, conn }) => {
    const { parked } = parkRecording(plane, conn);
    pub.close();
    assert.equal(await within(parked.result, 3000, "result"), "ended");
  });
  await withParkable(async ({ plane, pub, conn }) => {
    const { parked } = parkRecording(plane, conn);
    await writeAll(pub, enc.encode("GET / HTTP/1.1\r\n"));
    assert.equal(await within(parked.result, 3000, "result"), "not a pool header");
    assert.equal((await readAll(pub)).length, 0); // closed
  });
  await withParkable(async ({ plane, pub, conn }) => {
    const { parked } = parkRecording(plane, conn);
    parked.unpark("idle for 1000 ms");
    assert.equal(await within(parked.result, 3000, "result"), "idle for 1000 ms");
    assert.equal((await readAll(pub)).length, 0);
    parked.unpark("again"); // a no-op once ended
  });
});

Deno.test("park: a refused internal connect ends the client's splice as a connect failure", () =>
  withParkable(async ({ plane, pub, conn }) => {
    const gone = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = gone.addr.port;
    gone.close();
    plane.setRoutes([{ name: "a.test", hostname: "127.0.0.1", port }], 5000);
    const { served } = parkRecording(plane, conn);
    await writeAll(pub, concat(header("a.test"), enc.encode("hello")));
    const { ended } = await within(served, 3000, "onServed");
    const r = await within(ended, 3000, "splice end");
    assert.match(r.reason, /^internal connect failed: .*ECONNREFUSED/);
    assert.equal((await readAll(pub)).length, 0);
  }));

Deno.test("park: aborting the signal ends a parked connection, and Net.close() ends the rest", async () => {
  await withParkable(async ({ plane, pub, conn }) => {
    const ctl = new AbortController();
    const { parked } = parkRecording(plane, conn, { signal: ctl.signal });
    ctl.abort();
    assert.equal(await within(parked.result, 3000, "result"), "aborted");
    assert.equal((await readAll(pub)).length, 0);
    assert.equal(plane.park(conn, { onServed() {}, onHandback() {} }), null); // closed conn
  });
  await withParkable(async ({ net, plane, conn }) => {
    const { parked } = parkRecording(plane, conn);
    await within(net.close(), 3000, "Net.close()"); // before the far end closes
    assert.equal(await within(parked.result, 3000, "result after close"), "aborted");
  });
});
