import assert from "node:assert/strict";
import { join } from "node:path";
import { createPki, type Pki, writePki } from "../certs/pki.ts";
import type { HostPort } from "../role.ts";
import type { InternalServerSettings } from "../settings/internal_server.ts";
import { sortKeys, startInternalServer } from "./server.ts";

interface Fixture extends AsyncDisposable {
  pki: Pki;
  dir: string;
  settings(over?: Partial<InternalServerSettings>): InternalServerSettings;
}

async function fixture(): Promise<Fixture> {
  const pki = await createPki(["internal-server"]);
  const dir = await Deno.makeTempDir({ prefix: "tls-pass-internal-" });
  await writePki(pki, dir);
  return {
    pki,
    dir,
    settings: (over = {}) => ({
      listen: { hostname: "127.0.0.1", port: 0 },
      tls: true,
      certificateFile: join(dir, "internal-server.crt"),
      keyFile: join(dir, "internal-server.key"),
      maxBodyBytes: 1024,
      ...over,
    }),
    [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }),
  };
}

/** An HTTP client trusting only `root` (verification by the IP SAN 127.0.0.1). */
function clientFor(root: string): Deno.HttpClient {
  return Deno.createHttpClient({ caCerts: [root] });
}

interface Answer {
  status: number;
  type: string | null;
  text: string;
}

async function request(
  client: Deno.HttpClient,
  url: string,
  init: RequestInit = {},
): Promise<Answer> {
  const res = await fetch(url, { ...init, client, signal: AbortSignal.timeout(10_000) });
  return { status: res.status, type: res.headers.get("content-type"), text: await res.text() };
}

const JSON_TYPE = "application/json; charset=utf-8";
const URL_OF = (addr: HostPort) => `https://127.0.0.1:${addr.port}/jsonrpc`;
const ECHO_OF = (addr: HostPort) => `https://127.0.0.1:${addr.port}/echo`;
const SUCCESS = '{"message":"success"}';
const BAD_REQUEST = '{"message":"bad request: POST a JSON object to /echo"}';

/**
 * One HTTP/1.1 request over TLS to `addr` with `serverName` as SNI and as the name verified,
 * trusting only `root` (curl's `--resolve`). Returns the raw answer; the server closes after it.
 */
async function tlsGet(addr: HostPort, serverName: string, root: string): Promise<string> {
  const signal = AbortSignal.timeout(10_000);
  using tcp = await Deno.connect({ ...addr, signal });
  using tls = await Deno.startTls(tcp, { hostname: serverName, caCerts: [root] });
  const onTimeout = () => tls.close();
  signal.addEventListener("abort", onTimeout, { once: true });
  try {
    await tls.write(
      new TextEncoder().encode(
        `GET /jsonrpc HTTP/1.1\r\nHost: ${serverName}:${addr.port}\r\nConnection: close\r\n\r\n`,
      ),
    );
    return await new Response(tls.readable).text();
  } finally {
    signal.removeEventListener("abort", onTimeout);
  }
}

Deno.test("internal server answers GET through TLS for test.internal-server.local", async () => {
  await using f = await fixture();
  await using server = await startInternalServer(f.settings());
  const raw = await tlsGet(server.addrs.main, "test.internal-server.local", f.pki.rootPem);
  assert.match(raw, /^HTTP\/1\.1 200 OK\r\n/);
  assert.match(raw, /\r\ncontent-type: application\/json; charset=utf-8\r\n/i);
  assert.match(raw, /\r\n\r\n\{"message":"success"\}$/);
  // a name the certificate does not cover fails the handshake
  await assert.rejects(() => tlsGet(server.addrs.main, "other.example.com", f.pki.rootPem));
  // fetch() to the IP works too, trusting only the root
  using client = clientFor(f.pki.rootPem);
  const res = await request(client, URL_OF(server.addrs.main));
  assert.deepEqual(res, { status: 200, type: JSON_TYPE, text: '{"message":"success"}' });
});

