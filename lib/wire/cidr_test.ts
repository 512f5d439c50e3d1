import assert from "node:assert/strict";
import { addressText, CidrSet, inCidr, parseAddress, parseCidr } from "./cidr.ts";

Deno.test("parseAddress reads IPv4, IPv6 and IPv4-mapped literals", () => {
  const cases: [string, string | null][] = [
    ["127.0.0.1", "127.0.0.1"],
    ["0.0.0.0", "0.0.0.0"],
    ["255.255.255.255", "255.255.255.255"],
    ["::1", "::1"],
    ["[::1]", "::1"],
    ["::", "::"],
    ["2001:db8::1", "2001:db8::1"],
    ["2001:DB8:0:0:0:0:0:1", "2001:db8::1"],
    ["fe80::1%eth0", "fe80::1"],
    ["::ffff:10.1.2.3", "10.1.2.3"],
    ["::ffff:a01:203", "10.1.2.3"],
    ["1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8"],
    ["1:0:0:2:0:0:0:3", "1:0:0:2::3"],
    ["256.0.0.1", null],
    ["1.2.3", null],
    ["01.2.3.4", null],
    ["1::2::3", null],
    ["1:2:3:4:5:6:7:8:9", null],
    ["1:2:3:4:5:6:7::8", null],
    ["12345::", null],
    ["example.com", null],
    ["", null],
  ];
  for (const [text, want] of cases) {
    const a = parseAddress(text);
    assert.equal(a === null ? null : addressText(a), want, text);
  }
});

Deno.test("parseCidr normalises and refuses bad ranges with a reason", () => {
  assert.equal(parseCidr("10.0.0.0/8").text, "10.0.0.0/8");
  assert.equal(parseCidr("127.0.0.2").text, "127.0.0.2/32");
  assert.equal(parseCidr("::1").text, "::1/128");
  assert.equal(parseCidr("2001:DB8::/32").text, "2001:db8::/32");
  assert.equal(parseCidr("0.0.0.0/0").text, "0.0.0.0/0");
  assert.equal(parseCidr("::/0").text, "::/0");
  const bad: [string, RegExp][] = [
    ["10.0.0.1/8", /bits set past its \/8/],
    ["10.0.0.0/33", /0 to 32/],
    ["::/129", /0 to 128/],
    ["10.0.0.0/", /prefix length/],
    ["10.0.0.0/-1", /prefix length/],
    ["nope/8", /not an IPv4 or IPv6 address/],
    ["fe80::1%eth0/128", /not an IPv4 or IPv6 address/],
  ];
  for (const [text, re] of bad) assert.throws(() => parseCidr(text), re, text);
});

Deno.test("inCidr matches by prefix, IPv4 ranges also match IPv4-mapped IPv6", () => {
  const table: [string, string, boolean][] = [
    ["127.0.0.2/32", "127.0.0.2", true],
    ["127.0.0.2/32", "127.0.0.1", false],
    ["127.0.0.0/8", "127.255.0.1", true],
    ["127.0.0.0/8", "128.0.0.1", false],
    ["10.0.0.0/8", "::ffff:10.9.9.9", true],
    ["10.0.0.0/8", "::10.9.9.9", false],
    ["192.168.1.0/25", "192.168.1.127", true],
    ["192.168.1.0/25", "192.168.1.128", false],
    ["0.0.0.0/0", "8.8.8.8", true],
    ["0.0.0.0/0", "::1", false],
    ["::/0", "::1", true],
    ["::/0", "8.8.8.8", true],
    ["::1/128", "::1", true],
    ["::1/128", "::2", false],
    ["::1/128", "127.0.0.1", false],
    ["2001:db8::/32", "2001:db8:ffff::1", true],
    ["2001:db8::/32", "2001:db9::1", false],
    ["2001:db8::/33", "2001:db8:7fff::", true],
    ["2001:db8::/33", "2001:db8:8000::", false],
    ["::ffff:0:0/96", "1.2.3.4", true],
    ["fe80::/10", "fe80::1%eth0", true],
    ["fe80::/10", "fec0::1", false],
  ];
  for (const [cidr, addr, want] of table) {
    assert.equal(inCidr(parseAddress(addr)!, parseCidr(cidr)), want, `${addr} in ${cidr}`);
  }
});

Deno.test("CidrSet: any range matches; an empty set matches nothing", () => {
  const s = new CidrSet(["127.0.0.2/32", "::1/128"]);
  assert.equal(s.has(parseAddress("127.0.0.2")!), true);
  assert.equal(s.has(parseAddress("::1")!), true);
  assert.equal(s.has(parseAddress("127.0.0.1")!), false);
  assert.equal(new CidrSet([]).has(parseAddress("127.0.0.1")!), false);
});
