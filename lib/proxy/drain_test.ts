import assert from "node:assert/strict";
import type { DataEvent } from "../dataplane/mod.ts";
import type { PrivateAnnouncement } from "../settings/private.ts";
import { AnnouncementTable, type DrainHooks } from "./drain.ts";

const A: PrivateAnnouncement = {
  domain: "a.example.com",
  internal: { hostname: "10.0.0.1", port: 443 },
  expiresInMs: 60_000,
};
const W: PrivateAnnouncement = {
  domain: "*.example.org",
  internal: { hostname: "10.0.0.2", port: 443 },
  expiresInMs: 60_000,
};

/** Hooks that record what the table asks for; withdrawals answer when `release` is called. */
function hooks(graceMs = 50) {
  const log: string[] = [];
  const closed: number[][] = [];
  let release: () => void = () => {};
  const withdrawn = new Promise<void>((r) => release = r);
  const h: DrainHooks = {
    withdraw: async (domains) => {
      log.push(`withdraw ${domains.join(",")}`);
      await withdrawn;
      return [{ operator: "op1" }, { operator: "op2", error: "down" }];
    },
    changed: () => log.push("changed"),
    close: (conns) => closed.push([...conns]),
    announce: () => log.push("announce"),
    graceMs: () => graceMs,
  };
  return { h, log, closed, release: () => release() };
}

function piped(conn: number, domain: string) {
  return {
    type: "piped",
    conn,
    connId: `t-${conn}`,
    via: "notice",
    operator: "op1",
    domain,
    client: "",
    phases: { accepted: 1, hello: 0, dialBack: 1, internal: 1, piped: 1, ended: 0 },
  } as const;
}
function ended(conn: number, domain: string, stopped = false): DataEvent {
  return {
    type: "ended",
    connId: `t-${conn}`,
    conn,
    via: "notice",
    operator: "op1",
    domain,
    client: "",
    up: 1,
    down: 1,
    reason: { kind: stopped ? "stopped" : "done" },
    phases: { accepted: 0, hello: 0, dialBack: 0, internal: 0, piped: 0, ended: 0 },
  };
}

Deno.test("table: pending until every operator acknowledged, then announced", () => {
  const t = new AnnouncementTable([A], ["op1", "op2"], hooks().h);
  assert.equal(t.status()[0]!.state, "pending");
  t.acknowledged("op1", [{ domain: A.domain, expiresAt: 5000 }], 1000);
  assert.equal(t.status()[0]!.state, "pending");
  t.acknowledged("op2", [{ domain: A.domain, expiresAt: 4000 }], 2000);
  const s = t.status()[0]!;
  assert.equal(s.state, "announced");
  assert.equal(s.internal, "10.0.0.1:443");
  assert.equal(s.expiresAt, new Date(4000).toISOString());
  assert.deepEqual(s.acknowledged.map((a) => a.operator), ["op1", "op2"]);
});

Deno.test("table: live counts set-ups and splices per announcement, wildcards included", () => {
  const t = new AnnouncementTable([A, W], ["op1"], hooks().h);
  t.opened(A.domain);
  t.opened("x.example.org");
  t.onEvent({
    type: "poolUsed",
    conn: 99,
    connId: "t-2r",
    operator: "op1",
    domain: "y.example.org",
  });
  const live = () => t.status().map((s) => [s.domain, s.live]);
  assert.deepEqual(live(), [[A.domain, 1], [W.domain, 2]]);
  assert.equal(t.onEvent(piped(7, A.domain)), undefined);
  t.onEvent({
    type: "connectFailed",
    conn: 8,
    connId: "t-8",
    via: "notice",
    side: "internal",
    operator: "op1",
    domain: "x.example.org",
    target: "10.0.0.2:443",
    reason: { kind: "done" },
  });
  assert.deepEqual(live(), [[A.domain, 1], [W.domain, 1]]);
  t.onEvent(ended(7, A.domain));
  assert.deepEqual(live(), [[A.domain, 0], [W.domain, 1]]);
});

