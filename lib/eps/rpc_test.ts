import assert from "node:assert/strict";
import { RpcCode, RpcError } from "../errors.ts";
import { Session } from "./session.ts";
import {
  type CallHandler,
  callOnStream,
  DeadlineClock,
  encodeMessage,
  InvalidRequestError,
  onAbort,
  parseRequest,
  parseResponse,
  readMessage,
  serveStream,
} from "./rpc.ts";

const enc = (s: string) => new TextEncoder().encode(s);

const requestCases: [string, string, number | null, (string | number | null)?][] = [
  ["valid", '{"jsonrpc":"2.0","id":1,"method":"a.b","params":{"x":1}}', null],
  ["valid without params", '{"jsonrpc":"2.0","id":"k","method":"a.b"}', null],
  ["not JSON", '{"jsonrpc":', RpcCode.ParseError, null],
  ["not UTF-8", "\xff", RpcCode.ParseError, null],
  ["an array", "[]", RpcCode.InvalidRequest, null],
  ["wrong version", '{"jsonrpc":"1.0","id":3,"method":"a.b"}', RpcCode.InvalidRequest, 3],
  ["no id", '{"jsonrpc":"2.0","method":"a.b"}', RpcCode.InvalidRequest, null],
  ["empty method", '{"jsonrpc":"2.0","id":4,"method":""}', RpcCode.InvalidRequest, 4],
  [
    "positional params",
    '{"jsonrpc":"2.0","id":5,"method":"a.b","params":[1]}',
    RpcCode.InvalidRequest,
    5,
  ],
];
for (const [name, text, code, id] of requestCases) {
  Deno.test(`parseRequest() ${code === null ? "accepts" : "refuses"} ${name}`, () => {
    const bytes = name === "not UTF-8" ? new Uint8Array([0xff, 0xfe]) : enc(text);
    if (code === null) {
      const r = parseRequest(bytes);
      assert.equal(r.jsonrpc, "2.0");
      assert.equal(r.method, "a.b");
      assert.equal(typeof r.params, "object");
      return;
    }
    const err = (() => {
      try {
        parseRequest(bytes);
      } catch (e) {
        return e;
      }
    })();
    assert.ok(err instanceof InvalidRequestError);
    assert.equal(err.code, code);
    assert.equal(err.requestId, id);
  });
}

Deno.test("parseRequest() refuses malformed UTF-8 inside a string, accepts a real U+FFFD", () => {
  const valid = enc('{"jsonrpc":"2.0","id":1,"method":"a.b","params":{"x":"?"}}');
  const bad = valid.slice();
  bad[bad.indexOf(0x3f)] = 0xff; // the "?" becomes a lone 0xff byte: JSON, but not UTF-8
  assert.throws(
    () => parseRequest(bad),
    (e) => e instanceof RpcError && e.code === RpcCode.ParseError,
  );
  const replacement = enc('{"jsonrpc":"2.0","id":1,"method":"a.b","params":{"x":"\uFFFD"}}');
  assert.equal(parseRequest(replacement).params.x, "\uFFFD");
});

Deno.test("parseResponse() reads results and errors and refuses anything else", () => {
  assert.deepEqual(parseResponse(enc('{"jsonrpc":"2.0","id":1,"result":null}')), {
    jsonrpc: "2.0",
    id: 1,
    result: null,
  });
  assert.deepEqual(
    parseResponse(enc('{"jsonrpc":"2.0","id":null,"error":{"code":-32001,"message":"m"}}')),
    { jsonrpc: "2.0", id: null, error: { code: -32001, message: "m" } },
  );
  for (const bad of ['{"jsonrpc":"2.0","id":1}', '{"jsonrpc":"2.0","error":{"code":"x"}}', "1"]) {
    assert.throws(() => parseResponse(enc(bad)), RpcError);
  }
});

/** Two yamux sessions over a real loopback TCP connection. */
async function sessions(handler: CallHandler, timeoutMs = 5000, maxMessageBytes = 4096) {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const accepted = listener.accept();
  const c = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
  const s = await accepted;
  const served: Promise<void>[] = [];
  const problems: unknown[] = [];
  const server = new Session(s, {
    client: false,
    keepaliveIntervalMs: 0,
    onStream: (stream) =>
      served.push(
        serveStream(stream, handler, {
          maxMessageBytes,
          timeoutMs,
          onProblem: (e) => problems.push(e),
        }),
      ),
  });
  const client = new Session(c, { client: true, keepaliveIntervalMs: 0 });
  return {
    client,
    problems,
    call: (method: string, params: Record<string, unknown>, ms = 5000) =>
      callOnStream(client.open(), { jsonrpc: "2.0", id: 1, method, params }, {
        maxMessageBytes,
        timeoutMs: ms,
        signal: AbortSignal.timeout(ms),
      }),
    async [Symbol.asyncDispose]() {
      await client.close();
      await server.close();
      await Promise.all(served);
    },
  };
}

