import assert from "node:assert/strict";
import { PP2_SIGNATURE } from "../../wire/proxy_protocol.ts";
import { type Limits, NO_ADMISSION } from "../snapshot.ts";
import { concat, fixture, Sim, snapshotOf, tokenBytes } from "./_sim.ts";

const HOST = "test.internal-server.local";
const CURL = fixture("curl_tls13");
const ROUTES = [[HOST, { operator: "op1" }]] as const;
/** The load balancer every connection comes from. */
const LB = { hostname: "127.0.0.1", port: 50000 };

const enc = (s: string) => new TextEncoder().encode(s);
const V1 = enc("PROXY TCP4 198.51.100.7 192.0.2.1 41000 443\r\n");
/** A test-only v2 header: PROXY, TCP over IPv4 or IPv6, with an optional TLV. */
function v2(source: number[], port: number, tlvs: number[] = []): Uint8Array {
  const fam = source.length === 4 ? 0x11 : 0x21;
  const dst = source.length === 4 ? [192, 0, 2, 1] : new Array(16).fill(0).fill(1, 15);
  const body = [...source, ...dst, port >> 8, port & 0xff, 1, 187, ...tlvs];
  return Uint8Array.of(...PP2_SIGNATURE, 0x21, fam, body.length >> 8, body.length & 0xff, ...body);
}
const V2 = v2([198, 51, 100, 8], 42000, [0x02, 0, 3, 0x61, 0x62, 0x63]);
const V2_LOCAL = Uint8Array.of(...PP2_SIGNATURE, 0x20, 0x00, 0, 0);

function pub(limits: Partial<Limits> = {}): Sim {
  return new Sim("public", {
    limits: { acceptProxyProtocol: true, ...limits },
    publicRoutes: ROUTES,
  });
}

function clean(sim: Sim): void {
  assert.deepEqual(sim.violations, []);
}

/** Connects a dial-back for the one waiting client; returns what was written to it. */
function dialBack(sim: Sim): Uint8Array {
  const need = sim.ofType("needDialBack");
  assert.equal(need.length, 1);
  const db = sim.accept("private")!;
  sim.feed(db, tokenBytes(need[0]!.token));
  return sim.written(db);
}

Deno.test("core reads a PROXY header split anywhere before the hello; its source is the client", () => {
  for (
    const [header, client] of [[V1, "198.51.100.7:41000"], [V2, "198.51.100.8:42000"]] as const
  ) {
    const bytes = concat(header, CURL);
    // every two-piece cut (the header and the hello in one chunk is cut 0), and byte by byte
    const cuts: number[][] = [[]];
    for (let k = 1; k < bytes.length; k++) cuts.push([k]);
    cuts.push(Array.from({ length: bytes.length - 1 }, (_, k) => k + 1));
    for (const cut of cuts) {
      const sim = pub();
      const sock = sim.accept("public", LB)!;
      sim.feedAt(sock, bytes, cut);
      const need = sim.ofType("needDialBack");
      assert.equal(need.length, 1, `cut ${cut.slice(0, 2)}`);
      assert.equal(need[0]!.client, client);
      // the internal side gets the hello exactly, not one byte of the header
      assert.deepEqual(dialBack(sim), CURL, `cut ${cut.slice(0, 2)}`);
      assert.equal(sim.ofType("piped")[0]!.client, client);
      assert.deepEqual(sim.ofType("refused"), []);
      clean(sim);
    }
  }
});

Deno.test("core: an IPv6 PROXY source is the client, bracketed", () => {
  const sim = pub();
  const sock = sim.accept("public", LB)!;
  sim.feed(sock, concat(v2([...new Array(15).fill(0), 1], 1234), CURL));
  assert.equal(sim.ofType("needDialBack")[0]!.client, "[::1]:1234");
  clean(sim);
});

