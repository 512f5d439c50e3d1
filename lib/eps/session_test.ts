import assert from "node:assert/strict";
import { LinkClosedError, ProtocolError } from "../errors.ts";
import { readAll, writeAll } from "../net/io.ts";
import {
  encodeHeader,
  Flag,
  type Frame,
  FrameDecoder,
  type FrameHeader,
  FrameType,
  GoAwayCode,
  HEADER_LENGTH,
  INITIAL_STREAM_WINDOW,
} from "./frame.ts";
import { Session, type SessionOptions, type Stream } from "./session.ts";
import { tcpPair, within } from "../net/_testing.ts";

// ---- helpers ----------------------------------------------------------------------------------

type Opts = Omit<SessionOptions, "client">;

/** Two sessions over loopback TCP; disposal closes both and waits for both to end. */
async function sessionPair(client: Opts = {}, server: Opts = {}) {
  const [a, b] = await tcpPair();
  const c = new Session(a, { name: "server", keepaliveIntervalMs: 0, ...client, client: true });
  const s = new Session(b, { name: "client", keepaliveIntervalMs: 0, ...server, client: false });
  return {
    client: c,
    server: s,
    async [Symbol.asyncDispose]() {
      await Promise.all([c.close(), s.close()]);
    },
  };
}

function pattern(n: number, seed: number): Uint8Array {
  const b = new Uint8Array(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b[i] = x & 0xff;
  }
  return b;
}

const text = (s: string) => new TextEncoder().encode(s);
const untext = (b: Uint8Array) => new TextDecoder().decode(b);

async function acceptOne(s: Session): Promise<Stream> {
  const st = await within(s.accept(), 5000, "accept");
  assert.ok(st, "accept() returned null");
  return st;
}

/** Reads raw frames from a socket, payloads copied. Ends at EOF or a socket error. */
async function* rawFrames(conn: Deno.Conn, maxData = 16 * 1024 * 1024): AsyncGenerator<Frame> {
  const decoder = new FrameDecoder(maxData);
  const buf = new Uint8Array(64 * 1024);
  for (;;) {
    let n: number | null;
    try {
      n = await conn.read(buf);
    } catch {
      return;
    }
    if (n === null) return;
    decoder.push(buf.subarray(0, n));
    for (let f; (f = decoder.next()) !== undefined;) {
      yield { header: f.header, payload: f.owned ? f.payload : f.payload.slice(), owned: true };
    }
  }
}

function frame(h: FrameHeader, payload?: Uint8Array): Uint8Array {
  const out = new Uint8Array(HEADER_LENGTH + (payload?.length ?? 0));
  encodeHeader(h, out);
  if (payload) out.set(payload, HEADER_LENGTH);
  return out;
}

// ---- streams ----------------------------------------------------------------------------------

Deno.test("Session.open() and accept() carry an echo", async () => {
  await using p = await sessionPair();
  const st = p.client.open();
  assert.equal(st.id, 1);
  await st.write(text("hello"));
  const inbound = await acceptOne(p.server);
  assert.equal(inbound.id, 1);
  const buf = new Uint8Array(64);
  const n = await within(inbound.read(buf));
  assert.equal(untext(buf.subarray(0, n!)), "hello");
  await inbound.write(buf.subarray(0, n!));
  assert.equal(await within(st.read(buf)), 5);
  assert.equal(untext(buf.subarray(0, 5)), "hello");
  // The listener opens even ids.
  const back = p.server.open();
  assert.equal(back.id, 2);
  await back.write(text("x"));
  const fromServer = await acceptOne(p.client);
  assert.equal(fromServer.id, 2);
  st.reset();
  back.reset();
});

Deno.test("Stream carries more than a window both ways at once, byte for byte", async () => {
  await using p = await sessionPair();
  const up = pattern(3 * 1024 * 1024 + 17, 1);
  const down = pattern(2 * 1024 * 1024 + 5, 2);
  const st = p.client.open();
  const serverSide = (async () => {
    const inbound = await acceptOne(p.server);
    const [got] = await Promise.all([
      readAll(inbound),
      writeAll(inbound, down).then(() => inbound.closeWrite()),
    ]);
    return got;
  })();
  const [gotDown] = await within(
    Promise.all([readAll(st), st.write(up).then(() => st.closeWrite())]),
    20_000,
    "transfer",
  );
  const gotUp = await within(serverSide, 20_000, "server side");
  assert.equal(gotUp.length, up.length);
  assert.ok(gotUp.every((b, i) => b === up[i]), "upload differs");
  assert.equal(gotDown.length, down.length);
  assert.ok(gotDown.every((b, i) => b === down[i]), "download differs");
  await within(st.closed);
  assert.equal(p.client.streamCount, 0);
});

