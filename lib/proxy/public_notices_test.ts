/**
 * The Notifier's queueing with re-dispatch (docs/architecture.md, "Re-dispatch"): control-plane
 * logic only, against an EPS client whose calls the test answers by hand (the network paths are
 * in tests/redispatch_test.ts).
 */
import assert from "node:assert/strict";
import { logger } from "../log.ts";
import type { CallOptions, EpsClient } from "../eps/client.ts";
import type { Command, DataPlane } from "../dataplane/mod.ts";
import { Counters } from "./counters.ts";
import { MAX_IN_FLIGHT, Notifier } from "./public_notices.ts";
import type { NoticeRequest } from "./public_events.ts";

interface Call {
  params: Record<string, unknown>;
  options: CallOptions | undefined;
  answer: (v: unknown) => void;
  fail: (err: unknown) => void;
}

/** An EPS client whose every call waits until the test answers it. */
function heldCalls(): { eps: EpsClient; calls: Call[] } {
  const calls: Call[] = [];
  const eps = {
    call: (_method: string, params: Record<string, unknown>, options?: CallOptions) =>
      new Promise((answer, fail) => calls.push({ params, options, answer, fail })),
  } as unknown as EpsClient;
  return { eps, calls };
}

/** A Notifier (3 dispatches at most) over held calls, recording what it tells the data plane. */
function setUp() {
  const { eps, calls } = heldCalls();
  const stop = new AbortController();
  const log = logger("proxy", "public");
  const counters = new Counters(log);
  const notifier = new Notifier(eps, 1000, stop.signal, counters, log);
  notifier.maxDispatches = 3;
  const sent: Command[] = [];
  notifier.start("127.0.0.1:9", { send: (c: Command) => sent.push(c) } as unknown as DataPlane);
  return { calls, stop, counters, notifier, sent };
}

function request(conn: number, o: Partial<NoticeRequest> = {}): NoticeRequest {
  return {
    conn,
    connId: `t-${conn}`,
    operator: "private-proxy-1",
    domain: "test.internal-server.local",
    token: `token-${conn}-${o.attempt ?? 1}`,
    client: "127.0.0.1:1",
    attempt: 1,
    instances: ["only"],
    ...o,
  };
}

Deno.test("Notifier: a timer re-dispatch with no other instance keeps a queued notice queued", async () => {
  const { calls, stop, counters, notifier, sent } = setUp();
  try {
    for (let conn = 1; conn <= MAX_IN_FLIGHT; conn++) notifier.send(request(conn));
    assert.equal(calls.length, MAX_IN_FLIGHT);
    // the next client waits behind the calls in flight (a burst)
    notifier.send(request(100));
    assert.equal(calls.length, MAX_IN_FLIGHT);
    // its re-dispatch timer fires while it still waits: one instance, so nothing changes
    notifier.send(request(100, { attempt: 2, why: "timer" }));
    assert.deepEqual(sent, [], "its queued notice was not dropped");
    // a call returns: the queued client goes, with its first token, to its instance
    calls[0]!.answer({ ok: true });
    await new Promise((r) => setTimeout(r, 0));
    assert.equal(calls.length, MAX_IN_FLIGHT + 1);
    const last = calls.at(-1)!;
    assert.equal(last.params.token, "token-100-1");
    assert.equal(last.options?.instance, "only");
    assert.deepEqual([...notifier.redispatches], []);
  } finally {
    stop.abort();
    for (const c of calls) c.answer({ ok: true });
    counters.close();
  }
});

Deno.test("Notifier: a failed notice names its own attempt when a newer one went, and fails the unsent ones with it", async () => {
  const { calls, stop, counters, notifier, sent } = setUp();
  const tick = () => new Promise((r) => setTimeout(r, 0));
  try {
    // client 1 of two instances: notice 1, then the timer's notice 2 to the other instance;
    // notice 1 fails: only its own token goes, notice 2 may still serve the client
    const both = { instances: ["a", "b"] };
    notifier.send(request(1, both));
    notifier.send(request(1, { ...both, attempt: 2, why: "timer" }));
    assert.deepEqual(calls.map((c) => c.options?.instance).sort(), ["a", "b"]);
    calls[0]!.fail(new Error("timed out"));
    await tick();
    assert.deepEqual(sent, [{ type: "noticeFailed", conn: 1, attempt: 1 }]);
    sent.length = 0;
    // client 2 of one instance: notice 1 is the only one sent (the timer's attempts 2 and 3
    // find no other instance); when it fails, attempts 1 to 3 fail together: the client goes
    notifier.send(request(2));
    notifier.send(request(2, { attempt: 2, why: "timer" }));
    notifier.send(request(2, { attempt: 3, why: "timer" }));
    assert.equal(calls.length, 3);
    calls[2]!.fail(new Error("timed out"));
    await tick();
    assert.deepEqual(sent, [
      { type: "noticeFailed", conn: 2, attempt: 1 },
      { type: "noticeFailed", conn: 2, attempt: 2 },
      { type: "noticeFailed", conn: 2, attempt: 3 },
    ]);
  } finally {
    stop.abort();
    for (const c of calls) c.answer({ ok: true });
    counters.close();
  }
});
