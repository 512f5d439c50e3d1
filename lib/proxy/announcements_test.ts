import assert from "node:assert/strict";
import { join } from "node:path";
import { RpcCode, RpcError } from "../errors.ts";
import {
  Announcements,
  MAX_EXPIRY_MS,
  normalizeDomain,
  parseAnnounceParams,
  parseWithdrawParams,
  viewOf,
} from "./announcements.ts";
import { openStore, replay } from "./store.ts";

const T0 = Date.parse("2030-01-01T00:00:00Z");
const HOUR = 3_600_000;

/** Operator a may use anything under example.com, b anything under example.com and b.test. */
const policy = (operator: string, domain: string) =>
  domain.replace(/^\*\./, "").endsWith("example.com") ||
  (operator === "b" && domain.endsWith("b.test"));

function rpcCode(code: number) {
  return (err: unknown) => err instanceof RpcError && err.code === code;
}

Deno.test("normalizeDomain() accepts names and one-label wildcards", () => {
  assert.equal(normalizeDomain("Test.Example.COM."), "test.example.com");
  assert.equal(normalizeDomain("*.Example.com"), "*.example.com");
  assert.equal(normalizeDomain("a.*.example.com"), null);
  assert.equal(normalizeDomain("*"), null);
  assert.equal(normalizeDomain(""), null);
  assert.equal(normalizeDomain(7), null);
});

Deno.test("parseAnnounceParams() reads ISO and epoch expiries and caps them at 7 days", () => {
  const r = parseAnnounceParams({
    connections: [
      { domain: "a.example.com", expires_at: new Date(T0 + HOUR).toISOString() },
      { domain: "b.example.com", expires_at: T0 + 2 * HOUR },
      { domain: "c.example.com" },
      { name: "d.example.com", expires_at: "2099-01-01T00:00:00Z" },
    ],
  }, T0);
  assert.deepEqual(r, [
    { domain: "a.example.com", expiresAt: T0 + HOUR },
    { domain: "b.example.com", expiresAt: T0 + 2 * HOUR },
    { domain: "c.example.com", expiresAt: T0 + MAX_EXPIRY_MS },
    { domain: "d.example.com", expiresAt: T0 + MAX_EXPIRY_MS },
  ]);
});

Deno.test("parseAnnounceParams() refuses bad params with InvalidParams", () => {
  const bad = [
    {},
    { connections: "x" },
    { connections: [7] },
    { connections: [{ domain: "not a name" }] },
    { connections: [{ domain: "a.example.com", expires_at: "soon" }] },
    { connections: [{ domain: "a.example.com", expires_at: T0 - 1 }] },
  ];
  for (const params of bad) {
    assert.throws(() => parseAnnounceParams(params, T0), rpcCode(RpcCode.InvalidParams));
  }
  assert.equal(parseWithdrawParams({}), undefined);
  assert.deepEqual(parseWithdrawParams({ domains: ["A.example.com"] }), ["a.example.com"]);
  assert.throws(() => parseWithdrawParams({ domains: [1] }), rpcCode(RpcCode.InvalidParams));
});

Deno.test("Announcements.match() prefers the exact name, then a one-label wildcard", async () => {
  await using store = await openStore({ kind: "memory" });
  const table = new Announcements(store, policy, () => T0);
  await table.announce("a", [
    { domain: "*.example.com", expiresAt: T0 + HOUR },
    { domain: "x.example.com", expiresAt: T0 + HOUR },
  ]);
  await table.announce("b", [{ domain: "y.example.com", expiresAt: T0 + HOUR }]);
  assert.equal(table.match("x.example.com")?.operator, "a");
  assert.equal(table.match("y.example.com")?.operator, "b");
  assert.equal(table.match("z.example.com")?.domain, "*.example.com");
  assert.equal(table.match("deep.z.example.com"), undefined); // one label only
  assert.equal(table.match("example.com"), undefined);
  assert.equal(table.match("other.test"), undefined);
});

Deno.test("Announcements.announce() refuses domains outside the allowed ones (-32010)", async () => {
  await using store = await openStore({ kind: "memory" });
  const table = new Announcements(store, policy, () => T0);
  await assert.rejects(
    table.announce("a", [
      { domain: "ok.example.com", expiresAt: T0 + HOUR },
      { domain: "evil.test", expiresAt: T0 + HOUR },
    ]),
    rpcCode(RpcCode.DomainNotAllowed),
  );
  assert.deepEqual(table.list("a"), []); // all or none
});

