import assert from "node:assert/strict";
import { connectNative, listenNative, type NativeConn, Reactor } from "./reactor.ts";
import { readAll, readExact, writeAll } from "../io.ts";
import { tryClose } from "../conn.ts";
import { within } from "../_testing.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** Runs `fn` with a fresh reactor, closed afterwards (its epoll loop must be gone at the end). */
async function withReactor(fn: (r: Reactor) => Promise<void>): Promise<void> {
  const r = new Reactor();
  try {
    await fn(r);
  } finally {
    await within(r.close(), 2000, "reactor close");
  }
}

/** `n` bytes of a pattern that is not periodic at any small power of two. */
function pattern(n: number, seed = 1): Uint8Array {
  const out = new Uint8Array(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

/** A port nothing listens on (bound and released just now). */
function closedPort(hostname: string): number {
  const l = Deno.listen({ hostname, port: 0 });
  const port = l.addr.port;
  l.close();
  return port;
}

for (const hostname of ["127.0.0.1", "::1"]) {
  Deno.test(`NativeListener accepts a Deno.connect peer on ${hostname}; bytes go both ways`, () =>
    withReactor(async (r) => {
      const listener = await listenNative(r, { hostname, port: 0 });
      let server: NativeConn | undefined;
      let client: Deno.TcpConn | undefined;
      try {
        assert.equal(listener.addr.hostname, hostname);
        assert.notEqual(listener.addr.port, 0);
        [client, server] = await within(
          Promise.all([Deno.connect({ hostname, port: listener.addr.port }), listener.accept()]),
        );
        assert.deepEqual(server.remoteAddr, { ...client.localAddr });
        await within(writeAll(server, enc.encode("hello from native")));
        const got = new Uint8Array(17);
        assert.ok(await within(readExact(client, got)));
        assert.equal(dec.decode(got), "hello from native");
        await within(writeAll(client, enc.encode("hello from deno")));
        const back = new Uint8Array(15);
        assert.ok(await within(readExact(server, back)));
        assert.equal(dec.decode(back), "hello from deno");
        // read returns null at EOF
        client.close();
        client = undefined;
        assert.equal(await within(server.read(new Uint8Array(16))), null);
      } finally {
        if (client) tryClose(client);
        if (server) tryClose(server);
        listener.close();
      }
    }));

  Deno.test(`connectNative() reaches a Deno.listen server on ${hostname}; bytes go both ways`, () =>
    withReactor(async (r) => {
      using listener = Deno.listen({ hostname, port: 0 });
      let client: NativeConn | undefined;
      let server: Deno.Conn | undefined;
      try {
        [client, server] = await within(
          Promise.all([
            connectNative(r, { hostname, port: listener.addr.port }),
            listener.accept(),
          ]),
        );
        assert.deepEqual(client.remoteAddr, { ...listener.addr });
        assert.ok(client.fd >= 0);
        const up = pattern(200_000, 7);
        const down = pattern(300_000, 9);
        // both directions at once, larger than a socket buffer
        const [gotUp, gotDown] = await within(Promise.all([
          (async () => {
            const b = new Uint8Array(up.length);
            assert.ok(await readExact(server!, b));
            return b;
          })(),
          (async () => {
            const b = new Uint8Array(down.length);
            assert.ok(await readExact(client!, b));
            return b;
          })(),
          writeAll(client, up),
          writeAll(server, down),
        ]));
        assert.deepEqual(gotUp, up);
        assert.deepEqual(gotDown, down);
        server.close();
        server = undefined;
        assert.equal(await within(client.read(new Uint8Array(8))), null);
      } finally {
        if (client) tryClose(client);
        if (server) tryClose(server);
      }
    }));
}

Deno.test("connectNative() and NativeListener talk to each other", () =>
  withReactor(async (r) => {
    const listener = await listenNative(r, { hostname: "127.0.0.1", port: 0 });
    let a: NativeConn | undefined;
    let b: NativeConn | undefined;
    try {
      [a, b] = await within(
        Promise.all([
          connectNative(r, { hostname: "127.0.0.1", port: listener.addr.port }),
          listener.accept(),
        ]),
      );
      const data = pattern(1 << 20, 3);
      const [got] = await within(Promise.all([
        (async () => {
          const buf = new Uint8Array(data.length);
          assert.ok(await readExact(b!, buf));
          return buf;
        })(),
        writeAll(a, data),
      ]));
      assert.deepEqual(got, data);
      await within(writeAll(b, enc.encode("ok")));
      await b.closeWrite();
      assert.equal(dec.decode(await within(readAll(a))), "ok");
    } finally {
      if (a) tryClose(a);
      if (b) tryClose(b);
      listener.close();
    }
  }));

Deno.test("NativeListener on :: reports an IPv4 peer as Deno does (::ffff:127.0.0.1)", () =>
  withReactor(async (r) => {
    const listener = await listenNative(r, { hostname: "::", port: 0 });
    let client: Deno.TcpConn | undefined;
    let server: NativeConn | undefined;
    try {
      [client, server] = await within(
        Promise.all([
          Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port }),
          listener.accept(),
        ]),
      );
      assert.deepEqual(server.remoteAddr, {
        transport: "tcp",
        hostname: "::ffff:127.0.0.1",
        port: client.localAddr.port,
      });
    } finally {
      if (client) tryClose(client);
      if (server) tryClose(server);
      listener.close();
    }
  }));

