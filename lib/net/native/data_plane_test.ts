import assert from "node:assert/strict";
import { type Net, type NetListener, openNet } from "../net.ts";
import { splice, type SpliceOptions, type SpliceResult } from "../splice.ts";
import { readAll, readExact, writeAll } from "../io.ts";
import { type ByteConn, tryClose } from "../conn.ts";
import { within } from "../_testing.ts";
import { listenNative, NativeConn, Reactor } from "./reactor.ts";
import { EFD_CLOEXEC, EFD_NONBLOCK } from "./libc.ts";
import { nextSpliceId } from "./data_plane.ts";
import {
  HEAD,
  MAIL_BYTES,
  OP_SPLICE,
  OP_STOP,
  R_EOF,
  REPORT_BYTES,
  REPORT_INTS,
  REPORT_SLOTS,
  RING_BYTES,
  RING_SLOTS,
  SLEEPING,
  slotAt,
  SLOTS_AT,
  TAIL,
  type WorkerInit,
} from "./data_plane_layout.ts";

const LOOPBACK = { hostname: "127.0.0.1", port: 0 } as const;
const enc = new TextEncoder();
const dec = new TextDecoder();

/** Runs `fn` with a native Net, closed afterwards. */
async function withNet(fn: (net: Net) => Promise<void>): Promise<void> {
  const net = await openNet("native");
  try {
    assert.equal(net.kind, "native");
    await fn(net);
  } finally {
    await within(net.close(), 3000, "Net.close()");
  }
}

/** `n` pseudo-random bytes (xorshift), cheap enough for 16 MiB. */
function pattern(n: number, seed = 1): Uint8Array {
  const out = new Uint8Array(n);
  const words = new Uint32Array(out.buffer, 0, n >>> 2);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    words[i] = x;
  }
  for (let i = words.length * 4; i < n; i++) out[i] = i & 0xff;
  return out;
}

