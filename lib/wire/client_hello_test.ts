import assert from "node:assert/strict";
import { ProtocolError, type ProtocolErrorCode } from "../errors.ts";
import {
  ALERT_ACCESS_DENIED,
  ALERT_DECODE_ERROR,
  ALERT_HANDSHAKE_FAILURE,
  ALERT_INTERNAL_ERROR,
  ALERT_UNRECOGNIZED_NAME,
  type ClientHelloInfo,
  ClientHelloReader,
  type ClientHelloResult,
  parseClientHello,
  readClientHello,
  tlsAlert,
} from "./client_hello.ts";

// ---------------------------------------------------------------------------------------------
// Fixtures: real ClientHellos captured by tools/capture_client_hello.ts (see testdata/README.md).

const HOST = "test.internal-server.local";
const TLS13 = 0x0304;
const TLS12 = 0x0303;
const TLS11 = 0x0302;
const TLS10 = 0x0301;
const H2_H1 = ["h2", "http/1.1"];

interface Expected {
  serverName: string | null;
  alpn: string[];
  supportedVersions: number[];
}

const FIXTURES: Record<string, Expected> = {
  "curl_tls13": { serverName: HOST, alpn: H2_H1, supportedVersions: [TLS13, TLS12, TLS11, TLS10] },
  "curl_tls12": { serverName: HOST, alpn: H2_H1, supportedVersions: [] },
  "curl_http1_only": {
    serverName: HOST,
    alpn: ["http/1.1"],
    supportedVersions: [TLS13, TLS12, TLS11, TLS10],
  },
  "openssl_tls13": { serverName: HOST, alpn: [], supportedVersions: [TLS13, TLS12, TLS11, TLS10] },
  "openssl_tls12": { serverName: HOST, alpn: [], supportedVersions: [] },
  "openssl_no_sni": { serverName: null, alpn: [], supportedVersions: [TLS13, TLS12, TLS11, TLS10] },
  "deno_rustls": { serverName: HOST, alpn: [], supportedVersions: [TLS13, TLS12] },
  "deno_rustls_alpn": { serverName: HOST, alpn: H2_H1, supportedVersions: [TLS13, TLS12] },
  node: { serverName: HOST, alpn: [], supportedVersions: [TLS13, TLS12] },
  "node_alpn": { serverName: HOST, alpn: H2_H1, supportedVersions: [TLS13, TLS12] },
  "wget_gnutls_no_sni": {
    serverName: null,
    alpn: [],
    supportedVersions: [TLS13, TLS12, TLS11, TLS10],
  },
};

function fixture(name: string): Uint8Array {
  return Deno.readFileSync(new URL(`./testdata/${name}.bin`, import.meta.url));
}

const LOADED = Object.entries(FIXTURES).map(([name, expected]) => ({
  name,
  expected,
  bytes: fixture(name),
}));

// ---------------------------------------------------------------------------------------------
// Builders for synthetic hellos (GREASE, malformations, fragmentation).

const enc = new TextEncoder();
const u16 = (v: number): number[] => [v >> 8, v & 0xff];
const vec8 = (b: number[]): number[] => [b.length, ...b];
const vec16 = (b: number[]): number[] => [...u16(b.length), ...b];
const ascii = (s: string): number[] => [...enc.encode(s)];
const ext = (type: number, data: number[]): number[] => [...u16(type), ...vec16(data)];
const sni = (...names: string[]): number[] =>
  ext(0, vec16(names.flatMap((n) => [0, ...vec16(ascii(n))])));
const alpn = (...names: string[]): number[] => ext(16, vec16(names.flatMap((n) => vec8(ascii(n)))));
const versions = (...v: number[]): number[] => ext(43, vec8(v.flatMap(u16)));

interface BodyParts {
  version?: number;
  sessionId?: number[];
  /** Raw cipher_suites vector including its length. */
  suites?: number[];
  /** Raw compression_methods vector including its length. */
  compression?: number[];
  /** Concatenated extensions; null leaves out the extensions block. */
  extensions?: number[] | null;
}

function body(o: BodyParts = {}): number[] {
  const random = Array.from({ length: 32 }, (_, i) => i);
  const out = [
    ...u16(o.version ?? TLS12),
    ...random,
    ...vec8(o.sessionId ?? []),
    ...(o.suites ?? vec16([0x13, 0x01, 0xc0, 0x2f])),
    ...(o.compression ?? [1, 0]),
  ];
  const exts = o.extensions === undefined ? sni(HOST) : o.extensions;
  if (exts !== null) out.push(...vec16(exts));
  return out;
}