Deno.test("Stream echoes on 32 concurrent streams", async () => {
  await using p = await sessionPair({}, {
    onStream: (s) => {
      void (async () => {
        const buf = new Uint8Array(8192);
        for (let n; (n = await s.read(buf)) !== null;) await s.write(buf.subarray(0, n));
        await s.closeWrite();
      })().catch(() => s.reset());
    },
  });
  await within(
    Promise.all(Array.from({ length: 32 }, async (_, i) => {
      const data = pattern(100_000 + i, i + 10);
      const st = p.client.open();
      const [got] = await Promise.all([readAll(st), st.write(data).then(() => st.closeWrite())]);
      assert.deepEqual(got, data);
      await st.closed;
    })),
    20_000,
    "32 echoes",
  );
  assert.equal(p.client.streamCount, 0);
  assert.equal(p.server.streamCount, 0);
});

Deno.test("Stream.closeWrite() half-closes: the reply still arrives after FIN", async () => {
  await using p = await sessionPair();
  const st = p.client.open();
  await st.write(text("request"));
  await st.closeWrite();
  await st.closeWrite(); // idempotent
  await assert.rejects(st.write(text("more")), LinkClosedError);
  const inbound = await acceptOne(p.server);
  assert.equal(untext(await within(readAll(inbound))), "request"); // ends at FIN
  assert.equal(await inbound.read(new Uint8Array(8)), null);
  await inbound.write(text("reply"));
  await inbound.closeWrite();
  assert.equal(untext(await within(readAll(st))), "reply");
  await within(Promise.all([st.closed, inbound.closed]));
  assert.equal(p.client.streamCount, 0);
  assert.equal(p.server.streamCount, 0);
});

Deno.test("Stream.reset() is seen by the peer as a LinkClosedError", async () => {
  await using p = await sessionPair();
  const st = p.client.open();
  await st.write(text("x"));
  const inbound = await acceptOne(p.server);
  await inbound.read(new Uint8Array(1));
  const pending = inbound.read(new Uint8Array(8));
  st.reset();
  st.reset(); // idempotent
  await assert.rejects(within(pending), (err) => {
    assert.ok(err instanceof LinkClosedError);
    assert.match(err.message, /reset by "client"/);
    return true;
  });
  await assert.rejects(inbound.write(text("y")), LinkClosedError);
  await assert.rejects(st.read(new Uint8Array(1)), LinkClosedError);
  await within(Promise.all([st.closed, inbound.closed]));
  assert.equal(p.server.streamCount, 0);
});

Deno.test("Stream.close() sends FIN and drains what the peer still sends", async () => {
  await using p = await sessionPair();
  const st = p.client.open();
  await st.write(text("ask"));
  const inbound = await acceptOne(p.server);
  assert.equal(untext(await within(readN(inbound, 3))), "ask");
  inbound.close(); // FIN, read side still open: draining
  inbound.close(); // idempotent
  await assert.rejects(inbound.read(new Uint8Array(1)), LinkClosedError);
  assert.equal(await within(st.read(new Uint8Array(1))), null); // the FIN arrived
  // The peer can still send more than a window: the closed side credits it away.
  await within(st.write(pattern(600 * 1024, 3)), 10_000, "write into a closed stream");
  await st.closeWrite();
  await within(Promise.all([st.closed, inbound.closed]));
  assert.equal(p.server.streamCount, 0);
});

Deno.test("Stream.close() resets a stream whose peer never sends FIN after a few keepalives", async () => {
  await using p = await sessionPair({ keepaliveIntervalMs: 30 }, { keepaliveIntervalMs: 30 });
  const st = p.client.open();
  await st.write(text("x"));
  const inbound = await acceptOne(p.server);
  inbound.close(); // FIN; the client never closes its side
  assert.equal(await within(st.read(new Uint8Array(1))), null);
  assert.equal(p.server.streamCount, 1); // draining
  await within(inbound.closed, 5000, "sweep");
  await within(st.closed, 5000, "the RST"); // the client's stream was reset by the server
  await assert.rejects(st.write(text("late")), /reset by "server"/);
  assert.equal(p.server.streamCount, 0);
});

