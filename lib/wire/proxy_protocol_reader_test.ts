import assert from "node:assert/strict";
import { ProtocolError } from "../errors.ts";
import { PP2_SIGNATURE } from "./proxy_protocol.ts";
import {
  formatIpv6,
  parseIpv6,
  PP2_MAX_TLV_BYTES,
  type ProxyHeader,
  ProxyHeaderReader,
} from "./proxy_protocol_reader.ts";

const enc = (s: string) => new TextEncoder().encode(s);
/** What follows the header on the wire: the start of a TLS ClientHello record. */
const HELLO = new Uint8Array([0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0x00, 0x00, 0x01, 0x00]);

/** A test-only v2 encoder, from the struct layout of doc/proxy-protocol.txt 2.2. */
function v2(verCmd: number, fam: number, body: number[], lenOverride?: number): Uint8Array {
  const len = lenOverride ?? body.length;
  return new Uint8Array([...PP2_SIGNATURE, verCmd, fam, len >> 8, len & 0xff, ...body]);
}
const u16 = (n: number) => [n >> 8, n & 0xff];
const tlv = (type: number, value: number[]) => [type, ...u16(value.length), ...value];
const ip6 = (s: string) => [...parseIpv6(s)!];

const FF6 = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";

/** Headers the reader must accept: [name, bytes, expected header]. */
const GOOD: [string, Uint8Array, ProxyHeader][] = [
  [
    "v1 TCP4, the spec's example line",
    enc("PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"),
    {
      version: 1,
      command: "proxy",
      addresses: {
        family: "tcp4",
        source: { address: "192.168.0.1", port: 56324 },
        destination: { address: "192.168.0.11", port: 443 },
      },
      tlvs: [],
      length: 47,
    },
  ],
  [
    "v1 TCP4 at its longest (56 chars)",
    enc("PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n"),
    {
      version: 1,
      command: "proxy",
      addresses: {
        family: "tcp4",
        source: { address: "255.255.255.255", port: 65535 },
        destination: { address: "255.255.255.255", port: 65535 },
      },
      tlvs: [],
      length: 56,
    },
  ],
  [
    "v1 TCP6 at its longest (104 chars)",
    enc(`PROXY TCP6 ${FF6} ${FF6} 65535 65535\r\n`),
    {
      version: 1,
      command: "proxy",
      addresses: {
        family: "tcp6",
        source: { address: FF6, port: 65535 },
        destination: { address: FF6, port: 65535 },
      },
      tlvs: [],
      length: 104,
    },
  ],
  [
    "v1 TCP6 compressed, upper case, normalised",
    enc("PROXY TCP6 ::1 2001:DB8:0:0:0:0:0:1 0 8443\r\n"),
    {
      version: 1,
      command: "proxy",
      addresses: {
        family: "tcp6",
        source: { address: "::1", port: 0 },
        destination: { address: "2001:db8::1", port: 8443 },
      },
      tlvs: [],
      length: 44,
    },
  ],
  [
    "v1 UNKNOWN, short form (15 chars)",
    enc("PROXY UNKNOWN\r\n"),
    { version: 1, command: "proxy", tlvs: [], length: 15 },
  ],
  [
    "v1 UNKNOWN, worst case (107 chars)",
    enc(`PROXY UNKNOWN ${FF6} ${FF6} 65535 65535\r\n`),
    { version: 1, command: "proxy", tlvs: [], length: 107 },
  ],
  [
    "v2 PROXY TCP over IPv4",
    v2(0x21, 0x11, [127, 0, 0, 2, 127, 0, 0, 1, ...u16(51000), ...u16(443)]),
    {
      version: 2,
      command: "proxy",
      addresses: {
        family: "tcp4",
        source: { address: "127.0.0.2", port: 51000 },
        destination: { address: "127.0.0.1", port: 443 },
      },
      tlvs: [],
      length: 28,
    },
  ],
  [
    "v2 PROXY TCP over IPv6 with ALPN, AUTHORITY and NOOP TLVs",
    v2(0x21, 0x21, [
      ...ip6("::1"),
      ...ip6("2001:db8::5"),
      ...u16(1),
      ...u16(4433),
      ...tlv(0x01, [...enc("h2")]),
      ...tlv(0x02, [...enc("a.example")]),
      ...tlv(0x04, []),
    ]),
    {
      version: 2,
      command: "proxy",
      addresses: {
        family: "tcp6",
        source: { address: "::1", port: 1 },
        destination: { address: "2001:db8::5", port: 4433 },
      },
      tlvs: [
        { type: 0x01, value: enc("h2") },
        { type: 0x02, value: enc("a.example") },
        { type: 0x04, value: new Uint8Array() },
      ],
      length: 16 + 36 + 5 + 12 + 3,
    },
  ],
  [
    "v2 LOCAL, UNSPEC, no address (a health check)",
    v2(0x20, 0x00, []),
    { version: 2, command: "local", tlvs: [], length: 16 },
  ],
  [
    "v2 LOCAL with an address block: skipped by its length",
    v2(0x20, 0x11, [10, 0, 0, 1, 10, 0, 0, 2, 0, 1, 0, 2]),
    { version: 2, command: "local", tlvs: [], length: 28 },
  ],
  [
    "v2 PROXY UNSPEC: the real endpoints stand",
    v2(0x21, 0x00, []),
    { version: 2, command: "proxy", tlvs: [], length: 16 },
  ],
  [
    "v2 PROXY UNIX stream (216-byte block): the real endpoints stand",
    v2(0x21, 0x31, new Array(216).fill(0x61)),
    { version: 2, command: "proxy", tlvs: [], length: 232 },
  ],
  [
    "v2 PROXY UDP over IPv4: the real endpoints stand",
    v2(0x21, 0x12, [1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2]),
    { version: 2, command: "proxy", tlvs: [], length: 28 },
  ],
  [
    `v2 PROXY with exactly ${PP2_MAX_TLV_BYTES} bytes of TLVs`,
    v2(0x21, 0x11, [127, 0, 0, 2, 127, 0, 0, 1, 0, 1, 0, 2, ...tlv(0x04, new Array(1021).fill(0))]),
    {
      version: 2,
      command: "proxy",
      addresses: {
        family: "tcp4",
        source: { address: "127.0.0.2", port: 1 },
        destination: { address: "127.0.0.1", port: 2 },
      },
      tlvs: [{ type: 0x04, value: new Uint8Array(1021) }],
      length: 16 + 12 + 1024,
    },
  ],
];