function handshake(b: number[], type = 1): Uint8Array {
  const n = b.length;
  return Uint8Array.from([type, (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff, ...b]);
}

/** Wraps a handshake message in type-22 records of the given payload sizes (the rest in the last). */
function records(message: Uint8Array, sizes: number[] = [], type = 22): Uint8Array {
  const parts: number[] = [];
  let off = 0;
  for (let i = 0; off < message.length; i++) {
    const size = Math.min(sizes[i] ?? message.length - off, message.length - off);
    parts.push(type, 3, 1, ...u16(size), ...message.subarray(off, off + size));
    off += size;
  }
  return Uint8Array.from(parts);
}

const hello = (o: BodyParts = {}): Uint8Array => records(handshake(body(o)));

/** The handshake message inside a single-record fixture. */
function messageOf(recordBytes: Uint8Array): Uint8Array {
  assert.equal(recordBytes[0], 22);
  const length = (recordBytes[3]! << 8) | recordBytes[4]!;
  assert.equal(recordBytes.length, 5 + length, "fixture is one record");
  return recordBytes.subarray(5);
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

/** Runs `fn`, asserting it throws a ProtocolError with `code` (and message, when given). */
function assertProtocolError(fn: () => unknown, code: ProtocolErrorCode, message?: string): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof ProtocolError, `expected ProtocolError, got ${err}`);
    assert.equal(err.code, code);
    if (message !== undefined) assert.equal(err.message, message);
    return true;
  });
}

/** Feeds `bytes` in chunks ending at `cuts`, stopping once the hello is complete. */
function feed(bytes: Uint8Array, cuts: number[], maxBytes?: number): ClientHelloResult {
  const reader = new ClientHelloReader(maxBytes);
  let off = 0;
  let result: ClientHelloResult = { done: false, need: 1 };
  for (const cut of [...cuts, bytes.length]) {
    result = reader.push(bytes.subarray(off, cut));
    off = cut;
    if (result.done) break;
  }
  return result;
}

function info(result: ClientHelloResult): ClientHelloInfo {
  assert.ok(result.done, `expected a complete hello, got ${JSON.stringify(result)}`);
  return result.hello;
}

function summary(h: ClientHelloInfo): Omit<ClientHelloInfo, "bytes"> & { bytes: number[] } {
  return { ...h, bytes: [...h.bytes] };
}

// ---------------------------------------------------------------------------------------------
// Real hellos.

for (const { name, expected, bytes } of LOADED) {
  Deno.test(`parseClientHello() reads the ${name} capture`, () => {
    const h = parseClientHello(bytes);
    assert.deepEqual(
      { serverName: h.serverName, alpn: h.alpn, supportedVersions: h.supportedVersions },
      expected,
    );
    assert.equal(h.legacyVersion, TLS12);
    assert.deepEqual(h.bytes, bytes);
    assert.notEqual(h.bytes.buffer, bytes.buffer, "bytes is the reader's copy");
  });

  Deno.test(`ClientHelloReader.push() reads the ${name} capture 1 byte at a time`, () => {
    const reader = new ClientHelloReader();
    for (let i = 0; i < bytes.length - 1; i++) {
      const r = reader.push(bytes.subarray(i, i + 1));
      assert.equal(r.done, false, `done after ${i + 1} bytes`);
      if (!r.done) {
        assert.ok(r.need >= 1 && r.need <= bytes.length - i - 1, `need ${r.need} at ${i + 1}`);
      }
    }
    const last = info(reader.push(bytes.subarray(bytes.length - 1)));
    assert.deepEqual(summary(last), summary(parseClientHello(bytes)));
    assert.equal(reader.extra.length, 0);
  });

  Deno.test(`ClientHelloReader.push() reads the ${name} capture split at every offset`, () => {
    const whole = summary(parseClientHello(bytes));
    for (let cut = 0; cut <= bytes.length; cut++) {
      assert.deepEqual(summary(info(feed(bytes, [cut]))), whole, `split at ${cut}`);
    }
  });

  Deno.test(`parseClientHello() asks for more on the ${name} capture cut at every length`, () => {
    for (let len = 0; len < bytes.length; len++) {
      const r = new ClientHelloReader().push(bytes.subarray(0, len));
      assert.equal(r.done, false);
      if (!r.done) {
        assert.ok(r.need >= 1 && r.need <= bytes.length - len, `need ${r.need} at ${len}`);
      }
      assertProtocolError(() => parseClientHello(bytes.subarray(0, len)), "bad-client-hello");
    }
  });
}

