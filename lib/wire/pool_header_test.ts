import assert from "node:assert/strict";
import { ProtocolError } from "../errors.ts";
import {
  decodePoolHeader,
  encodePoolHeader,
  encodePoolHeaderV1,
  MAX_POOL_FIELDS_BYTES,
  parseAddressText,
  PoolField,
} from "./pool_header.ts";
import { connIdOf, connIdPrefix, isConnId } from "./conn_id.ts";

const NAME = "test.internal-server.local";
const b = (...xs: (number | string)[]) =>
  Uint8Array.from(
    xs.flatMap((x) => typeof x === "string" ? [...x].map((c) => c.charCodeAt(0)) : [x]),
  );

const roundTrips: [string, string, string | undefined][] = [
  ["a name and an id", NAME, "k3f9x-1a"],
  ["a name without an id", NAME, undefined],
  ["a one-letter name", "a", "x"],
  ["a 253-byte name and a 64-char id", "a".repeat(253), "z".repeat(64)],
];
for (const [what, name, conn] of roundTrips) {
  Deno.test(`encodePoolHeader() round-trips ${what}`, () => {
    const bytes = encodePoolHeader(name, conn);
    assert.equal(bytes[0], 2);
    const want = conn === undefined
      ? { name, length: bytes.length }
      : { name, conn, length: bytes.length };
    assert.deepEqual(decodePoolHeader(bytes), want);
    // with what follows it (the ClientHello), and cut at every point: null until complete
    const more = new Uint8Array([...bytes, 22, 3, 1]);
    assert.deepEqual(decodePoolHeader(more), want);
    for (let i = 0; i < bytes.length; i++) {
      assert.equal(decodePoolHeader(bytes.subarray(0, i)), null);
    }
  });
}

Deno.test("encodePoolHeader() writes type 2: length, then tag, length, value fields", () => {
  assert.deepEqual(
    encodePoolHeader("a.b", "p-1"),
    b(2, 0, 10, PoolField.Name, 3, "a.b", PoolField.Conn, 3, "p-1"),
  );
});

Deno.test("decodePoolHeader() still decodes type 1 (a peer from before connection ids)", () => {
  assert.deepEqual(decodePoolHeader(encodePoolHeaderV1(NAME)), {
    name: NAME,
    length: 2 + NAME.length,
  });
  assert.deepEqual(decodePoolHeader(b(1, 3, "a.b", 22)), { name: "a.b", length: 5 });
  assert.equal(decodePoolHeader(b(1)), null);
  assert.equal(decodePoolHeader(b(1, 3, "a.")), null);
});

Deno.test("decodePoolHeader() skips fields it does not know (a newer peer's)", () => {
  const h = b(2, 0, 14, 7, 4, 1, 2, 3, 4, PoolField.Name, 3, "a.b", 200, 1, 0xff);
  assert.deepEqual(decodePoolHeader(h), { name: "a.b", length: 17 });
});

const bad: [string, Uint8Array, RegExp][] = [
  ["an unknown type", b(3, 0, 0), /type is 3, expected 1 or 2/],
  ["type 0", b(0), /type is 0/],
  ["an empty type 1 name", b(1, 0), /empty name/],
  ["a non-ASCII type 1 name", b(1, 2, "a", 0x80), /byte 128 in the name is not ASCII/],
  ["a fields length under 3", b(2, 0, 2, 1, 0), /fields length 2 is not 3 to 1024/],
  [
    "a fields length over the bound",
    b(2, (MAX_POOL_FIELDS_BYTES + 1) >> 8, (MAX_POOL_FIELDS_BYTES + 1) & 0xff),
    /fields length 1025/,
  ],
  ["no name field", b(2, 0, 5, PoolField.Conn, 3, "p-1"), /no name/],
  ["a field overrunning the header", b(2, 0, 4, PoolField.Name, 3, "ab"), /overruns/],
  ["a cut-off field", b(2, 0, 6, PoolField.Name, 3, "a.b", 9), /cut off/],
  ["an empty name", b(2, 0, 3, PoolField.Name, 0, 9), /empty name/],
  ["a name twice", b(2, 0, 6, PoolField.Name, 1, "a", PoolField.Name, 1, "b"), /name comes twice/],
  ["a space in the name", b(2, 0, 4, PoolField.Name, 2, "a "), /byte 32 in the name/],
  [
    "a bad connection id",
    b(2, 0, 8, PoolField.Name, 1, "a", PoolField.Conn, 3, "a/b"),
    /connection id "a\/b" is not valid/,
  ],
  [
    "a source that is no address",
    b(
      2,
      0,
      15,
      PoolField.Name,
      1,
      "a",
      PoolField.Source,
      4,
      "x:80",
      PoolField.Destination,
      4,
      "y:80",
    ),
    /source "x:80" is not an IP address and port/,
  ],
  [
    "a source without a destination",
    b(2, 0, 15, PoolField.Name, 1, "a", PoolField.Source, 10, "1.2.3.4:80"),
    /a source without a destination/,
  ],
  [
    "a destination with a bad port",
    b(
      2,
      0,
      29,
      PoolField.Name,
      1,
      "a",
      PoolField.Source,
      9,
      "[::1]:443",
      PoolField.Destination,
      13,
      "1.2.3.4:65536",
    ),
    /destination "1.2.3.4:65536"/,
  ],
  [
    "an empty connection id",
    b(2, 0, 5, PoolField.Name, 1, "a", PoolField.Conn, 0),
    /empty connection id/,
  ],
];
for (const [what, bytes, message] of bad) {
  Deno.test(`decodePoolHeader() refuses ${what}`, () => {
    assert.throws(
      () => decodePoolHeader(bytes),
      (e) => e instanceof ProtocolError && message.test(e.message),
    );
  });
}

