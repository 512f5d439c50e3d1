/**
 * The private proxy as an operator runs it (docs/architecture.md, "Reload" and "Drain"): a child
 * process (`tls-pass run private`, or `$TLS_PASS_BIN`) with its admin endpoint, behind an
 * in-process public proxy. `kill -HUP` adds an announcement and removes it again while a
 * keep-alive connection stays open and keeps moving bytes; an invalid change is refused (file and
 * key named in the log and in /status) and the old settings go on; `tls-pass drain` with a live
 * splice stops the routing, lets the splice finish, and `tls-pass undrain` brings the name back.
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { stringify } from "yaml";
import { formatHostPort } from "../lib/role.ts";
import { DOMAIN, startCluster, until } from "./_cluster.ts";
import { parseAddr, runCli, spawnCli } from "./_cli.ts";

const TWO = "two.internal-server.local";

/** One HTTP/1.1 keep-alive request on an open TLS connection; returns the status line. */
async function roundTrip(conn: Deno.TlsConn, host: string, n: number): Promise<string> {
  const body = JSON.stringify({ n });
  await conn.write(
    new TextEncoder().encode(
      `POST /jsonrpc HTTP/1.1\r\nhost: ${host}\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\n\r\n${body}`,
    ),
  );
  const buf = new Uint8Array(65_536);
  let text = "";
  const deadline = AbortSignal.timeout(10_000);
  while (!/\r\n\r\n/.test(text) || !responseComplete(text)) {
    if (deadline.aborted) throw new Error(`no whole response in time: ${JSON.stringify(text)}`);
    const got = await conn.read(buf);
    if (got === null) throw new Error(`connection closed mid-response: ${JSON.stringify(text)}`);
    text += new TextDecoder().decode(buf.subarray(0, got));
  }
  return text.split("\r\n")[0]!;
}