Deno.test("Stream grants credit only as its reader consumes", async () => {
  const [raw, conn] = await tcpPair();
  await using server = new Session(conn, { client: false, keepaliveIntervalMs: 0 });
  using _raw = raw;
  const frames = rawFrames(raw);
  // Open stream 1 and fill its whole window, then a ping as a barrier.
  await writeAll(
    raw,
    frame({ type: FrameType.WindowUpdate, flags: Flag.SYN, streamId: 1, length: 0 }),
  );
  await writeAll(
    raw,
    frame(
      { type: FrameType.Data, flags: 0, streamId: 1, length: INITIAL_STREAM_WINDOW },
      pattern(INITIAL_STREAM_WINDOW, 4),
    ),
  );
  const inbound = await acceptOne(server);
  await writeAll(raw, frame({ type: FrameType.Ping, flags: Flag.SYN, streamId: 0, length: 7 }));
  const before: FrameHeader[] = [];
  for (;;) {
    const f = await within(frames.next());
    assert.ok(!f.done);
    before.push(f.value.header);
    if (f.value.header.type === FrameType.Ping) break;
  }
  // Only the ACK (delta 0) came before the ping answer: no credit for data nobody read.
  assert.deepEqual(before, [
    { type: FrameType.WindowUpdate, flags: Flag.ACK, streamId: 1, length: 0 },
    { type: FrameType.Ping, flags: Flag.ACK, streamId: 0, length: 7 },
  ]);
  // Read 200 KiB: more than half a window, so credit for exactly that comes back.
  const buf = new Uint8Array(200 * 1024);
  let got = 0;
  while (got < buf.length) got += (await inbound.read(buf.subarray(got)))!;
  const next = await within(frames.next());
  assert.deepEqual(next.value?.header, {
    type: FrameType.WindowUpdate,
    flags: 0,
    streamId: 1,
    length: 200 * 1024,
  });
  await frames.return(undefined);
});

Deno.test("Stream.write() waits for credit: no more than the window is sent", async () => {
  const [conn, raw] = await tcpPair();
  await using client = new Session(conn, { client: true, keepaliveIntervalMs: 0 });
  using _raw = raw;
  const frames = rawFrames(raw);
  const st = client.open();
  const data = pattern(INITIAL_STREAM_WINDOW + 100_000, 5);
  let written = false;
  const writing = st.write(data).then(() => written = true);
  let received = 0;
  const readUntilPong = async (id: number) => {
    for (let r; !(r = await frames.next()).done;) {
      const f = r.value;
      if (f.header.type === FrameType.Data) {
        assert.deepEqual(f.payload, data.subarray(received, received + f.payload.length));
        received += f.payload.length;
        if (received === INITIAL_STREAM_WINDOW && id === 0) return;
      }
      if (f.header.type === FrameType.Ping && f.header.length === id) return;
    }
  };
  await within(readUntilPong(0), 5000, "one window of data");
  // Barrier: the ping answer follows anything the sender had queued.
  await writeAll(raw, frame({ type: FrameType.Ping, flags: Flag.SYN, streamId: 0, length: 1 }));
  await within(readUntilPong(1));
  assert.equal(received, INITIAL_STREAM_WINDOW);
  assert.equal(written, false);
  await writeAll(
    raw,
    frame({ type: FrameType.WindowUpdate, flags: Flag.ACK, streamId: 1, length: 100_000 }),
  );
  await within(writing);
  await writeAll(raw, frame({ type: FrameType.Ping, flags: Flag.SYN, streamId: 0, length: 2 }));
  await within(readUntilPong(2));
  assert.equal(received, data.length);
  await frames.return(undefined);
});

// ---- limits and violations ------------------------------------------------------------------

