/**
 * Admission on the public port with real sockets (docs/architecture.md, "Admission"): the deny
 * and allow lists with IPv4 (127.0.0.1 vs 127.0.0.2) and IPv6 (::1) sources, each limit of the
 * `limits:` block hit and refused while traffic under it flows, the announcement's own `allow`,
 * each changed by a reload, with the counts from the proxy's stats.
 */
import assert from "node:assert/strict";
import net from "node:net";
import tls from "node:tls";
import {
  clientHello,
  type Cluster,
  DOMAIN,
  NoticeInbox,
  POOL_OFF,
  startCluster,
  until,
  within,
} from "./_cluster.ts";
import type { PublicSettings } from "../lib/settings/public.ts";
import type { PublicStats } from "../lib/proxy/public.ts";
import { LIMITS_DEFAULTS } from "../lib/settings/limits.ts";

/** A TLS client from `from`: "ok" once its handshake (with the internal server) is done, else the error. */
function handshake(c: Cluster, from: string, keep?: tls.TLSSocket[]): Promise<string> {
  const { hostname, port } = c.pub.addrs.public;
  return within(
    new Promise<string>((resolve) => {
      const tcp = net.connect({ host: hostname, port, localAddress: from });
      tcp.once("error", (err: Error & { code?: string }) => resolve(err.code ?? err.message));
      const s = tls.connect({
        socket: tcp,
        servername: DOMAIN,
        ca: [Deno.readTextFileSync(c.rootFile)],
      });
      s.once("secureConnect", () => {
        resolve("ok");
        if (keep) keep.push(s);
        else s.destroy();
      });
      s.once("error", (err: Error & { code?: string }) => resolve(err.code ?? err.message));
      s.once("close", () => resolve("closed"));
    }),
    10_000,
    `a handshake from ${from}`,
  );
}

/** Waits until the stat `key` reaches `n` (events reach the control plane after the close), then asserts it is `n`. */
async function counted(s: Readonly<PublicStats>, key: keyof PublicStats, n: number): Promise<void> {
  await until(() => s[key] >= n, `${key} at ${n}`);
  assert.equal(s[key], n, key);
}

/** Reloads the public proxy with `change` over its current settings; asserts it applied. */
async function reload(c: Cluster, change: Partial<PublicSettings>): Promise<void> {
  const r = await c.pub.reload(() => Promise.resolve({ ...c.publicSettings(), ...change }));
  assert.equal(r.ok, true, JSON.stringify(r));
}