Deno.test("internal server is refused by a client that trusts another root", async () => {
  await using f = await fixture();
  const stranger = await createPki(["internal-server"]);
  await using server = await startInternalServer(f.settings());
  using client = clientFor(stranger.rootPem);
  await assert.rejects(() => request(client, URL_OF(server.addrs.main)), TypeError);
  await assert.rejects(() =>
    tlsGet(server.addrs.main, "test.internal-server.local", stranger.rootPem)
  );
});

Deno.test("internal server answers success to any request to /jsonrpc, any method, any body", async () => {
  await using f = await fixture();
  await using server = await startInternalServer(f.settings());
  using client = clientFor(f.pki.rootPem);
  const url = URL_OF(server.addrs.main);
  // GNU parallel turns the seed's --data "{}" into --data 1, 2, …: those are successes too
  const bodies: (string | null)[] = [null, "", "{}", "1", "2000", "{", "[1,2]", "null"];
  for (const method of ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]) {
    for (const body of bodies) {
      if (method === "GET" && body !== null) continue; // fetch() refuses a GET body
      const res = await request(client, `${url}?x=1`, { method, body });
      assert.deepEqual(res, { status: 200, type: JSON_TYPE, text: SUCCESS }, `${method} ${body}`);
    }
  }
  const head = await request(client, url, { method: "HEAD" });
  assert.deepEqual(head, { status: 200, type: JSON_TYPE, text: "" });
});

Deno.test("internal server answers success on every path but /echo (a health check's GET /)", async () => {
  await using f = await fixture();
  await using server = await startInternalServer(f.settings());
  using client = clientFor(f.pki.rootPem);
  for (const path of ["/", "/jsonrpc/x", "/echo/", "/other?echo"]) {
    const url = `https://127.0.0.1:${server.addrs.main.port}${path}`;
    const res = await request(client, url, { method: "POST", body: '{"a":1}' });
    assert.deepEqual(res, { status: 200, type: JSON_TYPE, text: SUCCESS }, path);
  }
});

Deno.test("internal server /echo returns a POSTed JSON object, compact, keys sorted", async () => {
  await using f = await fixture();
  await using server = await startInternalServer(f.settings());
  using client = clientFor(f.pki.rootPem);
  const body = '{ "b": 1, "a": { "z": [3, {"y": 1, "x": 2}], "c": null }, "__proto__": "k" }';
  const res = await request(client, ECHO_OF(server.addrs.main), { method: "POST", body });
  assert.equal(res.status, 200);
  assert.equal(res.type, JSON_TYPE);
  assert.equal(res.text, '{"__proto__":"k","a":{"c":null,"z":[3,{"x":2,"y":1}]},"b":1}');
  const empty = await request(client, ECHO_OF(server.addrs.main), {
    method: "POST",
    body: "{}",
  });
  assert.deepEqual(empty, { status: 200, type: JSON_TYPE, text: "{}" });
});

Deno.test("internal server /echo answers 400 to a POST that is not a JSON object", async () => {
  await using f = await fixture();
  await using server = await startInternalServer(f.settings());
  using client = clientFor(f.pki.rootPem);
  const bodies: BodyInit[] = [
    "",
    "{",
    "not json",
    "[1,2]",
    "42",
    '"text"',
    "null",
    "true",
    new Uint8Array([0x7b, 0x22, 0xff, 0x22, 0x3a, 0x31, 0x7d]), // {"\xff":1}: not UTF-8
  ];
  for (const body of bodies) {
    const res = await request(client, ECHO_OF(server.addrs.main), { method: "POST", body });
    assert.deepEqual(
      res,
      { status: 400, type: JSON_TYPE, text: BAD_REQUEST },
      `body ${String(body)}`,
    );
  }
});

Deno.test("internal server answers 413 to a body over max_body_bytes, with Content-Length", async () => {
  await using f = await fixture();
  await using server = await startInternalServer(f.settings({ maxBodyBytes: 1024 }));
  using client = clientFor(f.pki.rootPem);
  const at = JSON.stringify({ k: "x".repeat(1024 - 8) }); // exactly 1024 bytes
  assert.equal(at.length, 1024);
  const ok = await request(client, ECHO_OF(server.addrs.main), { method: "POST", body: at });
  assert.equal(ok.status, 200);
  assert.equal(ok.text, at);
  for (const url of [ECHO_OF(server.addrs.main), URL_OF(server.addrs.main)]) {
    const over = await request(client, url, { method: "POST", body: `${at} ` });
    assert.deepEqual(over, {
      status: 413,
      type: JSON_TYPE,
      text: '{"message":"payload too large"}',
    }, url);
  }
  const rpc = await request(client, URL_OF(server.addrs.main), { method: "PUT", body: at });
  assert.deepEqual(rpc, { status: 200, type: JSON_TYPE, text: SUCCESS });
});

