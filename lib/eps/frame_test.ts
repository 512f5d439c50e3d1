import assert from "node:assert/strict";
import { ProtocolError } from "../errors.ts";
import {
  decodeHeader,
  encodeHeader,
  Flag,
  type Frame,
  FrameDecoder,
  type FrameHeader,
  FrameType,
  GoAwayCode,
  HEADER_LENGTH,
  INITIAL_STREAM_WINDOW,
  MAX_U32,
} from "./frame.ts";

/** Reference encoder with DataView, to check the fast paths against. */
function refEncode(h: FrameHeader): Uint8Array {
  const b = new Uint8Array(HEADER_LENGTH);
  const v = new DataView(b.buffer);
  v.setUint8(0, 0);
  v.setUint8(1, h.type);
  v.setUint16(2, h.flags);
  v.setUint32(4, h.streamId);
  v.setUint32(8, h.length);
  return b;
}

const cases: FrameHeader[] = [
  { type: FrameType.Data, flags: 0, streamId: 0, length: 0 },
  { type: FrameType.Data, flags: Flag.SYN, streamId: 1, length: 1 },
  { type: FrameType.Data, flags: Flag.FIN | Flag.ACK, streamId: 2, length: INITIAL_STREAM_WINDOW },
  { type: FrameType.WindowUpdate, flags: 0, streamId: MAX_U32, length: MAX_U32 },
  { type: FrameType.WindowUpdate, flags: Flag.RST, streamId: 0x8000_0000, length: 0x8000_0000 },
  { type: FrameType.Ping, flags: Flag.ACK, streamId: 0, length: 0x7fff_ffff },
  { type: FrameType.GoAway, flags: 0, streamId: 0, length: GoAwayCode.ProtocolError },
  { type: FrameType.GoAway, flags: 0xffff, streamId: 0x0102_0304, length: 0x0506_0708 },
];

for (const h of cases) {
  Deno.test(`decodeHeader() round-trips ${JSON.stringify(h)}`, () => {
    const bytes = encodeHeader(h);
    assert.deepEqual(bytes, refEncode(h));
    assert.deepEqual(decodeHeader(bytes, MAX_U32), h);
  });
}

Deno.test("encodeHeader() writes at an offset into a subarray", () => {
  const h = cases[3]!;
  const buf = new Uint8Array(40).fill(0xee);
  const view = buf.subarray(5);
  encodeHeader(h, view, 3);
  assert.deepEqual(buf.subarray(8, 20), refEncode(h));
  assert.equal(buf[7], 0xee);
  assert.equal(buf[20], 0xee);
  assert.deepEqual(decodeHeader(buf.subarray(8), MAX_U32), h);
});

Deno.test("encodeHeader() refuses out-of-range fields with RangeError", () => {
  const ok: FrameHeader = { type: FrameType.Data, flags: 0, streamId: 1, length: 0 };
  const bad: Partial<FrameHeader>[] = [
    { type: 4 as FrameType },
    { type: -1 as FrameType },
    { flags: 0x1_0000 },
    { streamId: MAX_U32 + 1 },
    { streamId: -1 },
    { length: MAX_U32 + 1 },
    { length: 1.5 },
  ];
  for (const b of bad) assert.throws(() => encodeHeader({ ...ok, ...b }), RangeError);
  assert.throws(() => encodeHeader(ok, new Uint8Array(11)), RangeError);
  assert.throws(() => encodeHeader(ok, new Uint8Array(12), 1), RangeError);
});

Deno.test("decodeHeader() refuses a bad version and an unknown type", () => {
  const b = encodeHeader({ type: FrameType.Ping, flags: Flag.SYN, streamId: 0, length: 7 });
  b[0] = 1;
  assert.throws(() => decodeHeader(b, 0), {
    name: "ProtocolError",
    message: "Cannot decode frame: version is 1, expected 0",
  });
  b[0] = 0;
  for (const t of [4, 5, 0xff]) {
    b[1] = t;
    assert.throws(() => decodeHeader(b, 0), {
      name: "ProtocolError",
      message: `Cannot decode frame: unknown type ${t}`,
    });
  }
  assert.throws(() => decodeHeader(b.subarray(0, 11), 0), RangeError);
});

