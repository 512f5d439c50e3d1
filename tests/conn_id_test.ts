/**
 * One connection id across both proxies (docs/architecture.md, "Connection ids"), in JSON logs:
 * the public and the private proxy run as child processes (`tls-pass run … --log-format json`:
 * `deno run -A cli.ts`, or `$TLS_PASS_BIN`), the EPS servers and the internal server of a
 * {@linkcode startCluster} cluster in this process. Real HTTPS requests go through by notice (a
 * private proxy with its pool off) and then from the pool (a second private proxy with a warm
 * pool). Every stderr line of both proxies must parse as JSON; each connection's close line on
 * the public side and on the private side must carry the same id, and the ids must differ.
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { stringify } from "yaml";
import { httpsRequest } from "../lib/internal/https_request.ts";
import { formatHostPort, type HostPort } from "../lib/role.ts";
import { type Cluster, DOMAIN, startCluster, until } from "./_cluster.ts";
import { parseAddr, spawnCli, type SpawnedCli } from "./_cli.ts";

const ID = /^[0-9a-z]{5}-[0-9a-z]+$/;

interface LogLine {
  level: string;
  logger: string;
  message: string;
  properties: Record<string, unknown>;
}

/** Every stderr line of `cli` as JSON; fails on any line that is not a JSON object. */
function logLines(cli: SpawnedCli, who: string): LogLine[] {
  const lines = cli.stderr().split("\n");
  if (lines.at(-1) === "") lines.pop();
  else lines.pop(); // a line still being written: the next poll has it whole
  return lines.map((l, i) => {
    let r: unknown;
    try {
      r = JSON.parse(l);
    } catch (err) {
      throw new Error(`${who} stderr line ${i + 1} is not JSON: ${JSON.stringify(l)}`, {
        cause: err,
      });
    }
    assert.ok(typeof r === "object" && r !== null, `${who} line ${i + 1}: ${l}`);
    const o = r as Record<string, unknown>;
    assert.equal(typeof o.message, "string", `${who} line ${i + 1} has no message: ${l}`);
    assert.equal(typeof o.properties, "object", `${who} line ${i + 1} has no properties: ${l}`);
    return o as unknown as LogLine;
  });
}

interface Closed {
  conn: string;
  via: string;
  message: string;
}

/** The per-connection close lines ("conn ID: Closed …") of a proxy's log. */
function closeLines(lines: LogLine[]): Closed[] {
  return lines
    .filter((l) => / Closed /.test(l.message) && "up" in l.properties)
    .map((l) => ({
      conn: String(l.properties.conn),
      via: String(l.properties.via),
      message: l.message,
    }));
}

function epsBlock(c: Cluster, operator: string, address: HostPort) {
  return {
    address: formatHostPort(address),
    "certificate_file": c.cert(operator),
    "key_file": c.key(operator),
    "ca_certificate_files": [c.rootFile],
    "call_timeout_ms": 5000,
  };
}

async function writeSettings(c: Cluster, name: string, data: unknown): Promise<string> {
  const dir = join(c.dir, "roles", name);
  await Deno.mkdir(dir, { recursive: true });
  await Deno.writeTextFile(join(dir, "settings.yml"), stringify(data));
  return dir;
}

/** The child's environment: the driver this process runs on, if one is forced. */
function env(): Record<string, string> {
  const sockets = Deno.env.get("TLS_PASS_SOCKETS");
  return sockets === undefined ? {} : { TLS_PASS_SOCKETS: sockets };
}

