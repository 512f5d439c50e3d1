/**
 * EPS calls end to end in one process: proxy → EPS A → EPS B → proxy over real mTLS links on
 * loopback, and the JSON-RPC errors (docs/architecture.md, "The picture").
 */
import assert from "node:assert/strict";
import { RpcCode, RpcError } from "../lib/errors.ts";
import type { EpsClient } from "../lib/eps/client.ts";
import { dialLink, loadLinkTls } from "../lib/eps/link.ts";
import { encodeMessage, parseResponse, readMessage } from "../lib/eps/rpc.ts";
import { Session, type Stream } from "../lib/eps/session.ts";
import { writeAll } from "../lib/net/io.ts";
import type { HostPort, RoleHandle } from "../lib/role.ts";
import type { EpsSettings } from "../lib/settings/eps.ts";
import { Fixture, withTimeout } from "./_eps_cluster.ts";

const NAMES = ["eps-a", "eps-b", "eps-c"];

interface Pair extends AsyncDisposable {
  fx: Fixture;
  a: RoleHandle<"links" | "proxy">;
  b: RoleHandle<"links" | "proxy">;
  pa: EpsClient;
  pb: EpsClient;
}

/** EPS A (no address: it dials B) and EPS B, each with its proxy attached; B's proxy echoes. */
async function startPair(more: Partial<EpsSettings> = {}, attachB = true): Promise<Pair> {
  const fx = await Fixture.create(NAMES);
  const stack = new AsyncDisposableStack();
  stack.use(fx);
  try {
    const perms = (b?: HostPort) => ({
      "eps-a": { permissions: [{ method: "ping", from: ["eps-b", "eps-c"] }] },
      "eps-b": {
        ...(b ? { address: b } : {}),
        permissions: [
          { method: "echo", from: ["eps-a"] },
          { method: "stall", from: ["eps-a"] },
          { method: "missing", from: ["eps-a"] },
        ],
      },
      "eps-c": { permissions: [{ method: "echo", from: ["eps-a", "eps-b"] }] },
    });
    await fx.writeDirectory(perms());
    const b = stack.use(await fx.startEps("eps-b", more));
    await fx.writeDirectory(perms(b.addrs.links));
    const a = stack.use(await fx.startEps("eps-a", more));
    const pa = stack.use(await fx.attach("eps-a", a.addrs.links));
    pa.serve("ping", (_params, ctx) => ({ pong: true, caller: ctx.caller }));
    let pb = undefined as unknown as EpsClient;
    if (attachB) {
      pb = stack.use(await fx.attach("eps-b", b.addrs.links));
      pb.serve("echo", (params, ctx) => ({ params, caller: ctx.caller }));
    }
    const moved = stack.move();
    return { fx, a, b, pa, pb, [Symbol.asyncDispose]: () => moved.disposeAsync() };
  } catch (err) {
    await stack.disposeAsync();
    throw err;
  }
}

async function rpcError(p: Promise<unknown>): Promise<RpcError> {
  const err = await withTimeout(p.then(() => undefined, (e) => e), 10_000, "call");
  assert.ok(err instanceof RpcError, `expected an RpcError, got ${String(err)}`);
  return err;
}

Deno.test("EPS call crosses three hops with _client stamped by the EPS", async () => {
  await using p = await startPair();
  const r = await withTimeout(
    p.pa.call<{ params: Record<string, unknown>; caller: string }>("eps-b.echo", { n: 1 }),
    10_000,
    "eps-b.echo",
  );
  assert.deepEqual(r, {
    params: { n: 1, _client: { name: "eps-a", instance: p.pa.instance } },
    caller: "eps-a",
  });
  // and back the other way over the same link (A dialled it)
  const back = await withTimeout(p.pb.call("eps-a.ping", {}), 10_000, "eps-a.ping");
  assert.deepEqual(back, { pong: true, caller: "eps-b" });
});