Deno.test("core: the per-client pending cap counts the PROXY source, not the balancer", () => {
  const sim = pub({ maxPendingPerClient: 1 });
  for (const h of [V1, V2]) sim.feed(sim.accept("public", LB)!, concat(h, CURL));
  assert.equal(sim.ofType("needDialBack").length, 2); // two clients behind one balancer
  sim.feed(sim.accept("public", LB)!, concat(V1, CURL)); // the first one again
  const refused = sim.ofType("refused");
  assert.deepEqual(refused.map((e) => [e.why, e.client]), [
    ["pending-client", "198.51.100.7:41000"],
  ]);
  clean(sim);
});

Deno.test("core accepts and closes a LOCAL health check (v2 LOCAL)", () => {
  for (const [header, detail] of [[V2_LOCAL, "PROXY v2 LOCAL"]] as const) {
    const sim = pub();
    const sock = sim.accept("public", LB)!;
    sim.feed(sock, header);
    assert.deepEqual(sim.take(), [{
      type: "refused",
      why: "health-check",
      conn: 2,
      connId: "t-2",
      client: "127.0.0.1:50000",
      detail,
    }]);
    const s = sim.sock(sock);
    assert.deepEqual([s.closes, s.abort, s.writes.length], [1, false, 0]);
    assert.equal(sim.engine.live, 0);
    clean(sim);
  }
});

Deno.test("core refuses a client without a valid PROXY header: closed, no alert, no hello read", () => {
  const cases: [string, Uint8Array, string][] = [
    ["a ClientHello straight to the port", CURL, "first byte 0x16"],
    ["garbage", enc("HELLO\r\n"), "first byte 0x48"],
    ["a broken v1 line", enc("PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\n"), "source port"],
    ["a v2 header over its cap", Uint8Array.of(...PP2_SIGNATURE, 0x21, 0x11, 0x10, 0), "limit"],
  ];
  for (const [name, bytes, part] of cases) {
    const sim = pub();
    const sock = sim.accept("public", LB)!;
    sim.feed(sock, bytes);
    const [e, ...rest] = sim.take();
    assert.equal(rest.length, 0, name);
    assert.ok(e?.type === "refused" && e.why === "bad-proxy-header", name);
    assert.ok(e.detail?.includes(part), `${name}: ${e.detail}`);
    assert.equal(e.client, "127.0.0.1:50000");
    const s = sim.sock(sock);
    assert.deepEqual([s.closes, s.abort, s.writes.length], [1, true, 0], name);
    clean(sim);
  }
});

Deno.test("core: a PROXY header not complete within hello_timeout_ms is dropped", () => {
  const sim = pub({ helloTimeoutMs: 3000 });
  const sock = sim.accept("public", LB)!;
  sim.feed(sock, V2.subarray(0, 20));
  sim.advance(2999);
  assert.deepEqual(sim.take(), []);
  sim.advance(1);
  assert.deepEqual(sim.take().map((e) => e.type === "refused" && [e.why, e.detail]), [
    ["hello-timeout", "no complete PROXY protocol header"],
  ]);
  assert.equal(sim.sock(sock).closes, 1);
  clean(sim);
});

Deno.test("core: the header and the hello share one deadline", () => {
  const sim = pub({ helloTimeoutMs: 3000 });
  const sock = sim.accept("public", LB)!;
  sim.advance(2000);
  sim.feed(sock, concat(V1, CURL.subarray(0, 10)));
  sim.advance(1000);
  const e = sim.take();
  assert.deepEqual(e.map((x) => x.type === "refused" && [x.why, x.client, x.detail]), [
    ["hello-timeout", "198.51.100.7:41000", undefined],
  ]);
  clean(sim);
});

Deno.test("core: EOF inside a PROXY header, or before one, refuses it", () => {
  for (
    const [bytes, detail] of [
      [V1.subarray(0, 9), "connection ended after 9 bytes"],
      [new Uint8Array(), "EOF before a PROXY protocol header"],
    ] as const
  ) {
    const sim = pub();
    const sock = sim.accept("public", LB)!;
    sim.feed(sock, bytes);
    sim.eof(sock);
    const [e] = sim.ofType("refused");
    assert.equal(e?.why, "bad-proxy-header");
    assert.ok(e?.detail?.includes(detail), e?.detail);
    assert.equal(sim.sock(sock).closes, 1);
    clean(sim);
  }
});

