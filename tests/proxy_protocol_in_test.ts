/**
 * `accept_proxy_protocol` with a real HAProxy in front of the public port (docs/architecture.md,
 * "PROXY protocol from a load balancer"): HAProxy (`mode tcp`, `send-proxy-v2` and `send-proxy`)
 * runs as a child process with its config in a temp folder on free loopback ports; the client
 * binds 127.0.0.2 so that its address differs from HAProxy's 127.0.0.1, and the public proxy's live
 * table and close line must name it. Without a header a connection is refused; a LOCAL header is
 * closed and counted.
 * @module
 */
import assert from "node:assert/strict";
import net from "node:net";
import tls from "node:tls";
import { clientHello, type Cluster, DOMAIN, startCluster, until, within } from "./_cluster.ts";
import { PP2_SIGNATURE } from "../lib/wire/proxy_protocol.ts";
import { startHaproxy } from "./_receivers.ts";
import { captureLogs } from "./_logs.ts";

/** A TLS client bound to 127.0.0.2: one keep-alive GET, then `check()` while it is open. */
async function getFrom127002(
  c: Cluster,
  port: number,
  check: (local: string) => Promise<void>,
): Promise<{ local: string; body: string }> {
  const ca = await Deno.readTextFile(c.rootFile);
  // TCP bound to 127.0.0.2 first, TLS over it
  const tcp = net.connect({ host: "127.0.0.1", port, localAddress: "127.0.0.2" });
  const socket = tls.connect({ socket: tcp, servername: DOMAIN, ca });
  try {
    await within(
      new Promise<void>((ok, fail) => {
        socket.once("secureConnect", ok);
        socket.once("error", fail);
      }),
      10_000,
      "TLS handshake through HAProxy and the tunnel",
    );
    const local = `${socket.localAddress}:${socket.localPort}`;
    let text = "";
    const response = new Promise<string>((ok, fail) => {
      socket.on("data", (d: Uint8Array) => {
        text += new TextDecoder().decode(d);
        const end = text.indexOf("\r\n\r\n");
        const m = /content-length:\s*(\d+)/i.exec(text.slice(0, end));
        if (end >= 0 && m && text.length >= end + 4 + Number(m[1])) ok(text.slice(end + 4));
      });
      socket.once("error", fail);
      socket.once("end", () => fail(new Error(`ended inside a response: ${text}`)));
    });
    socket.write(`GET /jsonrpc HTTP/1.1\r\nHost: ${DOMAIN}\r\n\r\n`);
    const body = await within(response, 10_000, "the response");
    await check(local);
    return { local, body };
  } finally {
    socket.destroy();
    tcp.destroy();
  }
}

/** Raw bytes to the public port; resolves when the proxy closes the connection. */
async function sendAndWaitClose(port: number, bytes: Uint8Array): Promise<void> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await conn.write(bytes);
    const buf = new Uint8Array(1024);
    for (;;) {
      let n: number | null;
      try {
        n = await within(conn.read(buf), 5000, "the proxy closing the connection");
      } catch (err) {
        if (err instanceof Deno.errors.ConnectionReset) return;
        throw err;
      }
      if (n === null) return;
      assert.fail(`the proxy answered ${n} bytes; it must close without a word`);
    }
  } finally {
    conn.close();
  }
}

Deno.test("accept_proxy_protocol behind a real HAProxy (send-proxy-v2, send-proxy): the client's real address", async () => {
  const logs = await captureLogs("info");
  const records = logs.records;
  try {
    await using c = await startCluster({ public: { acceptProxyProtocol: true } });
    const sends = ["send-proxy-v2", "send-proxy"];
    await using ha = await startHaproxy(
      sends.map((send) => ({ server: c.pub.addrs.public, send })),
    );
    for (const [i, send] of sends.entries()) {
      const { local, body } = await getFrom127002(c, ha.ports[i]!, async (local) => {
        // the splice is live: the live table names the client, not HAProxy
        await until(
          () => c.pub.live.list().some((l) => l.client === local),
          `${send}: the live table names ${local}`,
        );
        assert.ok(c.pub.live.list().every((l) => !l.client.startsWith("127.0.0.1:")));
      });
      assert.ok(local.startsWith("127.0.0.2:"), local);
      assert.deepEqual(JSON.parse(body), { message: "success" }, send);
      await until(
        () =>
          records.some((r) =>
            String(r.rawMessage).includes("Closed {client}") && r.properties.client === local
          ),
        `${send}: the close line names ${local}`,
      );
    }
    assert.equal(c.pub.stats.badProxyHeaders, 0);

    // straight to the public port without a header: refused, counted, warned about
    const before = c.pub.stats.accepted;
    await sendAndWaitClose(c.pub.addrs.public.port, clientHello(DOMAIN));
    await until(() => c.pub.stats.badProxyHeaders === 1, "the header-less client counted");
    assert.equal(c.pub.stats.accepted, before + 1);
    await until(
      () =>
        records.some((r) =>
          String(r.rawMessage).includes("without a valid PROXY protocol header") &&
          String(r.properties.why).includes("first byte 0x16")
        ),
      "the refusal summarised in a warning",
    );

    // a raw LOCAL header (a health check): closed and counted, no warning; a v1 UNKNOWN is a
    // client (served as the balancer), here one that says nothing more
    const warnings = records.filter((r) => r.level === "warning").length;
    await sendAndWaitClose(
      c.pub.addrs.public.port,
      Uint8Array.of(...PP2_SIGNATURE, 0x20, 0x00, 0, 0),
    );
    await until(() => c.pub.stats.healthChecks === 1, "the health check counted");
    const acceptedBefore = c.pub.stats.accepted;
    await sendAndWaitClose(
      c.pub.addrs.public.port,
      new TextEncoder().encode("PROXY UNKNOWN\r\n"),
    );
    await until(
      () => c.pub.stats.accepted === acceptedBefore + 1,
      "the UNKNOWN client taken as a client",
    );
    assert.equal(c.pub.stats.healthChecks, 1, "a v1 UNKNOWN is no health check");
    assert.equal(c.pub.stats.badProxyHeaders, 1);
    assert.equal(records.filter((r) => r.level === "warning").length, warnings);
  } finally {
    await logs.close();
  }
});