Deno.test("Session answers a window overrun with GoAway (protocol error) and closes", async () => {
  const [raw, conn] = await tcpPair();
  await using server = new Session(conn, { client: false, name: "raw", keepaliveIntervalMs: 0 });
  using _raw = raw;
  // 200 KiB then 100 KiB on stream 1 without reading: 300 KiB > the 256 KiB window.
  await writeAll(
    raw,
    frame(
      { type: FrameType.Data, flags: Flag.SYN, streamId: 1, length: 200 * 1024 },
      pattern(200 * 1024, 6),
    ),
  );
  // Only the header of the second frame: it must be refused before its payload arrives.
  await writeAll(raw, frame({ type: FrameType.Data, flags: 0, streamId: 1, length: 100 * 1024 }));
  const err = await within(server.closed);
  assert.ok(err instanceof ProtocolError);
  assert.equal(err.code, "window-exceeded");
  assert.equal(
    err.message,
    'Cannot accept frame on stream 1 from "raw": length 102400 exceeds the window 57344',
  );
  assert.equal(server.isClosed, true);
  const seen: FrameHeader[] = [];
  for await (const f of rawFrames(raw)) seen.push(f.header); // ends at EOF: connection closed
  assert.deepEqual(seen.at(-1), {
    type: FrameType.GoAway,
    flags: 0,
    streamId: 0,
    length: GoAwayCode.ProtocolError,
  });
  assert.equal(await server.accept(), null);
});

Deno.test("Session refuses a Data frame longer than any window (frame-too-large)", async () => {
  const [raw, conn] = await tcpPair();
  await using server = new Session(conn, { client: false, keepaliveIntervalMs: 0 });
  using _raw = raw;
  await writeAll(
    raw,
    frame({ type: FrameType.Data, flags: 0, streamId: 9, length: INITIAL_STREAM_WINDOW + 1 }),
  );
  const err = await within(server.closed);
  assert.ok(err instanceof ProtocolError);
  assert.equal(err.code, "frame-too-large");
  const seen: FrameHeader[] = [];
  for await (const f of rawFrames(raw)) seen.push(f.header);
  assert.equal(seen.at(-1)?.length, GoAwayCode.ProtocolError);
});

Deno.test("Session refuses bad frames: version, stream 0 data, wrong parity, duplicate SYN", async () => {
  const cases: [string, Uint8Array][] = [
    ["version", Uint8Array.of(1, ...new Uint8Array(11))],
    ["stream 0", frame({ type: FrameType.Data, flags: 0, streamId: 0, length: 0 })],
    ["parity", frame({ type: FrameType.WindowUpdate, flags: Flag.SYN, streamId: 2, length: 0 })],
    [
      "duplicate",
      Uint8Array.of(
        ...frame({ type: FrameType.WindowUpdate, flags: Flag.SYN, streamId: 1, length: 0 }),
        ...frame({ type: FrameType.WindowUpdate, flags: Flag.SYN, streamId: 1, length: 0 }),
      ),
    ],
  ];
  for (const [what, bytes] of cases) {
    const [raw, conn] = await tcpPair();
    await using server = new Session(conn, { client: false, keepaliveIntervalMs: 0 });
    using _raw = raw;
    await writeAll(raw, bytes);
    const err = await within(server.closed);
    assert.ok(err instanceof ProtocolError, what);
    const seen: FrameHeader[] = [];
    for await (const f of rawFrames(raw)) seen.push(f.header);
    assert.equal(seen.at(-1)?.type, FrameType.GoAway, what);
    assert.equal(seen.at(-1)?.length, GoAwayCode.ProtocolError, what);
  }
});

Deno.test("Session answers a SYN over maxStreams with RST and keeps going", async () => {
  await using p = await sessionPair({}, { maxStreams: 2 });
  const streams = [p.client.open(), p.client.open(), p.client.open()];
  await Promise.all(streams.map((s) => s.write(text("hi"))));
  const third = streams[2]!;
  await assert.rejects(within(third.read(new Uint8Array(4))), /reset by "server"/);
  await within(third.closed);
  const a = await acceptOne(p.server);
  const b = await acceptOne(p.server);
  assert.deepEqual([a.id, b.id], [1, 3]);
  assert.equal(p.server.streamCount, 2);
  assert.equal(p.server.refusedStreams, 1);
  // A slot frees up once a stream is done; the next open works.
  streams[0]!.reset();
  await within(a.closed);
  const fourth = p.client.open();
  await fourth.write(text("ok"));
  const c = await acceptOne(p.server);
  assert.equal(c.id, 7);
  assert.equal(p.client.isClosed, false);
  assert.equal(p.server.isClosed, false);
});

