/**
 * Re-dispatch through real processes' parts (docs/architecture.md, "Re-dispatch", "Several
 * private instances"): a real public proxy, real EPS servers, real TLS end to end.
 * @module
 */
import assert from "node:assert/strict";
import { logger } from "../lib/log.ts";
import { connectEps } from "../lib/eps/client.ts";
import type { Command, DataPlane } from "../lib/dataplane/mod.ts";
import { Counters } from "../lib/proxy/counters.ts";
import { Notifier } from "../lib/proxy/public_notices.ts";
import type { NoticeRequest } from "../lib/proxy/public_events.ts";
import { parseAddr } from "./_cli.ts";
import { captureLogs } from "./_logs.ts";
import { DOMAIN, NoticeInbox, startCluster, until, within } from "./_cluster.ts";

function tokenBytes(base64: unknown): Uint8Array {
  assert.equal(typeof base64, "string");
  return Uint8Array.from(atob(base64 as string), (ch) => ch.charCodeAt(0));
}

/**
 * What a private proxy does for a notice, by hand: dial the endpoint, present the token, connect
 * the internal server, relay both ways (the TLS inside is the client's and the internal server's).
 */
async function dialBackBy(
  notice: Record<string, unknown>,
  internal: { hostname: string; port: number },
): Promise<void> {
  const dial = await Deno.connect(parseAddr(String(notice.endpoint)));
  const server = await Deno.connect(internal);
  await dial.write(tokenBytes(notice.token));
  const pump = async (from: Deno.TcpConn, to: Deno.TcpConn) => {
    try {
      await from.readable.pipeTo(to.writable, { preventClose: true });
      await to.closeWrite();
    } catch {
      // the other side went first
    }
  };
  void Promise.all([pump(dial, server), pump(server, dial)]).finally(() => {
    for (const c of [dial, server]) {
      try {
        c.close();
      } catch { /* closed */ }
    }
  });
}

Deno.test("a notice whose dial-back never comes is re-dispatched to the other instance; the client still gets its answer", async () => {
  await using logs = await captureLogs("info");
  await using c = await startCluster({
    startPrivate: false,
    public: { dialBackTimeoutMs: 5000, redispatchAfterMs: 300, maxDispatches: 3 },
  });
  // two instances of private-proxy-1 that take notices and dial back only by hand
  await using a = await NoticeInbox.attach(c, "private-proxy-1", "a");
  await using b = await NoticeInbox.attach(c, "private-proxy-1", "b");
  await a.announce();
  await b.announce();
  assert.deepEqual(c.pub.announcements.match(DOMAIN)?.instances, ["a", "b"]);
  const answer = c.request("/jsonrpc");
  // the first notice is accepted and nothing comes of it (an instance that died meanwhile); the
  // re-dispatch goes to the other one
  const [pa, pb] = [a.next(5000), b.next(5000)];
  const firstAtA = await Promise.race([pa.then(() => true), pb.then(() => false)]);
  const first = await (firstAtA ? pa : pb);
  const second = await (firstAtA ? pb : pa);
  assert.equal(second.conn, first.conn);
  assert.notEqual(second.token, first.token);
  await dialBackBy(second, c.internal.addrs.main);
  const got = await within(answer, 10_000, "the answer through the re-dispatched notice");
  assert.equal(got.status, 200);
  assert.deepEqual(JSON.parse(got.body), { message: "success" });
  assert.equal(c.pub.stats.notices, 2);
  assert.equal(c.pub.stats.accepted, 1); // one client
  assert.equal(c.pub.stats.expired + c.pub.stats.failedNotices, 0);
  const line = logs.records.map((r) => r.message.map(String).join("")).find((m) =>
    m.includes("Re-dispatched")
  );
  assert.ok(line !== undefined, "a re-dispatch log line");
  assert.match(line, /no dial-back within redispatch_after_ms \(300 ms\)/);
  assert.match(line, new RegExp(`conn ${first.conn}:`));
  assert.match(line, firstAtA ? /from instance a to b/ : /from instance b to a/);
  // the first notice's dial-back, late: its token went with the client
  using late = await Deno.connect(parseAddr(String(first.endpoint)));
  await late.write(tokenBytes(first.token));
  await until(() => c.pub.stats.badTokens === 1, "the late dial-back refused (bad-token)");
});

Deno.test("with one instance a late dial-back is waited for, not asked for twice", async () => {
  await using c = await startCluster({
    startPrivate: false,
    public: { dialBackTimeoutMs: 5000, redispatchAfterMs: 200, maxDispatches: 3 },
  });
  await using only = await NoticeInbox.attach(c, "private-proxy-1", "only");
  await only.announce();
  const answer = c.request("/jsonrpc");
  const notice = await only.next();
  // three re-dispatch timers pass: a second notice to the same instance would only double the
  // work of a slow private side, so none goes (docs/architecture.md, "Re-dispatch")
  await assert.rejects(only.next(700), /Timed out/);
  await dialBackBy(notice, c.internal.addrs.main);
  const got = await within(answer, 10_000, "the answer through the first dial-back");
  assert.equal(got.status, 200);
});

