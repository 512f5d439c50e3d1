/**
 * Several instances of one operator on its EPS (docs/architecture.md, "Instances"): real EPS
 * servers and proxy clients in this process over mTLS on loopback. EPS A's proxy (instance a1)
 * calls `eps-b.echo`; EPS B has two instances of its proxy attached, b1 and b2.
 */
import assert from "node:assert/strict";
import { RpcCode, RpcError } from "../lib/errors.ts";
import type { EpsClient, Handler } from "../lib/eps/client.ts";
import { dialLink, listenLinks, loadLinkTls } from "../lib/eps/link.ts";
import { loadDirectory } from "../lib/eps/directory.ts";
import { callOnStream, type RpcRequest, serveStream } from "../lib/eps/rpc.ts";
import { Session } from "../lib/eps/session.ts";
import { formatHostPort, type HostPort, type RoleHandle } from "../lib/role.ts";
import { eventually, Fixture, LOOPBACK, withTimeout } from "./_eps_cluster.ts";
import { parsePrometheus, sampleValue } from "./_prometheus.ts";
import { runCli } from "./_cli.ts";

const NAMES = ["eps-a", "eps-b", "eps-c"];

interface Echoed {
  instance: string;
  params: Record<string, unknown>;
  caller: string;
  callerInstance: string | null;
}

interface Setup extends AsyncDisposable {
  fx: Fixture;
  a: RoleHandle<"links" | "proxy">;
  b: RoleHandle<"links" | "proxy">;
  /** EPS B's admin endpoint. */
  admin: HostPort;
  pa: EpsClient;
  /** Calls each instance of eps-b answered, by instance. */
  counts: Record<string, number>;
  /** Attaches one more instance of eps-b that answers echo (and counts it). */
  instance(name: string, echo?: Handler): Promise<EpsClient>;
}

/** An echo handler that counts its calls under `name` and says who it is and who called. */
function echoAs(name: string, counts: Record<string, number>): Handler {
  return (params, ctx) => {
    counts[name] = (counts[name] ?? 0) + 1;
    return {
      instance: name,
      params,
      caller: ctx.caller,
      callerInstance: ctx.callerInstance ?? null,
    } satisfies Echoed;
  };
}

/** EPS A (dials B) with its proxy a1 attached, EPS B (with an admin endpoint) and b1, b2. */
async function start(instances = ["b1", "b2"]): Promise<Setup & Record<string, unknown>> {
  const fx = await Fixture.create(NAMES);
  const stack = new AsyncDisposableStack();
  stack.use(fx);
  try {
    const perms = (b?: HostPort) => ({
      "eps-a": { permissions: [{ method: "ping", from: ["eps-b", "eps-c"] }] },
      "eps-b": {
        ...(b ? { address: b } : {}),
        permissions: [{ method: "echo", from: ["eps-a"] }],
      },
      "eps-c": {},
    });
    await fx.writeDirectory(perms());
    const b = stack.use(await fx.startEps("eps-b", { adminListen: LOOPBACK }));
    await fx.writeDirectory(perms(b.addrs.links));
    const a = stack.use(await fx.startEps("eps-a"));
    const pa = stack.use(
      await fx.attach("eps-a", a.addrs.links, {}, {
        instance: "a1",
        serve: {
          ping: (_params, ctx) => ({
            caller: ctx.caller,
            callerInstance: ctx.callerInstance ?? null,
          }),
        },
      }),
    );
    const counts: Record<string, number> = {};
    let owner = stack; // the stack that closes the instances: the moved one once started
    const instance = async (name: string, echo = echoAs(name, counts)) =>
      owner.use(
        await fx.attach("eps-b", b.addrs.links, {}, { instance: name, serve: { echo } }),
      );
    const clients: Record<string, EpsClient> = {};
    for (const name of instances) clients[name] = await instance(name);
    const admin = (b.addrs as { admin?: HostPort }).admin;
    if (!admin) throw new Error("EPS B has no admin address");
    const moved = stack.move();
    owner = moved;
    return {
      fx,
      a,
      b,
      admin,
      pa,
      counts,
      instance,
      ...clients,
      [Symbol.asyncDispose]: () => moved.disposeAsync(),
    };
  } catch (err) {
    await stack.disposeAsync();
    throw err;
  }
}