Deno.test("Session answers SYNs over maxPendingSyns with RST until accept() catches up", async () => {
  await using p = await sessionPair({}, { maxPendingSyns: 1 });
  const one = p.client.open();
  const two = p.client.open();
  await one.write(text("1"));
  await two.write(text("2"));
  await assert.rejects(within(two.read(new Uint8Array(1))), LinkClosedError);
  const a = await acceptOne(p.server);
  assert.equal(a.id, 1);
  const three = p.client.open();
  await three.write(text("3"));
  const b = await acceptOne(p.server);
  assert.equal(b.id, 5);
});

Deno.test("Session.open() refuses more than maxStreams outbound streams", async () => {
  await using p = await sessionPair({ maxStreams: 1 });
  const s = p.client.open();
  assert.throws(() => p.client.open(), (err) => {
    assert.ok(err instanceof ProtocolError);
    assert.equal(err.code, "too-many-streams");
    return true;
  });
  s.reset();
  await s.closed;
  p.client.open().reset();
});

Deno.test("Session.openWhenFree() waits for a stream slot in order, and gives up at its signal", async () => {
  await using p = await sessionPair({ maxStreams: 1 });
  const s = p.client.open();
  const order: number[] = [];
  const first = p.client.openWhenFree(AbortSignal.timeout(5000)).then((st) => {
    order.push(1);
    return st;
  });
  const second = p.client.openWhenFree(AbortSignal.timeout(5000)).then((st) => {
    order.push(2);
    return st;
  });
  const gaveUp = p.client.openWhenFree(AbortSignal.timeout(50));
  await assert.rejects(gaveUp, (err: unknown) => err instanceof DOMException);
  assert.deepEqual(order, []); // nobody got a slot while one stream was open
  s.reset();
  await s.closed;
  const a = await within(first);
  assert.deepEqual(order, [1]);
  a.reset();
  await a.closed;
  const b = await within(second);
  assert.deepEqual(order, [1, 2]);
  b.reset();
  await b.closed;
});

Deno.test("Session.goAway() stops new streams both ways; open streams go on", async () => {
  await using p = await sessionPair();
  const st = p.client.open();
  await st.write(text("a"));
  const inbound = await acceptOne(p.server);
  await p.server.goAway();
  await within(inbound.write(text("b")));
  assert.equal(untext(new Uint8Array(await readN(st, 1))), "b");
  // Ping as a barrier: the GoAway has arrived once the answer does.
  await within(p.client.ping());
  assert.throws(() => p.client.open(), LinkClosedError);
  assert.throws(() => p.server.open(), LinkClosedError);
});

async function readN(st: Stream, n: number): Promise<Uint8Array> {
  const buf = new Uint8Array(n);
  let got = 0;
  while (got < n) {
    const k = await st.read(buf.subarray(got));
    if (k === null) throw new Error("EOF");
    got += k;
  }
  return buf;
}

Deno.test("Session ignores frames for unknown streams", async () => {
  const [raw, conn] = await tcpPair();
  await using server = new Session(conn, { client: false, keepaliveIntervalMs: 0 });
  using _raw = raw;
  const frames = rawFrames(raw);
  await writeAll(
    raw,
    frame({ type: FrameType.Data, flags: 0, streamId: 41, length: 3 }, text("abc")),
  );
  await writeAll(raw, frame({ type: FrameType.WindowUpdate, flags: 0, streamId: 43, length: 9 }));
  await writeAll(raw, frame({ type: FrameType.Ping, flags: Flag.SYN, streamId: 0, length: 5 }));
  const f = await within(frames.next());
  assert.deepEqual(f.value?.header, {
    type: FrameType.Ping,
    flags: Flag.ACK,
    streamId: 0,
    length: 5,
  });
  assert.equal(server.isClosed, false);
  await frames.return(undefined);
});

// ---- ping, keepalive, close -------------------------------------------------------------------

Deno.test("Session.ping() resolves to the round-trip time", async () => {
  await using p = await sessionPair();
  const rtt = await within(p.client.ping());
  assert.ok(rtt >= 0 && rtt < 5000, `rtt ${rtt}`);
  const back = await within(p.server.ping());
  assert.ok(back >= 0);
  const ctl = new AbortController();
  ctl.abort(new Error("stop"));
  await assert.rejects(p.client.ping(ctl.signal), /stop/);
});