Deno.test("NativeConn.closeWrite() sends EOF and reading goes on", () =>
  withReactor(async (r) => {
    using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    let client: NativeConn | undefined;
    let server: Deno.Conn | undefined;
    try {
      [client, server] = await within(
        Promise.all([
          connectNative(r, { hostname: "127.0.0.1", port: listener.addr.port }),
          listener.accept(),
        ]),
      );
      await within(writeAll(client, enc.encode("request")));
      await client.closeWrite();
      // the peer reads to EOF, then answers on its still-open half
      assert.equal(dec.decode(await within(readAll(server))), "request");
      await within(writeAll(server, enc.encode("response")));
      await server.closeWrite();
      assert.equal(dec.decode(await within(readAll(client))), "response");
      // writing after closeWrite fails
      await assert.rejects(client.write(enc.encode("x")), Deno.errors.BrokenPipe);
    } finally {
      if (client) tryClose(client);
      if (server) tryClose(server);
    }
  }));

Deno.test("NativeConn.close() rejects a pending read with BadResource; a second close does nothing", () =>
  withReactor(async (r) => {
    using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    let client: NativeConn | undefined;
    let server: Deno.Conn | undefined;
    try {
      [client, server] = await within(
        Promise.all([
          connectNative(r, { hostname: "127.0.0.1", port: listener.addr.port }),
          listener.accept(),
        ]),
      );
      const pending = client.read(new Uint8Array(16));
      // a second read at the same time is refused
      await assert.rejects(client.read(new Uint8Array(16)), Deno.errors.Busy);
      client.close();
      assert.equal(client.fd, -1);
      await assert.rejects(within(pending), Deno.errors.BadResource);
      client.close(); // closing twice (or after a hand-over) is a no-op, and builds no error
      await assert.rejects(client.read(new Uint8Array(1)), Deno.errors.BadResource);
      await assert.rejects(client.write(new Uint8Array(1)), Deno.errors.BadResource);
      await assert.rejects(client.closeWrite(), Deno.errors.BadResource);
      // the peer sees the connection end
      assert.equal(await within(server.read(new Uint8Array(1))), null);
    } finally {
      if (client) tryClose(client);
      if (server) tryClose(server);
    }
  }));

Deno.test("NativeConn reports a peer's reset as ConnectionReset, then writes fail", () =>
  withReactor(async (r) => {
    const listener = await listenNative(r, { hostname: "127.0.0.1", port: 0 });
    let a: NativeConn | undefined;
    let b: NativeConn | undefined;
    try {
      [a, b] = await within(
        Promise.all([
          connectNative(r, { hostname: "127.0.0.1", port: listener.addr.port }),
          listener.accept(),
        ]),
      );
      const reading = a.read(new Uint8Array(16));
      await within(writeAll(a, new Uint8Array(100)));
      assert.equal(await within(b.read(new Uint8Array(1))), 1);
      b.close(); // 99 bytes unread: a plain close() sends RST
      b = undefined;
      await assert.rejects(within(reading), Deno.errors.ConnectionReset);
      const conn = a;
      await assert.rejects(
        within(writeAll(conn, new Uint8Array(1000))),
        (err) =>
          err instanceof Deno.errors.BrokenPipe || err instanceof Deno.errors.ConnectionReset,
      );
    } finally {
      if (a) tryClose(a);
      if (b) tryClose(b);
      listener.close();
    }
  }));

