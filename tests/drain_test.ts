/**
 * Drain, undrain and the private proxy's reload (docs/architecture.md, "Drain" and "Reload"),
 * through a real cluster: a live splice keeps flowing while its name is drained or removed, new
 * clients for that name are refused, an invalid or restart-only change is refused by name.
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { stringify } from "yaml";
import { type Cluster, DOMAIN, startCluster, until, within } from "./_cluster.ts";
import { formatHostPort } from "../lib/role.ts";
import { loadPrivateSettings } from "../lib/settings/private.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();
const TWO = "two.internal-server.local";
const REFUSED = /UnrecognisedName|unrecognized.?name|internal.?error|reset|closed|EOF/i;

/** One POST /echo on a keep-alive connection; returns the echoed body. */
async function echo(tls: Deno.Conn, body: string, host = DOMAIN): Promise<string> {
  const b = enc.encode(body);
  await tls.write(enc.encode(
    `POST /echo HTTP/1.1\r\nHost: ${host}\r\nContent-Type: application/json\r\n` +
      `Content-Length: ${b.length}\r\n\r\n${body}`,
  ));
  let buf = new Uint8Array(0);
  const chunk = new Uint8Array(16_384);
  for (;;) {
    const text = dec.decode(buf);
    const end = text.indexOf("\r\n\r\n");
    const m = end < 0 ? null : /content-length:\s*(\d+)/i.exec(text.slice(0, end));
    if (m && buf.length >= end + 4 + Number(m[1])) {
      return dec.decode(buf.subarray(end + 4, end + 4 + Number(m[1])));
    }
    const n = await within(tls.read(chunk), 5000, "an echo response");
    if (n === null) throw new Error("Connection ended inside a response");
    const next = new Uint8Array(buf.length + n);
    next.set(buf);
    next.set(chunk.subarray(0, n), buf.length);
    buf = next;
  }
}

async function roundTrip(tls: Deno.Conn, round: number, host = DOMAIN): Promise<void> {
  const body = JSON.stringify({ round });
  assert.deepEqual(JSON.parse(await echo(tls, body, host)), { round });
}

function stateOf(c: Cluster, domain: string) {
  return c.priv!.announcementStatus().find((a) => a.domain === domain);
}

Deno.test("drain: a live splice keeps flowing and completes, new clients are refused, undrain serves again", async () => {
  await using c = await startCluster({ private: { graceMs: 20_000 } });
  assert.equal(stateOf(c, DOMAIN)?.state, "announced");
  assert.deepEqual(stateOf(c, DOMAIN)?.acknowledged.map((a) => a.operator), ["public-proxy-1"]);
  assert.ok(Date.parse(stateOf(c, DOMAIN)!.expiresAt!) > Date.now());
  using tls = await c.connectTls();
  await roundTrip(tls, 0);
  await until(() => stateOf(c, DOMAIN)?.live === 1, "the live splice counted");

  const drained = c.priv!.drain(DOMAIN);
  assert.equal(stateOf(c, DOMAIN)?.state, "draining");
  // withdrawn at the public proxy: it stops routing the name here
  await until(() => c.pub.announcements.match(DOMAIN) === undefined, "the withdrawal");
  await assert.rejects(c.request("/"), REFUSED);
  // the live one still flows both ways
  await roundTrip(tls, 1);
  await roundTrip(tls, 2);
  assert.equal(stateOf(c, DOMAIN)?.state, "draining");
  tls.close(); // the splice completes: the drain ends before its grace
  const r = await within(drained, 10_000, "the drain");
  assert.equal(r.state, "drained");
  assert.deepEqual([r.live, r.finished, r.closed], [1, 1, 0]);
  assert.deepEqual(r.withdrawn, ["public-proxy-1"]);
  assert.deepEqual(r.notWithdrawn, []);
  assert.ok(r.ms < 10_000);
  const s = stateOf(c, DOMAIN)!;
  assert.deepEqual([s.state, s.live, s.acknowledged, s.expiresAt], ["drained", 0, [], undefined]);
  // still drained, the announcer does not announce it again
  await assert.rejects(c.request("/"), REFUSED);
  assert.equal(c.pub.announcements.match(DOMAIN), undefined);
  // draining again is a no-op answer
  assert.equal((await c.priv!.drain(DOMAIN)).state, "drained");

  const back = await within(c.priv!.undrain(DOMAIN), 10_000, "the undrain");
  assert.equal(back.state, "announced");
  assert.equal(c.pub.announcements.match(DOMAIN)?.operator, "private-proxy-1");
  const ok = await c.request("/");
  assert.equal(ok.status, 200);
});

