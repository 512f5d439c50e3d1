import assert from "node:assert/strict";
import {
  IPv4ProxyAddress,
  IPv6ProxyAddress,
  V1ProxyProtocol,
  V2ProxyProtocol,
} from "proxy-protocol-js";
import {
  encodeProxyHeader,
  encodeProxyV1,
  encodeProxyV2,
  PP1_MAX_BYTES,
  PP2_TYPE_ALPN,
  PP2_TYPE_AUTHORITY,
  type ProxiedAddresses,
  proxiedAddresses,
} from "./proxy_protocol.ts";

const text = (b: Uint8Array) => new TextDecoder().decode(b);
const hex = (s: string) =>
  Uint8Array.from(s.replace(/\s+/g, "").match(/../g)!.map((x) => parseInt(x, 16)));
const tcp4 = (s: string, d: string, sp: number, dp: number): ProxiedAddresses => ({
  family: "tcp4",
  source: { address: s, port: sp },
  destination: { address: d, port: dp },
});
const tcp6 = (s: string, d: string, sp: number, dp: number): ProxiedAddresses => ({
  ...tcp4(s, d, sp, dp),
  family: "tcp6",
});
const FULL6 = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";

// HAProxy's doc/proxy-protocol.txt, section 2.1: its example line and its longest lines
const v1Cases: [string, ProxiedAddresses | null, string, number][] = [
  [
    "the example before an HTTP request",
    tcp4("192.168.0.1", "192.168.0.11", 56324, 443),
    "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n",
    -1,
  ],
  [
    "the longest TCP4 line (56 chars)",
    tcp4("255.255.255.255", "255.255.255.255", 65535, 65535),
    "PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n",
    56,
  ],
  [
    "the longest TCP6 line (104 chars)",
    tcp6(FULL6, FULL6, 65535, 65535),
    `PROXY TCP6 ${FULL6} ${FULL6} 65535 65535\r\n`,
    104,
  ],
  ["the short UNKNOWN form (15 chars)", null, "PROXY UNKNOWN\r\n", 15],
  ["loopback IPv6", tcp6("::1", "::1", 40000, 8443), "PROXY TCP6 ::1 ::1 40000 8443\r\n", -1],
];
for (const [what, a, want, len] of v1Cases) {
  Deno.test(`encodeProxyV1() writes the specification's ${what}`, () => {
    const got = encodeProxyV1(a);
    assert.equal(text(got), want);
    if (len >= 0) assert.equal(got.length, len);
    assert.ok(got.length <= PP1_MAX_BYTES);
  });
}

// section 2.2: the 16-byte header (signature, ver_cmd, fam, len), then the addresses of the
// family in network order, then the ports, then the TLVs (type, length_hi, length_lo, value)
const SIG = "0d0a0d0a000d0a515549540a";
const v2Cases: [string, ProxiedAddresses | null, Parameters<typeof encodeProxyV2>[1], string][] = [
  [
    "PROXY TCP over IPv4 (\\x21 \\x11, len 12)",
    tcp4("192.168.0.1", "192.168.0.11", 56324, 443),
    [],
    `${SIG} 21 11 000c  c0a80001 c0a8000b  dc04 01bb`,
  ],
  [
    "PROXY TCP over IPv6 (\\x21 \\x21, len 36)",
    tcp6("2001:db8::1", "::1", 65535, 1),
    [],
    `${SIG} 21 21 0024  20010db8000000000000000000000001 00000000000000000000000000000001 ffff 0001`,
  ],
  [
    "PROXY TCP over IPv4 with the AUTHORITY and ALPN TLVs",
    tcp4("127.0.0.2", "127.0.0.1", 1, 2),
    [
      { type: PP2_TYPE_AUTHORITY, value: new TextEncoder().encode("a.example") },
      { type: PP2_TYPE_ALPN, value: new TextEncoder().encode("h2") },
    ],
    `${SIG} 21 11 001d  7f000002 7f000001 0001 0002  02 0009 612e6578616d706c65  01 0002 6832`,
  ],
  ["LOCAL (\\x20 \\x00, len 0)", null, [], `${SIG} 20 00 0000`],
];
for (const [what, a, tlvs, want] of v2Cases) {
  Deno.test(`encodeProxyV2() lays out ${what} as the specification does`, () => {
    assert.deepEqual(encodeProxyV2(a, tlvs), hex(want));
  });
}