Deno.test("parseClientHello() reads a capture re-fragmented into two records at every split", () => {
  for (const name of ["curl_tls13", "openssl_tls12", "deno_rustls_alpn", "node_alpn"]) {
    const message = messageOf(fixture(name));
    const whole = parseClientHello(fixture(name));
    for (let first = 1; first < message.length; first++) {
      const input = records(message, [first]);
      const h = parseClientHello(input);
      assert.equal(h.serverName, whole.serverName);
      assert.deepEqual(h.alpn, whole.alpn);
      assert.deepEqual(h.supportedVersions, whole.supportedVersions);
      assert.deepEqual(h.bytes, input, `${name} split at ${first}`);
    }
  }
});

Deno.test("ClientHelloReader.push() reads a hello re-fragmented into 1-byte records", () => {
  const message = messageOf(fixture("deno_rustls_alpn"));
  const input = records(message, Array(message.length).fill(1));
  assert.equal(input.length, message.length * 6);
  const whole = info(feed(input, []));
  assert.equal(whole.serverName, HOST);
  assert.deepEqual(whole.alpn, H2_H1);
  assert.deepEqual(whole.bytes, input);
  // Fed 1 byte at a time too: the handshake header itself spans four records.
  const cuts = Array.from({ length: input.length - 1 }, (_, i) => i + 1);
  assert.deepEqual(summary(info(feed(input, cuts))), summary(whole));
});

Deno.test("readClientHello() reads a ClientHello larger than one record", async () => {
  // Post-quantum key shares make hellos grow; a 20,000-byte one needs two full-size records.
  const padding = ext(21, Array(20_000 - 80).fill(0));
  const message = handshake(body({ extensions: [...sni(HOST), ...alpn("h2"), ...padding] }));
  const input = records(message, [16_384]);
  assert.equal(input.length, message.length + 10);
  assertProtocolError(() => parseClientHello(input, 16_384), "client-hello-too-large");
  assert.equal(parseClientHello(input).serverName, HOST); // the default bound is 65 536
  const chunks: Uint8Array[] = [];
  for (let off = 0; off < input.length; off += 1000) chunks.push(input.subarray(off, off + 1000));
  const r = await readClientHello(chunkConn(chunks), 32_768);
  assert.equal(r.hello.serverName, HOST);
  assert.deepEqual(r.hello.alpn, ["h2"]);
  assert.deepEqual(r.hello.bytes, input);
  assert.equal(r.extra.length, 0);
});

Deno.test("ClientHelloReader.push() reads several records and trailing data in one chunk", () => {
  const message = messageOf(fixture("node_alpn"));
  const hello2 = records(message, [100, 200]); // three records
  const ccs = Uint8Array.of(20, 3, 3, 0, 1, 1);
  const early = Uint8Array.of(23, 3, 3, 0, 3, 0xaa, 0xbb, 0xcc);
  const tail = concat(ccs, early);
  const input = concat(hello2, tail);
  for (const cuts of [[], [3], [hello2.length], [hello2.length + 1], [50, 120, 300]]) {
    // Push until done; extra is what the last chunk held after the hello's records.
    const reader = new ClientHelloReader();
    let off = 0;
    let result: ClientHelloResult = { done: false, need: 1 };
    for (const cut of [...cuts, input.length]) {
      result = reader.push(input.subarray(off, cut));
      off = cut;
      if (result.done) break;
    }
    const h = info(result);
    assert.deepEqual(h.bytes, hello2, `cuts ${cuts}`);
    assert.equal(h.serverName, HOST);
    assert.deepEqual(reader.extra, input.subarray(hello2.length, off), `cuts ${cuts}`);
  }
  const reader = new ClientHelloReader();
  const r = reader.push(concat(hello2, tail));
  assert.ok(r.done);
  assert.deepEqual(reader.extra, tail);
  assert.throws(() => reader.push(Uint8Array.of(1)), /already complete/);
});

Deno.test("ClientHelloReader.extra is empty before and after a hello with nothing after it", () => {
  const bytes = fixture("openssl_tls13");
  const reader = new ClientHelloReader();
  assert.equal(reader.extra.length, 0);
  reader.push(bytes.subarray(0, 10));
  assert.equal(reader.extra.length, 0);
  assert.ok(reader.push(bytes.subarray(10)).done);
  assert.equal(reader.extra.length, 0);
});