function echo(s: Setup, params: Record<string, unknown> = {}, instance?: string) {
  return withTimeout(
    s.pa.call<Echoed>("eps-b.echo", params, instance === undefined ? {} : { instance }),
    10_000,
    "eps-b.echo",
  );
}

async function rpcError(p: Promise<unknown>): Promise<RpcError> {
  const err = await withTimeout(p.then(() => undefined, (e) => e), 10_000, "call");
  assert.ok(err instanceof RpcError, `expected an RpcError, got ${String(err)}`);
  return err;
}

interface InstanceStatus {
  instance: string;
  remote: string;
  inFlight: number;
  serves: string[] | null;
}

async function statusOf(admin: HostPort): Promise<{ instances: InstanceStatus[] }> {
  const res = await fetch(`http://${formatHostPort(admin)}/status`, {
    signal: AbortSignal.timeout(5000),
  });
  assert.equal(res.status, 200);
  return await res.json();
}

/** Waits (bounded) until EPS B's /status lists exactly these instances. */
async function untilInstances(admin: HostPort, names: string[]): Promise<void> {
  await eventually(
    async () => {
      const got = (await statusOf(admin)).instances.map((i) => i.instance);
      if (JSON.stringify(got) !== JSON.stringify(names)) {
        throw new Error(`instances ${JSON.stringify(got)}`);
      }
    },
    5000,
    `EPS B to list instances ${names.join(", ")}`,
  );
}

Deno.test("EPS instances: calls spread over both, counted per instance, and shown on /status", async () => {
  await using s = await start();
  for (let i = 0; i < 20; i++) {
    const r = await echo(s, { i });
    assert.deepEqual(r.params, { i, _client: { name: "eps-a", instance: "a1" } });
  }
  // one at a time, both have nothing in flight: they take turns
  assert.deepEqual(s.counts, { b1: 10, b2: 10 });

  const st = await statusOf(s.admin);
  assert.deepEqual(
    st.instances.map((i) => [i.instance, i.inFlight, i.serves]),
    [["b1", 0, ["echo"]], ["b2", 0, ["echo"]]],
  );
  for (const i of st.instances) assert.match(i.remote, /^127\.0\.0\.1:\d+$/);
  const res = await fetch(`http://${formatHostPort(s.admin)}/metrics`, {
    signal: AbortSignal.timeout(5000),
  });
  const metrics = parsePrometheus(await res.text());
  assert.equal(sampleValue(metrics, "tls_pass_eps_instances"), 2);
  assert.equal(sampleValue(metrics, "tls_pass_links_up", { peer: "proxy" }), 1);

  const text = await runCli(["status", "--admin", formatHostPort(s.admin)]);
  assert.equal(text.code, 0, text.stderr);
  assert.match(text.stdout, /Instances of the own proxy/);
  assert.match(text.stdout, /b1 .*127\.0\.0\.1:\d+ .*echo/);
  assert.match(text.stdout, /b2 .*127\.0\.0\.1:\d+ .*echo/);
});

Deno.test("EPS instances: a slow instance gets fewer calls under concurrency (least pending)", async () => {
  await using s = await start(["b2"]);
  const gate = Promise.withResolvers<void>();
  const counts = s.counts;
  // b1 holds every call until the gate opens; b2 answers at once
  await s.instance("b1", async (params, ctx) => {
    counts.b1 = (counts.b1 ?? 0) + 1;
    await gate.promise;
    return echoAs("b1-done", {})(params, ctx);
  });
  const TOTAL = 64;
  const WORKERS = 8;
  let started = 0;
  const allOut = Promise.withResolvers<void>();
  const worker = async () => {
    while (started < TOTAL) {
      started++;
      const call = echo(s, { n: started });
      if (started === TOTAL) allOut.resolve();
      await call;
    }
  };
  const done = Promise.all(Array.from({ length: WORKERS }, worker));
  await withTimeout(allOut.promise, 20_000, "every call to be made while b1 holds its calls");
  // /status counts b1's held calls in flight
  const held = await eventually(
    async () => {
      const b1 = (await statusOf(s.admin)).instances.find((i) => i.instance === "b1");
      if (!b1 || b1.inFlight === 0 || b1.inFlight !== counts.b1) {
        throw new Error(`b1 in flight ${b1?.inFlight}, handled ${counts.b1}`);
      }
      return b1.inFlight;
    },
    10_000,
    "b1's held calls to show in flight",
  );
  gate.resolve();
  await withTimeout(done, 20_000, "the calls");
  const b1 = counts.b1 ?? 0;
  const b2 = counts.b2 ?? 0;
  assert.equal(b1 + b2, TOTAL);
  assert.equal(held, b1);
  // round robin would give b1 half (and hold every caller); least pending gives a held instance
  // a call only while b2 has as many in flight, which 8 callers allow at most 4 times
  assert.ok(b1 >= 1 && b1 <= WORKERS / 2, `b1 got ${b1} of ${TOTAL} calls (b2 ${b2})`);
  const after = (await statusOf(s.admin)).instances;
  assert.deepEqual(after.map((i) => i.inFlight), [0, 0], "every call answered: none in flight");
});