Deno.test("EPS call overwrites a forged _client", async () => {
  await using p = await startPair();
  const r = await withTimeout(
    p.pa.call<{ params: Record<string, unknown>; caller: string }>("eps-b.echo", {
      n: 2,
      _client: { name: "eps-c", instance: "forged" },
    }),
    10_000,
    "eps-b.echo",
  );
  // the name from the certificate, the instance from the link's _eps.attach
  assert.deepEqual(r.params._client, { name: "eps-a", instance: p.pa.instance });
  assert.equal(r.caller, "eps-a");
});

Deno.test("EPS call to an unknown operator fails with -32001", async () => {
  await using p = await startPair();
  const err = await rpcError(p.pa.call("nobody.echo", {}));
  assert.equal(err.code, RpcCode.UnknownOperator);
  assert.match(err.message, /"nobody"/);
});

Deno.test("EPS call that the directory does not permit fails with -32002", async () => {
  await using p = await startPair();
  const err = await rpcError(p.pa.call("eps-b.secret", {}));
  assert.equal(err.code, RpcCode.NotPermitted);
  // B may call eps-a.ping, but not eps-a.other
  const err2 = await rpcError(p.pb.call("eps-a.other", {}));
  assert.equal(err2.code, RpcCode.NotPermitted);
});

Deno.test("EPS refuses a peer's call that its own directory does not permit", async () => {
  await using p = await startPair();
  // a peer link made by hand as eps-c, which has no link to eps-a yet
  const tls = await loadLinkTls(p.fx.cert("eps-c"), p.fx.key("eps-c"), [p.fx.rootFile]);
  const conn = await dialLink(p.a.addrs.links, "eps-a", tls);
  await using session = new Session(conn, { client: true, keepaliveIntervalMs: 0 });
  for (
    const [method, code] of [
      ["eps-a.other", RpcCode.NotPermitted],
      ["eps-b.echo", RpcCode.NotPermitted], // no transit through eps-a
      ["eps-a.ping", 0],
    ] as const
  ) {
    const res = await rawCall(session.open(), { jsonrpc: "2.0", id: 7, method, params: {} });
    if (code === 0) {
      assert.deepEqual(res, { jsonrpc: "2.0", id: 7, result: { pong: true, caller: "eps-c" } });
    } else assert.equal("error" in res ? res.error.code : 0, code, method);
  }
});

Deno.test("EPS keeps one link per peer pair: the one dialled by the name that sorts first", async () => {
  await using p = await startPair();
  await withTimeout(p.pa.call("eps-b.echo", {}), 10_000, "first call");
  // eps-b dials eps-a by hand: eps-a already holds the link it dialled ("eps-a" < "eps-b")
  const tls = await loadLinkTls(p.fx.cert("eps-b"), p.fx.key("eps-b"), [p.fx.rootFile]);
  const conn = await dialLink(p.a.addrs.links, "eps-a", tls);
  await using session = new Session(conn, { client: true, keepaliveIntervalMs: 0 });
  await withTimeout(session.closed, 5000, "the duplicate link to be closed");
  assert.deepEqual(
    await withTimeout(p.pa.call("eps-b.echo", { again: 1 }), 5000, "call on the kept link"),
    { params: { again: 1, _client: { name: "eps-a", instance: p.pa.instance } }, caller: "eps-a" },
  );
});

Deno.test("EPS call to a method the proxy does not serve fails with -32601", async () => {
  await using p = await startPair();
  const err = await rpcError(p.pa.call("eps-b.missing", {}));
  assert.equal(err.code, RpcCode.MethodNotFound);
});

Deno.test("EPS call to an operator whose proxy is not attached fails with -32003", async () => {
  await using p = await startPair({}, false);
  const err = await rpcError(p.pa.call("eps-b.echo", {}));
  assert.equal(err.code, RpcCode.Unavailable);
});

async function rawCall(
  stream: Stream,
  message: unknown,
): Promise<ReturnType<typeof parseResponse>> {
  const bytes = typeof message === "string"
    ? new TextEncoder().encode(message)
    : encodeMessage(message as Parameters<typeof encodeMessage>[0]);
  await writeAll(stream, bytes);
  await stream.closeWrite();
  return parseResponse(await withTimeout(readMessage(stream, 1 << 20), 5000, "response"));
}

