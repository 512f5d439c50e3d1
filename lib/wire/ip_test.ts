import assert from "node:assert/strict";
import { ipv4Bytes, ipv6Bytes } from "./ip.ts";

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
