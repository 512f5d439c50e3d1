// The core's part of the PROXY protocol (docs/architecture.md, "The PROXY protocol"): the public
// side carries the client's address and the one it connected to (needDialBack, pool header) and
// the client's ALPN list (events); the private side writes the header to the internal server
// before the ClientHello, on both paths, as the snapshot's route says.
import assert from "node:assert/strict";
import { encodePoolHeader } from "../../wire/pool_header.ts";
import { encodeProxyV2, PP2_TYPE_AUTHORITY } from "../../wire/proxy_protocol.ts";
import type { PrivateRoute } from "../snapshot.ts";
import { concat, fixture, helloFor, newToken, Sim, snapshotOf, tokenBytes } from "./_sim.ts";

const HOST = "test.internal-server.local";
const CURL = fixture("curl_tls13"); // offers h2 and http/1.1
const ENDPOINT = { hostname: "192.0.2.1", port: 7443 };
const INTERNAL = { hostname: "10.1.0.5", port: 8443 };
const CLIENT = { hostname: "127.0.0.2", port: 51000 };
const LOCAL = { hostname: "127.0.0.1", port: 8443 };
const CLIENT6 = { hostname: "::1", port: 51001 };
const LOCAL6 = { hostname: "::1", port: 8443 };
const ascii = (s: string) => new TextEncoder().encode(s);

function clean(sim: Sim): void {
  assert.deepEqual(sim.violations, []);
}

function pub(): Sim {
  return new Sim("public", { publicRoutes: [[HOST, { operator: "op1" }]] });
}

function priv(route: PrivateRoute): Sim {
  return new Sim("private", { privateRoutes: [[HOST, route]] });
}

Deno.test("core gives a waiting client's local address and its ALPN list to the events", () => {
  const sim = pub();
  const client = sim.accept("public", CLIENT, LOCAL)!;
  sim.feed(client, CURL);
  const [need, ...rest] = sim.take();
  assert.equal(rest.length, 0);
  assert.ok(need?.type === "needDialBack");
  assert.deepEqual([need.client, need.local], ["127.0.0.2:51000", "127.0.0.1:8443"]);
  const db = sim.accept("private")!;
  sim.feed(db, tokenBytes(need.token));
  const [piped] = sim.ofType("piped");
  assert.deepEqual(piped?.alpn, ["h2", "http/1.1"]);
  sim.eof(client);
  sim.eof(db);
  const [ended] = sim.ofType("ended");
  assert.deepEqual([ended?.alpn, ended?.client], [["h2", "http/1.1"], "127.0.0.2:51000"]);
  clean(sim);
});

Deno.test("core names no local address when the driver gave none, and an empty ALPN list", () => {
  const sim = pub();
  const client = sim.accept("public", CLIENT)!;
  sim.feed(client, helloFor(HOST));
  const [need] = sim.take();
  assert.ok(need?.type === "needDialBack");
  assert.equal("local" in need, false);
  const db = sim.accept("private")!;
  sim.feed(db, tokenBytes(need.token));
  assert.deepEqual(sim.ofType("piped")[0]?.alpn, []);
  clean(sim);
});

Deno.test("core refuses an unknown name with the ALPN list it read", () => {
  const sim = pub();
  const other = sim.accept("public", CLIENT, LOCAL)!;
  sim.feed(other, helloFor("nope.example"));
  const [r] = sim.ofType("refused");
  assert.deepEqual([r?.why, r?.alpn], ["unknown-name", []]);
});

for (
  const [what, source, destination] of [
    ["IPv4", CLIENT, LOCAL],
    ["IPv6", CLIENT6, LOCAL6],
  ] as const
) {
  Deno.test(`core writes the ${what} client's addresses in the pool header`, () => {
    const sim = pub();
    const t = newToken(sim.rng);
    sim.command({
      type: "grantPool",
      operator: "op1",
      domains: [HOST],
      tokens: [t.text],
      idleTimeoutMs: 30_000,
    });
    const db = sim.accept("private")!;
    sim.feed(db, t.raw);
    sim.take();
    const client = sim.accept("public", source, destination)!;
    sim.feed(client, CURL);
    sim.feed(db, Uint8Array.of(22)); // its first answer: the pipe
    const [piped] = sim.ofType("piped");
    const header = encodePoolHeader(HOST, piped!.connId, { source, destination });
    assert.deepEqual(sim.written(db), concat(header, CURL));
    assert.deepEqual(piped?.alpn, ["h2", "http/1.1"]);
    clean(sim);
  });
}

/** A notice's dialBack with `extra` fields; returns its dial-back and internal sockets. */
function notice(sim: Sim, extra: Record<string, unknown>) {
  const token = newToken(sim.rng);
  sim.command({
    type: "dialBack",
    conn: "c-1",
    operator: "op1",
    domain: HOST,
    endpoint: ENDPOINT,
    token: token.text,
    internal: INTERNAL,
    ...extra,
  });
  const [db, internal] = sim.connecting();
  return { db: db!.id, internal: internal!.id };
}