Deno.test("drain: a splice still open at grace_ms is closed, and an unknown domain is named", async () => {
  await using c = await startCluster({ private: { graceMs: 300 } });
  await assert.rejects(
    c.priv!.drain("nope.internal-server.local"),
    (err: unknown) =>
      err instanceof RangeError && /"nope\.internal-server\.local"/.test(err.message) &&
      err.message.includes(DOMAIN),
  );
  await assert.rejects(c.priv!.undrain("nope.example"), /Cannot undrain "nope\.example"/);
  using tls = await c.connectTls();
  await roundTrip(tls, 0);
  await until(() => stateOf(c, DOMAIN)?.live === 1, "the live splice counted");
  const started = await c.priv!.drain(DOMAIN, { wait: false });
  assert.equal(started.state, "draining");
  assert.equal(started.live, 1);
  const r = await within(c.priv!.drain(DOMAIN), 10_000, "the drain");
  assert.deepEqual([r.state, r.finished, r.closed], ["drained", 0, 1]);
  assert.ok(r.ms >= 300, `drained after ${r.ms} ms, before grace_ms`);
  // the held connection was cut
  const end = await within(tls.read(new Uint8Array(16)).catch((err) => err), 5000, "the cut");
  assert.ok(end === null || end instanceof Error);
  await until(() => stateOf(c, DOMAIN)?.live === 0, "nothing live");
  await until(() => c.priv!.stats.ended === 1, "the splice ended");
});

/** Writes private settings for the cluster as a YAML file; returns its path. */
async function writeSettings(
  c: Cluster,
  announcements: { domain: string; internal: string }[],
  extra: Record<string, unknown> = {},
): Promise<string> {
  const s = c.privateSettings();
  const file = join(c.dir, "private.yml");
  await Deno.writeTextFile(
    file,
    stringify({
      operator: s.operator,
      eps: {
        address: formatHostPort(s.eps.address),
        certificate_file: s.eps.certificateFile,
        key_file: s.eps.keyFile,
        ca_certificate_files: s.eps.caCertificateFiles,
        call_timeout_ms: s.eps.callTimeoutMs,
      },
      announce_to: s.announceTo,
      endpoints: Object.fromEntries(
        Object.entries(s.endpoints).map(([k, v]) => [k, v.map(formatHostPort)]),
      ),
      announcements: announcements.map((a) => ({ ...a, expires_in_ms: 3_600_000 })),
      retry_ms: 50,
      grace_ms: 20_000,
      ...extra,
    }),
  );
  return file;
}

