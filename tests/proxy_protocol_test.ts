// The PROXY protocol to the internal server (docs/architecture.md, "The PROXY protocol") read by
// real receivers behind the tunnel: nginx (`listen … ssl proxy_protocol`, v1 and v2) logs the
// address it was given, for a client bound to 127.0.0.2 and one on ::1; HAProxy (`accept-proxy`)
// logs the v2 header's AUTHORITY TLV, the client's SNI. And the whole chain: HAProxy in front of
// the public port (`send-proxy-v2`, docs/architecture.md "PROXY protocol from a load balancer"),
// PROXY v1 to nginx behind the tunnel: nginx, the live table and the close line name the client
// bound to 127.0.0.2, not HAProxy's 127.0.0.1. The receivers (tests/_receivers.ts) are child
// processes with their own configuration in a temporary folder, on free loopback ports, stopped
// by PID.
import assert from "node:assert/strict";
import net from "node:net";
import tls from "node:tls";
import { type Cluster, DOMAIN, POOL_OFF, startCluster, until, within } from "./_cluster.ts";
import type { ProxyProtocolVersion } from "../lib/wire/proxy_protocol.ts";
import type { HostPort } from "../lib/role.ts";
import { freePort, pollLog, startHaproxy, startNginx } from "./_receivers.ts";
import { captureLogs } from "./_logs.ts";

/**
 * One HTTPS request through `connect` from a socket bound to `from`, trusting `root`; returns the
 * client socket's own port (what the receiver must log) and the response. Without `whileOpen` the
 * request says `Connection: close` and the server's close ends it; with it the connection stays
 * open after the whole response (by its Content-Length) until `whileOpen` resolves.
 */
async function requestFrom(
  connect: HostPort,
  from: string,
  root: string,
  whileOpen?: (local: string) => Promise<void>,
): Promise<{ port: number; response: string }> {
  const ca = await Deno.readTextFile(root);
  return await within(
    new Promise((resolve, reject) => {
      // bound to `from` first: the source address the receiver must log
      const tcp = net.connect({ host: connect.hostname, port: connect.port, localAddress: from });
      const s = tls.connect({
        socket: tcp,
        servername: DOMAIN,
        ca,
        ALPNProtocols: ["http/1.1"],
      });
      let port = 0;
      let response = "";
      let checking = false;
      s.on("secureConnect", () => {
        port = tcp.localPort!;
        const connection = whileOpen ? "keep-alive" : "close";
        s.write(`GET / HTTP/1.1\r\nHost: ${DOMAIN}\r\nConnection: ${connection}\r\n\r\n`);
      });
      s.on("data", (b: Uint8Array) => {
        response += new TextDecoder().decode(b);
        const end = response.indexOf("\r\n\r\n");
        const length = /content-length:\s*(\d+)/i.exec(response.slice(0, end));
        if (
          !whileOpen || checking || end < 0 || !length ||
          response.length < end + 4 + Number(length[1])
        ) return;
        checking = true;
        whileOpen(`${tcp.localAddress}:${port}`).then(() => {
          s.destroy();
          resolve({ port, response });
        }, (err) => {
          s.destroy();
          reject(err);
        });
      });
      s.on("end", () => {
        s.destroy();
        if (whileOpen) reject(new Error(`ended inside a response: ${response}`));
        else resolve({ port, response });
      });
      s.on("error", reject);
    }),
    10_000,
    `request from ${from}`,
  );
}

/** A cluster whose announcement points at `internal` with `proxyProtocol`. */
function clusterTo(
  internal: HostPort,
  proxyProtocol: ProxyProtocolVersion,
  publicHost: string,
  pool: boolean,
): Promise<Cluster> {
  return startCluster({
    startPrivate: false,
    public: { publicListen: { hostname: publicHost, port: 0 } },
    private: {
      ...(pool ? {} : POOL_OFF),
      announcements: [{ domain: DOMAIN, internal, expiresInMs: 3_600_000, proxyProtocol }],
    },
  });
}