Deno.test("callOnStream() and serveStream() carry a result and typed errors", async () => {
  await using s = await sessions((req) => {
    if (req.method === "a.fail") throw new RpcError("Nope", RpcCode.NotPermitted, { why: 1 });
    if (req.method === "a.crash") throw new Error("secret detail");
    return { got: req.params };
  });
  assert.deepEqual(await s.call("a.echo", { x: 1 }), { got: { x: 1 } });
  const e1 = await s.call("a.fail", {}).catch((e) => e);
  assert.ok(e1 instanceof RpcError);
  assert.equal(e1.code, RpcCode.NotPermitted);
  assert.deepEqual(e1.data, { why: 1 });
  const e2 = await s.call("a.crash", {}).catch((e) => e);
  assert.ok(e2 instanceof RpcError);
  assert.equal(e2.code, RpcCode.InternalError);
  assert.doesNotMatch(e2.message, /secret/);
});

Deno.test("callOnStream() refuses a request over max_message_bytes before sending it", async () => {
  await using s = await sessions(() => "never");
  const err = await s.call("a.big", { big: "x".repeat(5000) }).catch((e) => e);
  assert.ok(err instanceof RpcError);
  assert.equal(err.code, RpcCode.InvalidRequest);
  assert.match(err.message, /max_message_bytes/);
});

Deno.test("serveStream() resets a stream whose request exceeds max_message_bytes", async () => {
  await using s = await sessions(() => "never", 5000, 1024);
  const stream = s.client.open();
  await stream.write(new Uint8Array(2048).fill(0x20)); // 2 KiB of spaces, no end yet
  const err = await readMessage(stream, 1024).catch((e) => e);
  assert.ok(err instanceof Error, "reset seen by the caller");
});

Deno.test("callOnStream() fails with -32004 at the deadline and the callee's signal aborts", async () => {
  const { promise: aborted, resolve } = Promise.withResolvers<void>();
  await using s = await sessions((_req, signal) =>
    new Promise((_, reject) =>
      signal.addEventListener("abort", () => {
        resolve();
        reject(signal.reason);
      }, { once: true })
    )
  );
  const err = await s.call("a.slow", {}, 200).catch((e) => e);
  assert.ok(err instanceof RpcError);
  assert.equal(err.code, RpcCode.Timeout);
  await aborted; // the caller's RST reached the callee
});

Deno.test("encodeMessage() writes compact JSON", () => {
  assert.equal(
    new TextDecoder().decode(encodeMessage({ jsonrpc: "2.0", id: 1, result: { a: [1] } })),
    '{"jsonrpc":"2.0","id":1,"result":{"a":[1]}}',
  );
});

Deno.test("DeadlineClock.deadline() fires in due order, never early, and leaves no timer", async () => {
  const clock = new DeadlineClock();
  const start = performance.now();
  const fired: string[] = [];
  const wait = (name: string, ms: number) => {
    const d = clock.deadline(ms);
    const p = new Promise<void>((resolve) =>
      d.signal.addEventListener("abort", () => {
        assert.ok(performance.now() - start >= ms - 1, `${name} fired early`);
        assert.equal((d.signal.reason as DOMException).name, "TimeoutError");
        fired.push(name);
        d[Symbol.dispose](); // disposing a fired deadline is harmless
        resolve();
      })
    );
    return { d, p };
  };
  const late = wait("late", 60);
  const early = wait("early", 20);
  const dropped = wait("dropped", 40);
  dropped.d[Symbol.dispose]();
  await Promise.all([late.p, early.p]);
  assert.deepEqual(fired, ["early", "late"]);
  assert.equal(dropped.d.signal.aborted, false);
  // a parent's abort reaches the deadline; disposing the last one clears the clock's timer
  const parent = new AbortController();
  using d = clock.deadline(60_000, parent.signal);
  parent.abort(new Error("gone"));
  assert.equal((d.signal.reason as Error).message, "gone");
});

Deno.test("onAbort() hooks on a clock's signal run once at its abort; a removed one never", () => {
  const clock = new DeadlineClock();
  const outer = clock.deadline(60_000);
  const inner = clock.deadline(60_000, outer.signal); // linked by a hook, not a listener
  const ran: string[] = [];
  onAbort(inner.signal, () => ran.push("kept"));
  const remove = onAbort(inner.signal, () => ran.push("removed"));
  remove();
  const plain = new AbortController();
  onAbort(plain.signal, () => ran.push("plain")); // any other signal: a listener
  outer.abort(new Error("gone"));
  plain.abort();
  assert.equal((inner.signal.reason as Error).message, "gone");
  assert.deepEqual(ran, ["kept", "plain"]);
  inner.abort(new Error("again")); // already aborted: nothing runs twice
  assert.deepEqual(ran, ["kept", "plain"]);
  inner[Symbol.dispose]();
  outer[Symbol.dispose]();
});