Deno.test("core: accept_proxy_protocol off reads no header; a snapshot turns it on for new clients only", () => {
  const sim = new Sim("public", { publicRoutes: ROUTES });
  const before = sim.accept("public", LB)!;
  sim.command({
    type: "snapshot",
    snapshot: snapshotOf({ limits: { acceptProxyProtocol: true }, publicRoutes: ROUTES }, 2),
  });
  const after = sim.accept("public", LB)!;
  sim.feed(before, CURL); // accepted before the change: a plain hello still routes
  assert.equal(sim.ofType("needDialBack")[0]?.client, "127.0.0.1:50000");
  sim.feed(after, CURL);
  assert.equal(sim.ofType("refused")[0]?.why, "bad-proxy-header");
  // and off again: a header is no ClientHello
  sim.command({ type: "snapshot", snapshot: snapshotOf({ publicRoutes: ROUTES }, 3) });
  const off = sim.accept("public", LB)!;
  sim.feed(off, concat(V1, CURL));
  assert.equal(sim.ofType("refused")[1]?.why, "bad-hello");
  clean(sim);
});

Deno.test("core: behind a balancer the admission checks see the PROXY source, not the balancer", () => {
  const sim = pub({
    admission: { ...NO_ADMISSION, deny: ["198.51.100.7/32"], maxConnectionsPerClient: 1 },
  });
  // the balancer itself is in no list: accepted; its first client (V1's source) is denied
  const denied = sim.accept("public", LB)!;
  assert.notEqual(denied, null);
  sim.feed(denied, concat(V1, CURL));
  const refused = sim.ofType("refused");
  assert.deepEqual(
    refused.map((r) => [r.why, r.client, r.detail]),
    [["denied", "198.51.100.7:41000", "in deny 198.51.100.7/32"]],
  );
  // per-client limits count the real client: two from V2's source, one allowed at a time,
  // while two clients behind the same balancer are no problem
  const a = sim.accept("public", LB)!;
  sim.feed(a, concat(V2, CURL));
  const b = sim.accept("public", LB)!;
  sim.feed(b, concat(V2, CURL));
  assert.equal(sim.ofType("needDialBack").length, 1);
  assert.equal(sim.ofType("refused").at(-1)!.why, "client-connections");
  clean(sim);
});

Deno.test("core: a v1 UNKNOWN is a client the balancer could not describe: served as the balancer", () => {
  const sim = pub();
  const sock = sim.accept("public", LB)!;
  sim.feed(sock, concat(enc("PROXY UNKNOWN\r\n"), CURL));
  assert.equal(sim.ofType("needDialBack")[0]!.client, "127.0.0.1:50000");
  assert.deepEqual(dialBack(sim), CURL);
  assert.deepEqual(sim.ofType("refused"), []);
  clean(sim);
});

Deno.test("core: EOF right after a complete PROXY header is a silent client, no alert", () => {
  const sim = pub();
  const sock = sim.accept("public", LB)!;
  sim.feed(sock, V1);
  sim.eof(sock);
  const r = sim.ofType("refused");
  assert.equal(r.length, 1);
  assert.equal(r[0]!.why, "bad-hello");
  assert.equal(sim.sock(sock).writes.length, 0, "no alert for a client that sent no hello byte");
  clean(sim);
});

Deno.test("core: proxy_protocol_from refuses a peer that is not a listed balancer, at accept", () => {
  const sim = pub({ proxyProtocolFrom: ["127.0.0.1/32"] });
  assert.equal(sim.accept("public", { hostname: "127.0.0.9", port: 1 }), null);
  assert.deepEqual(sim.take().map((e) => e.type === "refused" && [e.why, e.client, e.detail]), [[
    "denied",
    "127.0.0.9:1",
    "not a PROXY protocol sender of proxy_protocol_from",
  ]]);
  // the listed balancer's clients are served, as its headers name them
  const sock = sim.accept("public", LB)!;
  sim.feed(sock, concat(V1, CURL));
  assert.equal(sim.ofType("needDialBack")[0]!.client, "198.51.100.7:41000");
  clean(sim);
});