Deno.test("NativeListener.close() ends for await and rejects a pending accept", () =>
  withReactor(async (r) => {
    const listener = await listenNative(r, { hostname: "127.0.0.1", port: 0 });
    const accepted: NativeConn[] = [];
    let client: Deno.TcpConn | undefined;
    try {
      const first = Promise.withResolvers<void>();
      const loop = (async () => {
        for await (const conn of listener) {
          accepted.push(conn);
          first.resolve();
        }
      })();
      client = await within(Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port }));
      await within(first.promise, 5000, "the loop accepting");
      await within(writeAll(client, enc.encode("x")));
      assert.equal(await within(accepted[0]!.read(new Uint8Array(1))), 1);
      // the loop is back in accept() by now (it resumed before this read's wake-up)
      listener.close();
      await within(loop, 2000, "for await ends");
      assert.equal(accepted.length, 1);
      assert.throws(() => listener.close(), Deno.errors.BadResource);

      const l2 = await listenNative(r, { hostname: "127.0.0.1", port: 0 });
      const pending = l2.accept();
      l2.close();
      await assert.rejects(within(pending), Deno.errors.BadResource);
      await assert.rejects(l2.accept(), Deno.errors.BadResource);
    } finally {
      if (client) tryClose(client);
      for (const c of accepted) tryClose(c);
      tryClose(listener);
    }
  }));

Deno.test("listenNative() on a taken port throws AddrInUse naming the address", () =>
  withReactor(async (r) => {
    using taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = taken.addr.port;
    await assert.rejects(
      listenNative(r, { hostname: "127.0.0.1", port }),
      (err: unknown) => {
        assert.ok(err instanceof Deno.errors.AddrInUse, String(err));
        assert.match(err.message, new RegExp(`127\\.0\\.0\\.1:${port}\\b`));
        return true;
      },
    );
    const native = await listenNative(r, { hostname: "::1", port: 0 });
    try {
      await assert.rejects(
        listenNative(r, { hostname: "::1", port: native.addr.port }),
        (err: unknown) => {
          assert.ok(err instanceof Deno.errors.AddrInUse, String(err));
          assert.ok(err.message.includes(`[::1]:${native.addr.port}`), err.message);
          return true;
        },
      );
    } finally {
      native.close();
    }
  }));

Deno.test("connectNative() to a closed port rejects with ConnectionRefused", () =>
  withReactor(async (r) => {
    for (const hostname of ["127.0.0.1", "::1"]) {
      const port = closedPort(hostname);
      await assert.rejects(
        within(connectNative(r, { hostname, port })),
        (err: unknown) => {
          assert.ok(err instanceof Deno.errors.ConnectionRefused, String(err));
          assert.ok(err.message.includes(`:${port}`), err.message);
          return true;
        },
      );
    }
  }));

Deno.test("connectNative() with an aborted signal rejects with the signal's reason", () =>
  withReactor(async (r) => {
    using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = listener.addr.port;
    const reason = new Error("stop dialling");

    const already = new AbortController();
    already.abort(reason);
    await assert.rejects(
      connectNative(r, { hostname: "127.0.0.1", port, signal: already.signal }),
      (err) => err === reason,
    );

    // aborted right after the call, before the connect could finish
    const late = new AbortController();
    const p = connectNative(r, { hostname: "127.0.0.1", port, signal: late.signal });
    late.abort(reason);
    await assert.rejects(within(p), (err) => err === reason);

    // the kernel may have completed the abandoned handshakes: they were closed, not leaked
    listener.close();
  }));

Deno.test("NativeConn.write() waits for a slow reader: 8 MiB arrive whole and in order", () =>
  withReactor(async (r) => {
    using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    let writer: NativeConn | undefined;
    let reader: Deno.Conn | undefined;
    try {
      [writer, reader] = await within(
        Promise.all([
          connectNative(r, { hostname: "127.0.0.1", port: listener.addr.port }),
          listener.accept(),
        ]),
      );
      const data = pattern(8 << 20, 11);
      let writes = 0;
      let short = 0;
      const w = writer;
      const counting = {
        async write(buf: Uint8Array) {
          const n = await w.write(buf);
          writes++;
          if (n < buf.length) short++;
          return n;
        },
      };
      const sending = (async () => {
        await writeAll(counting, data);
        await w.closeWrite();
      })();
      // read in small pieces, yielding to the event loop now and then
      const got = new Uint8Array(data.length);
      let off = 0;
      const rd = reader;
      await within(
        (async () => {
          const buf = new Uint8Array(4096);
          for (let i = 0;; i++) {
            const n = await rd.read(buf);
            if (n === null) break;
            got.set(buf.subarray(0, n), off);
            off += n;
            if (i % 16 === 0) await new Promise((res) => setTimeout(res, 0));
          }
        })(),
        8000,
        "slow read of 8 MiB",
      );
      await within(sending);
      assert.equal(off, data.length);
      assert.ok(got.every((b, i) => b === data[i]), "bytes differ");
      assert.ok(short > 0, `the socket buffer never filled (${writes} writes)`);
    } finally {
      if (writer) tryClose(writer);
      if (reader) tryClose(reader);
    }
  }));