Deno.test("ClientHelloReader.push() reports the bytes needed", () => {
  const bytes = fixture("openssl_tls12"); // one record: 5-byte header, 218-byte payload
  const cases: [have: number, need: number][] = [
    [0, 9], // a record header and a handshake header at least
    [1, 8],
    [4, 5],
    [5, 218], // record length known: the rest of the record
    [6, 217],
    [100, 123],
    [222, 1],
  ];
  for (const [have, need] of cases) {
    assert.deepEqual(new ClientHelloReader().push(bytes.subarray(0, have)), { done: false, need });
  }
  // A message spanning records: after the first record, the next header plus the rest.
  const two = records(messageOf(bytes), [100]);
  assert.deepEqual(new ClientHelloReader().push(two.subarray(0, 105)), {
    done: false,
    need: 5 + 118,
  });
  assert.deepEqual(new ClientHelloReader().push(two.subarray(0, 50)), {
    done: false,
    need: 55 + 5 + 118,
  });
});

// ---------------------------------------------------------------------------------------------
// Synthetic hellos: extensions, GREASE, normalisation.

Deno.test("parseClientHello() reads extensions from synthetic hellos", () => {
  const cases: { name: string; parts: BodyParts; want: Partial<ClientHelloInfo> }[] = [
    {
      name: "no extensions block",
      parts: { extensions: null },
      want: { serverName: null, alpn: [], supportedVersions: [] },
    },
    {
      name: "empty extensions block",
      parts: { extensions: [] },
      want: { serverName: null, alpn: [], supportedVersions: [] },
    },
    {
      name: "SNI normalised",
      parts: { extensions: sni("TEST.Internal-Server.LOCAL.") },
      want: { serverName: HOST },
    },
    {
      name: "SNI of 253 characters",
      parts: {
        extensions: sni(`${"a".repeat(63)}.${"b".repeat(63)}.${"c".repeat(63)}.${"d".repeat(61)}`),
      },
      want: {
        serverName: `${"a".repeat(63)}.${"b".repeat(63)}.${"c".repeat(63)}.${"d".repeat(61)}`,
      },
    },
    {
      name: "SNI with an unknown name_type entry skipped",
      parts: { extensions: ext(0, vec16([7, ...vec16([1, 2]), 0, ...vec16(ascii("a.b"))])) },
      want: { serverName: "a.b" },
    },
    {
      name: "ALPN one name of 255 bytes",
      parts: { extensions: alpn("x".repeat(255)) },
      want: { alpn: ["x".repeat(255)] },
    },
    {
      name: "GREASE everywhere",
      parts: {
        sessionId: Array(32).fill(7),
        suites: vec16([0x4a, 0x4a, 0x13, 0x01]),
        extensions: [
          ...ext(0x0a0a, []),
          ...sni(HOST),
          ...versions(0x7a7a, TLS13, TLS12),
          ...alpn("h2"),
          ...ext(0xfafa, [0]),
        ],
      },
      want: { serverName: HOST, alpn: ["h2"], supportedVersions: [TLS13, TLS12] },
    },
    {
      name: "legacy_version 0x0301",
      parts: { version: TLS10, extensions: null },
      want: { legacyVersion: TLS10 },
    },
    {
      name: "unknown extension types",
      parts: { extensions: [...ext(0xffff, [1, 2, 3]), ...ext(21, Array(100).fill(0))] },
      want: { serverName: null },
    },
  ];
  for (const { name, parts, want } of cases) {
    const h = parseClientHello(hello(parts));
    for (const [key, value] of Object.entries(want)) {
      assert.deepEqual(h[key as keyof ClientHelloInfo], value, `${name}: ${key}`);
    }
  }
});

// ---------------------------------------------------------------------------------------------
// Malformations: each a ProtocolError with the expected message.

const PREFIX = "Cannot read ClientHello: ";

