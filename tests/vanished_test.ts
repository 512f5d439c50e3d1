/**
 * Vanished peers: a client that finishes its handshake and then disappears without FIN or RST is
 * reaped on both proxies, by `idle_timeout_ms` (both drivers) or by TCP keepalive (`tcp_keepalive_ms`;
 * the native driver sets the probe timings, the portable one cannot), and the close says which.
 * The peer really vanishes: an iptables DROP of exactly its 4-tuple, both directions, removed in
 * `finally` (never a bare port: that would hit unrelated loopback connections).
 * @module
 */
import assert from "node:assert/strict";
import { startCluster, until, within } from "./_cluster.ts";
import { keepAliveBoundMs } from "../lib/dataplane/keepalive.ts";

const NATIVE = Deno.env.get("TLS_PASS_SOCKETS") !== "deno";

/** Root and iptables: the tests need both (.ci/run installs iptables; CI runs as root). */
function canDrop(): boolean {
  if (Deno.uid() !== 0) return false;
  try {
    return new Deno.Command("iptables", { args: ["--version"], stdout: "null", stderr: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
}
const ignore = !canDrop();

async function iptables(args: string[]): Promise<void> {
  const r = await new Deno.Command("iptables", { args, stdout: "null", stderr: "piped" }).output();
  if (!r.success) {
    throw new Error(`iptables ${args.join(" ")}: ${new TextDecoder().decode(r.stderr).trim()}`);
  }
}

/** DROP rules for one TCP 4-tuple on loopback, both directions; `remove()` takes them out. */
async function dropTuple(a: Deno.NetAddr, b: Deno.NetAddr): Promise<{ remove(): Promise<void> }> {
  const rule = (from: Deno.NetAddr, to: Deno.NetAddr) => [
    "INPUT",
    "-p",
    "tcp",
    "-s",
    from.hostname,
    "--sport",
    String(from.port),
    "-d",
    to.hostname,
    "--dport",
    String(to.port),
    "-j",
    "DROP",
  ];
  const added: string[][] = [];
  const remove = async () => {
    for (const r of added.splice(0)) await iptables(["-D", ...r]);
  };
  try {
    for (const r of [rule(a, b), rule(b, a)]) {
      await iptables(["-I", ...r]);
      added.push(r);
    }
  } catch (err) {
    await remove();
    throw err;
  }
  return { remove };
}

/** A TLS client through the proxies that vanishes once the splice carries a full HTTP exchange. */
async function vanishingClient(
  c: Awaited<ReturnType<typeof startCluster>>,
): Promise<{ vanishedAt: number; tls: Deno.TlsConn; drop: { remove(): Promise<void> } }> {
  const tcp = await Deno.connect({ ...c.pub.addrs.public, transport: "tcp" });
  const tls = await within(
    Deno.startTls(tcp, {
      hostname: "test.internal-server.local",
      caCerts: [await Deno.readTextFile(c.rootFile)],
    }),
    10_000,
    "TLS handshake through the proxies",
  );
  const body = '{"jsonrpc":"2.0","id":1,"method":"ping"}';
  await tls.write(new TextEncoder().encode(
    `POST /jsonrpc HTTP/1.1\r\nHost: test.internal-server.local\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`,
  ));
  const buf = new Uint8Array(4096);
  const n = await within(tls.read(buf), 10_000, "response through the proxies");
  assert.match(new TextDecoder().decode(buf.subarray(0, n ?? 0)), /^HTTP\/1\.1 200/);
  await until(() => c.pub.stats.spliced === 1 && c.priv!.stats.spliced === 1, "both splices");
  const drop = await dropTuple(tcp.localAddr as Deno.NetAddr, tcp.remoteAddr as Deno.NetAddr);
  return { vanishedAt: performance.now(), tls, drop };
}

Deno.test({
  name: "a vanished client is reaped on both proxies by idle_timeout_ms, and the close says so",
  ignore,
  async fn() {
    const idleTimeoutMs = 1500;
    await using c = await startCluster({
      public: { idleTimeoutMs, tcpKeepAliveMs: 0 },
      private: { idleTimeoutMs: 60_000, tcpKeepAliveMs: 0 },
    });
    const v = await vanishingClient(c);
    try {
      await until(() => c.pub.stats.idleTimeouts === 1, "the public proxy's idle timeout", 15_000);
      const heldMs = performance.now() - v.vanishedAt;
      // the public proxy closed its dial-back: the private proxy's splice ends with it
      await until(() => c.priv!.stats.ended === 1, "the private proxy's splice ended", 10_000);
      // counted as an idle timeout: that is the reason; the time is since the last byte, before the drop
      assert.ok(
        heldMs <= idleTimeoutMs + 3000,
        `held ${heldMs} ms, idle_timeout_ms is ${idleTimeoutMs}`,
      );
      assert.equal(c.pub.stats.vanishedPeers, 0);
      // deno-lint-ignore no-console
      console.log(
        `vanished client held ${
          Math.round(heldMs)
        } ms (idle_timeout_ms ${idleTimeoutMs}, ${c.pub.driver})`,
      );
    } finally {
      await v.drop.remove();
      v.tls.close();
    }
  },
});

Deno.test({
  name: "a vanished client is reaped by TCP keepalive within tcp_keepalive_ms and its probes",
  // the portable driver can only turn SO_KEEPALIVE on (Deno has no TCP_KEEPIDLE): the system's
  // timings apply there (two hours by default), so idle_timeout_ms is its bound (the test above)
  ignore: ignore || !NATIVE,
  async fn() {
    const tcpKeepAliveMs = 1000;
    const bound = keepAliveBoundMs(tcpKeepAliveMs);
    await using c = await startCluster({
      public: { idleTimeoutMs: 600_000, tcpKeepAliveMs },
      private: { idleTimeoutMs: 600_000, tcpKeepAliveMs },
    });
    const v = await vanishingClient(c);
    try {
      await until(
        () => c.pub.stats.vanishedPeers === 1,
        "the public proxy's keepalive",
        bound + 10_000,
      );
      const heldMs = performance.now() - v.vanishedAt;
      await until(() => c.priv!.stats.ended === 1, "the private proxy's splice ended", 10_000);
      assert.equal(c.pub.stats.idleTimeouts, 0);
      assert.ok(heldMs <= bound + 2000, `held ${heldMs} ms, the keepalive bound is ${bound} ms`);
      // deno-lint-ignore no-console
      console.log(
        `vanished client held ${
          Math.round(heldMs)
        } ms (tcp_keepalive_ms ${tcpKeepAliveMs}, bound ${bound} ms)`,
      );
    } finally {
      await v.drop.remove();
      v.tls.close();
    }
  },
});