for (const [version, pool] of [["v1", false], ["v2", true]] as const) {
  Deno.test(`nginx behind the tunnel logs the real IPv4 and IPv6 client from PROXY ${version}`, async () => {
    const port = freePort();
    const internal = { hostname: "127.0.0.1", port };
    await using c4 = await clusterTo(internal, version, "127.0.0.1", pool);
    await using c6 = await clusterTo(internal, version, "::1", pool);
    await using nginx = await startNginx(
      port,
      c4.cert("internal-server"),
      c4.key("internal-server"),
    );
    await c4.startPrivate();
    await c6.startPrivate();
    for (const [c, from] of [[c4, "127.0.0.2"], [c6, "::1"]] as const) {
      const { port: clientPort, response } = await requestFrom(
        c.pub.addrs.public,
        from,
        c4.rootFile,
      );
      assert.match(response, /^HTTP\/1\.1 200 /);
      assert.match(response, /ok\n$/);
      const line = new RegExp(
        `^pp ${from.replaceAll(".", "\\.")} ${clientPort} 127\\.0\\.0\\.1 ${
          DOMAIN.replaceAll(".", "\\.")
        }$`,
        "m",
      );
      await pollLog(nginx, line, `nginx's access log line for ${from}:${clientPort}`);
    }
  });
}

Deno.test("HAProxy behind the tunnel reads the SNI from the PROXY v2 AUTHORITY TLV", async () => {
  const port = freePort();
  await using c = await clusterTo({ hostname: "127.0.0.1", port }, "v2", "127.0.0.1", false);
  await using haproxy = await startHaproxy([{
    port,
    bind: "accept-proxy",
    logFormat: "pp authority=%[fc_pp_authority] src=%ci:%cp",
    server: c.internal.addrs.main,
  }]);
  await c.startPrivate();
  const { port: clientPort, response } = await requestFrom(
    c.pub.addrs.public,
    "127.0.0.2",
    c.rootFile,
  );
  assert.match(response, /^HTTP\/1\.1 200 /);
  await pollLog(
    haproxy,
    new RegExp(
      `^pp authority=${DOMAIN.replaceAll(".", "\\.")} src=127\\.0\\.0\\.2:${clientPort}$`,
      "m",
    ),
    "HAProxy's log line with the AUTHORITY TLV",
  );
});

Deno.test("the real client through HAProxy (send-proxy-v2), the tunnel and PROXY v1 to nginx", async () => {
  const logs = await captureLogs("info");
  const records = logs.records;
  try {
    const port = freePort();
    await using c = await startCluster({
      startPrivate: false,
      public: { acceptProxyProtocol: true },
      private: {
        ...POOL_OFF,
        announcements: [{
          domain: DOMAIN,
          internal: { hostname: "127.0.0.1", port },
          expiresInMs: 3_600_000,
          proxyProtocol: "v1",
        }],
      },
    });
    await using nginx = await startNginx(port, c.cert("internal-server"), c.key("internal-server"));
    // in front of the public port: HAProxy (from 127.0.0.1) says who its client is
    await using haproxy = await startHaproxy([{
      server: c.pub.addrs.public,
      send: "send-proxy-v2",
    }]);
    await c.startPrivate();
    const { port: clientPort, response } = await requestFrom(
      { hostname: "127.0.0.1", port: haproxy.port },
      "127.0.0.2",
      c.rootFile,
      async (local) => {
        // the splice is live: the public proxy's live table names the client, not HAProxy
        await until(
          () => c.pub.live.list().some((l) => l.client === local),
          `the live table names ${local}`,
        );
        assert.ok(c.pub.live.list().every((l) => !l.client.startsWith("127.0.0.1:")));
      },
    );
    assert.match(response, /^HTTP\/1\.1 200 /);
    assert.match(response, /ok\n$/);
    const client = `127.0.0.2:${clientPort}`;
    await until(
      () =>
        records.some((r) =>
          String(r.rawMessage).includes("Closed {client}") && r.properties.client === client
        ),
      `the public proxy's close line names ${client}`,
    );
    // nginx was told the client's address and port, not HAProxy's (nor the private proxy's)
    await pollLog(
      nginx,
      new RegExp(
        `^pp 127\\.0\\.0\\.2 ${clientPort} 127\\.0\\.0\\.1 ${DOMAIN.replaceAll(".", "\\.")}$`,
        "m",
      ),
      `nginx's access log line for ${client}`,
    );
    assert.doesNotMatch(await nginx.log(), /^pp 127\.0\.0\.1 /m);
    assert.equal(c.pub.stats.badProxyHeaders, 0);
  } finally {
    await logs.close();
  }
});