/** Input the reader must refuse: [name, bytes, a part of the message]. */
const BAD: [string, Uint8Array, string][] = [
  ["a TLS record with no header", HELLO, "first byte 0x16"],
  ["an HTTP request", enc("GET / HTTP/1.1\r\n"), "first byte 0x47"],
  ["lower-case proxy", enc("proxy TCP4 1.2.3.4 1.2.3.4 1 2\r\n"), "first byte 0x70"],
  ["v1 without its space", enc("PROXYTCP4\r\n"), "byte 6"],
  ["v2 signature broken", new Uint8Array([0x0d, 0x0a, 0x0d, 0x0a, 0x01]), "byte 5"],
  ["v1 lone LF", enc("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"), "lone LF"],
  ["v1 CR inside", enc("PROXY TCP4 1.2.3.4\r5.6.7.8 1 2\r\n"), "byte 0x0d"],
  ["v1 no CRLF in 107 bytes", enc(`PROXY UNKNOWN ${"x".repeat(200)}`), "no CRLF in the first 107"],
  ["v1 108 bytes", enc(`PROXY UNKNOWN ${FF6} ${FF6} 65535 655351\r\n`), "no CRLF"],
  ["v1 protocol UDP4", enc("PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n"), 'protocol "UDP4"'],
  ["v1 double space", enc("PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n"), "6 fields"],
  ["v1 missing port", enc("PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n"), "6 fields"],
  ["v1 leading zero", enc("PROXY TCP4 192.168.0.01 5.6.7.8 1 2\r\n"), "source address"],
  ["v1 octet over 255", enc("PROXY TCP4 1.2.3.4 5.6.7.256 1 2\r\n"), "destination address"],
  ["v1 port over 65535", enc("PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n"), "source port"],
  ["v1 port with leading zero", enc("PROXY TCP4 1.2.3.4 5.6.7.8 1 0443\r\n"), "destination port"],
  ["v1 TCP6 with IPv4 addresses", enc("PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n"), "is not TCP6"],
  ["v1 TCP4 with IPv6 addresses", enc("PROXY TCP4 ::1 ::1 1 2\r\n"), "is not TCP4"],
  ["v1 TCP6 two ::", enc("PROXY TCP6 1::2::3 ::1 1 2\r\n"), "source address"],
  ["v2 version 1", v2(0x11, 0x11, []), "version 1, not 2"],
  ["v2 command 2", v2(0x22, 0x11, []), "unknown command 0x02"],
  ["v2 family 0x41", v2(0x21, 0x41, []), "family and protocol 0x41"],
  ["v2 protocol 0x13", v2(0x21, 0x13, []), "family and protocol 0x13"],
  ["v2 TCP4 block cut short", v2(0x21, 0x11, [1, 2, 3, 4]), "shorter than the 12-byte"],
  ["v2 length over the cap", v2(0x21, 0x11, [], 12 + PP2_MAX_TLV_BYTES + 1), "over the limit"],
  ["v2 length 65535", v2(0x20, 0x00, [], 65535), "over the limit"],
  [
    "v2 TLV past the end",
    v2(0x21, 0x11, [1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2, 0x02, 0, 9, 0x61]),
    "runs past",
  ],
  ["v2 stray TLV bytes", v2(0x21, 0x11, [1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2, 0x02]), "stray"],
];