const noticeCases: [string, Record<string, unknown>, Uint8Array][] = [
  [
    "v1 for an IPv4 client",
    { proxyProtocol: "v1", source: CLIENT, destination: LOCAL },
    ascii("PROXY TCP4 127.0.0.2 127.0.0.1 51000 8443\r\n"),
  ],
  [
    "v1 for an IPv6 client",
    { proxyProtocol: "v1", source: CLIENT6, destination: LOCAL6 },
    ascii("PROXY TCP6 ::1 ::1 51001 8443\r\n"),
  ],
  [
    "v2 with the SNI as AUTHORITY",
    { proxyProtocol: "v2", source: CLIENT, destination: LOCAL },
    encodeProxyV2({
      family: "tcp4",
      source: { address: "127.0.0.2", port: 51000 },
      destination: { address: "127.0.0.1", port: 8443 },
    }, [{ type: PP2_TYPE_AUTHORITY, value: ascii(HOST) }]),
  ],
  [
    "v1 UNKNOWN for a notice without addresses",
    { proxyProtocol: "v1" },
    ascii("PROXY UNKNOWN\r\n"),
  ],
  ["nothing without proxy_protocol", { source: CLIENT, destination: LOCAL }, new Uint8Array(0)],
];
for (const [what, extra, header] of noticeCases) {
  Deno.test(`core writes the PROXY header before the ClientHello on a notice: ${what}`, () => {
    for (const internalFirst of [false, true]) {
      const sim = priv({ internal: INTERNAL });
      const { db, internal } = notice(sim, extra);
      if (internalFirst) sim.connected(internal);
      sim.connected(db);
      if (!internalFirst) sim.connected(internal);
      assert.deepEqual(sim.written(internal), header);
      sim.feed(db, CURL);
      assert.deepEqual(sim.written(internal), concat(header, CURL));
      const [piped] = sim.ofType("piped");
      const source = extra.source as typeof CLIENT | undefined;
      const text = source === undefined
        ? ""
        : source.hostname.includes(":")
        ? `[${source.hostname}]:${source.port}`
        : `${source.hostname}:${source.port}`;
      assert.equal(piped?.client, text);
      sim.eof(db);
      sim.eof(internal);
      // the header is no byte of the client's
      assert.equal(sim.ofType("ended")[0]?.up, CURL.length);
      clean(sim);
    }
  });
}

/** Opens a connected pooled dial-back; returns its socket. */
function pooled(sim: Sim): number {
  const t = newToken(sim.rng);
  sim.command({
    type: "openPooled",
    operator: "op1",
    endpoint: ENDPOINT,
    tokens: [t.text],
    idleTimeoutMs: 30_000,
  });
  const [db] = sim.connecting();
  sim.connected(db!.id);
  sim.take();
  return db!.id;
}

Deno.test("core writes the route's PROXY header on the pool path, and a reload changes it", () => {
  const sim = priv({ internal: INTERNAL, proxyProtocol: "v2" });
  const addrs = { source: CLIENT6, destination: LOCAL6 };
  const want = encodeProxyV2({
    family: "tcp6",
    source: { address: "::1", port: 51001 },
    destination: { address: "::1", port: 8443 },
  }, [{ type: PP2_TYPE_AUTHORITY, value: ascii(HOST) }]);
  for (
    const [route, header] of [
      [undefined, want],
      [{ internal: INTERNAL, proxyProtocol: "v1" }, ascii("PROXY TCP6 ::1 ::1 51001 8443\r\n")],
      [{ internal: INTERNAL }, new Uint8Array(0)],
    ] as const
  ) {
    if (route !== undefined) {
      sim.command({
        type: "snapshot",
        snapshot: snapshotOf({ privateRoutes: [[HOST, route]] }, 2),
      });
    }
    const db = pooled(sim);
    sim.feed(db, concat(encodePoolHeader(HOST, "c-2", addrs), CURL));
    const [internal] = sim.connecting();
    sim.connected(internal!.id);
    assert.deepEqual(sim.written(internal!.id), concat(header, CURL));
    assert.equal(sim.ofType("piped")[0]?.client, "[::1]:51001");
    sim.eof(db);
    sim.eof(internal!.id);
    sim.take();
  }
  clean(sim);
});

Deno.test("core writes v2 LOCAL for a pool header without addresses (an older public proxy)", () => {
  const sim = priv({ internal: INTERNAL, proxyProtocol: "v2" });
  const db = pooled(sim);
  sim.feed(db, concat(encodePoolHeader(HOST, "c-3"), CURL));
  const [internal] = sim.connecting();
  sim.connected(internal!.id);
  assert.deepEqual(sim.written(internal!.id), concat(encodeProxyV2(null), CURL));
  clean(sim);
});