Deno.test("Announcements.announce() refuses a domain another operator holds (-32009)", async () => {
  let now = T0;
  await using store = await openStore({ kind: "memory" });
  const table = new Announcements(store, policy, () => now);
  await table.announce("a", [{ domain: "x.example.com", expiresAt: T0 + HOUR }]);
  await assert.rejects(
    table.announce("b", [{ domain: "x.example.com", expiresAt: T0 + HOUR }]),
    rpcCode(RpcCode.Conflict),
  );
  // the holder may refresh its own
  await table.announce("a", [{ domain: "x.example.com", expiresAt: T0 + 2 * HOUR }]);
  // once it expired, another operator may take it
  now = T0 + 3 * HOUR;
  assert.equal(table.match("x.example.com"), undefined);
  await table.announce("b", [{ domain: "x.example.com", expiresAt: now + HOUR }]);
  assert.equal(table.match("x.example.com")?.operator, "b");
});

Deno.test("Announcements.withdraw() removes only the caller's domains", async () => {
  await using store = await openStore({ kind: "memory" });
  const table = new Announcements(store, policy, () => T0);
  await table.announce("a", [
    { domain: "a1.example.com", expiresAt: T0 + HOUR },
    { domain: "a2.example.com", expiresAt: T0 + HOUR },
  ]);
  await table.announce("b", [{ domain: "b1.example.com", expiresAt: T0 + HOUR }]);
  assert.deepEqual(await table.withdraw("a", ["a1.example.com", "b1.example.com"]), [
    "a1.example.com",
  ]);
  assert.deepEqual(viewOf(table.list("a")), [
    { domain: "a2.example.com", expires_at: new Date(T0 + HOUR).toISOString() },
  ]);
  assert.deepEqual(await table.withdraw("a"), ["a2.example.com"]);
  assert.equal(table.list("b").length, 1);
});