Deno.test("parseClientHello() refuses malformed records", () => {
  const good = fixture("deno_rustls");
  const withByte = (i: number, v: number): Uint8Array => {
    const b = good.slice();
    b[i] = v;
    return b;
  };
  const second = records(messageOf(good), [10]);
  const secondAt = 15; // second record header
  const cases: [string, Uint8Array, string][] = [
    ["application data", withByte(0, 23), "first record has content type 23, expected 22"],
    ["alert", withByte(0, 21), "first record has content type 21, expected 22"],
    [
      "SSLv2-compatible hello",
      Uint8Array.of(0x80, 0x2e, 0x01, 0x03, 0x01),
      "first record has content type 128, expected 22 (an SSLv2-compatible hello?)",
    ],
    [
      "plain HTTP",
      enc.encode("GET / HTTP/1.1\r\n"),
      "first record has content type 71, expected 22 (plain text?)",
    ],
    ["version major 2", withByte(1, 2), "first record has version major 2, expected 3"],
    [
      "zero-length record",
      Uint8Array.of(22, 3, 1, 0, 0),
      "first record has length 0, expected 1 to 16384",
    ],
    [
      "record over 2^14",
      Uint8Array.of(22, 3, 1, 0x40, 0x01),
      "first record has length 16385, expected 1 to 16384",
    ],
    ["handshake type 2", withByte(5, 2), "handshake message type is 2, expected 1 (ClientHello)"],
    [
      "second record of another type",
      (() => {
        const b = second.slice();
        b[secondAt] = 21;
        return b;
      })(),
      "record 2 has content type 21, expected 22",
    ],
    [
      "second record of version major 4",
      (() => {
        const b = second.slice();
        b[secondAt + 1] = 4;
        return b;
      })(),
      "record 2 has version major 4, expected 3",
    ],
    [
      "handshake bytes after the hello",
      records(concat(messageOf(good), Uint8Array.of(1, 0, 0, 0))),
      "4 bytes follow the ClientHello in first record, expected none",
    ],
  ];
  for (const [name, input, message] of cases) {
    assertProtocolError(() => parseClientHello(input), "bad-client-hello", PREFIX + message);
    // The same error when the bytes trickle in one at a time.
    assertProtocolError(
      () => {
        const r = new ClientHelloReader();
        for (let i = 0; i < input.length; i++) r.push(input.subarray(i, i + 1));
        throw new Error(`${name}: no error`);
      },
      "bad-client-hello",
      PREFIX + message,
    );
  }
});

Deno.test("ClientHelloReader.push() refuses a bad first byte at once", () => {
  for (const b of [0, 20, 21, 23, 0x16 + 1, 0x47, 0x80, 0xff]) {
    assertProtocolError(() => new ClientHelloReader().push(Uint8Array.of(b)), "bad-client-hello");
  }
});