Deno.test("EPS instances: _instance delivers to the one named, or fails with -32003", async () => {
  await using s = await start();
  for (let i = 0; i < 6; i++) {
    const r = await echo(s, { i }, "b2");
    assert.equal(r.instance, "b2");
    // the delivering EPS removed _instance: the proxy sees who called, not where it aimed
    assert.deepEqual(r.params, { i, _client: { name: "eps-a", instance: "a1" } });
  }
  assert.deepEqual(s.counts, { b2: 6 });

  const absent = await rpcError(s.pa.call("eps-b.echo", {}, { instance: "b9" }));
  assert.equal(absent.code, RpcCode.Unavailable);
  assert.match(absent.message, /instance "b9" of "eps-b" is not attached/);

  const bad = await rpcError(s.pa.call("eps-b.echo", {}, { instance: "no spaces" }));
  assert.equal(bad.code, RpcCode.InvalidParams);
  assert.match(bad.message, /"no spaces" is not an instance name/);

  // set by hand, past the client's check: the EPS checks it too
  const raw = await rpcError(s.pa.call("eps-b.echo", { _instance: 7 }));
  assert.equal(raw.code, RpcCode.InvalidParams);
  assert.match(raw.message, /_instance must be an instance name/);
  assert.deepEqual(s.counts, { b2: 6 });
});

Deno.test("EPS instances: an instance whose link closes stops getting calls at once", async () => {
  await using s = await start();
  const b1 = s.b1 as EpsClient;
  await echo(s);
  await echo(s);
  assert.deepEqual(s.counts, { b1: 1, b2: 1 });
  const t0 = performance.now();
  await b1.close();
  await untilInstances(s.admin, ["b2"]);
  const ms = performance.now() - t0;
  // keepalive_interval_ms is 60 s here: the EPS saw the link close, it did not time it out
  assert.ok(ms < 2000, `EPS dropped b1 after ${Math.round(ms)} ms`);
  for (let i = 0; i < 10; i++) assert.equal((await echo(s, { i })).instance, "b2");
  assert.deepEqual(s.counts, { b1: 1, b2: 11 });
  const gone = await rpcError(s.pa.call("eps-b.echo", {}, { instance: "b1" }));
  assert.equal(gone.code, RpcCode.Unavailable);
});