Deno.test("decodeHeader() refuses Data longer than maxData, other types are not bounded", () => {
  const max = INITIAL_STREAM_WINDOW;
  const at = (type: FrameType, length: number) =>
    decodeHeader(encodeHeader({ type, flags: 0, streamId: 7, length }), max);
  assert.equal(at(FrameType.Data, max).length, max);
  assert.throws(() => at(FrameType.Data, max + 1), (err) => {
    assert.ok(err instanceof ProtocolError);
    assert.equal(err.code, "frame-too-large");
    assert.equal(err.message, "Cannot accept frame on stream 7: length 262145 exceeds 262144");
    return true;
  });
  assert.equal(at(FrameType.WindowUpdate, MAX_U32).length, MAX_U32);
  assert.equal(at(FrameType.Ping, MAX_U32).length, MAX_U32);
});

/** Encodes frames (header + payload for Data) into one buffer. */
function encodeFrames(frames: { header: FrameHeader; payload?: Uint8Array }[]): Uint8Array {
  const size = frames.reduce((n, f) => n + HEADER_LENGTH + (f.payload?.length ?? 0), 0);
  const out = new Uint8Array(size);
  let off = 0;
  for (const f of frames) {
    encodeHeader(f.header, out, off);
    off += HEADER_LENGTH;
    if (f.payload) {
      out.set(f.payload, off);
      off += f.payload.length;
    }
  }
  return out;
}

function bytes(n: number, seed: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed) & 0xff;
  return b;
}

const sample = [
  {
    header: { type: FrameType.WindowUpdate, flags: Flag.SYN, streamId: 1, length: 0 },
  },
  {
    header: { type: FrameType.Data, flags: 0, streamId: 1, length: 5 },
    payload: bytes(5, 1),
  },
  { header: { type: FrameType.Data, flags: Flag.FIN, streamId: 1, length: 0 } },
  { header: { type: FrameType.Ping, flags: Flag.SYN, streamId: 0, length: 99 } },
  {
    header: { type: FrameType.Data, flags: Flag.ACK, streamId: 2, length: 40 },
    payload: bytes(40, 2),
  },
  { header: { type: FrameType.GoAway, flags: 0, streamId: 0, length: GoAwayCode.Normal } },
] satisfies { header: FrameHeader; payload?: Uint8Array }[];
const sampleBytes = encodeFrames(sample);

/** Feeds `chunks` one by one and collects every frame, copying payloads. */
function decodeAll(decoder: FrameDecoder, chunks: Uint8Array[]) {
  const out: { header: FrameHeader; payload?: Uint8Array }[] = [];
  for (const c of chunks) {
    decoder.push(c);
    for (let f: Frame | undefined; (f = decoder.next()) !== undefined;) {
      out.push(
        f.header.type === FrameType.Data && f.header.length > 0
          ? { header: f.header, payload: f.owned ? f.payload : f.payload.slice() }
          : { header: f.header },
      );
    }
  }
  return out;
}

Deno.test("FrameDecoder decodes several frames from one chunk", () => {
  const d = new FrameDecoder(1024);
  assert.deepEqual(decodeAll(d, [sampleBytes]), sample);
  assert.equal(d.buffered, 0);
  assert.equal(d.remaining, 0);
});

Deno.test("FrameDecoder decodes a stream split at every byte position", () => {
  for (let cut = 0; cut <= sampleBytes.length; cut++) {
    const d = new FrameDecoder(1024);
    const got = decodeAll(d, [sampleBytes.subarray(0, cut), sampleBytes.subarray(cut)]);
    assert.deepEqual(got, sample, `split at ${cut}`);
  }
});

Deno.test("FrameDecoder decodes a stream fed one byte at a time and in 3-way splits", () => {
  const ones = Array.from(sampleBytes, (_, i) => sampleBytes.subarray(i, i + 1));
  assert.deepEqual(decodeAll(new FrameDecoder(1024), ones), sample);
  for (let a = 0; a < sampleBytes.length; a += 3) {
    for (let b = a; b <= sampleBytes.length; b += 5) {
      const chunks = [
        sampleBytes.subarray(0, a),
        sampleBytes.subarray(a, b),
        sampleBytes.subarray(b),
      ];
      assert.deepEqual(decodeAll(new FrameDecoder(1024), chunks), sample, `split at ${a}, ${b}`);
    }
  }
});