Deno.test("parseClientHello() refuses malformed ClientHello bodies", () => {
  const badLength = (extensions: number[]): BodyParts => ({ extensions });
  const cases: [string, Uint8Array, string][] = [
    [
      "body too short",
      records(handshake([3, 3, 0])),
      "legacy_version, random and session_id length needs 35 bytes at offset 0, only 3 left",
    ],
    [
      "legacy_version 0x0200",
      hello({ version: 0x0200 }),
      "legacy_version is 0x0200, expected 0x03xx",
    ],
    [
      "session_id 33 bytes",
      hello({ sessionId: Array(33).fill(0) }),
      "session_id length is 33, expected at most 32",
    ],
    [
      "cipher_suites odd",
      hello({ suites: vec16([0x13, 0x01, 0x00]) }),
      "cipher_suites length is 3, expected an even number from 2",
    ],
    [
      "cipher_suites empty",
      hello({ suites: vec16([]) }),
      "cipher_suites length is 0, expected an even number from 2",
    ],
    [
      "cipher_suites past the end",
      records(handshake([...u16(TLS12), ...Array(32).fill(0), 0, 0, 8, 0x13, 0x01])),
      "cipher_suites and compression_methods length needs 9 bytes at offset 37, only 2 left",
    ],
    [
      "compression_methods empty",
      hello({ compression: [0] }),
      "compression_methods is empty, expected at least 1 method",
    ],
    [
      "compression_methods past the end",
      hello({ compression: [5, 0], extensions: null }),
      "compression_methods needs 5 bytes at offset 42, only 1 left",
    ],
    [
      "extensions length short",
      records(handshake([...body({ extensions: null }), 0, 5, 0, 0, 0, 0])),
      "extensions length is 5, expected the 4 bytes left",
    ],
    [
      "extensions length one byte",
      records(handshake([...body({ extensions: null }), 0])),
      "extensions length needs 2 bytes at offset 43, only 1 left",
    ],
    [
      "extension past the block",
      hello(badLength([0, 16, 0, 9, 0, 1, 0])),
      "extension 16 (application_layer_protocol_negotiation) has length 9, only 3 bytes left",
    ],
    [
      "extension header cut",
      hello(badLength([0, 16, 0])),
      "extension header needs 4 bytes at offset 45, only 3 left",
    ],
    [
      "duplicate extension",
      hello({ extensions: [...alpn("h2"), ...alpn("h2")] }),
      "extension 16 (application_layer_protocol_negotiation) appears twice",
    ],
    [
      "duplicate GREASE extension",
      hello({ extensions: [...ext(0x1a1a, []), ...ext(0x1a1a, [])] }),
      "extension 6682 appears twice",
    ],
    [
      "duplicate SNI extension",
      hello({ extensions: [...sni(HOST), ...sni(HOST)] }),
      "extension 0 (server_name) appears twice",
    ],
    [
      "SNI empty extension",
      hello({ extensions: ext(0, []) }),
      "server_name is 0 bytes, expected at least 2",
    ],
    ["SNI empty list", hello({ extensions: ext(0, [0, 0]) }), "server_name list is empty"],
    [
      "SNI list length wrong",
      hello({ extensions: ext(0, [0, 9, 0, 0, 1, 0x61]) }),
      "server_name list length is 9, expected 4",
    ],
    [
      "SNI entry cut",
      hello({ extensions: ext(0, vec16([0, 0])) }),
      "server_name entry needs 3 bytes, only 2 left",
    ],
    [
      "SNI name past the list",
      hello({ extensions: ext(0, vec16([0, 0, 5, 0x61])) }),
      "server_name entry has length 5, only 1 bytes left",
    ],
    [
      "SNI empty host_name",
      hello({ extensions: ext(0, vec16([0, 0, 0])) }),
      "server_name host_name length is 0, expected 1 to 254",
    ],
    [
      "SNI host_name of 255 bytes",
      hello({ extensions: sni("a".repeat(255)) }),
      "server_name host_name length is 255, expected 1 to 254",
    ],
    [
      "SNI two host_names",
      hello({ extensions: ext(0, vec16([0, ...vec16(ascii("a.b")), 0, ...vec16(ascii("c.d"))])) }),
      "server_name holds two host_name entries, expected one",
    ],
    [
      "SNI no host_name",
      hello({ extensions: ext(0, vec16([9, ...vec16(ascii("a.b"))])) }),
      "server_name holds no host_name entry",
    ],
    [
      "SNI underscore",
      hello({ extensions: sni("bad_name.example") }),
      'server_name "bad_name.example" is not a valid host name',
    ],
    [
      "SNI empty label",
      hello({ extensions: sni("a..b") }),
      'server_name "a..b" is not a valid host name',
    ],
    [
      "SNI label of 64",
      hello({ extensions: sni(`${"a".repeat(64)}.b`) }),
      `server_name "${"a".repeat(61)}..." is not a valid host name`,
    ],
    ["SNI only a dot", hello({ extensions: sni(".") }), 'server_name "." is not a valid host name'],
    [
      "SNI NUL byte",
      hello({ extensions: sni("a\u0000.b") }),
      'server_name "a\\u0000.b" is not a valid host name',
    ],
    [
      "SNI non-ASCII",
      hello({ extensions: ext(0, vec16([0, ...vec16([0x61, 0xc3, 0xa9])])) }),
      'server_name "aÃ©" is not a valid host name',
    ],
    [
      "ALPN empty list",
      hello({ extensions: ext(16, [0, 0]) }),
      "application_layer_protocol_negotiation list is empty",
    ],
    [
      "ALPN empty name",
      hello({ extensions: ext(16, vec16([0])) }),
      "ALPN protocol name is empty, expected 1 to 255 bytes",
    ],
    [
      "ALPN name past the list",
      hello({ extensions: ext(16, vec16([3, 0x68, 0x32])) }),
      "ALPN protocol name has length 3, only 2 bytes left",
    ],
    [
      "ALPN list length wrong",
      hello({ extensions: ext(16, [0, 1, 2, 0x68, 0x32]) }),
      "application_layer_protocol_negotiation list length is 1, expected 3",
    ],
    [
      "supported_versions empty",
      hello({ extensions: ext(43, []) }),
      "supported_versions is empty, expected a list",
    ],
    [
      "supported_versions odd",
      hello({ extensions: ext(43, [3, 3, 4, 3]) }),
      "supported_versions list length is 3, expected an even number from 2",
    ],
    [
      "supported_versions zero",
      hello({ extensions: ext(43, [0]) }),
      "supported_versions list length is 0, expected an even number from 2",
    ],
    [
      "supported_versions wrong",
      hello({ extensions: ext(43, [4, 3, 4]) }),
      "supported_versions list length is 4, expected 2",
    ],
  ];
  for (const [name, input, message] of cases) {
    assert.throws(() => parseClientHello(input), (err: unknown) => {
      assert.ok(err instanceof ProtocolError, `${name}: ${err}`);
      assert.equal(err.code, "bad-client-hello", name);
      assert.equal(err.message, PREFIX + message, name);
      return true;
    });
  }
});

// ---------------------------------------------------------------------------------------------
// The size bound.

