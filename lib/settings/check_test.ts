import assert from "node:assert/strict";
import * as check from "./check.ts";

type Case = [
  name: string,
  fn: (v: unknown, path: string, p: string[]) => unknown,
  input: unknown,
  want: unknown,
  problem?: RegExp,
];

const cases: Case[] = [
  ["port() takes 0", check.port, 0, 0],
  ["port() takes 65535", check.port, 65535, 65535],
  [
    "port() refuses 65536",
    check.port,
    65536,
    0,
    /k: must be an integer from 0 to 65535, got 65536/,
  ],
  ["port() refuses -1", check.port, -1, 0, /from 0 to 65535/],
  ["port() refuses a string", check.port, "80", 0, /got "80"/],
  ["port() refuses 1.5", check.port, 1.5, 0, /got 1.5/],
  ["durationMs() takes 1", check.durationMs, 1, 1],
  ["durationMs() refuses 0", check.durationMs, 0, 1, /from 1 to/],
  ["bytes() takes 1", check.bytes, 1, 1],
  ["bytes() refuses 0", check.bytes, 0, 1, /from 1 to/],
  ["string() takes text", check.string, "a", "a"],
  ["string() refuses empty", check.string, "", "", /non-empty string/],
  ["string() refuses a number", check.string, 5, "", /got 5/],
  ["boolean() takes false", check.boolean, false, false],
  ["boolean() refuses yes-as-string", check.boolean, "yes", false, /true or false/],
  ["mapping() takes an object", check.mapping, { a: 1 }, { a: 1 }],
  ["mapping() treats absent as empty", check.mapping, undefined, {}],
  ["mapping() refuses a list", check.mapping, [1], {}, /must be a mapping/],
  ["host() takes IPv4", check.host, "127.0.0.1", "127.0.0.1"],
  ["host() takes IPv6", check.host, "::1", "::1"],
  ["host() normalises a name", check.host, "Example.COM.", "example.com"],
  ["host() refuses spaces", check.host, "a b", "", /IP address or host name/],
  ["hostName() refuses a label over 63", check.hostName, `${"a".repeat(64)}.com`, "", /host name/],
  ["hostName() refuses a leading hyphen", check.hostName, "-a.com", "", /host name/],
  ["address() takes host:port", check.address, "127.0.0.1:4433", {
    hostname: "127.0.0.1",
    port: 4433,
  }],
  ["address() takes [v6]:port", check.address, "[::1]:9999", { hostname: "::1", port: 9999 }],
  ["address() takes name:0", check.address, "localhost:0", { hostname: "localhost", port: 0 }],
  [
    "address() refuses no port",
    check.address,
    "127.0.0.1",
    { hostname: "", port: 0 },
    /"host:port"/,
  ],
  [
    "address() refuses port 70000",
    check.address,
    "a:70000",
    { hostname: "", port: 0 },
    /"host:port"/,
  ],
  ["address() refuses bare v6", check.address, "::1:80", { hostname: "", port: 0 }, /"host:port"/],
];

for (const [name, fn, input, want, problem] of cases) {
  Deno.test(name, () => {
    const problems: string[] = [];
    assert.deepEqual(fn(input, "k", problems), want);
    if (problem) {
      assert.equal(problems.length, 1, `expected one problem, got ${JSON.stringify(problems)}`);
      assert.match(problems[0]!, problem);
    } else {
      assert.deepEqual(problems, []);
    }
  });
}

Deno.test("hostName() allows a wildcard only when asked", () => {
  const problems: string[] = [];
  assert.equal(check.hostName("*.Example.com", "d", problems, true), "*.example.com");
  assert.deepEqual(problems, []);
  check.hostName("*.example.com", "d", problems);
  assert.match(problems[0]!, /^d: must be a host name/);
});

Deno.test("onlyKeys() names every unknown key with its path", () => {
  const problems: string[] = [];
  check.onlyKeys({ a: 1, b: 2, c: 3 }, ["a"], "eps", problems);
  assert.deepEqual(problems, [
    "eps.b: unknown key (known: a)",
    "eps.c: unknown key (known: a)",
  ]);
});

Deno.test("list() checks each element with its index in the path", () => {
  const problems: string[] = [];
  assert.deepEqual(check.list(["a", 1], "xs", problems, check.string), ["a", ""]);
  assert.deepEqual(problems, ["xs[1]: must be a non-empty string, got 1"]);
});

Deno.test("oneOf() lists the allowed values", () => {
  const problems: string[] = [];
  check.oneOf("x", ["text", "json"] as const, "f", problems);
  assert.deepEqual(problems, ['f: must be one of "text", "json", got "x"']);
});

Deno.test("required() reports a missing key", () => {
  const problems: string[] = [];
  assert.equal(check.required(undefined, "a.b", problems), false);
  assert.equal(check.required(0, "a.c", problems), true);
  assert.deepEqual(problems, ["a.b: is required"]);
});

Deno.test("normalizeHostName() lowercases, strips one trailing dot, refuses empty labels", () => {
  assert.equal(
    check.normalizeHostName("Test.Internal-Server.LOCAL."),
    "test.internal-server.local",
  );
  assert.equal(check.normalizeHostName("a..b"), null);
  assert.equal(check.normalizeHostName(""), null);
  assert.equal(check.normalizeHostName("a".repeat(254)), null);
});

Deno.test("onlyKeys() suggests the key a misspelt one meant", () => {
  const known = ["hello_timeout_ms", "dial_back_timeout_ms", "max_pending", "store", "grace_ms"];
  const problems: string[] = [];
  check.onlyKeys(
    {
      hello_timout_ms: 1,
      "dial-back-timeout-ms": 1,
      pending_max: 1,
      stroe: 1,
      GRACE_MS: 1,
      zzz: 1,
    },
    known,
    "",
    problems,
  );
  const known_ = `(known: ${known.join(", ")})`;
  assert.deepEqual(problems, [
    `hello_timout_ms: unknown key, did you mean \`hello_timeout_ms\`? ${known_}`,
    `dial-back-timeout-ms: unknown key, did you mean \`dial_back_timeout_ms\`? ${known_}`,
    `pending_max: unknown key, did you mean \`max_pending\`? ${known_}`,
    `stroe: unknown key, did you mean \`store\`? ${known_}`,
    `GRACE_MS: unknown key, did you mean \`grace_ms\`? ${known_}`,
    `zzz: unknown key ${known_}`,
  ]);
});