Deno.test("FrameDecoder returns a view for a payload inside one chunk, a fresh array otherwise", () => {
  const d = new FrameDecoder(1024);
  const one = encodeFrames([sample[1]!]);
  d.push(one);
  const f = d.next()!;
  assert.equal(f.owned, false);
  assert.equal(f.payload.buffer, one.buffer);
  d.push(one.subarray(0, 14));
  assert.equal(d.next(), undefined);
  assert.equal(d.buffered, 2);
  d.push(one.subarray(14));
  const g = d.next()!;
  assert.equal(g.owned, true);
  assert.notEqual(g.payload.buffer, one.buffer);
  assert.deepEqual(g.payload, sample[1]!.payload);
});

Deno.test("FrameDecoder refuses an oversized Data frame before buffering its payload", () => {
  const d = new FrameDecoder(100);
  const header = encodeHeader({ type: FrameType.Data, flags: 0, streamId: 3, length: 101 });
  d.push(header.subarray(0, 6));
  assert.equal(d.next(), undefined);
  d.push(header.subarray(6)); // header complete, no payload byte yet
  assert.throws(() => d.next(), { name: "ProtocolError", code: "frame-too-large" });
  assert.equal(d.buffered, 0);
  assert.throws(() => d.next(), { code: "frame-too-large" }); // stays failed
});

Deno.test("FrameDecoder runs the header check before the payload is buffered", () => {
  const seen: FrameHeader[] = [];
  const d = new FrameDecoder(1024, (h) => {
    seen.push(h);
    if (h.streamId === 2) throw new ProtocolError("window", "window-exceeded");
  });
  const buf = encodeFrames(sample.slice(0, 5));
  // Up to just after the header of the stream-2 Data frame (the last one): no payload yet.
  const cut = buf.length - 40;
  d.push(buf.subarray(0, cut));
  const frames: Frame[] = [];
  assert.throws(() => {
    for (let f; (f = d.next()) !== undefined;) frames.push(f);
  }, { code: "window-exceeded" });
  assert.equal(frames.length, 4);
  assert.equal(seen.length, 5);
});

Deno.test("FrameDecoder push() refuses a chunk while the previous one is not drained", () => {
  const d = new FrameDecoder(1024);
  d.push(sampleBytes);
  d.next();
  assert.throws(() => d.push(sampleBytes), Error);
});

Deno.test("new FrameDecoder() refuses a bad maxData", () => {
  assert.throws(() => new FrameDecoder(-1), RangeError);
  assert.throws(() => new FrameDecoder(MAX_U32 + 1), RangeError);
});

/** mulberry32: a small seeded generator so a failing fuzz case can be replayed. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

Deno.test("FrameDecoder throws only ProtocolError on 2000 random buffers", () => {
  const rand = rng(0x5eed);
  let errors = 0;
  for (let i = 0; i < 2000; i++) {
    const size = Math.floor(rand() * 300);
    const buf = new Uint8Array(size);
    for (let j = 0; j < size; j++) buf[j] = Math.floor(rand() * 256);
    // Half the cases start from a valid header so decoding goes past byte 0.
    if (i % 2 === 0 && size >= 2) {
      buf[0] = 0;
      buf[1] = buf[1]! & 3;
    }
    const d = new FrameDecoder(Math.floor(rand() * 200));
    try {
      let off = 0;
      while (off < size) {
        const n = 1 + Math.floor(rand() * 40);
        d.push(buf.subarray(off, off + n));
        off += n;
        while (d.next() !== undefined) { /* drain */ }
      }
    } catch (err) {
      assert.ok(err instanceof ProtocolError, `case ${i}: ${err}`);
      errors++;
    }
  }
  assert.ok(errors > 0 && errors < 2000, `${errors} errors`);
});