/** Sends a raw HTTP/1.1 request over plain TCP and reads the whole answer (Connection: close). */
async function rawHttp(addr: HostPort, head: string, chunks: string[]): Promise<string> {
  using conn = await Deno.connect({ ...addr, signal: AbortSignal.timeout(10_000) });
  const enc = new TextEncoder();
  await conn.write(enc.encode(head));
  const reading = (async () => {
    const out: Uint8Array[] = [];
    const buf = new Uint8Array(4096);
    for (let n; (n = await conn.read(buf)) !== null;) out.push(buf.slice(0, n));
    return new TextDecoder().decode(new Uint8Array(out.flatMap((c) => [...c])));
  })();
  try {
    for (const c of chunks) await conn.write(enc.encode(c));
  } catch {
    // the server may answer 413 and close before it has read everything
  }
  const timer = AbortSignal.timeout(10_000);
  const onTimeout = () => conn.close();
  timer.addEventListener("abort", onTimeout, { once: true });
  try {
    return await reading;
  } finally {
    timer.removeEventListener("abort", onTimeout);
  }
}

Deno.test("internal server answers 413 to a chunked body over the limit (no Content-Length)", async () => {
  await using f = await fixture();
  await using server = await startInternalServer(f.settings({ tls: false, maxBodyBytes: 100 }));
  const head =
    "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
  const chunk = (s: string) => `${s.length.toString(16)}\r\n${s}\r\n`;
  const big = await rawHttp(server.addrs.main, head, [
    chunk(`{"k":"${"x".repeat(60)}`),
    chunk(`${"x".repeat(60)}"}`),
    "0\r\n\r\n",
  ]);
  assert.match(big, /^HTTP\/1\.1 413 /);
  assert.match(big, /content-type: application\/json; charset=utf-8/i);
  assert.match(big, /\{"message":"payload too large"\}$/);
  assert.doesNotMatch(big, /content-length: 1\d\d\r/i);

  const small = await rawHttp(server.addrs.main, head, [
    chunk('{"b":2,'),
    chunk('"a":1}'),
    "0\r\n\r\n",
  ]);
  assert.match(small, /^HTTP\/1\.1 200 /);
  assert.match(small, /\{"a":1,"b":2\}$/);
});

Deno.test("internal server answers 413 to a streamed fetch body over the limit", async () => {
  await using f = await fixture();
  await using server = await startInternalServer(f.settings({ maxBodyBytes: 100 }));
  using client = clientFor(f.pki.rootPem);
  const body = ReadableStream.from([new TextEncoder().encode(`{"k":"${"x".repeat(200)}"}`)]);
  const res = await request(client, ECHO_OF(server.addrs.main), {
    method: "POST",
    body,
    duplex: "half",
  } as RequestInit);
  assert.deepEqual(res, { status: 413, type: JSON_TYPE, text: '{"message":"payload too large"}' });
});

Deno.test("internal server /echo answers 400 to other methods", async () => {
  await using f = await fixture();
  await using server = await startInternalServer(f.settings());
  using client = clientFor(f.pki.rootPem);
  for (const method of ["GET", "PUT", "DELETE", "PATCH"]) {
    const body = method === "GET" ? null : '{"a":1}';
    const res = await request(client, ECHO_OF(server.addrs.main), { method, body });
    assert.deepEqual(res, { status: 400, type: JSON_TYPE, text: BAD_REQUEST }, method);
  }
});

