/**
 * Re-dispatch through real processes' parts (docs/architecture.md, "Re-dispatch", "Several
 * private instances"): a real public proxy, real EPS servers, real TLS end to end.
 * @module
 */
import assert from "node:assert/strict";
import { logger } from "../lib/log.ts";
import { RpcError } from "../lib/errors.ts";
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

Deno.test("a notice whose dial-back never comes is re-dispatched; the client still gets its answer", async () => {
  await using logs = await captureLogs("info");
  await using c = await startCluster({
    startPrivate: false,
    public: { dialBackTimeoutMs: 5000, redispatchAfterMs: 300, maxDispatches: 3 },
  });
  await using inbox = await NoticeInbox.attach(c);
  await inbox.announce();
  const answer = c.request("/jsonrpc");
  // the first notice is accepted and nothing comes of it (an instance that died meanwhile)
  const first = await inbox.next();
  const second = await inbox.next(3000);
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
  // the first notice's dial-back, late: its token went with the client
  using late = await Deno.connect(parseAddr(String(first.endpoint)));
  await late.write(tokenBytes(first.token));
  await until(() => c.pub.stats.badTokens === 1, "the late dial-back refused (bad-token)");
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

Deno.test("notices name an instance through a real EPS: spread, absent on -32003, re-dispatch to an untried one", async () => {
  await using logs = await captureLogs("info");
  // no public proxy: the Notifier under test is its only link to its EPS
  await using c = await startCluster({ startPublic: false, startPrivate: false });
  await using inbox = await NoticeInbox.attach(c);
  const seen: Record<string, unknown>[] = [];
  const failFor = new Set<string>();
  inbox.client.serve("incomingConnection", (params) => {
    seen.push(params);
    const instance = String(params._instance);
    if (failFor.has(instance)) {
      // what an EPS answers for an instance that is not attached (docs/architecture.md)
      throw new RpcError(`instance "${instance}" of "private-proxy-1" is not attached`, -32003);
    }
    return { ok: true };
  });
  const stop = new AbortController();
  const eps = await c.attach("public-proxy-1", c.epsPublic);
  const log = logger("proxy", "public");
  const notifier = new Notifier(eps, 2000, stop.signal, new Counters(log), log);
  notifier.maxDispatches = 3;
  const { plane, sent } = recordingPlane();
  notifier.start("127.0.0.1:9", plane);
  const calls = (n: number) =>
    until(() => notifier.results.size > 0 && sum(notifier) === n, `${n} notices`);
  try {
    // two clients at once: one each (the first's call is in flight when the second goes)
    notifier.send(request(1));
    notifier.send(request(2));
    await calls(2);
    assert.deepEqual(seen.map((p) => p._instance).sort(), ["a", "b"]);
    assert.deepEqual(sent, []);

    // "a" is gone: the notice fails with -32003, "a" is marked absent, the client is retried
    failFor.add("a");
    seen.length = 0;
    notifier.send(request(3, { instances: ["a"] }));
    await calls(3);
    assert.ok(notifier.isAbsent("private-proxy-1", "a"));
    // no other instance to try: refused as before (no retry)
    assert.deepEqual(sent, [{ type: "noticeFailed", conn: 3, attempt: 1 }]);
    sent.length = 0;
    notifier.forget(3);

    // a client of both: never to the absent "a" while "b" is there
    notifier.send(request(4));
    notifier.send(request(5));
    await calls(5);
    assert.deepEqual(seen.slice(1).map((p) => p._instance), ["b", "b"]);

    // a failed notice with another instance to try: retry, then the re-dispatch goes there
    notifier.present("private-proxy-1", "a"); // it announced again
    assert.ok(!notifier.isAbsent("private-proxy-1", "a"));
    seen.length = 0;
    notifier.send(request(6, { instances: ["a"] }));
    await calls(6);
    assert.deepEqual(sent, [{ type: "noticeFailed", conn: 6, attempt: 1 }]);
    sent.length = 0;
    notifier.send(request(7, { instances: ["a", "b"] }));
    notifier.send(request(8, { instances: ["a", "b"] }));
    await calls(8);
    assert.deepEqual(seen.map((p) => p._instance), ["a", "b", "b"]);
    // "a" absent again: both to "b"; now with every instance absent they are tried anyway
    failFor.add("b");
    failFor.delete("a");
    seen.length = 0;
    notifier.send(request(9));
    await calls(9);
    assert.deepEqual(seen.map((p) => p._instance), ["b"]);
    await until(() => sent.length === 1, "the failure of notice 9");
    assert.deepEqual(sent, [{ type: "noticeFailed", conn: 9, attempt: 1, retry: true }]);
    assert.ok(notifier.isAbsent("private-proxy-1", "b"));
    sent.length = 0;
    notifier.send(request(9, { attempt: 2, why: "failed" })); // the data plane re-dispatched it
    await calls(10);
    assert.deepEqual(seen.map((p) => p._instance), ["b", "a"]);
    assert.deepEqual(sent, []);
    assert.deepEqual([...notifier.redispatches], [["failed", 1]]);
    const line = logs.records.map((r) => r.message.map(String).join("")).find((m) =>
      m.includes("Re-dispatched")
    );
    assert.match(line ?? "", /conn t-9: .* from instance b to a \(notice 2\): the notice failed: /);
    assert.match(line ?? "", /instance "b" of "private-proxy-1" is not attached/);
  } finally {
    stop.abort();
  }
});

function sum(n: Notifier): number {
  let s = 0;
  for (const v of n.results.values()) s += v;
  return s;
}