Deno.test("ClientHelloReader refuses more than maxBytes as soon as a header says so", () => {
  const bytes = fixture("curl_tls13"); // 517 bytes, one record
  assert.equal(parseClientHello(bytes, bytes.length).serverName, HOST); // exactly at the bound
  assertProtocolError(
    () => new ClientHelloReader(bytes.length - 1).push(bytes.subarray(0, 5)), // header only
    "client-hello-too-large",
    `${PREFIX}first record ends at byte 517, exceeds max_client_hello_bytes 516`,
  );
  // A handshake header announcing a message larger than the bound, in a small first record.
  const big = records(handshake(Array(20_000).fill(0)), [100]);
  assertProtocolError(
    () => new ClientHelloReader(16_384).push(big.subarray(0, 9)),
    "client-hello-too-large",
    `${PREFIX}a ClientHello of 20004 bytes needs at least 20014 bytes of records, exceeds max_client_hello_bytes 16384`,
  );
  // Two records: the second header pushes the total over.
  const two = records(messageOf(bytes), [256]);
  assert.equal(parseClientHello(two, two.length).serverName, HOST);
  assertProtocolError(
    () => new ClientHelloReader(two.length - 1).push(two.subarray(0, 266)),
    "client-hello-too-large",
    `${PREFIX}a ClientHello of 512 bytes needs at least 522 bytes of records, exceeds max_client_hello_bytes 521`,
  );
  // Many tiny records: the bound counts their headers too (512 records of 6 bytes).
  const tiny = records(messageOf(bytes), Array(512).fill(1));
  assertProtocolError(
    () => parseClientHello(tiny, tiny.length - 1),
    "client-hello-too-large",
    `${PREFIX}record 512 ends at byte 3072, exceeds max_client_hello_bytes 3071`,
  );
  assert.equal(parseClientHello(tiny, tiny.length).serverName, HOST);
});

Deno.test("ClientHelloReader() refuses a bad maxBytes", () => {
  for (const bad of [0, -1, 1.5, Number.NaN, Infinity]) {
    assert.throws(() => new ClientHelloReader(bad), RangeError);
  }
  assert.ok(new ClientHelloReader(1));
  assertProtocolError(
    () => new ClientHelloReader(1).push(fixture("node").subarray(0, 5)),
    "client-hello-too-large",
  );
});

// ---------------------------------------------------------------------------------------------
// Fuzz: only ProtocolError may come out, and chunking never changes the outcome.

/** mulberry32: a small seeded PRNG, so a failure can be replayed. */
function prng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = seed;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

type Outcome = { kind: "done"; hello: ReturnType<typeof summary> } | { kind: "need" } | {
  kind: "error";
  code: string;
  message: string;
};

function outcome(fn: () => ClientHelloResult): Outcome {
  try {
    const r = fn();
    return r.done ? { kind: "done", hello: summary(r.hello) } : { kind: "need" };
  } catch (err) {
    if (!(err instanceof ProtocolError)) throw err;
    return { kind: "error", code: err.code, message: err.message };
  }
}

Deno.test("ClientHelloReader throws only ProtocolError on 5,000 mutated captures", () => {
  const random = prng(0x7150);
  const pick = (n: number): number => Math.floor(random() * n);
  const counts = { done: 0, need: 0, error: 0 };
  for (let i = 0; i < 5_000; i++) {
    const { bytes } = LOADED[pick(LOADED.length)]!;
    const input = bytes.slice();
    const flips = 1 + pick(4);
    for (let f = 0; f < flips; f++) {
      // Favour the headers and length fields near the start, where structure is densest.
      const at = random() < 0.5 ? pick(Math.min(input.length, 64)) : pick(input.length);
      input[at] = random() < 0.5 ? pick(256) : input[at]! ^ (1 << pick(8));
    }
    const maxBytes = random() < 0.1 ? 1 + pick(input.length + 10) : undefined;
    const whole = outcome(() => new ClientHelloReader(maxBytes).push(input));
    const cuts = Array.from({ length: pick(4) }, () => pick(input.length + 1)).sort((a, b) =>
      a - b
    );
    const chunked = outcome(() => feed(input, cuts, maxBytes));
    assert.deepEqual(chunked, whole, `iteration ${i}, cuts ${cuts}`);
    counts[whole.kind]++;
    if (whole.kind === "done") {
      // need is a lower bound: a prefix never claims more bytes than the hello really took.
      const total = whole.hello.bytes.length;
      const have = pick(total);
      const r = new ClientHelloReader(maxBytes).push(input.subarray(0, have));
      assert.ok(!r.done && r.need >= 1 && r.need <= total - have, `iteration ${i}, prefix ${have}`);
    }
  }
  // The mutations reach every outcome, so the fuzz exercises more than the first check.
  assert.ok(counts.done > 100 && counts.error > 100 && counts.need > 10, JSON.stringify(counts));
});