/** Polls an admin answer until `cond` holds, bounded by `ms`. */
async function untilAsync(cond: () => Promise<boolean>, what: string, ms = 10_000) {
  const deadline = Date.now() + ms;
  while (!await cond()) {
    if (Date.now() > deadline) throw new Error(`Timed out after ${ms} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 20)); // polling /status, bounded above
  }
}

function responseComplete(text: string): boolean {
  const [head, rest = ""] = text.split("\r\n\r\n", 2) as [string, string?];
  const len = /content-length: *(\d+)/i.exec(head);
  return len !== null && new TextEncoder().encode(rest).length >= Number(len[1]);
}

Deno.test("private proxy child: SIGHUP adds and removes a name under a live connection, refuses a bad file; tls-pass drain and undrain", async () => {
  await using c = await startCluster({ startPrivate: false, callTimeoutMs: 5000 });
  const dir = join(c.dir, "roles", "private-child");
  await Deno.mkdir(dir, { recursive: true });
  const file = join(dir, "settings.yml");
  const settings = (names: string[], extra: Record<string, unknown> = {}) =>
    stringify({
      operator: "private-proxy-1",
      eps: {
        address: formatHostPort(c.epsPrivate.addrs.links),
        "certificate_file": c.cert("private-proxy-1"),
        "key_file": c.key("private-proxy-1"),
        "ca_certificate_files": [c.rootFile],
      },
      "announce_to": ["public-proxy-1"],
      endpoints: { "public-proxy-1": formatHostPort(c.pub.addrs.private) },
      announcements: names.map((domain) => ({
        domain,
        internal: formatHostPort(c.internal.addrs.main),
      })),
      "retry_ms": 50,
      "grace_ms": 10_000,
      "admin_listen": "127.0.0.1:0",
      ...extra,
    });
  await Deno.writeTextFile(file, settings([DOMAIN]));
  const sockets = Deno.env.get("TLS_PASS_SOCKETS");
  await using priv = await spawnCli(["run", "private", "--settings", dir], {
    env: sockets === undefined ? {} : { TLS_PASS_SOCKETS: sockets },
  });
  const admin = priv.ready.addrs.admin;
  assert.ok(admin !== undefined, "the ready line names the admin endpoint");
  parseAddr(admin);
  const status = async () => {
    const r = await fetch(`http://${admin}/status`, { signal: AbortSignal.timeout(5000) });
    return await r.json();
  };
  const routed = (name: string) => c.pub.announcements.match(name) !== undefined;
  const hup = () => Deno.kill(priv.ready.pid, "SIGHUP");
  const reloads = async () => (await status()).lastReload;

  const held = await c.connectTls(DOMAIN);
  try {
    assert.equal(await roundTrip(held, DOMAIN, 1), "HTTP/1.1 200 OK");

    // add a name
    await Deno.writeTextFile(file, settings([DOMAIN, TWO]));
    hup();
    await until(() => routed(TWO), `${TWO} announced after SIGHUP`, 10_000);
    const added = await reloads();
    assert.equal(added.ok, true);
    assert.ok(added.applied.some((l: string) => l.includes(TWO)), JSON.stringify(added));
    assert.equal((await c.request("/jsonrpc", "{}", TWO)).status, 200);
    assert.equal(await roundTrip(held, DOMAIN, 2), "HTTP/1.1 200 OK");

    // remove it again
    await Deno.writeTextFile(file, settings([DOMAIN]));
    hup();
    await until(() => !routed(TWO), `${TWO} withdrawn after SIGHUP`, 10_000);
    assert.equal(await roundTrip(held, DOMAIN, 3), "HTTP/1.1 200 OK");

    // a bad value: refused, named, the old settings go on
    const before = (await reloads()).at;
    await Deno.writeTextFile(file, settings([DOMAIN], { "grace_ms": "soon" }));
    hup();
    let refused: { ok: boolean; at: string; problems: string[] } | undefined;
    await untilAsync(
      async () => (refused = await reloads()).at !== before,
      "the refused reload in /status",
    );
    assert.equal(refused!.ok, false);
    assert.ok(
      refused!.problems.some((p) => p.includes(file) && p.includes("grace_ms")),
      JSON.stringify(refused),
    );
    await until(() => priv.stderr().includes("grace_ms"), "the refusal in the log", 5000);
    assert.ok(priv.stderr().includes(file), "the log names the file");
    assert.equal(await roundTrip(held, DOMAIN, 4), "HTTP/1.1 200 OK");
    assert.equal((await c.request("/jsonrpc", "{}")).status, 200);

    // drain with the held splice live: routing stops at once, the splice goes on
    const drain = await runCli(["drain", DOMAIN, "--admin", admin, "--no-wait"]);
    assert.equal(drain.code, 0, drain.stderr);
    await until(() => !routed(DOMAIN), "the drained name no longer routed", 10_000);
    const draining = (await status()).announcements.find((a: { domain: string }) =>
      a.domain === DOMAIN
    );
    assert.equal(draining.state, "draining");
    assert.equal(draining.live, 1);
    await assert.rejects(c.request("/jsonrpc", "{}"), "a new client of the drained name");
    assert.equal(await roundTrip(held, DOMAIN, 5), "HTTP/1.1 200 OK");
  } finally {
    held.close();
  }
  await untilAsync(
    async () =>
      (await status()).announcements.find((a: { domain: string }) => a.domain === DOMAIN)
        .state === "drained",
    "drained once its splice ended",
  );
  const undrain = await runCli(["undrain", DOMAIN, "--admin", admin]);
  assert.equal(undrain.code, 0, undrain.stderr);
  await until(() => routed(DOMAIN), "the name routed again after undrain", 10_000);
  assert.equal((await c.request("/jsonrpc", "{}")).status, 200);
  const text = await runCli(["status", "--admin", admin]);
  assert.equal(text.code, 0, text.stderr);
  assert.match(text.stdout, /Last reload\n.*\n.*\n {2}\S+ +refused +.*grace_ms/);
});