Deno.test("encodePoolHeader() refuses a name or an id it cannot carry", () => {
  assert.throws(() => encodePoolHeader(""), RangeError);
  assert.throws(() => encodePoolHeader("ä.example"), RangeError);
  assert.throws(() => encodePoolHeader("a".repeat(256)), RangeError);
  assert.throws(() => encodePoolHeader(NAME, "a b"), RangeError);
  assert.throws(() => encodePoolHeader(NAME, "x".repeat(65)), RangeError);
});

Deno.test("connIdPrefix() and connIdOf() make short ids that isConnId() accepts", () => {
  let i = 0;
  const prefix = connIdPrefix((into) => into.forEach((_, j) => (into[j] = i++ * 7)));
  assert.equal(prefix, "07els-");
  assert.equal(connIdOf(prefix, 46), "07els-1a");
  assert.match(connIdPrefix(), /^[0-9a-z]{5}-$/);
  assert.notEqual(connIdPrefix(), connIdPrefix()); // 1 in 60 million to fail
  for (const ok of ["a", "07els-1a", "A.b_c:d-9", "z".repeat(64)]) assert.ok(isConnId(ok), ok);
  for (const no of ["", "a b", "a/b", "ä", "z".repeat(65), 5, null]) {
    assert.ok(!isConnId(no), String(no));
  }
});

const addressed: [
  string,
  { hostname: string; port: number },
  { hostname: string; port: number },
][] = [
  ["IPv4", { hostname: "127.0.0.2", port: 51000 }, { hostname: "127.0.0.1", port: 8443 }],
  ["IPv6", { hostname: "::1", port: 1 }, { hostname: "2001:db8::7", port: 65535 }],
];
for (const [what, source, destination] of addressed) {
  Deno.test(`encodePoolHeader() round-trips the ${what} source and destination`, () => {
    const bytes = encodePoolHeader(NAME, "k3f9x-1a", { source, destination });
    assert.deepEqual(decodePoolHeader(bytes), {
      name: NAME,
      conn: "k3f9x-1a",
      source,
      destination,
      length: bytes.length,
    });
  });
}

Deno.test("parseAddressText() takes 1 to 5 digits of port up to 65535, nothing else", () => {
  assert.deepEqual(parseAddressText("10.0.0.1:443"), { hostname: "10.0.0.1", port: 443 });
  assert.deepEqual(parseAddressText("[::1]:65535"), { hostname: "::1", port: 65535 });
  assert.deepEqual(parseAddressText("10.0.0.1:0"), { hostname: "10.0.0.1", port: 0 });
  for (
    const bad of [
      "10.0.0.1:",
      "10.0.0.1:65536",
      "10.0.0.1:123456",
      "10.0.0.1:+1",
      "10.0.0.1:1e3",
      ":80",
      "x:80",
      "[1.2.3.4]:80",
      "10.0.0.1: 80",
    ]
  ) {
    assert.equal(parseAddressText(bad), null, bad);
  }
});