Deno.test("internal server speaks plain HTTP when tls is false", async () => {
  await using server = await startInternalServer({
    listen: { hostname: "127.0.0.1", port: 0 },
    tls: false,
    maxBodyBytes: 1024,
  });
  using client = Deno.createHttpClient({});
  const base = `http://127.0.0.1:${server.addrs.main.port}`;
  assert.deepEqual(await request(client, `${base}/jsonrpc?x=1`), {
    status: 200,
    type: JSON_TYPE,
    text: SUCCESS,
  });
  const echo = await request(client, `${base}/echo`, {
    method: "POST",
    body: '{"b":[],"a":"é"}',
  });
  assert.equal(echo.text, '{"a":"é","b":[]}');
});

Deno.test("internal server close() is idempotent and frees the port", async () => {
  await using f = await fixture();
  const server = await startInternalServer(f.settings());
  const { port } = server.addrs.main;
  assert.ok(port > 0);
  await Promise.all([server.close(), server.close()]);
  await server.close();
  await server.finished;
  // the port is free again: binding it proves the listener is gone
  using again = Deno.listen({ hostname: "127.0.0.1", port });
  assert.equal(again.addr.port, port);
});

Deno.test("internal server stops when its signal is aborted, also during a stalled body", async () => {
  await using f = await fixture();
  const stop = new AbortController();
  const server = await startInternalServer(f.settings({ tls: false }), stop.signal);
  using conn = await Deno.connect(server.addrs.main);
  const enc = new TextEncoder();
  const buf = new Uint8Array(4096);
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    conn.close();
  }, 10_000);
  try {
    await conn.write(enc.encode(
      "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n",
    ));
    // "100 Continue" is sent when the handler starts reading the body: it is waiting on us now
    const n = await conn.read(buf);
    assert.match(new TextDecoder().decode(buf.subarray(0, n ?? 0)), /^HTTP\/1\.1 100 Continue/);
    await conn.write(enc.encode('{"a"')); // 4 of 10 bytes, then the body stalls
    stop.abort();
    await server.finished;
    let answer = "";
    try {
      for (let m; (m = await conn.read(buf)) !== null;) {
        answer += new TextDecoder().decode(buf.subarray(0, m));
      }
    } catch (err) {
      if (timedOut || !(err instanceof Deno.errors.ConnectionReset)) throw err; // a reset is fine
    }
    assert.doesNotMatch(answer, /^HTTP\/1\.1 200/);
  } finally {
    clearTimeout(timer);
  }
  assert.equal(timedOut, false, "the server kept the stalled connection open");
  await assert.rejects(() => Deno.connect(server.addrs.main), Deno.errors.ConnectionRefused);
});

Deno.test("internal server fails at once when its port is taken", async () => {
  await using f = await fixture();
  using taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  await assert.rejects(
    () =>
      startInternalServer(f.settings({ listen: { hostname: "127.0.0.1", port: taken.addr.port } })),
    (err: unknown) => (err as { code?: string }).code === "EADDRINUSE",
  );
});

Deno.test("sortKeys() sorts nested objects and keeps arrays in order", () => {
  assert.equal(
    JSON.stringify(sortKeys({ b: [{ d: 1, c: 2 }, 1], a: { y: null, x: true } })),
    '{"a":{"x":true,"y":null},"b":[{"c":2,"d":1},1]}',
  );
  assert.equal(sortKeys(5), 5);
});

Deno.test("internal server answers Expect: 100-continue over the limit with 413, not 100 Continue", async () => {
  await using f = await fixture();
  await using server = await startInternalServer(f.settings({ tls: false, maxBodyBytes: 100 }));
  // no body is sent: a client that waits for "100 Continue" gets the 413 instead, and the
  // connection ends without unread input (which would reset it before the client read the 413)
  const over = await rawHttp(
    server.addrs.main,
    "POST /jsonrpc HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n",
    [],
  );
  assert.match(over, /^HTTP\/1\.1 413 /);
  assert.doesNotMatch(over, /100 Continue/);
  // within the limit the client is told to go on, and its body is echoed
  const body = '{"a":1}';
  const ok = await rawHttp(
    server.addrs.main,
    `POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: ${body.length}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n`,
    [body],
  );
  assert.match(ok, /^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 200 /);
  assert.match(ok, /\{"a":1\}$/);
});