// ---------------------------------------------------------------------------------------------
// Alerts and readClientHello().

Deno.test("tlsAlert() builds fatal alert records", () => {
  const cases: [number, number[]][] = [
    [ALERT_UNRECOGNIZED_NAME, [21, 3, 3, 0, 2, 2, 112]],
    [ALERT_DECODE_ERROR, [21, 3, 3, 0, 2, 2, 50]],
    [ALERT_INTERNAL_ERROR, [21, 3, 3, 0, 2, 2, 80]],
    [ALERT_HANDSHAKE_FAILURE, [21, 3, 3, 0, 2, 2, 40]],
    [ALERT_ACCESS_DENIED, [21, 3, 3, 0, 2, 2, 49]],
    [0, [21, 3, 3, 0, 2, 2, 0]],
    [255, [21, 3, 3, 0, 2, 2, 255]],
  ];
  for (const [description, bytes] of cases) assert.deepEqual([...tlsAlert(description)], bytes);
  for (const bad of [-1, 256, 1.5, Number.NaN]) assert.throws(() => tlsAlert(bad), RangeError);
});

/** A conn that returns the given chunks, one per read, then EOF. */
function chunkConn(chunks: Uint8Array[]): { read(buf: Uint8Array): Promise<number | null> } {
  let i = 0;
  return {
    read(buf: Uint8Array): Promise<number | null> {
      const c = chunks[i++];
      if (c === undefined) return Promise.resolve(null);
      assert.ok(c.length <= buf.length);
      buf.set(c);
      return Promise.resolve(c.length);
    },
  };
}

Deno.test("readClientHello() reads until the hello is complete and returns the extra bytes", async () => {
  const bytes = fixture("curl_tls13");
  const tail = Uint8Array.of(20, 3, 3, 0, 1, 1);
  const cases: [string, Uint8Array[], number[]][] = [
    ["one read", [bytes], []],
    ["three reads", [bytes.subarray(0, 3), bytes.subarray(3, 300), bytes.subarray(300)], []],
    ["hello and more in the last read", [bytes.subarray(0, 7), concat(bytes.subarray(7), tail)], [
      ...tail,
    ]],
  ];
  for (const [name, chunks, extra] of cases) {
    const r = await readClientHello(chunkConn(chunks));
    assert.equal(r.hello.serverName, HOST, name);
    assert.deepEqual(r.hello.bytes, bytes, name);
    assert.deepEqual([...r.extra], extra, name);
  }
});

Deno.test("readClientHello() refuses EOF before the end and passes errors on", async () => {
  const bytes = fixture("openssl_tls12");
  await assert.rejects(readClientHello(chunkConn([])), (err: unknown) => {
    assert.ok(err instanceof ProtocolError);
    assert.equal(err.code, "bad-client-hello");
    assert.equal(err.message, `${PREFIX}connection ended after 0 bytes, need at least 9 more`);
    return true;
  });
  await assert.rejects(readClientHello(chunkConn([bytes.subarray(0, 100)])), (err: unknown) => {
    assert.ok(err instanceof ProtocolError);
    assert.equal(err.message, `${PREFIX}connection ended after 100 bytes, need at least 123 more`);
    return true;
  });
  await assert.rejects(readClientHello(chunkConn([bytes]), 100), (err: unknown) => {
    assert.ok(err instanceof ProtocolError);
    assert.equal(err.code, "client-hello-too-large");
    return true;
  });
  await assert.rejects(
    readClientHello(chunkConn([enc.encode("GET / HTTP/1.1\r\n\r\n")])),
    ProtocolError,
  );
});

Deno.test("ClientHelloReader with borrowFirst parses the first chunk in place, later chunks as ever", () => {
  const bytes = fixture("curl_tls13");
  const whole = new ClientHelloReader(16_384, true).push(bytes);
  assert.ok(whole.done);
  assert.equal(whole.hello.serverName, HOST);
  assert.equal(whole.hello.bytes.buffer, bytes.buffer, "no copy of the first chunk");
  // a hello in two chunks: the borrowed first one is copied when the second comes
  const first = bytes.slice(0, 100);
  const reader = new ClientHelloReader(16_384, true);
  assert.equal(reader.push(first).done, false);
  const r = reader.push(bytes.subarray(100));
  first.fill(0); // the caller may reuse its buffer once a later chunk came: it was copied
  assert.ok(r.done);
  assert.equal(r.hello.serverName, HOST);
  assert.deepEqual(r.hello.bytes, bytes.subarray(0, r.hello.bytes.length));
});
