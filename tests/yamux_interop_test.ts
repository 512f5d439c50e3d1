/**
 * Interop: our yamux (lib/eps/session.ts) against the npm `@chainsafe/libp2p-yamux` over real
 * loopback TCP, in both roles: ours dials and theirs listens, and theirs dials and ours listens.
 */
import assert from "node:assert/strict";
import { yamux } from "@chainsafe/libp2p-yamux";
import { LinkClosedError } from "../lib/errors.ts";
import { INITIAL_STREAM_WINDOW } from "../lib/eps/frame.ts";
import { Session, type SessionOptions } from "../lib/eps/session.ts";
import { readAll, writeAll } from "../lib/net/io.ts";
import { DenoMaConn } from "./_libp2p_conn.ts";
import { tcpPair, within as withinMs } from "../lib/net/_testing.ts";
const within = <T>(p: Promise<T>, ms = 10_000, what = "operation"): Promise<T> =>
  withinMs(p, ms, what);

type YamuxInit = NonNullable<Parameters<typeof yamux>[0]>;
type TheirMuxer = ReturnType<ReturnType<ReturnType<typeof yamux>>["createStreamMuxer"]>;
type TheirStream = Awaited<ReturnType<TheirMuxer["createStream"]>>;

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

function assertSameBytes(got: Uint8Array, want: Uint8Array, what: string): void {
  assert.equal(got.length, want.length, `${what}: length`);
  for (let i = 0; i < want.length; i++) {
    if (got[i] !== want[i]) assert.fail(`${what}: byte ${i} is ${got[i]}, expected ${want[i]}`);
  }
}

/** Reads a libp2p stream to its end (FIN). Rejects if the stream is reset. */
async function theirReadAll(s: TheirStream): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  let total = 0;
  for await (const c of s) {
    const bytes = c instanceof Uint8Array ? c : c.subarray();
    chunks.push(bytes);
    total += bytes.length;
  }
  const out = new Uint8Array(total);
  let off = 0;
  for (const c of chunks) {
    out.set(c, off);
    off += c.length;
  }
  return out;
}

/** Writes to a libp2p stream in 64 KiB pieces, waiting for "drain" when it asks to. */
async function theirWrite(s: TheirStream, data: Uint8Array): Promise<void> {
  for (let off = 0; off < data.length; off += 64 * 1024) {
    if (!s.send(data.subarray(off, off + 64 * 1024))) await s.onDrain();
  }
}

/** One TCP connection: our Session on one end, the libp2p muxer on the other. */
async function interop(
  ours: "dialler" | "listener",
  ourOptions: Omit<SessionOptions, "client"> = {},
  theirInit: YamuxInit = {},
) {
  const [dialled, accepted] = await tcpPair();
  const [ourConn, theirConn] = ours === "dialler" ? [dialled, accepted] : [accepted, dialled];
  const session = new Session(ourConn, {
    name: "libp2p",
    keepaliveIntervalMs: 0,
    ...ourOptions,
    client: ours === "dialler",
  });
  const maConn = new DenoMaConn(theirConn, ours === "dialler" ? "inbound" : "outbound");
  const muxer = yamux({ enableKeepAlive: false, ...theirInit })().createStreamMuxer(maConn);
  const arrived: TheirStream[] = [];
  let wake: (() => void) | undefined;
  muxer.addEventListener("stream", (evt) => {
    arrived.push(evt.detail);
    wake?.();
  });
  return {
    session,
    muxer,
    maConn,
    /** The next stream our side opened, as libp2p sees it. */
    async theirAccept(): Promise<TheirStream> {
      while (arrived.length === 0) await within(new Promise<void>((r) => wake = r), 10_000);
      return arrived.shift()!;
    },
    async [Symbol.asyncDispose]() {
      if (muxer.status === "open") muxer.abort(new Error("test over"));
      await session.close();
      await maConn.destroy();
    },
  };
}