/** Feeds `bytes` in chunks cut at `cuts`; returns the header and every byte after it. */
function feed(bytes: Uint8Array, cuts: number[]): { header: ProxyHeader; after: number[] } {
  const r = new ProxyHeaderReader();
  let header: ProxyHeader | undefined;
  const after: number[] = [];
  let from = 0;
  for (const to of [...cuts, bytes.length]) {
    const chunk = bytes.subarray(from, to);
    from = to;
    if (header !== undefined) {
      after.push(...chunk);
      continue;
    }
    const res = r.push(chunk);
    if (res.done) {
      header = res.header;
      after.push(...res.rest);
    }
  }
  if (header === undefined) throw new Error("incomplete");
  return { header, after };
}

Deno.test("proxy protocol reader: every good header, split at every byte offset, hello intact", () => {
  for (const [name, bytes, want] of GOOD) {
    const wire = new Uint8Array([...bytes, ...HELLO]);
    const splits: number[][] = [[]];
    for (let k = 1; k < wire.length; k++) splits.push([k]);
    splits.push(Array.from({ length: wire.length - 1 }, (_, k) => k + 1)); // one byte at a time
    for (const cuts of splits) {
      const { header, after } = feed(wire, cuts);
      assert.deepEqual(header, want, `${name}, cut at ${cuts.slice(0, 3)}`);
      assert.deepEqual(after, [...HELLO], `${name}: the bytes after the header, cut at ${cuts}`);
    }
  }
});

Deno.test("proxy protocol reader: a header alone is not done until its last byte", () => {
  for (const [name, bytes] of GOOD) {
    const r = new ProxyHeaderReader();
    assert.deepEqual(r.push(bytes.subarray(0, bytes.length - 1)), { done: false }, name);
    const res = r.push(bytes.subarray(bytes.length - 1));
    assert.deepEqual(res.done && res.rest.length, 0, name);
  }
});

Deno.test("proxy protocol reader: bad input refused with a clear message, however it is split", () => {
  for (const [name, bytes, part] of BAD) {
    for (let k = 0; k <= bytes.length; k++) {
      const r = new ProxyHeaderReader();
      let err: unknown;
      try {
        r.push(bytes.subarray(0, k));
        r.push(bytes.subarray(k));
      } catch (e) {
        err = e;
      }
      // an incomplete but so far valid prefix would still be waiting: that is not a refusal
      assert.ok(err instanceof ProtocolError, `${name}, cut at ${k}: ${err}`);
      assert.ok(err.message.includes(part), `${name}: ${err.message}`);
      assert.ok(err.message.startsWith("Cannot read PROXY protocol header: "));
    }
  }
});

Deno.test("proxy protocol reader: refuses at the first byte that fits neither version", () => {
  // a TLS client that connects straight to a port expecting PROXY headers
  const r = new ProxyHeaderReader();
  assert.throws(() => r.push(HELLO.subarray(0, 1)), /a TLS record/);
});

Deno.test("proxy protocol reader: IPv6 text as RFC 5952", () => {
  const cases: [string, string][] = [
    ["0:0:0:0:0:0:0:1", "::1"],
    ["::", "::"],
    ["2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"],
    ["2001:0db8:0000:0001:0000:0000:0000:0001", "2001:db8:0:1::1"],
    ["1:0:2:3:4:5:6:7", "1:0:2:3:4:5:6:7"],
    ["::ffff:7f00:2", "::ffff:7f00:2"],
  ];
  for (const [text, want] of cases) assert.deepEqual(formatIpv6(parseIpv6(text)!), want);
  for (const bad of ["1:2:3:4:5:6:7", "1:2:3:4:5:6:7:8:9", "12345::", "::g", ":1:2", "1::2::3"]) {
    assert.deepEqual(parseIpv6(bad), null, bad);
  }
});