Deno.test("Session closes after keepalive pings go unanswered", async () => {
  const [conn, raw] = await tcpPair();
  using _raw = raw;
  // The peer only reads: it never answers a ping.
  const sink = (async () => {
    const buf = new Uint8Array(4096);
    try {
      while ((await raw.read(buf)) !== null) { /* discard */ }
    } catch { /* closed */ }
  })();
  await using client = new Session(conn, {
    client: true,
    name: "mute",
    keepaliveIntervalMs: 50,
    keepaliveMisses: 2,
  });
  const st = client.open();
  const err = await within(client.closed, 5000, "keepalive close");
  assert.ok(err instanceof LinkClosedError);
  assert.equal(err.message, 'Session with "mute" ended: 2 keepalive pings unanswered');
  await assert.rejects(st.read(new Uint8Array(1)), LinkClosedError);
  await within(sink); // the session closed the connection: EOF
});

Deno.test("Session keepalive stays up while the peer answers", async () => {
  await using p = await sessionPair({ keepaliveIntervalMs: 60 }, { keepaliveIntervalMs: 60 });
  // Traffic spanning several intervals, then the sessions must still be open.
  const st = p.client.open();
  const inbound = acceptOne(p.server).then((s) => readAll(s));
  const start = performance.now();
  let sent = 0;
  for (let i = 0; performance.now() - start < 400; i++) {
    await within(st.write(pattern(50_000, i)));
    sent += 50_000;
    await within(p.client.ping());
  }
  await st.closeWrite();
  assert.equal((await within(inbound)).length, sent);
  assert.equal(p.client.isClosed, false);
  assert.equal(p.server.isClosed, false);
});

Deno.test("Session.close() is idempotent; the peer sees a clean end", async () => {
  await using p = await sessionPair();
  const st = p.client.open();
  await st.write(text("x"));
  const inbound = await acceptOne(p.server);
  const pendingAccept = p.client.accept();
  assert.equal(await within(inbound.read(new Uint8Array(8))), 1);
  const pendingRead = inbound.read(new Uint8Array(8));
  await Promise.all([p.client.close(), p.client.close()]);
  await p.client.close();
  assert.equal(await p.client.closed, undefined);
  assert.equal(p.client.isClosed, true);
  assert.equal(await pendingAccept, null);
  assert.equal(await p.client.accept(), null);
  assert.throws(() => p.client.open(), LinkClosedError);
  await assert.rejects(p.client.ping(), LinkClosedError);
  await assert.rejects(st.write(text("y")), LinkClosedError);
  // The peer got GoAway (normal) before EOF: a clean end, its streams fail.
  assert.equal(await within(p.server.closed), undefined);
  await assert.rejects(pendingRead, LinkClosedError);
  assert.equal(p.server.streamCount, 0);
});

Deno.test("Session reports a peer that hangs up without GoAway", async () => {
  const [conn, raw] = await tcpPair();
  await using client = new Session(conn, { client: true, name: "gone", keepaliveIntervalMs: 0 });
  raw.close();
  const err = await within(client.closed);
  assert.ok(err instanceof LinkClosedError);
  assert.equal(err.message, 'Session with "gone" ended: connection closed');
});

Deno.test("new Session() refuses bad options with RangeError", async () => {
  const [a, b] = await tcpPair();
  try {
    assert.throws(() => new Session(a, { client: true, initialWindow: 1024 }), RangeError);
    assert.throws(() => new Session(a, { client: true, maxStreams: 0 }), RangeError);
    assert.throws(() => new Session(a, { client: true, keepaliveIntervalMs: -1 }), RangeError);
  } finally {
    a.close();
    b.close();
  }
});

Deno.test("Session with a larger initialWindow announces it and lets the peer use it", async () => {
  const window = 1024 * 1024;
  await using p = await sessionPair({ initialWindow: window }, { initialWindow: window });
  const data = pattern(3 * window, 11);
  const st = p.client.open();
  const inbound = (async () => readAll(await acceptOne(p.server)))();
  await within(st.write(data).then(() => st.closeWrite()), 10_000);
  assert.deepEqual(await within(inbound), data);
});