Deno.test("Reactor.close() is idempotent and refuses new watches", async () => {
  const r = new Reactor();
  await r.close();
  await r.close();
  await assert.rejects(
    listenNative(r, { hostname: "127.0.0.1", port: 0 }).then((l) => {
      try {
        return l.accept();
      } finally {
        l.close();
      }
    }),
    Deno.errors.BadResource,
  );
});

Deno.test("listenNative names an IPv6 address once in brackets; a port over 65535 is refused", () =>
  withReactor(async (r) => {
    const first = await listenNative(r, { hostname: "[::1]", port: 0 });
    try {
      const err = await listenNative(r, { hostname: "[::1]", port: first.addr.port }).then(
        (l) => {
          l.close();
          throw new Error("a second listener on the same port");
        },
        (e) => e,
      );
      assert.ok(err instanceof Deno.errors.AddrInUse);
      assert.match(err.message, new RegExp(`on \\[::1\\]:${first.addr.port}: EADDRINUSE`));
      assert.doesNotMatch(err.message, /\[\[/);
    } finally {
      first.close();
    }
    await assert.rejects(listenNative(r, { hostname: "127.0.0.1", port: 70_000 }), RangeError);
  }));

Deno.test("a NativeConn closed after its reactor closes the socket and does not throw", async () => {
  const r = new Reactor();
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  let server: Deno.Conn | undefined;
  try {
    const [client, s] = await within(
      Promise.all([
        connectNative(r, { hostname: "127.0.0.1", port: listener.addr.port }),
        listener.accept(),
      ]),
    );
    server = s;
    const pending = client.read(new Uint8Array(8)); // watched by the reactor
    await within(r.close(), 2000, "reactor close");
    client.close();
    await assert.rejects(within(pending), Deno.errors.BadResource);
    assert.equal(await within(server.read(new Uint8Array(1))), null, "the peer sees the end");
  } finally {
    if (server) tryClose(server);
    await r.close();
  }
});

// The pool thread's epoll_wait returns an event for socket N; before the loop dispatches it, N is
// closed and the next accept gets the same number N. That event is not the new socket's.
// (Another test of this process may take the freed fd first: then the round shows nothing.)
Deno.test("a stale event of a closed socket does not wake the socket that reuses its fd", () =>
  withReactor(async (r) => {
    const l = await listenNative(r, { hostname: "127.0.0.1", port: 0 });
    const open: NativeConn[] = [];
    try {
      const connect = () => connectNative(r, { hostname: "127.0.0.1", port: l.addr.port });
      const [z, zPeer] = await within(Promise.all([connect(), l.accept()]));
      open.push(z, zPeer);
      const one = new Uint8Array(1);
      for (let round = 0; round < 5; round++) {
        const p = await within(connect());
        open.push(p);
        const a = await within(l.accept());
        open.push(a);
        open.push(await within(connect())); // waits in the backlog: the next accept
        const aWait = a.waitReadable();
        // one event dispatched: the loop is back in its wait on the pool thread when this returns
        const parked = z.waitReadable();
        await zPeer.write(one);
        await within(parked, 2000, "z readable");
        assert.equal(await z.read(one), 1);
        // all in one task: data for `a`, `a` closed, its fd reused, the new socket watched
        await p.write(one);
        // Not a synchronisation: the pool thread's wait returns in microseconds, this busy moment
        // only makes sure it did before `a` goes (a correct reactor passes whatever the timing).
        const t0 = performance.now();
        while (performance.now() - t0 < 5) { /* the pool thread takes the event of `a` */ }
        const fd = a.fd;
        a.cancelWait();
        a.close();
        const b = await l.accept(); // accept4 ran synchronously
        open.push(b);
        let woke = false;
        const bWait = b.waitReadable().then(() => (woke = true));
        await aWait;
        // an event after all that: every batch before it was dispatched when this wait ends
        const zWait = z.waitReadable();
        await zPeer.write(one);
        await within(zWait, 2000, "z readable");
        assert.equal(await z.read(one), 1);
        if (b.fd === fd) assert.equal(woke, false, "b has no data and must still be waiting");
        b.cancelWait();
        await within(bWait);
      }
    } finally {
      for (const c of open) c.close();
      l.close();
    }
  }));