async function sha256(data: Uint8Array): Promise<string> {
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", data as Uint8Array<ArrayBuffer>));
  return Array.from(d, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Reads to EOF in `chunk`-byte reads, yielding to the event loop every `every` reads. */
async function slowReadAll(conn: ByteConn, size: number, chunk = 4096, every = 16) {
  const out = new Uint8Array(size);
  let off = 0;
  const buf = new Uint8Array(chunk);
  for (let i = 0;; i++) {
    const n = await conn.read(buf);
    if (n === null) break;
    if (off + n > size) throw new Error(`more than ${size} bytes`);
    out.set(buf.subarray(0, n), off);
    off += n;
    if (i % every === 0) await new Promise((res) => setTimeout(res, 0));
  }
  return out.subarray(0, off);
}

/** A Deno client connection to `addr`. */
function dial(addr: Deno.NetAddr): Promise<Deno.TcpConn> {
  return Deno.connect({ hostname: addr.hostname, port: addr.port });
}

/** Accepts one connection on `listener`, dials `target` through `net`, splices them. */
async function relayOne(
  net: Net,
  listener: NetListener,
  target: Deno.NetAddr,
  options: SpliceOptions = {},
): Promise<SpliceResult> {
  const a = await listener.accept();
  let b: ByteConn;
  try {
    b = await net.connect({ hostname: target.hostname, port: target.port });
  } catch (err) {
    tryClose(a);
    throw err;
  }
  assert.ok(a instanceof NativeConn && b instanceof NativeConn, "native connections");
  return await splice(a, b, options);
}

/** A Deno.listen server running `handle` for each connection; closes them all on dispose. */
function startServer(
  handle: (conn: Deno.Conn) => Promise<void>,
): AsyncDisposable & { addr: Deno.NetAddr; conns: Set<Deno.Conn> } {
  const listener = Deno.listen(LOOPBACK);
  const conns = new Set<Deno.Conn>();
  const tasks = new Set<Promise<void>>();
  const loop = (async () => {
    for await (const conn of listener) {
      conns.add(conn);
      const t = handle(conn).catch(() => {}).finally(() => {
        tryClose(conn);
        conns.delete(conn);
      });
      tasks.add(t);
      t.finally(() => tasks.delete(t));
    }
  })();
  return {
    addr: listener.addr,
    conns,
    async [Symbol.asyncDispose]() {
      tryClose(listener);
      for (const c of conns) tryClose(c);
      await within(loop, 3000, "server loop");
      await within(Promise.all(tasks), 3000, "server tasks");
    },
  };
}

/** Echoes until EOF, then half-closes and waits for the relay to close. */
async function echo(conn: Deno.Conn): Promise<void> {
  const buf = new Uint8Array(64 * 1024);
  for (let n; (n = await conn.read(buf)) !== null;) await writeAll(conn, buf.subarray(0, n));
  await conn.closeWrite();
  await conn.read(buf);
}

Deno.test("DataPlane: a relay carries 16 MiB both ways unchanged", () =>
  withNet(async (net) => {
    await using server = startServer(echo);
    const listener = await net.listen(LOOPBACK);
    let client: Deno.TcpConn | undefined;
    try {
      const result = relayOne(net, listener, server.addr, { names: ["client", "server"] });
      client = await within(dial(listener.addr));
      const data = pattern(16 << 20, 5);
      const c = client;
      const [got] = await within(
        Promise.all([
          readAll(c),
          (async () => {
            await writeAll(c, data);
            await c.closeWrite();
          })(),
        ]),
        8000,
        "16 MiB through the relay",
      );
      assert.equal(got.length, data.length);
      assert.equal(await sha256(got), await sha256(data));
      assert.deepEqual(await within(result), {
        aToB: data.length,
        bToA: data.length,
        reason: "eof",
      });
    } finally {
      if (client) tryClose(client);
      listener.close();
    }
  }));

Deno.test("DataPlane: half-close passes EOF on and the other direction goes on", () =>
  withNet(async (net) => {
    const upstreamSaw = Promise.withResolvers<string>();
    await using server = startServer(async (conn) => {
      // reads to the client's EOF, then answers and closes
      upstreamSaw.resolve(dec.decode(await readAll(conn)));
      await writeAll(conn, enc.encode("world!"));
      conn.close();
    });
    const listener = await net.listen(LOOPBACK);
    let client: Deno.TcpConn | undefined;
    try {
      const result = relayOne(net, listener, server.addr);
      client = await within(dial(listener.addr));
      await within(writeAll(client, enc.encode("hello")));
      await client.closeWrite();
      assert.equal(await within(upstreamSaw.promise), "hello");
      assert.equal(dec.decode(await within(readAll(client))), "world!");
      assert.deepEqual(await within(result), { aToB: 5, bToA: 6, reason: "eof" });
    } finally {
      if (client) tryClose(client);
      listener.close();
    }
  }));

/** Reads and discards to the end; a reset counts as the end. */
async function untilEnd(conn: ByteConn): Promise<null> {
  const buf = new Uint8Array(4096);
  try {
    while ((await conn.read(buf)) !== null) { /* discard */ }
  } catch (err) {
    if (!(err instanceof Deno.errors.ConnectionReset)) throw err;
  }
  return null;
}

// A reset needs a plain close() with unread data: Deno's close() sends FIN first (it shuts the
// socket down for writing), so the resetting peer is a NativeConn, whose close() does not.
Deno.test("DataPlane: a reset by the upstream ends the splice as failed and closes the client", () =>
  withNet(async (net) => {
    const upstreams = await net.listen(LOOPBACK);
    const listener = await net.listen(LOOPBACK);
    let client: Deno.TcpConn | undefined;
    let upstream: ByteConn | undefined;
    try {
      const result = relayOne(net, listener, upstreams.addr, { names: ["client", "server"] });
      [client, upstream] = await within(Promise.all([dial(listener.addr), upstreams.accept()]));
      await within(writeAll(client, new Uint8Array(1000).fill(7)));
      // read one byte of the segment and close with the rest unread: Linux sends RST
      assert.equal(await within(upstream.read(new Uint8Array(1))), 1);
      upstream.close();
      upstream = undefined;
      const r = await within(result, 5000, "splice result after RST");
      assert.equal(r.reason, "server read failed: ECONNRESET (104)");
      assert.equal(r.aToB, 1000);
      assert.equal(r.bToA, 0);
      assert.equal(await within(untilEnd(client)), null); // the relay closed the client
    } finally {
      if (client) tryClose(client);
      if (upstream) tryClose(upstream);
      listener.close();
      upstreams.close();
    }
  }));

Deno.test("DataPlane: a reset by the client ends the splice as failed and closes upstream", () =>
  withNet(async (net) => {
    const upstreamEnd = Promise.withResolvers<null>();
    await using server = startServer(async (conn) => {
      await writeAll(conn, new Uint8Array(1000).fill(9));
      upstreamEnd.resolve(await untilEnd(conn));
    });
    const listener = await net.listen(LOOPBACK);
    let client: ByteConn | undefined;
    try {
      const result = relayOne(net, listener, server.addr, { names: ["client", "server"] });
      client = await within(net.connect(listener.addr));
      assert.equal(await within(client.read(new Uint8Array(1))), 1);
      client.close(); // 999 bytes unread: RST
      client = undefined;
      const r = await within(result, 5000, "splice result after RST");
      assert.equal(r.reason, "client read failed: ECONNRESET (104)");
      assert.equal(r.aToB, 0);
      assert.equal(r.bToA, 1000);
      assert.equal(await within(upstreamEnd.promise), null); // the relay closed upstream
    } finally {
      if (client) tryClose(client);
      listener.close();
    }
  }));

Deno.test("DataPlane: aborting the signal ends a live splice and both peers see the end", () =>
  withNet(async (net) => {
    const upstreamEnded = Promise.withResolvers<number | null>();
    await using server = startServer(async (conn) => {
      const buf = new Uint8Array(1024);
      for (let n; (n = await conn.read(buf)) !== null;) await writeAll(conn, buf.subarray(0, n));
      upstreamEnded.resolve(null);
    });
    const listener = await net.listen(LOOPBACK);
    let client: Deno.TcpConn | undefined;
    const ctl = new AbortController();
    try {
      const result = relayOne(net, listener, server.addr, { signal: ctl.signal });
      client = await within(dial(listener.addr));
      // the splice is live: a round trip goes through
      await within(writeAll(client, enc.encode("ping")));
      const pong = new Uint8Array(4);
      assert.ok(await within(readExact(client, pong)));
      assert.equal(dec.decode(pong), "ping");
      ctl.abort();
      const r = await within(result);
      assert.equal(r.reason, "aborted");
      assert.equal(r.aToB, 4);
      assert.equal(r.bToA, 4);
      assert.equal(await within(client.read(new Uint8Array(4))), null);
      assert.equal(await within(upstreamEnded.promise), null);
    } finally {
      if (client) tryClose(client);
      listener.close();
    }
  }));

Deno.test("DataPlane: an already aborted signal closes both connections at once", () =>
  withNet(async (net) => {
    await using server = startServer(echo);
    const listener = await net.listen(LOOPBACK);
    let client: Deno.TcpConn | undefined;
    try {
      const result = relayOne(net, listener, server.addr, { signal: AbortSignal.abort() });
      client = await within(dial(listener.addr));
      assert.deepEqual(await within(result), { aToB: 0, bToA: 0, reason: "aborted" });
      assert.equal(await within(client.read(new Uint8Array(4))), null);
    } finally {
      if (client) tryClose(client);
      listener.close();
    }
  }));

Deno.test("DataPlane: 1,000 idle spliced pairs all end when their peers close", () =>
  withNet(async (net) => {
    const PAIRS = 1000;
    const upstreams: Deno.Conn[] = [];
    const allUp = Promise.withResolvers<void>();
    await using server = startServer(async (conn) => {
      upstreams.push(conn);
      if (upstreams.length === PAIRS) allUp.resolve();
      await conn.read(new Uint8Array(16)); // idle until the relay passes the client's EOF on
    });
    const listener = await net.listen(LOOPBACK);
    const clients: Deno.TcpConn[] = [];
    const results: Promise<SpliceResult>[] = [];
    try {
      for (let i = 0; i < PAIRS; i += 100) {
        const batch = await within(
          Promise.all(
            Array.from({ length: Math.min(100, PAIRS - i) }, async () => {
              const c = await dial(listener.addr);
              results.push(relayOne(net, listener, server.addr));
              return c;
            }),
          ),
        );
        clients.push(...batch);
      }
      await within(allUp.promise, 5000, "1,000 upstream connections");
      // every pair is in the data plane now: no main-thread socket is left
      const probe = clients[PAIRS - 1]!;
      await within(writeAll(probe, enc.encode("x"))); // a live pair: upstream's read ends
      for (const c of clients) c.close();
      clients.length = 0;
      const done = await within(Promise.all(results), 5000, "1,000 splices to end");
      assert.equal(done.length, PAIRS);
      const reasons = new Map<string, number>();
      for (const r of done) reasons.set(r.reason, (reasons.get(r.reason) ?? 0) + 1);
      assert.deepEqual([...reasons], [["eof", PAIRS]]);
      assert.equal(done.reduce((s, r) => s + r.aToB, 0), 1);
    } finally {
      for (const c of clients) tryClose(c);
      listener.close();
    }
  }));

Deno.test("DataPlane: Net.close() with live splices ends them as aborted", async () => {
  const net = await openNet("native");
  try {
    const ends: Promise<number | null>[] = [];
    await using server = startServer(async (conn) => {
      const buf = new Uint8Array(16);
      let n;
      while ((n = await conn.read(buf)) !== null) await writeAll(conn, buf.subarray(0, n));
    });
    const listener = await net.listen(LOOPBACK);
    const clients: Deno.TcpConn[] = [];
    const results: Promise<SpliceResult>[] = [];
    try {
      for (let i = 0; i < 3; i++) {
        results.push(relayOne(net, listener, server.addr));
        const c = await within(dial(listener.addr));
        clients.push(c);
        await within(writeAll(c, enc.encode("hi")));
        assert.ok(await within(readExact(c, new Uint8Array(2)))); // live
      }
    } finally {
      listener.close();
    }
    try {
      await within(net.close(), 3000, "Net.close() with live splices");
      const done = await within(Promise.all(results));
      for (const r of done) assert.deepEqual(r, { aToB: 2, bToA: 2, reason: "aborted" });
      for (const c of clients) ends.push(c.read(new Uint8Array(4)));
      assert.deepEqual(await within(Promise.all(ends)), [null, null, null]);
    } finally {
      for (const c of clients) tryClose(c);
    }
  } finally {
    await within(net.close(), 3000, "second Net.close()");
  }
});

for (const slow of ["upstream", "client"] as const) {
  Deno.test(`DataPlane: a slow ${slow} loses nothing (8 MiB, backpressure)`, () =>
    withNet(async (net) => {
      const data = pattern(8 << 20, slow === "client" ? 3 : 4);
      const upstreamGot = Promise.withResolvers<Uint8Array>();
      await using server = startServer(async (conn) => {
        if (slow === "upstream") {
          upstreamGot.resolve(await slowReadAll(conn, data.length));
        } else {
          await writeAll(conn, data);
          await conn.closeWrite();
          upstreamGot.resolve(await readAll(conn));
        }
      });
      const listener = await net.listen(LOOPBACK);
      let client: Deno.TcpConn | undefined;
      try {
        const result = relayOne(net, listener, server.addr);
        client = await within(dial(listener.addr));
        const c = client;
        if (slow === "upstream") {
          await within(writeAll(c, data), 8000, "writing 8 MiB");
          await c.closeWrite();
          const got = await within(upstreamGot.promise, 8000, "slow upstream");
          assert.equal(got.length, data.length);
          assert.ok(got.every((b, i) => b === data[i]), "bytes differ");
        } else {
          const got = await within(slowReadAll(c, data.length), 8000, "slow client");
          await c.closeWrite();
          assert.equal(got.length, data.length);
          assert.ok(got.every((b, i) => b === data[i]), "bytes differ");
          assert.equal((await within(upstreamGot.promise)).length, 0);
        }
        const r = await within(result);
        assert.deepEqual(r, {
          aToB: slow === "upstream" ? data.length : 0,
          bToA: slow === "client" ? data.length : 0,
          reason: "eof",
        });
      } finally {
        if (client) tryClose(client);
        listener.close();
      }
    }));
}

Deno.test("slotAt() stays inside the ring for every int32 HEAD/TAIL value", () => {
  const last = SLOTS_AT + (RING_SLOTS - 1) * 4;
  for (const i of [0, 1, RING_SLOTS - 1, RING_SLOTS, 0x7fff_ffff, -0x8000_0000, -1, -16_383]) {
    const at = slotAt(i);
    assert.ok(at >= SLOTS_AT && at <= last, `${i} -> ${at}`);
  }
  // consecutive values across the wrap use consecutive slots
  assert.equal(
    slotAt((0x7fff_ffff + 1) | 0),
    (slotAt(0x7fff_ffff) + 4 - SLOTS_AT) % (RING_SLOTS * 4) + SLOTS_AT,
  );
  assert.equal(slotAt(-0x8000_0000 + 1), slotAt(-0x8000_0000) + 4);
});

Deno.test("data-plane worker: the command ring works on when HEAD and TAIL wrap past 2^31", async () => {
  const r = new Reactor();
  const libc = r.libc;
  const wakeFd = libc.sym.eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  assert.ok(wakeFd >= 0);
  const sab = new SharedArrayBuffer(RING_BYTES);
  const ring = new Int32Array(sab);
  const START = 0x7fff_fffe; // the third command is at -2^31
  ring[HEAD] = ring[TAIL] = START;
  const worker = new Worker(new URL("./data_plane_worker.ts", import.meta.url), {
    type: "module",
  });
  const ready = Promise.withResolvers<void>();
  const stopped = Promise.withResolvers<void>();
  const reports: number[] = [];
  let reported = Promise.withResolvers<void>();
  worker.onmessage = (e: MessageEvent) => {
    const m = e.data as { type: string; reports?: number[]; error?: string };
    if (m.type === "ready") ready.resolve();
    else if (m.type === "done") {
      reports.push(...m.reports!);
      reported.resolve();
    } else if (m.type === "stopped") stopped.resolve();
    else stopped.reject(new Error(`worker ${m.type}: ${m.error}`));
  };
  worker.onerror = (e: ErrorEvent) => {
    e.preventDefault();
    ready.reject(new Error(e.message));
    stopped.reject(new Error(e.message));
  };
  const push = (op: number, id: number, fdA: number, fdB: number) => {
    const head = Atomics.load(ring, HEAD);
    assert.ok(((head - Atomics.load(ring, TAIL)) | 0) < RING_SLOTS);
    ring.set([op, id, fdA, fdB], slotAt(head));
    Atomics.store(ring, HEAD, (head + 1) | 0);
    if (Atomics.load(ring, SLEEPING) === 1) libc.sym.write(wakeFd, new BigUint64Array([1n]), 8n);
  };
  const conns: { close(): void }[] = [];
  const listener = await listenNative(r, LOOPBACK);
  try {
    // a report ring that is full: the worker falls back to postMessage, which this test reads
    const reportSab = new SharedArrayBuffer(REPORT_BYTES);
    new Int32Array(reportSab, 0, 2).set([REPORT_SLOTS, 0]);
    const mail = new SharedArrayBuffer(MAIL_BYTES);
    worker.postMessage({ sab, reports: reportSab, mail, wakeFd } satisfies WorkerInit);
    await within(ready.promise, 5000, "worker ready");
    const PAIRS = 5;
    for (let id = 1; id <= PAIRS; id++) {
      // two connections c1-s1 and s2-c2; the worker splices s1 with s2
      const [c1, s1] = await within(Promise.all([dial(listener.addr), listener.accept()]));
      conns.push(c1, s1);
      const [c2, s2] = await within(Promise.all([dial(listener.addr), listener.accept()]));
      conns.push(c2, s2);
      push(OP_SPLICE, id, s1.detach(), s2.detach());
      await within(writeAll(c1, enc.encode(`ping ${id}`)));
      const got = new Uint8Array(6);
      assert.ok(await within(readExact(c2, got), 5000, `pair ${id} carrying bytes`));
      assert.equal(dec.decode(got), `ping ${id}`);
      c1.close();
      c2.close();
      while (reports.length < id * REPORT_INTS) {
        await within(reported.promise, 5000, `pair ${id} reported`);
        reported = Promise.withResolvers<void>();
      }
      assert.deepEqual(reports.slice((id - 1) * REPORT_INTS, id * REPORT_INTS), [
        id,
        6,
        0,
        R_EOF,
        0,
        0,
      ]);
    }
    assert.equal(Atomics.load(ring, TAIL), (START + PAIRS) | 0);
  } finally {
    listener.close();
    for (const c of conns) tryClose(c);
    push(OP_STOP, 0, 0, 0);
    await within(stopped.promise, 3000, "worker stop").catch(() => {});
    worker.terminate();
    libc.sym.close(wakeFd);
    await r.close();
  }
});

for (const which of ["closed", "busy"] as const) {
  Deno.test(`DataPlane: splice() of a ${which} connection closes both and reports, never rejects`, () =>
    withNet(async (net) => {
      const upstreamEnd = Promise.withResolvers<null>();
      await using server = startServer(async (conn) => {
        upstreamEnd.resolve(await untilEnd(conn));
      });
      const listener = await net.listen(LOOPBACK);
      let client: Deno.TcpConn | undefined;
      try {
        const [c, a] = await within(Promise.all([dial(listener.addr), listener.accept()]));
        client = c;
        const b = await within(net.connect(server.addr));
        let pending: Promise<unknown> | undefined;
        if (which === "closed") b.close(); // e.g. closed by a deadline while dialling
        else {
          pending = b.read(new Uint8Array(8)); // a read still in flight
          pending.catch(() => {}); // asserted below
        }
        const r = await within(splice(a, b, { names: ["client", "server"] }));
        assert.equal(r.aToB, 0);
        assert.equal(r.bToA, 0);
        assert.match(r.reason, /^server read failed: /);
        if (pending) await assert.rejects(within(pending), Deno.errors.BadResource);
        // neither socket was leaked: both peers see the end
        assert.equal(await within(untilEnd(c)), null);
        if (which === "busy") assert.equal(await within(upstreamEnd.promise), null);
      } finally {
        if (client) tryClose(client);
        listener.close();
      }
    }));
}

Deno.test("nextSpliceId() wraps before 2^31 and skips ids whose splice is still live", () => {
  const none = new Set<number>();
  assert.equal(nextSpliceId(1, none), 1);
  assert.equal(nextSpliceId(0x7fff_fff0, none), 0x7fff_fff0);
  assert.equal(nextSpliceId(0x7fff_fff1, none), 1);
  // a connection spliced 2^31 splices ago is still open: its id is not given again
  const live = new Set([1, 2, 0x7fff_fff0]);
  assert.equal(nextSpliceId(1, live), 3);
  assert.equal(nextSpliceId(0x7fff_fff0, live), 3);
});

Deno.test("DataPlane: a socket the worker cannot watch ends its splice as failed and closes both", () =>
  withNet(async (net) => {
    // /dev/null cannot be polled: epoll_ctl refuses it (EPERM), as it would refuse a socket
    // when fs.epoll.max_user_watches is reached (ENOSPC)
    const lib = Deno.dlopen("libc.so.6", {
      open: { parameters: ["buffer", "i32"], result: "i32" },
    });
    const listener = await net.listen(LOOPBACK);
    let client: Deno.TcpConn | undefined;
    try {
      const fd = lib.symbols.open(enc.encode("/dev/null\0"), 2 | 0o2000000); // O_RDWR|O_CLOEXEC
      assert.ok(fd >= 0);
      client = await within(dial(listener.addr));
      const accepted = (await within(listener.accept())) as NativeConn;
      const unwatchable = new NativeConn(accepted.reactor, fd, {
        transport: "tcp",
        hostname: "127.0.0.1",
        port: 0,
      });
      const result = await within(
        splice(accepted, unwatchable, { names: ["client", "null"] }),
        5000,
        "the splice's end",
      );
      assert.match(result.reason, /^null watch failed: EPERM \(1\)$/);
      assert.equal(await within(client.read(new Uint8Array(1))), null, "the client sees the end");
    } finally {
      if (client) tryClose(client);
      listener.close();
      lib.close();
    }
  }));
