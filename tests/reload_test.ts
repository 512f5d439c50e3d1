/**
 * Reload on SIGHUP (docs/architecture.md, "Reload"): the internal server and the EPS server as
 * CLI child processes (`kill -HUP`), the public proxy in a cluster through its handle's reload().
 * A valid change is applied to new connections while an old one stays up and still moves bytes;
 * an invalid file or a restart-only key is refused by name and the old settings keep serving.
 */
import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import tls from "node:tls";
import { join } from "node:path";
import { parse as parseYaml, stringify } from "yaml";
import { createPki, writePki } from "../lib/certs/pki.ts";
import { connectEps } from "../lib/eps/client.ts";
import { dialLink, loadLinkTls } from "../lib/eps/link.ts";
import { callOnStream } from "../lib/eps/rpc.ts";
import { Session } from "../lib/eps/session.ts";
import { RpcCode, RpcError } from "../lib/errors.ts";
import { parseAddr, spawnCli, type SpawnedCli } from "./_cli.ts";
import { NoticeInbox, startCluster } from "./_cluster.ts";
import { withTimeout } from "./_eps_cluster.ts";

const RELOAD_END = /Reloaded: |Reloaded: nothing changed|Reload refused: keeping the old settings/g;

/**
 * Sends SIGHUP and waits (bounded) for the reload's outcome line; returns the log lines written
 * for this reload.
 */
async function hup(cli: SpawnedCli, ms = 10_000): Promise<string> {
  const before = cli.stderr();
  const count = (s: string) => s.match(RELOAD_END)?.length ?? 0;
  const n = count(before);
  Deno.kill(cli.child.pid, "SIGHUP");
  const deadline = Date.now() + ms;
  while (count(cli.stderr()) <= n) {
    if (Date.now() > deadline) {
      throw new Error(`No reload outcome within ${ms} ms; stderr:\n${cli.stderr()}`);
    }
    await new Promise((r) => setTimeout(r, 20)); // polling the child's log, bounded above
  }
  return cli.stderr().slice(before.length);
}

/** The process is still running (a SIGHUP never ends it). */
async function stillRunning(cli: SpawnedCli): Promise<void> {
  const exited = await Promise.race([
    cli.child.status.then(() => true),
    Promise.resolve(false),
  ]);
  assert.equal(exited, false, `the role exited; stderr:\n${cli.stderr()}`);
}