// an independent parser (proxy-protocol-js) reads what the encoder writes
const parsed: [string, ProxiedAddresses][] = [
  ["IPv4", tcp4("127.0.0.2", "127.0.0.1", 51234, 8443)],
  ["IPv6", tcp6("::1", "fe80::1:2", 0, 65535)],
  ["IPv6 at its longest", tcp6(FULL6, FULL6, 65535, 65535)],
];
for (const [what, a] of parsed) {
  Deno.test(`proxy-protocol-js parses encodeProxyV1() of ${what}`, () => {
    const p = V1ProxyProtocol.parse(text(encodeProxyV1(a)));
    assert.equal(p.inetProtocol, a.family === "tcp4" ? "TCP4" : "TCP6");
    assert.deepEqual({ ...p.source }, { ipAddress: a.source.address, port: a.source.port });
    assert.deepEqual({ ...p.destination }, {
      ipAddress: a.destination.address,
      port: a.destination.port,
    });
    assert.equal(p.data, "");
  });

  Deno.test(`proxy-protocol-js parses encodeProxyHeader("v2") of ${what} and its AUTHORITY`, () => {
    const bytes = encodeProxyHeader("v2", a, "test.internal-server.local");
    const p = V2ProxyProtocol.parse(bytes);
    assert.equal(p.command, 1); // PROXY
    assert.equal(p.transportProtocol, 1); // STREAM
    const addr = p.proxyAddress as IPv4ProxyAddress | IPv6ProxyAddress;
    assert.ok(addr instanceof (a.family === "tcp4" ? IPv4ProxyAddress : IPv6ProxyAddress));
    assert.equal(addr.sourcePort, a.source.port);
    assert.equal(addr.destinationPort, a.destination.port);
    assert.deepEqual(
      [...addr.sourceAddress.address],
      [...encodeProxyV2(a).subarray(16, a.family === "tcp4" ? 20 : 32)],
    );
    // the TLVs are what follows the addresses: one AUTHORITY with the SNI
    const tlvs = p.data!;
    assert.equal(tlvs[0], PP2_TYPE_AUTHORITY);
    const n = (tlvs[1]! << 8) | tlvs[2]!;
    assert.equal(n, tlvs.length - 3);
    assert.equal(text(tlvs.subarray(3)), "test.internal-server.local");
    // and the header's length covers exactly the addresses and the TLV
    assert.equal((bytes[14]! << 8) | bytes[15]!, bytes.length - 16);
  });
}

Deno.test("proxy-protocol-js builds the same v2 bytes as encodeProxyV2() for IPv4", () => {
  const a = tcp4("10.1.2.3", "192.0.2.7", 4000, 443);
  const theirs = new V2ProxyProtocol(
    1,
    1,
    IPv4ProxyAddress.from(encodeProxyV2(a).subarray(16)),
  ).build();
  assert.deepEqual(encodeProxyV2(a), theirs);
});

Deno.test("encodeProxyHeader() writes v1 without TLVs, v2 LOCAL without addresses", () => {
  const a = tcp4("127.0.0.2", "127.0.0.1", 1, 2);
  assert.equal(
    text(encodeProxyHeader("v1", a, "x.example")),
    "PROXY TCP4 127.0.0.2 127.0.0.1 1 2\r\n",
  );
  assert.deepEqual(encodeProxyHeader("v2", a, ""), encodeProxyV2(a));
  assert.deepEqual(encodeProxyHeader("v2", null, "x.example"), hex(`${SIG} 20 00 0000`));
  assert.equal(text(encodeProxyHeader("v1", null)), "PROXY UNKNOWN\r\n");
});

Deno.test("encodeProxyV1() and encodeProxyV2() refuse an address or port not of the family", () => {
  assert.throws(() => encodeProxyV1(tcp4("::1", "127.0.0.1", 1, 2)), /source "::1" is not an IPv4/);
  assert.throws(() => encodeProxyV2(tcp6("::1", "127.0.0.1", 1, 2)), /destination "127.0.0.1"/);
  assert.throws(() => encodeProxyV1(tcp4("127.0.0.1", "127.0.0.1", 65536, 2)), /port 65536/);
  assert.throws(
    () =>
      encodeProxyV2(tcp4("127.0.0.1", "127.0.0.1", 1, 2), [{
        type: 2,
        value: new Uint8Array(65536),
      }]),
    /over 65535/,
  );
});

const mapped: [string, [string, string], ProxiedAddresses | null][] = [
  ["two IPv4", ["127.0.0.2", "127.0.0.1"], tcp4("127.0.0.2", "127.0.0.1", 1, 2)],
  ["two IPv6", ["::1", "::1"], tcp6("::1", "::1", 1, 2)],
  [
    "IPv4-mapped (a dual-stack listener) as IPv4",
    ["::ffff:127.0.0.2", "::ffff:127.0.0.1"],
    tcp4("127.0.0.2", "127.0.0.1", 1, 2),
  ],
  ["IPv4 and IPv6 as IPv6", ["127.0.0.2", "::1"], tcp6("::ffff:127.0.0.2", "::1", 1, 2)],
  ["a name as nothing", ["localhost", "::1"], null],
];
for (const [what, [s, d], want] of mapped) {
  Deno.test(`proxiedAddresses() takes ${what}`, () => {
    assert.deepEqual(proxiedAddresses({ hostname: s, port: 1 }, { hostname: d, port: 2 }), want);
  });
}