for (const ours of ["dialler", "listener"] as const) {
  const label = ours === "dialler" ? "ours dials, libp2p listens" : "libp2p dials, ours listens";

  Deno.test(`yamux interop (${label}): our stream carries > 1 MiB each way with half-close`, async () => {
    await using t = await interop(ours, { keepaliveIntervalMs: 100 });
    const up = pattern(1536 * 1024 + 3, 21);
    const down = pattern(1280 * 1024 + 7, 22);
    const st = t.session.open();
    assert.equal(st.id % 2, ours === "dialler" ? 1 : 0);
    const theirs = (async () => {
      const s = await t.theirAccept();
      assert.equal(Number(s.id), st.id);
      const got = await theirReadAll(s); // ends at our FIN
      await theirWrite(s, down); // the reply flows after our half-close
      await s.close();
      return got;
    })();
    await within(st.write(up), 20_000, "our write");
    await st.closeWrite();
    const gotDown = await within(readAll(st), 20_000, "our read");
    assertSameBytes(await within(theirs), up, "libp2p received");
    assertSameBytes(gotDown, down, "we received");
    await within(st.closed);
    assert.equal(t.session.streamCount, 0);
  });

  Deno.test(`yamux interop (${label}): their stream carries > 1 MiB both ways at once`, async () => {
    await using t = await interop(ours);
    const up = pattern(2 * INITIAL_STREAM_WINDOW * 3 + 11, 31);
    const down = pattern(2 * INITIAL_STREAM_WINDOW * 2 + 13, 32);
    const s = await within(t.muxer.createStream());
    const theirs = Promise.all([
      theirReadAll(s),
      theirWrite(s, up).then(() => s.close()),
    ]);
    const st = await within(t.session.accept());
    assert.ok(st);
    assert.equal(st.id, Number(s.id));
    assert.equal(st.id % 2, ours === "dialler" ? 0 : 1);
    const [gotUp] = await within(
      Promise.all([readAll(st), writeAll(st, down).then(() => st.closeWrite())]),
      20_000,
      "our side",
    );
    const [gotDown] = await within(theirs, 20_000, "their side");
    assertSameBytes(gotUp, up, "we received");
    assertSameBytes(gotDown, down, "libp2p received");
    await within(st.closed);
  });

  Deno.test(`yamux interop (${label}): many streams each way at once`, async () => {
    await using t = await interop(ours);
    // libp2p echoes every stream we open.
    t.muxer.addEventListener("stream", (evt) => {
      const s = evt.detail;
      void (async () => {
        for await (const c of s) {
          if (!s.send(c instanceof Uint8Array ? c : c.subarray())) await s.onDrain();
        }
        await s.close();
      })().catch(() => {});
    });
    // We echo every stream libp2p opens.
    const echoing = (async () => {
      for (let i = 0; i < 8; i++) {
        const st = await t.session.accept();
        assert.ok(st);
        const buf = new Uint8Array(16 * 1024);
        for (let n; (n = await st.read(buf)) !== null;) await st.write(buf.subarray(0, n));
        await st.closeWrite();
      }
    })();
    await within(
      Promise.all([
        ...Array.from({ length: 8 }, async (_, i) => {
          const data = pattern(300_000 + i, 40 + i);
          const st = t.session.open();
          const [got] = await Promise.all([
            readAll(st),
            writeAll(st, data).then(() => st.closeWrite()),
          ]);
          assertSameBytes(got, data, `our stream ${i}`);
        }),
        ...Array.from({ length: 8 }, async (_, i) => {
          const data = pattern(200_000 + i, 60 + i);
          const s = await t.muxer.createStream();
          const [got] = await Promise.all([
            theirReadAll(s),
            theirWrite(s, data).then(() => s.close()),
          ]);
          assertSameBytes(got, data, `their stream ${i}`);
        }),
        echoing,
      ]),
      30_000,
      "16 echo streams",
    );
  });

  Deno.test(`yamux interop (${label}): RST from either side reaches the other`, async () => {
    await using t = await interop(ours);
    // Ours resets: libp2p's reader fails.
    const st = t.session.open();
    await st.write(new Uint8Array([1, 2, 3]));
    const s = await t.theirAccept();
    const theirRead = theirReadAll(s);
    st.reset();
    await assert.rejects(within(theirRead), /reset/i);
    // libp2p resets: our reader fails with LinkClosedError.
    const s2 = await within(t.muxer.createStream());
    s2.send(new Uint8Array([4, 5]));
    const st2 = await within(t.session.accept());
    assert.ok(st2);
    const buf = new Uint8Array(8);
    assert.equal(await within(st2.read(buf)), 2);
    const pending = st2.read(buf);
    s2.abort(new Error("stop"));
    await assert.rejects(within(pending), LinkClosedError);
    await within(st2.closed);
    assert.equal(t.session.isClosed, false);
  });

  Deno.test(`yamux interop (${label}): pings are answered both ways`, async () => {
    await using t = await interop(ours, { keepaliveIntervalMs: 50 }, {
      enableKeepAlive: true,
      keepAliveInterval: 50,
    });
    const rtt = await within(t.session.ping());
    assert.ok(rtt >= 0);
    const theirRtt = await within(t.muxer.ping());
    assert.ok(theirRtt >= 0);
    // Both keepalives run for a while; the session stays up.
    for (let i = 0; i < 5; i++) await within(t.session.ping());
    assert.equal(t.session.isClosed, false);
    assert.equal(t.muxer.status, "open");
  });

  Deno.test(`yamux interop (${label}): our close() sends GoAway; libp2p closes its streams`, async () => {
    await using t = await interop(ours);
    const st = t.session.open();
    await st.write(new Uint8Array([9]));
    const s = await t.theirAccept();
    const closed = new Promise<void>((r) => s.addEventListener("close", () => r(), { once: true }));
    await t.session.close();
    assert.equal(await t.session.closed, undefined);
    await within(closed);
    await within(t.maConn.reading); // EOF reached libp2p's socket
    assert.notEqual(t.muxer.status, "open");
  });

  Deno.test(`yamux interop (${label}): libp2p close() is a clean end for us`, async () => {
    await using t = await interop(ours);
    await t.muxer.close();
    await t.maConn.close();
    assert.equal(await within(t.session.closed), undefined);
    assert.equal(await t.session.accept(), null);
  });
}