Deno.test("both proxies log one connection id per connection, by notice and from the pool, in JSON logs", async () => {
  await using c = await startCluster({ startPublic: false, callTimeoutMs: 5000 });
  const publicDir = await writeSettings(c, "public", {
    operator: "public-proxy-1",
    "public_listen": "127.0.0.1:0",
    "private_listen": "127.0.0.1:0",
    eps: epsBlock(c, "public-proxy-1", c.epsPublic.addrs.links),
    "directory_dir": join(c.dir, "directory"),
    store: "memory",
    "grace_ms": 500,
  });
  await using pub = await spawnCli(
    ["run", "public", "--settings", publicDir, "--log-format", "json"],
    { env: env() },
  );
  const publicAddr = parseAddr(pub.ready.addrs.public!);
  const privateSettings = (pool: Record<string, unknown>) => ({
    operator: "private-proxy-1",
    eps: epsBlock(c, "private-proxy-1", c.epsPrivate.addrs.links),
    "announce_to": ["public-proxy-1"],
    endpoints: { "public-proxy-1": pub.ready.addrs.private! },
    announcements: [{ domain: DOMAIN, internal: formatHostPort(c.internal.addrs.main) }],
    "retry_ms": 50,
    "grace_ms": 500,
    pool,
  });
  const caCerts = [await Deno.readTextFile(c.rootFile)];
  const request = async (i: number) => {
    const r = await httpsRequest({
      connect: publicAddr,
      serverName: DOMAIN,
      caCerts,
      method: "POST",
      path: "/jsonrpc",
      body: JSON.stringify({ jsonrpc: "2.0", id: i, method: "ping" }),
      signal: AbortSignal.timeout(10_000),
    });
    assert.equal(r.status, 200);
  };
  /**
   * Waits until both proxies logged the close line of each of `n` connections so far (a line
   * comes after the response); `before`: close lines of an earlier private proxy.
   */
  const closedBoth = async (priv: SpawnedCli, n: number, before = 0) => {
    await until(
      () =>
        closeLines(logLines(pub, "public")).length >= n &&
        before + closeLines(logLines(priv, "private")).length >= n,
      `the close lines of ${n} connections on both proxies`,
      10_000,
    );
  };

  // 1. by notice: the private proxy's pool is off
  const noticeDir = await writeSettings(c, "private-notice", privateSettings({ enabled: false }));
  const privNotice = await spawnCli(
    ["run", "private", "--settings", noticeDir, "--log-format", "json"],
    { env: env() },
  );
  try {
    for (let i = 0; i < 3; i++) await request(i);
    await closedBoth(privNotice, 3);
  } finally {
    const status = await privNotice.stop("SIGTERM");
    assert.equal(status.code, 0, privNotice.stderr());
  }
  const noticeLines = logLines(privNotice, "private (notice)");

  // 2. from the pool: a private proxy that keeps two idle pooled dial-backs
  const poolDir = await writeSettings(
    c,
    "private-pool",
    privateSettings({ enabled: true, "min_idle": 2, "max_idle": 4 }),
  );
  await using privPool = await spawnCli(
    ["run", "private", "--settings", poolDir, "--log-format", "json"],
    { env: env() },
  );
  // the pool warms in the background: requests go by notice until one is served from it
  for (let n = 3; !closeLines(logLines(pub, "public")).some((l) => l.via === "pool");) {
    assert.ok(n < 50, "no client was served from the pool in 50 requests");
    await request(n++);
    await closedBoth(privPool, n, 3);
  }

  // every line of both proxies is JSON (logLines throws otherwise); now match the close lines
  const pubClosed = closeLines(logLines(pub, "public"));
  const privClosed = [...closeLines(noticeLines), ...closeLines(logLines(privPool, "private"))];
  assert.equal(pubClosed.length, privClosed.length);
  const ids = pubClosed.map((l) => l.conn);
  for (const l of [...pubClosed, ...privClosed]) {
    assert.match(l.conn, ID, `a close line without a connection id: ${l.message}`);
    // and visibly in the text (quoted or not, as the formatter renders a string)
    assert.ok(
      [`conn ${l.conn}: `, `conn ${JSON.stringify(l.conn)}: `].some((p) => l.message.startsWith(p)),
      l.message,
    );
  }
  assert.equal(new Set(ids).size, ids.length, `ids repeat: ${ids.join(" ")}`);
  // all named by the public proxy (one prefix), not made up again on the private side
  assert.equal(new Set(ids.map((id) => id.split("-")[0])).size, 1, ids.join(" "));
  assert.deepEqual(new Set(privClosed.map((l) => l.conn)), new Set(ids));
  // each id was carried by the path the public proxy took, and the private side says the same
  const viaOf = new Map(privClosed.map((l) => [l.conn, l.via]));
  for (const l of pubClosed) assert.equal(viaOf.get(l.conn), l.via, l.conn);
  assert.deepEqual(pubClosed.slice(0, 3).map((l) => l.via), ["notice", "notice", "notice"]);
  assert.ok(pubClosed.some((l) => l.via === "pool"));
  assert.ok(closeLines(noticeLines).every((l) => l.via === "notice"));
});

Deno.test("both proxies list a live connection under one id in handle.live, and drop it at its end", async () => {
  await using c = await startCluster();
  const tls = await c.connectTls(); // spliced once the handshake is through
  try {
    await until(() => c.pub.live.size === 1 && c.priv!.live.size === 1, "one live connection");
    const [pub] = c.pub.live.list();
    const [priv] = c.priv!.live.list();
    assert.match(pub!.id, ID);
    assert.equal(priv!.id, pub!.id);
    assert.deepEqual([pub!.domain, pub!.operator, priv!.operator], [
      DOMAIN,
      "private-proxy-1",
      "public-proxy-1",
    ]);
    assert.equal(priv!.via, pub!.via);
    assert.match(pub!.client, /^127\.0\.0\.1:\d+$/);
    assert.deepEqual([...c.pub.live.countsByDomain()], [[DOMAIN, 1]]);
    assert.deepEqual([...c.priv!.live.countsByDomain()], [[DOMAIN, 1]]);
  } finally {
    tls.close();
  }
  await until(() => c.pub.live.size === 0 && c.priv!.live.size === 0, "no live connection");
  assert.equal(c.pub.live.countsByDomain().size, 0);
});
