import assert from "node:assert/strict";
import { ipv4Bytes, ipv6Bytes } from "./ip.ts";
import { parseAddressText } from "./pool_header.ts";
import { decodeToken, TOKEN_BYTES, tokenText } from "./token.ts";

/** What a dotted IPv4 literal is (the regex the hand parser replaced): the reference. */
function ipv4Reference(s: string): number[] | null {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(s);
  if (!m) return null;
  const b = m.slice(1).map(Number);
  return b.every((x) => x <= 255) ? b : null;
}

Deno.test("ipv4Bytes() agrees with the dotted-quad grammar on edge cases and random strings", () => {
  const cases = [
    "127.0.0.1",
    "0.0.0.0",
    "255.255.255.255",
    "256.1.1.1",
    "1.2.3.256",
    "01.002.3.4",
    "1.2.3",
    "1.2.3.4.",
    ".1.2.3.4",
    "1..2.3",
    "1.2.3.4.5",
    "1.2.3.0004",
    "1.2.3.-4",
    " 1.2.3.4",
    "1.2.3.4 ",
    "a.b.c.d",
    "1.2.3.4a",
    "",
    "1234.1.1.1",
    "999.999.999.999",
    "1.2.3.4\n",
    "١.2.3.4",
  ];
  let seed = 7;
  const rand = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff);
  const alphabet = "0123456789..5x";
  for (let i = 0; i < 20_000; i++) {
    let s = "";
    for (let n = 5 + (rand() % 12); n > 0; n--) s += alphabet[rand() % alphabet.length];
    cases.push(s);
  }
  for (const s of cases) {
    const got = ipv4Bytes(s);
    assert.deepEqual(got === null ? null : [...got], ipv4Reference(s), JSON.stringify(s));
  }
  assert.deepEqual([...ipv6Bytes("::ffff:10.1.2.3")!].slice(12), [10, 1, 2, 3]);
});

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

Deno.test("tokenText() and decodeToken() are standard base64 of exactly TOKEN_BYTES", () => {
  const raw = Uint8Array.from({ length: TOKEN_BYTES }, (_, i) => (i * 37 + 251) & 0xff);
  const text = tokenText(raw);
  assert.equal(text, btoa(String.fromCharCode(...raw)));
  assert.deepEqual(decodeToken(text), raw);
  assert.equal(decodeToken(text.slice(4)), null); // 29 bytes
  assert.equal(decodeToken(tokenText(new Uint8Array(33))), null);
  assert.equal(decodeToken(text.replace(/.$/, "!")), null); // not base64
  assert.equal(decodeToken(text.replaceAll("+", "-").replaceAll("/", "_") + "-_"), null); // url alphabet
  assert.equal(decodeToken(42), null);
  assert.equal(decodeToken(undefined), null);
});