Deno.test("table: a drain withdraws, stops serving, waits for its splices, then is drained", async () => {
  const { h, log, closed, release } = hooks(10_000);
  const t = new AnnouncementTable([A, W], ["op1", "op2"], h);
  t.opened(A.domain);
  t.onEvent(piped(1, A.domain));
  const done = t.drain(A.domain);
  assert.deepEqual([...t.serving.keys()], [W.domain]);
  assert.deepEqual(log, ["changed", `withdraw ${A.domain}`]);
  assert.equal((await t.drain(A.domain, { wait: false })).state, "draining");
  release();
  t.onEvent(ended(1, A.domain));
  const r = await done;
  assert.deepEqual(
    [r.state, r.live, r.finished, r.closed, r.withdrawn, r.notWithdrawn],
    ["drained", 1, 1, 0, ["op1"], [{ operator: "op2", error: "down" }]],
  );
  assert.deepEqual(closed, []);
  // a late splice (set up before the drain) for it closes at once
  assert.equal(t.onEvent(piped(2, A.domain)), 2);
  await assert.rejects(t.drain("b.example.com"), /Cannot drain "b\.example\.com".*a\.example\.com/);
});

Deno.test("table: grace_ms closes what is left; undrain serves again", async () => {
  const { h, closed, release, log } = hooks(30);
  release();
  const t = new AnnouncementTable([A], ["op1"], h);
  t.opened(A.domain);
  t.onEvent(piped(3, A.domain));
  const r = await t.drain(A.domain);
  assert.deepEqual([r.state, r.finished, r.closed], ["drained", 0, 1]);
  assert.deepEqual(closed, [[3]]);
  assert.equal(t.serving.size, 0);
  const back = t.undrain(A.domain, { timeoutMs: 5000 });
  assert.equal(t.serving.size, 1);
  assert.ok(log.includes("announce"));
  t.acknowledged("op1", [{ domain: A.domain, expiresAt: Date.now() + 1000 }]);
  assert.equal((await back).state, "announced");
});

Deno.test("table: update adds, changes and drains removed announcements, then forgets them", async () => {
  const { h, release } = hooks(10_000);
  release();
  const t = new AnnouncementTable([A], ["op1"], h);
  t.opened(A.domain);
  t.onEvent(piped(4, A.domain));
  const moved = { ...W, internal: { hostname: "10.0.0.9", port: 8443 } };
  const lines = t.update([W]);
  assert.deepEqual(lines, [
    `announcements: added ${W.domain}`,
    `announcements: removed ${A.domain} (drained, then withdrawn)`,
  ]);
  assert.deepEqual([...t.serving.keys()], [W.domain]);
  assert.deepEqual(t.status().map((s) => [s.domain, s.state]), [
    [A.domain, "draining"],
    [W.domain, "pending"],
  ]);
  assert.deepEqual(t.update([moved]), [
    `announcements: ${W.domain} now goes to 10.0.0.9:8443 (was 10.0.0.2:443) for new connections`,
  ]);
  // proxy_protocol applies to new connections too (the next snapshot's route carries it)
  assert.deepEqual(t.update([{ ...moved, proxyProtocol: "v2" }]), [
    `announcements: ${W.domain} proxy_protocol v2 (was none) for new connections`,
  ]);
  assert.equal(t.find("z.example.org")?.proxyProtocol, "v2");
  assert.deepEqual(t.update([moved]), [
    `announcements: ${W.domain} proxy_protocol none (was v2) for new connections`,
  ]);
  const drained = t.drain(A.domain);
  t.onEvent(ended(4, A.domain));
  assert.equal((await drained).state, "drained");
  assert.deepEqual(t.status().map((s) => s.domain), [W.domain]);
  assert.equal(t.find("z.example.org")?.internal.hostname, "10.0.0.9");
});