/** One kept-alive HTTPS connection to the internal server, to send GETs on. */
class HttpsConn {
  #text = "";
  #waiters: (() => void)[] = [];
  private constructor(readonly socket: tls.TLSSocket) {
    socket.setEncoding("utf8");
    socket.on("data", (d: string) => {
      this.#text += d;
      for (const w of this.#waiters.splice(0)) w();
    });
  }

  static open(port: number, ca: string[]): Promise<HttpsConn> {
    return withTimeout(
      new Promise((resolve, reject) => {
        const s = tls.connect({
          host: "127.0.0.1",
          port,
          ca,
          servername: "internal-server",
          ALPNProtocols: ["http/1.1"],
        }, () => resolve(new HttpsConn(s)));
        s.once("error", reject);
      }),
      5000,
      "TLS connection to the internal server",
    );
  }

  /** SHA-256 of the certificate this connection got, lowercase hex without colons. */
  get fingerprint(): string {
    const raw = this.socket.getPeerCertificate().raw;
    return new X509Certificate(raw).fingerprint256.replaceAll(":", "").toLowerCase();
  }

  /** A GET on this connection; resolves with the body. */
  async get(): Promise<string> {
    this.#text = "";
    this.socket.write("GET / HTTP/1.1\r\nHost: internal-server\r\n\r\n");
    const body = '{"message":"success"}';
    await withTimeout(
      (async () => {
        while (!this.#text.includes(body)) await new Promise<void>((r) => this.#waiters.push(r));
      })(),
      5000,
      "the GET's answer",
    );
    return body;
  }

  close(): void {
    this.socket.destroy();
  }
}

Deno.test("internal-server reloads its certificate on SIGHUP; bad files and listen are refused", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tls-pass-reload-internal-" });
  try {
    const [a, b] = [await createPki(["internal-server"]), await createPki(["internal-server"])];
    await writePki(a, join(dir, "a"));
    await writePki(b, join(dir, "b"));
    await Deno.writeTextFile(join(dir, "garbage.key"), "not a key\n");
    const file = join(dir, "settings.yml");
    const write = (more: Record<string, unknown>) =>
      Deno.writeTextFile(
        file,
        stringify({
          listen: "127.0.0.1:0",
          certificate_file: "a/internal-server.crt",
          key_file: "a/internal-server.key",
          ...more,
        }),
      );
    await write({});
    await using role = await spawnCli(["run", "internal-server", "--settings", file]);
    const { port } = parseAddr(role.ready.addrs.main!);
    const ca = [a.rootPem, b.rootPem];
    const fpA = a.leaves["internal-server"]!.fingerprint;
    const fpB = b.leaves["internal-server"]!.fingerprint;

    const old = await HttpsConn.open(port, ca);
    assert.equal(old.fingerprint, fpA);
    await old.get();

    // a new certificate: new connections get it, the old connection stays and still answers
    await write({ certificate_file: "b/internal-server.crt", key_file: "b/internal-server.key" });
    const ok = await hup(role);
    assert.match(
      ok,
      /Reloaded: .*certificate_file: .*a\/internal-server\.crt.* → .*b\/internal-server\.crt/,
    );
    const fresh = await HttpsConn.open(port, ca);
    assert.equal(fresh.fingerprint, fpB);
    await fresh.get();
    await old.get();
    assert.equal(old.fingerprint, fpA);
    fresh.close();

    // a missing file: the loader's own message, naming the settings file and the key
    await write({ certificate_file: "b/missing.crt", key_file: "b/internal-server.key" });
    const missing = await hup(role);
    assert.ok(
      missing.includes(`${file}: certificate_file: cannot read "${join(dir, "b", "missing.crt")}"`),
      missing,
    );
    assert.match(missing, /keeping the old settings/);

    // a file that is not a key: refused naming the key and the file
    await write({ certificate_file: "b/internal-server.crt", key_file: "garbage.key" });
    const garbage = await hup(role);
    assert.match(
      garbage,
      /Reload refused: key_file: ".*garbage\.key" is not a PEM private key/,
    );
    assert.match(garbage, /keeping the old settings/);

    // a restart-only key
    await write({
      listen: "127.0.0.1:1",
      certificate_file: "b/internal-server.crt",
      key_file: "b/internal-server.key",
    });
    const listen = await hup(role);
    assert.match(
      listen,
      /Reload refused: listen: cannot change without a restart \(running 127\.0\.0\.1:0/,
    );

    // still serving with the last good settings, on both the old and a new connection
    await stillRunning(role);
    const after = await HttpsConn.open(port, ca);
    assert.equal(after.fingerprint, fpB);
    await after.get();
    await old.get();
    after.close();
    old.close();
    const status = await role.stop("SIGTERM");
    assert.equal(status.code, 0, role.stderr());
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("EPS reloads certificate and directory on SIGHUP; live links stay up", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tls-pass-reload-eps-" });
  try {
    const a = await createPki(["eps-a", "eps-c"]);
    const b = await createPki(["eps-a"]);
    await writePki(a, join(dir, "a"));
    await writePki(b, join(dir, "b"));
    await Deno.mkdir(join(dir, "directory"));
    await Deno.writeTextFile(join(dir, "garbage.key"), "not a key\n");
    const roots = [join(dir, "a", "root.crt"), join(dir, "b", "root.crt")];
    const writeDirectory = (echoFrom: string[]) =>
      Deno.writeTextFile(
        join(dir, "directory", "operators.yml"),
        stringify({
          ca_certificate_files: roots,
          operators: {
            "eps-a": { permissions: echoFrom.length ? [{ method: "echo", from: echoFrom }] : [] },
            "eps-c": {},
          },
        }),
      );
    const file = join(dir, "settings.yml");
    const write = (more: Record<string, unknown>) =>
      Deno.writeTextFile(
        file,
        stringify({
          operator: "eps-a",
          listen: "127.0.0.1:0",
          certificate_file: "a/eps-a.crt",
          key_file: "a/eps-a.key",
          directory_dir: "directory",
          keepalive_interval_ms: 60_000,
          ...more,
        }),
      );
    await writeDirectory([]);
    await write({});
    await using role = await spawnCli(["run", "eps", "--settings", file]);
    const addr = parseAddr(role.ready.addrs.links!);

    // the own proxy: its link must survive every reload
    let attaches = 0;
    await using proxy = connectEps({
      address: addr,
      certificateFile: join(dir, "a", "eps-a.crt"),
      keyFile: join(dir, "a", "eps-a.key"),
      caCertificateFiles: roots,
      callTimeoutMs: 5000,
      maxMessageBytes: 1 << 20,
    });
    proxy.onAttach(() => attaches++);
    proxy.serve("echo", (_params, ctx) => ({ caller: ctx.caller }));
    await withTimeout(proxy.ready, 10_000, "the proxy to attach");
    assert.deepEqual(await proxy.call("eps-a.echo", {}), { caller: "eps-a" });

    // a peer link from eps-c: the directory does not let it call eps-a.echo yet
    const tlsC = await loadLinkTls(join(dir, "a", "eps-c.crt"), join(dir, "a", "eps-c.key"), roots);
    const call = async (session: Session) => {
      const signal = AbortSignal.timeout(5000);
      return await callOnStream(
        await session.openWhenFree(signal),
        { jsonrpc: "2.0", id: 1, method: "eps-a.echo", params: {} },
        { maxMessageBytes: 1 << 20, timeoutMs: 5000, signal },
      );
    };
    const connC = await dialLink(addr, "eps-a", tlsC);
    assert.equal(connC.peerIdentity!.fingerprint, a.leaves["eps-a"]!.fingerprint);
    await using sessionC = new Session(connC, { client: true, keepaliveIntervalMs: 0 });
    await assert.rejects(call(sessionC), (err: unknown) => {
      assert.ok(err instanceof RpcError);
      assert.equal(err.code, RpcCode.NotPermitted, err.message);
      return true;
    });

    // new certificate and a permission: the live link takes the new call, new links the new cert
    await writeDirectory(["eps-c"]);
    await write({ certificate_file: "b/eps-a.crt", key_file: "b/eps-a.key" });
    const ok = await hup(role);
    assert.match(ok, /Reloaded: .*certificate_file: .*→ .*b\/eps-a\.crt.*directory: re-read/);
    assert.deepEqual(await call(sessionC), { caller: "eps-c" });
    assert.deepEqual(await proxy.call("eps-a.echo", {}), { caller: "eps-a" });
    const connC2 = await dialLink(addr, "eps-a", tlsC);
    assert.equal(connC2.peerIdentity!.fingerprint, b.leaves["eps-a"]!.fingerprint);
    connC2.close();
    await connC2.closed;

    // bad files, then a restart-only key: refused by name, nothing applied
    await write({ certificate_file: "b/eps-a.crt", key_file: "garbage.key" });
    const bad = await hup(role);
    assert.match(bad, /Reload refused: key_file: ".*garbage\.key" is not a PEM private key/);
    await write({ certificate_file: "b/nowhere.crt", key_file: "b/eps-a.key" });
    const missing = await hup(role);
    assert.ok(missing.includes(`${file}: certificate_file: cannot read`), missing);
    await write({
      listen: "127.0.0.1:1",
      certificate_file: "b/eps-a.crt",
      key_file: "b/eps-a.key",
    });
    const listen = await hup(role);
    assert.match(listen, /Reload refused: listen: cannot change without a restart/);
    assert.match(listen, /keeping the old settings/);

    await stillRunning(role);
    const connC3 = await dialLink(addr, "eps-a", tlsC);
    assert.equal(connC3.peerIdentity!.fingerprint, b.leaves["eps-a"]!.fingerprint);
    connC3.close();
    await connC3.closed;
    assert.deepEqual(await proxy.call("eps-a.echo", {}), { caller: "eps-a" });
    assert.equal(attaches, 1, "the proxy's link never dropped");
    await proxy.close();
    const status = await role.stop("SIGTERM");
    assert.equal(status.code, 0, role.stderr());
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("public proxy reload: a directory change allows a new domain; restart-only keys refused", async () => {
  await using c = await startCluster({ secondPrivate: true });
  await using two = await NoticeInbox.attach(c, "private-proxy-2");
  const refused = (err: unknown) =>
    err instanceof RpcError && err.code === RpcCode.DomainNotAllowed;
  await assert.rejects(two.announce(["three.example.com"]), refused);

  const file = join(c.dir, "directory", "operators.yml");
  const text = await Deno.readTextFile(file);
  const d = parseYaml(text) as {
    operators: Record<string, { proxy?: { allowed_domains?: string[] } }>;
  };
  d.operators["private-proxy-2"]!.proxy!.allowed_domains!.push("three.example.com");
  await Deno.writeTextFile(file, stringify(d));
  const settings = c.publicSettings();
  const r = await c.pub.reload(() => Promise.resolve({ ...settings, noticeTimeoutMs: 900 }));
  assert.equal(r.ok, true, r.problems.join("\n"));
  assert.ok(r.applied.some((l) => /^notice_timeout_ms: \d+ → 900$/.test(l)), r.applied.join("\n"));
  assert.ok(r.applied.some((l) => l.startsWith("directory: re-read")), r.applied.join("\n"));
  assert.equal(c.pub.lastReload, r);
  await two.announce(["three.example.com"]);
  assert.equal(c.pub.announcements.match("three.example.com")?.operator, "private-proxy-2");

  // restart-only keys: refused naming each, nothing applied (the notice timeout stays 900)
  const moved = await c.pub.reload(() =>
    Promise.resolve({
      ...settings,
      publicListen: { hostname: "127.0.0.1", port: 1 },
      sockets: settings.sockets === "deno" ? "native" : "deno",
      maxPooledPerOperator: 1,
    })
  );
  assert.equal(moved.ok, false);
  assert.deepEqual(moved.problems.map((p) => p.slice(0, p.indexOf(":"))).sort(), [
    "public_listen",
    "sockets",
  ]);
  assert.equal(c.pub.pool.maxPerOperator, settings.maxPooledPerOperator);

  // an EPS link key that does not load (EpsClient.reconfigure): refused naming key and file
  const garbage = join(c.dir, "garbage.key");
  await Deno.writeTextFile(garbage, "not a key\n");
  const badKey = await c.pub.reload(() =>
    Promise.resolve({ ...settings, eps: { ...settings.eps, keyFile: garbage } })
  );
  assert.equal(badKey.ok, false);
  assert.ok(
    badKey.problems.some((p) =>
      p.startsWith(`eps.key_file: "${garbage}" is not a PEM private key`)
    ),
    badKey.problems.join("\n"),
  );
  assert.equal(c.pub.pool.maxPerOperator, settings.maxPooledPerOperator);

  // an invalid directory: refused with the loader's message naming the file; old one kept
  await Deno.writeTextFile(file, text.replace("operators:", "operators: [\n"));
  const broken = await c.pub.reload(() => Promise.resolve(settings));
  assert.equal(broken.ok, false);
  assert.ok(broken.problems.some((p) => p.startsWith(`${file}: `)), broken.problems.join("\n"));
  assert.equal(c.pub.lastReload, broken);
  await two.announce(["two.example.com"]);
  // the data path still works after the reloads
  const res = await c.request("/");
  assert.equal(res.status, 200);
});