Deno.test("deny and allow lists, per-address and per-name limits, and an announcement's allow (IPv4)", async () => {
  await using c = await startCluster({
    private: {
      announcements: [{
        domain: DOMAIN,
        internal: { hostname: "127.0.0.1", port: 0 }, // replaced below
        expiresInMs: 3_600_000,
        allow: ["127.0.0.1/32", "127.0.0.2/32"],
      }],
    },
    startPrivate: false,
  });
  c.options.private!.announcements![0]!.internal = c.internal.addrs.main;
  await c.startPrivate();
  const s = c.pub.stats;

  // an announcement's allow: 127.0.0.3 is admitted by the port, not by the name
  assert.equal(await handshake(c, "127.0.0.1"), "ok");
  assert.notEqual(await handshake(c, "127.0.0.3"), "ok");
  await counted(s, "nameDenied", 1);
  await counted(s, "denied", 0);

  // deny: refused at accept, others flow
  await reload(c, { deny: ["127.0.0.2/32"] });
  assert.notEqual(await handshake(c, "127.0.0.2"), "ok");
  assert.equal(await handshake(c, "127.0.0.1"), "ok");
  await counted(s, "denied", 1);

  // allow: only those listed; deny wins over it
  await reload(c, { allow: ["127.0.0.2/32", "127.0.0.1/32"], deny: ["127.0.0.1/32"] });
  assert.equal(await handshake(c, "127.0.0.2"), "ok");
  assert.notEqual(await handshake(c, "127.0.0.1"), "ok");
  assert.notEqual(await handshake(c, "127.0.0.4"), "ok");
  await counted(s, "denied", 3);
  await counted(s, "nameDenied", 1);

  // max_connections_per_client: two held open from .2, the third refused; .1 still flows
  await reload(c, { limits: { ...LIMITS_DEFAULTS, maxConnectionsPerClient: 2 } });
  const held: tls.TLSSocket[] = [];
  try {
    assert.equal(await handshake(c, "127.0.0.2", held), "ok");
    assert.equal(await handshake(c, "127.0.0.2", held), "ok");
    assert.notEqual(await handshake(c, "127.0.0.2"), "ok");
    assert.equal(await handshake(c, "127.0.0.1"), "ok");
    await counted(s, "refusedClientConnections", 1);
    const ended = s.ended;
    held.shift()!.destroy();
    await until(() => s.ended > ended, "the held connection's end");
    assert.equal(await handshake(c, "127.0.0.2"), "ok"); // a place again
  } finally {
    for (const h of held) h.destroy();
  }

  // client_rate: a burst of 3 from .2, then refused; .1 has its own bucket
  await reload(c, { limits: { ...LIMITS_DEFAULTS, clientRate: 0.01, clientBurst: 3 } });
  for (let i = 0; i < 3; i++) assert.equal(await handshake(c, "127.0.0.2"), "ok");
  assert.notEqual(await handshake(c, "127.0.0.2"), "ok");
  assert.equal(await handshake(c, "127.0.0.1"), "ok");
  await counted(s, "refusedClientRate", 1);

  // name_rate: a burst of 2 to the name from anyone, then an internal_error alert
  await reload(c, { limits: { ...LIMITS_DEFAULTS, nameRate: 0.01, nameBurst: 2 } });
  assert.equal(await handshake(c, "127.0.0.1"), "ok");
  assert.equal(await handshake(c, "127.0.0.2"), "ok");
  const refused = await handshake(c, "127.0.0.1");
  assert.match(refused, /INTERNAL_ERROR/i);
  await counted(s, "refusedNameRate", 1);

  // a reload back to no limits: everyone the lists admit flows again
  await reload(c, {});
  assert.equal(await handshake(c, "127.0.0.2"), "ok");
  assert.equal(await handshake(c, "127.0.0.1"), "ok");
});

Deno.test("max_pending_per_name: a second waiting client of a name is refused, another name's waits", async () => {
  await using c = await startCluster({
    startPrivate: false,
    public: {
      dialBackTimeoutMs: 5000,
      limits: { ...LIMITS_DEFAULTS, maxPendingPerName: 1 },
    },
    private: POOL_OFF,
  });
  await using inbox = await NoticeInbox.attach(c);
  await inbox.announce([DOMAIN, "other.internal-server.local"]);
  const open = async (name: string) => {
    const conn = await Deno.connect(c.pub.addrs.public);
    await conn.write(clientHello(name));
    return conn;
  };
  const first = await open(DOMAIN);
  await inbox.next(); // it waits for its dial-back
  const second = await open(DOMAIN);
  const buf = new Uint8Array(16);
  const n = await within(second.read(buf), 5000, "the refusal's alert");
  assert.deepEqual([...buf.subarray(0, n ?? 0)], [21, 3, 3, 0, 2, 2, 80]); // internal_error
  const third = await open("other.internal-server.local");
  await inbox.next(); // another name still waits
  await counted(c.pub.stats, "refusedNamePending", 1);
  for (const conn of [first, second, third]) conn.close();
});

Deno.test("deny and allow with an IPv6 source (::1) on a public port at [::1]", async () => {
  await using c = await startCluster({
    public: { publicListen: { hostname: "::1", port: 0 }, allow: ["::1/128"] },
    startPrivate: false,
  });
  await c.startPrivate();
  const s = c.pub.stats;
  assert.equal(await handshake(c, "::1"), "ok");
  await reload(c, { allow: ["127.0.0.0/8"] });
  assert.notEqual(await handshake(c, "::1"), "ok");
  await reload(c, { allow: [], deny: ["::1/128"] });
  assert.notEqual(await handshake(c, "::1"), "ok");
  await counted(s, "denied", 2);
  await reload(c, { allow: [], deny: ["127.0.0.1/32"] });
  assert.equal(await handshake(c, "::1"), "ok");
});
