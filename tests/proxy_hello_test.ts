import assert from "node:assert/strict";
import { clientHello, DOMAIN, readToEnd, SHORT, startCluster, until, within } from "./_cluster.ts";
import { ALERT_DECODE_ERROR, ALERT_UNRECOGNIZED_NAME, tlsAlert } from "../lib/wire/client_hello.ts";

/** Sends `bytes` to the public port and returns what came back before the proxy hung up. */
async function exchange(addr: { hostname: string; port: number }, bytes: Uint8Array) {
  using conn = await Deno.connect({ ...addr, transport: "tcp" });
  await conn.write(bytes);
  return await readToEnd(conn);
}

Deno.test("public proxy answers an unknown SNI with alert unrecognized_name", async () => {
  await using c = await startCluster({ startPrivate: false });
  const r = await exchange(c.pub.addrs.public, clientHello("nobody.example.com"));
  assert.deepEqual(r.bytes, tlsAlert(ALERT_UNRECOGNIZED_NAME));
  await until(() => c.pub.stats.unknownNames === 1, "unknownNames 1");
});

Deno.test("public proxy answers a hello without SNI with alert unrecognized_name", async () => {
  await using c = await startCluster({ startPrivate: false });
  const r = await exchange(c.pub.addrs.public, clientHello(null));
  assert.deepEqual(r.bytes, tlsAlert(ALERT_UNRECOGNIZED_NAME));
  // and a real captured hello without SNI
  const openssl = await Deno.readFile(
    new URL("../lib/wire/testdata/openssl_no_sni.bin", import.meta.url),
  );
  const r2 = await exchange(c.pub.addrs.public, openssl);
  assert.deepEqual(r2.bytes, tlsAlert(ALERT_UNRECOGNIZED_NAME));
  await until(() => c.pub.stats.unknownNames === 2, "unknownNames 2");
});

Deno.test("public proxy shows a real TLS client the unrecognized_name alert", async () => {
  await using c = await startCluster({ startPrivate: false });
  const tcp = await Deno.connect({ ...c.pub.addrs.public, transport: "tcp" });
  const err = await within(
    Deno.startTls(tcp, {
      hostname: "nobody.internal-server.local",
      caCerts: [await Deno.readTextFile(c.rootFile)],
    }).then(async (tls) => {
      try {
        await tls.handshake();
        return null;
      } catch (e) {
        return e;
      } finally {
        tls.close();
      }
    }, (e: unknown) => e),
    5000,
    "TLS handshake",
  );
  assert.ok(err instanceof Error, "the handshake failed");
  assert.match(err.message, /UnrecognisedName|unrecognized.?name/i);
});

Deno.test("public proxy answers garbage with alert decode_error", async () => {
  await using c = await startCluster({ startPrivate: false });
  const r = await exchange(
    c.pub.addrs.public,
    new TextEncoder().encode("GET / HTTP/1.1\r\nHost: test.internal-server.local\r\n\r\n"),
  );
  assert.deepEqual(r.bytes, tlsAlert(ALERT_DECODE_ERROR));
  await until(() => c.pub.stats.badHellos === 1, "badHellos 1");
});

Deno.test("public proxy refuses a hello over max_client_hello_bytes", async () => {
  await using c = await startCluster({
    startPrivate: false,
    public: { maxClientHelloBytes: 16_384 },
  });
  const big = clientHello(DOMAIN, 20_000); // two records, over the 16 384 set here
  const r = await exchange(c.pub.addrs.public, big);
  assert.deepEqual(r.bytes, tlsAlert(ALERT_DECODE_ERROR));
  await until(() => c.pub.stats.badHellos === 1, "badHellos 1");
});

Deno.test("public proxy cuts a hello that trickles in at hello_timeout_ms", async () => {
  await using c = await startCluster({ startPrivate: false });
  const hello = clientHello(DOMAIN);
  using conn = await Deno.connect({ ...c.pub.addrs.public, transport: "tcp" });
  const started = performance.now();
  // one byte per 50 ms would take seconds; the proxy must hang up at its 300 ms deadline
  const ended = readToEnd(conn, 5000);
  let hungUp = false;
  ended.then(() => hungUp = true, () => hungUp = true);
  let sent = 0;
  for (; sent < hello.length && !hungUp; sent++) { // bounded by the hello's length
    try {
      await conn.write(hello.subarray(sent, sent + 1));
    } catch {
      break; // the proxy is gone
    }
    await new Promise((r) => setTimeout(r, 50)); // pacing the trickle, not synchronisation
  }
  const r = await ended;
  const elapsed = performance.now() - started;
  assert.equal(r.bytes.length, 0, "no alert: the client was just too slow");
  assert.ok(sent < hello.length, `the proxy waited for all ${hello.length} bytes`);
  assert.ok(elapsed >= SHORT.helloTimeoutMs - 20, `cut after ${elapsed} ms`);
  await until(() => c.pub.stats.helloTimeouts === 1, "helloTimeouts 1");
});

Deno.test("public proxy closes a connection that sends nothing without an alert", async () => {
  await using c = await startCluster({ startPrivate: false });
  using conn = await Deno.connect({ ...c.pub.addrs.public, transport: "tcp" });
  await conn.closeWrite(); // a port probe: connect, FIN
  const r = await readToEnd(conn);
  assert.equal(r.bytes.length, 0);
  assert.equal(c.pub.stats.badHellos, 0);
});