Deno.test("file store keeps announcements across a reopen and compacts on open", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = join(dir, "state", "announcements.jsonl");
    {
      await using store = await openStore({ kind: "file", path }, undefined, T0);
      const table = new Announcements(store, policy, () => T0);
      await table.announce("a", [
        { domain: "a1.example.com", expiresAt: T0 + HOUR },
        { domain: "a2.example.com", expiresAt: T0 + 10 * HOUR },
      ]);
      await table.announce("a", [{ domain: "a1.example.com", expiresAt: T0 + 2 * HOUR }]);
      await table.withdraw("a", ["a2.example.com"]);
      await table.announce("b", [{ domain: "b.b.test", expiresAt: T0 + HOUR }]);
    }
    // a torn last line, as a crash mid-write leaves it
    await Deno.writeTextFile(path, '{"op":"put","operator":"b","dom', { append: true });
    const now = T0 + 90 * 60_000; // b's entry has expired, a1's not
    {
      await using store = await openStore({ kind: "file", path }, undefined, now);
      const table = new Announcements(store, policy, () => now);
      assert.deepEqual(table.all(), [
        { operator: "a", domain: "a1.example.com", expiresAt: T0 + 2 * HOUR, instances: [""] },
      ]);
    }
    const text = await Deno.readTextFile(path);
    assert.equal(text.trim().split("\n").length, 1, "compacted to the one live entry");
    assert.equal(replay(text, now).skipped, 0);
    const names: string[] = [];
    for await (const e of Deno.readDir(join(dir, "state"))) names.push(e.name);
    assert.deepEqual(names, ["announcements.jsonl"]); // no temporary file left behind
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("an announcement's allow is validated, stored, kept across a restart and answered", async () => {
  const [r] = parseAnnounceParams({
    connections: [{ domain: "a.example.com", allow: ["127.0.0.2", "::1/128", "10.0.0.0/8"] }],
  }, T0);
  assert.deepEqual(r!.allow, ["127.0.0.2/32", "::1/128", "10.0.0.0/8"]);
  for (const allow of [[], "10.0.0.0/8", ["10.0.0.1/8"], ["nope"], [7]]) {
    assert.throws(
      () => parseAnnounceParams({ connections: [{ domain: "a.example.com", allow }] }, T0),
      (e: unknown) =>
        e instanceof RpcError && e.code === RpcCode.InvalidParams &&
        e.message.includes("connections[0].allow"),
      JSON.stringify(allow),
    );
  }
  const dir = await Deno.makeTempDir();
  try {
    const path = join(dir, "a.jsonl");
    const store = await openStore({ kind: "file", path }, undefined, T0);
    const t = new Announcements(store, policy, () => T0);
    const added = await t.announce("a", [r!]);
    assert.deepEqual(viewOf(added)[0]!.allow, ["127.0.0.2/32", "::1/128", "10.0.0.0/8"]);
    // announced again without allow: everyone again
    await t.announce("a", [{ domain: "b.example.com", expiresAt: T0 + HOUR }]);
    await store.close();
    const again = await openStore({ kind: "file", path }, undefined, T0);
    const byDomain = new Map(again.initial.map((a) => [a.domain, a]));
    assert.deepEqual(byDomain.get("a.example.com")!.allow, [
      "127.0.0.2/32",
      "::1/128",
      "10.0.0.0/8",
    ]);
    assert.equal(byDomain.get("b.example.com")!.allow, undefined);
    await again.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("Announcements keeps one entry per instance; a name routes while any of them lives", async () => {
  let now = T0;
  await using store = await openStore({ kind: "memory" });
  const table = new Announcements(store, policy, () => now, 1);
  await table.announce("a", [{ domain: "x.example.com", expiresAt: T0 + HOUR }], "a-1");
  // a second instance of the same domain is not a new domain: the cap of 1 still holds
  await table.announce("a", [{
    domain: "x.example.com",
    expiresAt: T0 + 2 * HOUR,
    allow: ["10.0.0.0/8"],
  }], "a-2");
  assert.equal(table.count("a"), 1);
  assert.deepEqual(table.match("x.example.com"), {
    operator: "a",
    domain: "x.example.com",
    expiresAt: T0 + 2 * HOUR, // the latest
    allow: ["10.0.0.0/8"], // the newest entry's
    instances: ["a-1", "a-2"],
  });
  await assert.rejects(
    table.announce("a", [{ domain: "y.example.com", expiresAt: T0 + HOUR }], "a-1"),
    rpcCode(RpcCode.InvalidParams),
  );
  // another operator still conflicts, whichever instance holds it
  await assert.rejects(
    table.announce("b", [{ domain: "x.example.com", expiresAt: T0 + HOUR }], "b-1"),
    rpcCode(RpcCode.Conflict),
  );
  // one instance withdraws: the name still routes through the other
  assert.deepEqual(await table.withdraw("a", ["x.example.com"], "a-2"), ["x.example.com"]);
  assert.deepEqual(table.instancesOf("x.example.com"), ["a-1"]);
  assert.equal(table.match("x.example.com")?.allow, undefined);
  await table.announce("a", [{ domain: "x.example.com", expiresAt: T0 + 3 * HOUR }], "a-2");
  assert.equal(table.nextExpiry(), T0 + HOUR, "a-1's entry ends first");
  // a-1's entry expires on its own
  now = T0 + HOUR + 1;
  assert.equal(table.nextExpiry(), T0 + 3 * HOUR);
  assert.deepEqual(table.instancesOf("x.example.com"), ["a-2"]);
  // no instance named: every instance's entries go
  assert.deepEqual(await table.withdraw("a"), ["x.example.com"]);
  assert.equal(table.match("x.example.com"), undefined);
  assert.deepEqual(table.instancesOf("x.example.com"), []);
});

Deno.test('file store lines carry the instance; old lines mean "" and a del without one means all', async () => {
  const old = [
    '{"op":"put","operator":"a","domain":"x.example.com","expires_at":' + (T0 + HOUR) + "}",
    '{"op":"put","operator":"a","domain":"x.example.com","instance":"a-1","expires_at":' +
    (T0 + HOUR) + "}",
    '{"op":"put","operator":"a","domain":"y.example.com","instance":"a-1","expires_at":' +
    (T0 + HOUR) + "}",
    '{"op":"put","operator":"a","domain":"y.example.com","instance":"a-2","expires_at":' +
    (T0 + HOUR) + "}",
    '{"op":"del","operator":"a","domain":"y.example.com"}',
    '{"op":"put","operator":"a","domain":"z.example.com","instance":"a-1","expires_at":' +
    (T0 + HOUR) + "}",
    '{"op":"put","operator":"a","domain":"z.example.com","instance":"a-2","expires_at":' +
    (T0 + HOUR) + "}",
    '{"op":"del","operator":"a","domain":"z.example.com","instance":"a-1"}',
  ].join("\n");
  const { live, skipped } = replay(old, T0);
  assert.equal(skipped, 0);
  assert.deepEqual(live.map((a) => `${a.domain}/${a.instance}`).sort(), [
    "x.example.com/",
    "x.example.com/a-1",
    "z.example.com/a-2",
  ]);
  const dir = await Deno.makeTempDir();
  try {
    const path = join(dir, "a.jsonl");
    await Deno.writeTextFile(path, old + "\n");
    {
      await using store = await openStore({ kind: "file", path }, undefined, T0);
      const table = new Announcements(store, policy, () => T0);
      assert.deepEqual(table.instancesOf("x.example.com"), ["", "a-1"]);
      await table.withdraw("a", ["x.example.com"], "a-1");
    }
    const text = await Deno.readTextFile(path);
    assert.match(text, /"instance":""/);
    await using again = await openStore({ kind: "file", path }, undefined, T0);
    const table = new Announcements(again, policy, () => T0);
    assert.deepEqual(table.instancesOf("x.example.com"), [""]);
    assert.deepEqual(table.instancesOf("z.example.com"), ["a-2"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