// ---- frame economy ----------------------------------------------------------------------------

Deno.test("Stream.end() right after open() sends SYN, data and FIN as one Data frame", async () => {
  const [conn, raw] = await tcpPair();
  await using client = new Session(conn, { client: true, keepaliveIntervalMs: 0 });
  using _raw = raw;
  const frames = rawFrames(raw);
  const st = client.open();
  await st.end(text("hello"));
  const f = (await within(frames.next())).value!;
  assert.deepEqual(f.header, {
    type: FrameType.Data,
    flags: Flag.SYN | Flag.FIN,
    streamId: st.id,
    length: 5,
  });
  assert.equal(untext(f.payload), "hello");
  await frames.return(undefined);
});

Deno.test("Stream.end() after writes queues the FIN on the last Data frame", async () => {
  await using p = await sessionPair();
  const st = p.client.open();
  const big = pattern(3 * 64 * 1024 + 5, 7);
  void st.write(text("x"));
  const ended = st.end(big);
  const peer = await acceptOne(p.server);
  const got = await within(readAll(peer));
  await ended;
  assert.equal(got.length, big.length + 1);
  assert.deepEqual(got.subarray(1), big);
  await peer.end(text("ok"));
  assert.equal(untext(await within(readAll(st))), "ok");
  await within(st.closed);
  await within(peer.closed);
  assert.equal(p.client.streamCount, 0);
  assert.equal(p.server.streamCount, 0);
});

Deno.test("Session with onStream sends the ACK on the stream's first frame", async () => {
  const [raw, conn] = await tcpPair();
  let served: Stream | undefined;
  const got = Promise.withResolvers<Stream>();
  await using server = new Session(conn, {
    client: false,
    keepaliveIntervalMs: 0,
    onStream: (st) => got.resolve(served = st),
  });
  using _raw = raw;
  const frames = rawFrames(raw);
  await writeAll(
    raw,
    frame({ type: FrameType.Data, flags: Flag.SYN | Flag.FIN, streamId: 1, length: 2 }, text("hi")),
  );
  const st = await within(got.promise);
  assert.equal(untext(await within(readAll(st))), "hi");
  await st.end(text("yo"));
  const f = (await within(frames.next())).value!;
  assert.deepEqual(f.header, {
    type: FrameType.Data,
    flags: Flag.ACK | Flag.FIN,
    streamId: 1,
    length: 2,
  });
  assert.equal(served, st);
  assert.equal(server.streamCount, 0);
  await frames.return(undefined);
});

Deno.test("Session with onStream sends a pending ACK alone at a keepalive tick", async () => {
  const [raw, conn] = await tcpPair();
  const got = Promise.withResolvers<Stream>();
  await using _server = new Session(conn, {
    client: false,
    keepaliveIntervalMs: 20,
    keepaliveMisses: 1000,
    onStream: (st) => got.resolve(st),
  });
  using _raw = raw;
  const frames = rawFrames(raw);
  await writeAll(
    raw,
    frame({ type: FrameType.WindowUpdate, flags: Flag.SYN, streamId: 1, length: 0 }),
  );
  await within(got.promise);
  for (;;) {
    const f = (await within(frames.next())).value!;
    if (f.header.type !== FrameType.WindowUpdate) continue;
    assert.deepEqual(f.header, {
      type: FrameType.WindowUpdate,
      flags: Flag.ACK,
      streamId: 1,
      length: 0,
    });
    break;
  }
  await frames.return(undefined);
});

Deno.test("Stream.readToEnd() takes a message larger than the window, or stops past the limit", async () => {
  await using p = await sessionPair();
  const big = pattern(INITIAL_STREAM_WINDOW * 2 + 3, 11);
  const st = p.client.open();
  const sent = st.end(big);
  const peer = await acceptOne(p.server);
  assert.deepEqual(await within(peer.readToEnd(big.length)), big);
  await sent;
  const st2 = p.client.open();
  void st2.end(big).catch(() => {});
  const peer2 = await acceptOne(p.server);
  assert.equal(await within(peer2.readToEnd(1000)), null);
  peer2.reset();
  await peer.end(text("ok"));
  assert.equal(untext((await within(st.readToEnd(10)))!), "ok");
});
