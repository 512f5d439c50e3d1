import assert from "node:assert/strict";
import {
  clientHello,
  DOMAIN,
  NoticeInbox,
  readToEnd,
  SHORT,
  startCluster,
  until,
  within,
} from "./_cluster.ts";
import { readExact } from "../lib/net/io.ts";
import { formatHostPort } from "../lib/role.ts";
import { ALERT_INTERNAL_ERROR, tlsAlert } from "../lib/wire/client_hello.ts";

function tokenBytes(base64: unknown): Uint8Array {
  assert.equal(typeof base64, "string");
  return Uint8Array.from(atob(base64 as string), (ch) => ch.charCodeAt(0));
}

Deno.test("public proxy sends a notice, replays the hello on the dial-back, refuses a reused token", async () => {
  await using c = await startCluster({ startPrivate: false });
  await using inbox = await NoticeInbox.attach(c);
  await inbox.announce();
  using client = await Deno.connect({ ...c.pub.addrs.public, transport: "tcp" });
  const hello = clientHello(DOMAIN);
  await client.write(hello);
  const notice = await inbox.next();
  assert.equal(notice.domain, DOMAIN);
  assert.equal(notice.endpoint, formatHostPort(c.pub.addrs.private));
  const token = tokenBytes(notice.token);
  assert.equal(token.length, 32);

  using dial = await Deno.connect({ ...c.pub.addrs.private, transport: "tcp" });
  await dial.write(token);
  const replay = new Uint8Array(hello.length);
  assert.ok(await within(readExact(dial, replay), 5000, "the replayed hello"));
  assert.deepEqual(replay, hello);
  // spliced: bytes flow both ways
  await dial.write(new TextEncoder().encode("from-backend"));
  const down = new Uint8Array(12);
  assert.ok(await within(readExact(client, down), 5000, "bytes to the client"));
  assert.equal(new TextDecoder().decode(down), "from-backend");

  // the same token again: closed, counted
  using again = await Deno.connect({ ...c.pub.addrs.private, transport: "tcp" });
  await again.write(token);
  assert.equal((await readToEnd(again)).bytes.length, 0);
  await until(() => c.pub.stats.badTokens === 1, "badTokens 1");
});

Deno.test("public proxy routes a 20 KiB ClientHello (two records) with the default max_client_hello_bytes", async () => {
  await using c = await startCluster({ startPrivate: false });
  await using inbox = await NoticeInbox.attach(c);
  await inbox.announce();
  using client = await Deno.connect({ ...c.pub.addrs.public, transport: "tcp" });
  const hello = clientHello(DOMAIN, 20 * 1024);
  assert.ok(hello.length > 16_384 + 5, "more than one record");
  await client.write(hello);
  const notice = await inbox.next();
  assert.equal(notice.domain, DOMAIN);
  using dial = await Deno.connect({ ...c.pub.addrs.private, transport: "tcp" });
  await dial.write(tokenBytes(notice.token));
  const replay = new Uint8Array(hello.length);
  assert.ok(await within(readExact(dial, replay), 5000, "the replayed hello"));
  assert.deepEqual(replay, hello);
  assert.equal(c.pub.stats.badHellos, 0);
});

Deno.test("public proxy closes a dial-back with a wrong token", async () => {
  await using c = await startCluster({ startPrivate: false });
  using dial = await Deno.connect({ ...c.pub.addrs.private, transport: "tcp" });
  await dial.write(crypto.getRandomValues(new Uint8Array(32)));
  assert.equal((await readToEnd(dial)).bytes.length, 0);
  await until(() => c.pub.stats.badTokens === 1, "badTokens 1");
});

Deno.test("public proxy closes a dial-back that sends no token within token_timeout_ms", async () => {
  await using c = await startCluster({ startPrivate: false });
  using dial = await Deno.connect({ ...c.pub.addrs.private, transport: "tcp" });
  await dial.write(new Uint8Array(5)); // part of a token, then silence
  const started = performance.now();
  assert.equal((await readToEnd(dial)).bytes.length, 0);
  assert.ok(performance.now() - started >= SHORT.tokenTimeoutMs - 50);
  await until(() => c.pub.stats.badTokens === 1, "badTokens 1");
});

Deno.test("public proxy closes the client when the dial-back never comes, and the token expires", async () => {
  await using c = await startCluster({ startPrivate: false });
  await using inbox = await NoticeInbox.attach(c);
  await inbox.announce();
  using client = await Deno.connect({ ...c.pub.addrs.public, transport: "tcp" });
  const started = performance.now();
  await client.write(clientHello(DOMAIN));
  const notice = await inbox.next();
  const r = await readToEnd(client);
  const elapsed = performance.now() - started;
  assert.deepEqual(r.bytes, tlsAlert(ALERT_INTERNAL_ERROR));
  assert.ok(elapsed >= SHORT.dialBackTimeoutMs - 20, `closed after ${elapsed} ms`);
  await until(() => c.pub.stats.expired === 1, "expired 1");
  // the expired token is refused
  using late = await Deno.connect({ ...c.pub.addrs.private, transport: "tcp" });
  await late.write(tokenBytes(notice.token));
  assert.equal((await readToEnd(late)).bytes.length, 0);
  await until(() => c.pub.stats.badTokens === 1, "badTokens 1");
});

Deno.test("public proxy refuses a client at once when the pending cap is reached", async () => {
  await using c = await startCluster({
    startPrivate: false,
    public: { maxPending: 1, dialBackTimeoutMs: 10_000 },
  });
  await using inbox = await NoticeInbox.attach(c);
  await inbox.announce();
  using first = await Deno.connect({ ...c.pub.addrs.public, transport: "tcp" });
  await first.write(clientHello(DOMAIN));
  await inbox.next(); // the first one is parked
  using second = await Deno.connect({ ...c.pub.addrs.public, transport: "tcp" });
  const started = performance.now();
  await second.write(clientHello(DOMAIN));
  const r = await readToEnd(second, 5000);
  assert.equal(r.bytes.length, 0);
  assert.ok(performance.now() - started < 5000);
  await until(() => c.pub.stats.refusedPending === 1, "refusedPending 1");
  await until(() => c.pub.stats.accepted === 2, "accepted 2");
});

Deno.test("public proxy closes the client fast when the notice fails", async () => {
  await using c = await startCluster({
    startPrivate: false,
    public: { dialBackTimeoutMs: 10_000 },
  });
  // announce, then go away without withdrawing: the EPS has no proxy of private-proxy-1 then
  const inbox = await NoticeInbox.attach(c);
  await inbox.announce();
  await inbox.client.close();
  using client = await Deno.connect({ ...c.pub.addrs.public, transport: "tcp" });
  const started = performance.now();
  await client.write(clientHello(DOMAIN));
  const r = await readToEnd(client, 5000);
  const elapsed = performance.now() - started;
  assert.deepEqual(r.bytes, tlsAlert(ALERT_INTERNAL_ERROR));
  assert.ok(elapsed < 5000, `closed after ${elapsed} ms, not at the dial-back deadline`);
  await until(() => c.pub.stats.failedNotices === 1, "failedNotices 1");
});