Deno.test("EPS instances: the same instance attaching again replaces its older link", async () => {
  await using s = await start(["b2"]);
  // b1's older link, made by hand: it attaches as b1 and answers "old" (think of it as a
  // half-open connection of a b1 that has since restarted)
  const tls = await loadLinkTls(s.fx.cert("eps-b"), s.fx.key("eps-b"), [s.fx.rootFile]);
  const conn = await dialLink(s.b.addrs.links, "eps-b", tls);
  const oldCalls: RpcRequest[] = [];
  await using session = new Session(conn, {
    client: true,
    keepaliveIntervalMs: 0,
    onStream: (stream) =>
      void serveStream(stream, (request) => {
        oldCalls.push(request);
        return { instance: "old" };
      }, { maxMessageBytes: 1 << 20, timeoutMs: 5000 }),
  });
  const attach = (instance: string) =>
    callOnStream(session.open(), {
      jsonrpc: "2.0",
      id: 1,
      method: "_eps.attach",
      params: { instance, serves: ["echo"] },
    }, { maxMessageBytes: 1 << 20, timeoutMs: 5000, signal: AbortSignal.timeout(5000) });
  assert.deepEqual(await attach("b1"), { ok: true });
  await untilInstances(s.admin, ["b1", "b2"]);
  // a link attaches once: it cannot rename itself
  await assert.rejects(attach("b3"), (e) => {
    assert.ok(e instanceof RpcError);
    assert.equal(e.code, RpcCode.InvalidParams);
    assert.match(e.message, /attached as instance "b1" already/);
    return true;
  });
  const seen = new Set<string>();
  for (let i = 0; i < 4; i++) seen.add((await echo(s, { i })).instance);
  assert.deepEqual([...seen].sort(), ["b2", "old"]);

  // b1 again, for real: the EPS closes the older link
  await s.instance("b1");
  await withTimeout(session.closed, 5000, "the older b1 link to be closed");
  await untilInstances(s.admin, ["b1", "b2"]);
  const before = oldCalls.length;
  for (let i = 0; i < 4; i++) assert.notEqual((await echo(s, { i })).instance, "old");
  assert.equal(oldCalls.length, before);
  assert.equal(s.counts.b1, 2);
});

Deno.test("EPS instances: callerInstance crosses two EPS hops; a peer's bad stamp is dropped", async () => {
  await using s = await start();
  const b1 = s.b1 as EpsClient;
  const b2 = s.b2 as EpsClient;
  assert.equal(b1.instance, "b1");
  // private instance → its EPS → the other EPS → that operator's proxy
  for (const [c, name] of [[b1, "b1"], [b2, "b2"]] as const) {
    assert.deepEqual(
      await withTimeout(c.call("eps-a.ping", {}), 10_000, "eps-a.ping"),
      { caller: "eps-b", callerInstance: name },
    );
  }
  // and the other way: b1 or b2 sees a1
  const r = await echo(s);
  assert.equal(r.callerInstance, "a1");
  assert.equal(r.caller, "eps-a");

  // a peer EPS (eps-c, by hand) stamps _client itself: its instance is kept when it is one, its
  // name never (the certificate says who it is)
  const tls = await loadLinkTls(s.fx.cert("eps-c"), s.fx.key("eps-c"), [s.fx.rootFile]);
  const conn = await dialLink(s.a.addrs.links, "eps-a", tls);
  await using session = new Session(conn, { client: true, keepaliveIntervalMs: 0 });
  const ping = (client: unknown) =>
    callOnStream(session.open(), {
      jsonrpc: "2.0",
      id: 2,
      method: "eps-a.ping",
      params: { _client: client },
    }, { maxMessageBytes: 1 << 20, timeoutMs: 5000, signal: AbortSignal.timeout(5000) });
  assert.deepEqual(await ping({ name: "eps-z", instance: "c-7" }), {
    caller: "eps-c",
    callerInstance: "c-7",
  });
  for (const instance of ["bad name", 7, "", "x".repeat(65)]) {
    assert.deepEqual(await ping({ name: "eps-c", instance }), {
      caller: "eps-c",
      callerInstance: null,
    }, JSON.stringify(instance));
  }
  assert.deepEqual(await ping(undefined), { caller: "eps-c", callerInstance: null });
});