Deno.test("EPS answers malformed JSON with -32700 and a bad request with -32600", async () => {
  await using p = await startPair();
  const tls = await loadLinkTls(p.fx.cert("eps-a"), p.fx.key("eps-a"), [p.fx.rootFile]);
  const conn = await dialLink(p.a.addrs.links, "eps-a", tls);
  await using session = new Session(conn, { client: true, keepaliveIntervalMs: 0 });
  const parse = await rawCall(session.open(), '{"jsonrpc":"2.0","id":1,"method":');
  assert.ok("error" in parse);
  assert.equal(parse.error.code, RpcCode.ParseError);
  assert.equal(parse.id, null);
  const invalid = await rawCall(session.open(), { jsonrpc: "1.0", id: 5, method: "x.y" });
  assert.ok("error" in invalid);
  assert.equal(invalid.error.code, RpcCode.InvalidRequest);
  assert.equal(invalid.id, 5);
  // the link is still good for a proper call
  const ok = await rawCall(session.open(), {
    jsonrpc: "2.0",
    id: 6,
    method: "eps-b.echo",
    params: {},
  });
  assert.ok("result" in ok, JSON.stringify(ok));
});

Deno.test("EPS call to a peer that stops reading mid-call hits the deadline; other calls on the link go on", async () => {
  // EPS B's proxy is made by hand: it stops reading any call whose method is "eps-b.stall"
  await using p = await startPair({ callTimeoutMs: 1500 }, false);
  const tls = await loadLinkTls(p.fx.cert("eps-b"), p.fx.key("eps-b"), [p.fx.rootFile]);
  const conn = await dialLink(p.b.addrs.links, "eps-b", tls);
  const stalled: Stream[] = [];
  const { promise: stalledSeen, resolve: seen } = Promise.withResolvers<void>();
  const session = new Session(conn, {
    client: true,
    keepaliveIntervalMs: 0,
    onStream: (stream) => {
      void (async () => {
        const head = new Uint8Array(64);
        const n = (await stream.read(head)) ?? 0;
        const text = new TextDecoder().decode(head.subarray(0, n));
        if (text.includes("eps-b.stall")) {
          stalled.push(stream); // never read again: the window fills, the writer blocks
          seen();
          return;
        }
        const rest = await readMessage(stream, 1 << 20);
        const all = new Uint8Array(n + rest.length);
        all.set(head.subarray(0, n));
        all.set(rest, n);
        const req = JSON.parse(new TextDecoder().decode(all));
        await writeAll(stream, encodeMessage({ jsonrpc: "2.0", id: req.id, result: "fine" }));
        await stream.closeWrite();
      })().catch(() => stream.reset());
    },
  });
  try {
    const big = "x".repeat(900 * 1024); // more than a stream window
    const t0 = performance.now();
    const stall = rpcError(p.pa.call("eps-b.stall", { big }, { timeoutMs: 3000 }));
    await withTimeout(stalledSeen, 5000, "stalled call to reach the proxy");
    // while that call is stuck, others on the same links are answered
    for (let i = 0; i < 5; i++) {
      assert.equal(await withTimeout(p.pa.call("eps-b.echo", { i }), 5000, "echo"), "fine");
    }
    const err = await stall;
    assert.equal(err.code, RpcCode.Timeout, err.message);
    assert.ok(performance.now() - t0 < 2900, "the EPS answered before the caller's own deadline");
    assert.equal(await withTimeout(p.pa.call("eps-b.echo", {}), 5000, "echo after"), "fine");
  } finally {
    for (const s of stalled) s.reset();
    await session.close();
  }
});

Deno.test("EPS client call fails with -32004 at its own deadline", async () => {
  await using p = await startPair({ callTimeoutMs: 5000 });
  p.pb.serve("echo", (_params, ctx) =>
    new Promise((_, reject) => {
      ctx.signal.addEventListener("abort", () => reject(ctx.signal.reason), { once: true });
    }));
  const err = await rpcError(p.pa.call("eps-b.echo", {}, { timeoutMs: 300 }));
  assert.equal(err.code, RpcCode.Timeout);
});