/** A data plane that records the commands a Notifier sends (it owns no socket here). */
function recordingPlane(): { plane: DataPlane; sent: Command[] } {
  const sent: Command[] = [];
  return { plane: { send: (cmd: Command) => void sent.push(cmd) } as unknown as DataPlane, sent };
}

function request(conn: number, o: Partial<NoticeRequest> = {}): NoticeRequest {
  return {
    conn,
    connId: `t-${conn}`,
    operator: "private-proxy-1",
    domain: DOMAIN,
    token: btoa(String.fromCharCode(...new Uint8Array(32).fill(conn))),
    client: "127.0.0.1:1",
    attempt: 1,
    instances: ["a", "b"],
    ...o,
  };
}

Deno.test("notices name an instance through a real EPS: spread, fail over past one not attached, re-dispatch to an untried one", async () => {
  await using logs = await captureLogs("info");
  // no public proxy: the Notifier under test is its only link to its EPS
  await using c = await startCluster({ startPublic: false, startPrivate: false });
  const seen: { instance: string; conn: unknown }[] = [];
  const attach = async (instance: string) => {
    const client = connectEps(
      c.epsClientSettings("private-proxy-1", c.epsPrivate.addrs.links),
      undefined,
      instance,
    );
    client.serve("incomingConnection", (params) => {
      seen.push({ instance, conn: params.conn });
      return { ok: true };
    });
    await within(client.ready, 10_000, `attach of instance ${instance}`);
    return client;
  };
  let a = await attach("a");
  const b = await attach("b");
  const stop = new AbortController();
  const eps = await c.attach("public-proxy-1", c.epsPublic);
  const log = logger("proxy", "public");
  const gone: string[] = [];
  const notifier = new Notifier(
    eps,
    2000,
    stop.signal,
    new Counters(log),
    log,
    (_op, instance) => gone.push(instance),
  );
  notifier.maxDispatches = 3;
  const { plane, sent } = recordingPlane();
  notifier.start("127.0.0.1:9", plane);
  const calls = (n: number) =>
    until(() => notifier.results.size > 0 && sum(notifier) === n, `${n} notice calls`);
  try {
    // two clients at once: one each (the first's call is in flight when the second goes)
    notifier.send(request(1));
    notifier.send(request(2));
    await calls(2);
    assert.deepEqual(seen.map((p) => p.instance).sort(), ["a", "b"]);
    assert.deepEqual(sent, []);

    // "a" goes away: a notice named to it alone fails with the EPS's -32003, "a" is marked
    // absent and reported gone, and with no other instance the client is refused as before
    await a.close();
    seen.length = 0;
    notifier.send(request(3, { instances: ["a"] }));
    await calls(3);
    assert.ok(notifier.isAbsent("private-proxy-1", "a"));
    assert.deepEqual(gone, ["a"]);
    assert.deepEqual(sent, [{ type: "noticeFailed", conn: 3, attempt: 1 }]);
    sent.length = 0;
    notifier.forget(3);

    // a client of both: never to the absent "a" while "b" is there
    notifier.send(request(4));
    notifier.send(request(5));
    await calls(5);
    assert.deepEqual(seen.map((p) => p.instance), ["b", "b"]);

    // "a" said to be back (it announced) but still not attached: a notice that picks it fails
    // over to "b" with the same token and attempt — no noticeFailed, no attempt spent
    notifier.present("private-proxy-1", "a");
    seen.length = 0;
    for (const conn of [6, 7]) notifier.send(request(conn));
    await until(() => seen.length === 2, "both notices at b");
    assert.deepEqual(seen.map((p) => p.instance), ["b", "b"]);
    assert.deepEqual(sent, []);
    assert.ok(notifier.isAbsent("private-proxy-1", "a"), "the failed-over call marked it again");

    // "a" attached again: a timer re-dispatch of a client served by "b" goes to the untried "a"
    a = await attach("a");
    notifier.present("private-proxy-1", "a");
    seen.length = 0;
    notifier.send(request(8, { attempt: 2, why: "timer" }));
    await until(() => seen.length === 1, "the re-dispatched notice");
    // attempt 2 of a client new to this notifier (a restart of it) goes to any instance there
    assert.ok(["a", "b"].includes(seen[0]!.instance), seen[0]!.instance);
    seen.length = 0;
    notifier.send(request(9));
    await until(() => seen.length === 1, "notice 9");
    const first = seen[0]!.instance;
    notifier.send(request(9, { attempt: 2, why: "timer" }));
    await until(() => seen.length === 2, "notice 9, attempt 2");
    assert.notEqual(seen[1]!.instance, first, "the re-dispatch goes to the instance not tried");
    assert.deepEqual([...notifier.redispatches], [["timer", 2]]);
    const line = logs.records.map((r) => r.message.map(String).join("")).find((m) =>
      m.includes("conn t-9: Re-dispatched")
    );
    assert.match(
      line ?? "",
      new RegExp(`from instance ${first} to ${seen[1]!.instance} \\(notice 2\\): no dial-back`),
    );
  } finally {
    stop.abort();
    await a.close();
    await b.close();
  }
});

function sum(n: Notifier): number {
  let s = 0;
  for (const v of n.results.values()) s += v;
  return s;
}