Deno.test("reload: adds one announcement and removes another while a connection stays open", async () => {
  await using c = await startCluster({ private: { graceMs: 20_000 } });
  using tls = await c.connectTls();
  await roundTrip(tls, 0);
  await until(() => stateOf(c, DOMAIN)?.live === 1, "the live splice counted");
  const internal = formatHostPort(c.internal.addrs.main);
  const file = await writeSettings(c, [{ domain: TWO, internal }]);
  const r = await c.priv!.reload(() => loadPrivateSettings([file]));
  assert.equal(r.ok, true, r.problems.join("\n"));
  assert.ok(r.applied.includes(`announcements: added ${TWO}`), r.applied.join("\n"));
  assert.ok(r.applied.some((l) => l.includes(`removed ${DOMAIN}`)), r.applied.join("\n"));
  assert.ok(r.applied.includes("grace_ms: 20000 → 20000") === false);
  assert.equal(c.priv!.lastReload, r);
  // bytes still flow on the open connection of the removed name
  await roundTrip(tls, 1);
  assert.equal(stateOf(c, DOMAIN)?.state, "draining");
  await until(() => stateOf(c, TWO)?.state === "announced", `${TWO} acknowledged`);
  const two = await c.request("/", undefined, TWO);
  assert.equal(two.status, 200);
  await until(() => c.pub.announcements.match(DOMAIN) === undefined, "the withdrawal");
  await assert.rejects(c.request("/"), REFUSED);
  await roundTrip(tls, 2);
  tls.close();
  // once drained, the removed one is forgotten
  await until(() => stateOf(c, DOMAIN) === undefined, `${DOMAIN} forgotten`);
  assert.deepEqual(c.priv!.announcementStatus().map((a) => a.domain), [TWO]);
});

Deno.test("reload: an invalid value or a restart-only key is refused by name, the old settings kept", async () => {
  await using c = await startCluster({ private: { graceMs: 20_000 } });
  const internal = formatHostPort(c.internal.addrs.main);
  const before = c.priv!.announcementStatus();
  const bad = await writeSettings(c, [{ domain: TWO, internal }], {
    pool: { max_idle: 0 },
  });
  const r = await c.priv!.reload(() => loadPrivateSettings([bad]));
  assert.equal(r.ok, false);
  assert.deepEqual(r.applied, []);
  assert.ok(r.problems.some((p) => p.startsWith(`${bad}: pool.max_idle:`)), r.problems.join("\n"));
  assert.equal(c.priv!.lastReload, r);
  assert.deepEqual(c.priv!.announcementStatus().map((a) => a.domain), [DOMAIN]);

  const restart = await writeSettings(c, [{ domain: TWO, internal }], {
    sockets: "deno",
    max_connections: 100,
  });
  const r2 = await c.priv!.reload(() => loadPrivateSettings([restart]));
  assert.equal(r2.ok, false);
  assert.deepEqual(
    r2.problems.map((p) => p.split(":")[0]),
    ["sockets", "max_connections"],
    r2.problems.join("\n"),
  );
  assert.ok(r2.problems.every((p) => p.includes("cannot change without a restart")));
  // nothing changed: same announcements, still served
  assert.deepEqual(
    c.priv!.announcementStatus().map((a) => [a.domain, a.state]),
    before.map((a) => [a.domain, a.state]),
  );
  assert.equal((await c.request("/")).status, 200);
  await assert.rejects(c.request("/", undefined, TWO), REFUSED);
});

Deno.test("drain: the last announced name drained stops the dial-back pool and closes its idle ones; undrain refills it", async () => {
  await using c = await startCluster({
    private: { pool: { enabled: true, minIdle: 2, maxIdle: 4, idleTimeoutMs: 30_000 } },
  });
  const pool = () => c.priv!.pools.get("public-proxy-1")!;
  await until(() => pool().idle === 2, "two idle pooled dial-backs");
  const r = await within(c.priv!.drain(DOMAIN), 10_000, "the drain");
  assert.equal(r.state, "drained");
  await until(() => pool().idle === 0, "the idle pooled dial-backs closed");
  assert.equal(pool().stats.dropped, 0); // closed on purpose, not counted as drops
  await assert.rejects(c.request("/"), REFUSED);
  assert.equal((await within(c.priv!.undrain(DOMAIN), 10_000, "the undrain")).state, "announced");
  await until(() => pool().idle === 2, "the pool refilled");
  assert.equal((await c.request("/")).status, 200);
});