Deno.test("EPS instances: a link that never attaches is routable unnamed; a peer may not attach", async () => {
  await using s = await start([]);
  // an older proxy: it links but never calls _eps.attach
  const tls = await loadLinkTls(s.fx.cert("eps-b"), s.fx.key("eps-b"), [s.fx.rootFile]);
  const conn = await dialLink(s.b.addrs.links, "eps-b", tls);
  await using session = new Session(conn, {
    client: true,
    keepaliveIntervalMs: 0,
    onStream: (stream) =>
      void serveStream(stream, (request) => ({ instance: "unnamed", params: request.params }), {
        maxMessageBytes: 1 << 20,
        timeoutMs: 5000,
      }),
  });
  await untilInstances(s.admin, [""]);
  const r = await echo(s, { n: 1 });
  assert.equal(r.instance, "unnamed");
  assert.deepEqual(r.params, { n: 1, _client: { name: "eps-a", instance: "a1" } });
  // a named instance comes: both take calls
  await s.instance("b1");
  await untilInstances(s.admin, ["", "b1"]);
  const seen = new Set<string>();
  for (let i = 0; i < 4; i++) seen.add((await echo(s)).instance);
  assert.deepEqual([...seen].sort(), ["b1", "unnamed"]);

  // _eps.attach on a peer's link is refused, not routed
  const ctls = await loadLinkTls(s.fx.cert("eps-c"), s.fx.key("eps-c"), [s.fx.rootFile]);
  const cconn = await dialLink(s.b.addrs.links, "eps-b", ctls);
  await using peer = new Session(cconn, { client: true, keepaliveIntervalMs: 0 });
  await assert.rejects(
    callOnStream(peer.open(), {
      jsonrpc: "2.0",
      id: 3,
      method: "_eps.attach",
      params: { instance: "c1", serves: [] },
    }, { maxMessageBytes: 1 << 20, timeoutMs: 5000, signal: AbortSignal.timeout(5000) }),
    (e) => {
      assert.ok(e instanceof RpcError);
      assert.equal(e.code, RpcCode.NotPermitted);
      assert.match(e.message, /only, not "eps-c"/);
      return true;
    },
  );
  // bad attach params name the problem
  await assert.rejects(
    callOnStream(session.open(), {
      jsonrpc: "2.0",
      id: 4,
      method: "_eps.attach",
      params: { instance: "ok", serves: "echo" },
    }, { maxMessageBytes: 1 << 20, timeoutMs: 5000, signal: AbortSignal.timeout(5000) }),
    (e) => {
      assert.ok(e instanceof RpcError);
      assert.equal(e.code, RpcCode.InvalidParams);
      assert.match(e.message, /serves must be a list of method names/);
      return true;
    },
  );
});

Deno.test("EPS instances: serve() while attached tells the EPS the new method", async () => {
  await using s = await start(["b1"]);
  const b1 = s.b1 as EpsClient;
  b1.serve("other", () => "other");
  await eventually(
    async () => {
      const got = (await statusOf(s.admin)).instances.map((i) => i.serves);
      if (JSON.stringify(got) !== JSON.stringify([["echo", "other"]])) {
        throw new Error(`serves ${JSON.stringify(got)}`);
      }
    },
    5000,
    "b1's second _eps.attach",
  );
});

Deno.test("EPS client attaches to an older EPS that does not know _eps.attach", async () => {
  await using fx = await Fixture.create(NAMES);
  await fx.writeDirectory({ "eps-b": {} });
  const tls = await loadLinkTls(fx.cert("eps-b"), fx.key("eps-b"), [fx.rootFile]);
  for (const code of [RpcCode.MethodNotFound, RpcCode.UnknownOperator]) {
    const methods: string[] = [];
    const sessions: Session[] = [];
    // an EPS as an older one answers: `_eps.attach` is no method it knows (or "_eps" no operator)
    const listener = await listenLinks(LOOPBACK, tls, {
      directory: await loadDirectory([fx.directoryDir]),
      known: ["eps-b"],
      what: "old EPS",
      onLink: (conn) =>
        void sessions.push(
          new Session(conn, {
            client: false,
            keepaliveIntervalMs: 0,
            onStream: (stream) =>
              void serveStream(stream, (request) => {
                methods.push(request.method);
                if (request.method === "_eps.attach") throw new RpcError("not known", code);
                return "answered";
              }, { maxMessageBytes: 1 << 20, timeoutMs: 5000 }),
          }),
        ),
    });
    try {
      await using c = await fx.attach("eps-b", listener.addr, {}, { instance: "b1" });
      assert.equal(c.attached, true);
      assert.equal(await withTimeout(c.call("eps-b.x", {}), 5000, "a call"), "answered");
      assert.deepEqual(methods, ["_eps.attach", "eps-b.x"], String(code));
    } finally {
      await Promise.all(sessions.map((x) => x.close()));
      await listener.close();
      await listener.finished;
    }
  }
});
