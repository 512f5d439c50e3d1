import assert from "node:assert/strict";
import { join } from "node:path";
import { createPki, DEV_NAMES, fingerprintOfPem, type Pki, writePins, writePki } from "./pki.ts";

async function tempDir(): Promise<AsyncDisposable & { path: string }> {
  const path = await Deno.makeTempDir({ prefix: "tls-pass-pki-" });
  return { path, [Symbol.asyncDispose]: () => Deno.remove(path, { recursive: true }) };
}

async function openssl(args: string[], cwd: string): Promise<{ code: number; text: string }> {
  const out = await new Deno.Command("openssl", { args, cwd, stdout: "piped", stderr: "piped" })
    .output();
  const dec = new TextDecoder();
  return { code: out.code, text: dec.decode(out.stdout) + dec.decode(out.stderr) };
}

/**
 * A TLS server on 127.0.0.1:0 with the given leaf; the client connects over TCP and starts TLS
 * with `serverName` as SNI and name to verify, trusting only the root. Returns the client's
 * handshake error, or undefined when it succeeded (and a byte made the round trip).
 */
async function handshake(pki: Pki, leaf: string, serverName: string): Promise<unknown> {
  using listener = Deno.listenTls({
    hostname: "127.0.0.1",
    port: 0,
    cert: pki.leaves[leaf]!.certPem,
    key: pki.leaves[leaf]!.keyPem,
  });
  const served = (async () => {
    using conn = await listener.accept();
    try {
      await conn.handshake();
      const buf = new Uint8Array(1);
      if ((await conn.read(buf)) === 1) await conn.write(buf);
    } catch {
      // the client refused our certificate: expected in the negative case
    }
  })();
  const signal = AbortSignal.timeout(10_000);
  let clientError: unknown;
  try {
    using tcp = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port, signal });
    using tls = await Deno.startTls(tcp, { hostname: serverName, caCerts: [pki.rootPem] });
    await tls.handshake();
    await tls.write(new Uint8Array([42]));
    const buf = new Uint8Array(1);
    assert.equal(await tls.read(buf), 1);
    assert.equal(buf[0], 42);
  } catch (err) {
    clientError = err;
  }
  await served;
  return clientError;
}

Deno.test("createPki() chain verifies with openssl verify for every dev name", async () => {
  const pki = await createPki([...DEV_NAMES]);
  await using dir = await tempDir();
  await writePki(pki, dir.path);
  for (const name of DEV_NAMES) {
    const r = await openssl(
      ["verify", "-CAfile", "root.crt", "-untrusted", "intermediate.crt", `${name}.crt`],
      dir.path,
    );
    assert.equal(r.code, 0, r.text);
    assert.match(r.text, new RegExp(`${name}\\.crt: OK`));
    const text = await openssl(["x509", "-in", `${name}.crt`, "-noout", "-text"], dir.path);
    assert.match(text.text, new RegExp(`Subject: CN ?= ?${name}`));
    assert.match(text.text, new RegExp(`DNS:${name}, DNS:\\*\\.${name}\\.local`));
    assert.match(text.text, /TLS Web Server Authentication, TLS Web Client Authentication/);
    assert.match(text.text, /Authority Key Identifier/);
  }
  const inter = await openssl(["x509", "-in", "intermediate.crt", "-noout", "-text"], dir.path);
  assert.match(inter.text, /CA:TRUE, pathlen:0/);
});

Deno.test("openssl refuses a leaf that is checked against another root", async () => {
  const a = await createPki(["internal-server"]);
  const b = await createPki(["internal-server"]);
  await using dir = await tempDir();
  await writePki(a, dir.path);
  await Deno.writeTextFile(join(dir.path, "other-root.crt"), b.rootPem);
  const r = await openssl(
    [
      "verify",
      "-CAfile",
      "other-root.crt",
      "-untrusted",
      "intermediate.crt",
      "internal-server.crt",
    ],
    dir.path,
  );
  assert.notEqual(r.code, 0, r.text);
});

Deno.test("TLS handshake trusting only the root succeeds for test.internal-server.local", async () => {
  const pki = await createPki(["internal-server"]);
  assert.equal(await handshake(pki, "internal-server", "test.internal-server.local"), undefined);
  assert.equal(await handshake(pki, "internal-server", "internal-server"), undefined);
});

Deno.test("TLS handshake fails for a name the certificate does not cover", async () => {
  const pki = await createPki(["internal-server"]);
  const err = await handshake(pki, "internal-server", "other.example.com");
  assert.ok(err instanceof Error, "the handshake must fail");
  assert.match(String(err), /certificate|NotValidForName|name/i);
  // a leaf of another name does not cover *.internal-server.local either
  const other = await createPki(["public-proxy-1"]);
  assert.ok(await handshake(other, "public-proxy-1", "test.internal-server.local"));
});

Deno.test("TLS handshake fails when the client trusts another root", async () => {
  const pki = await createPki(["internal-server"]);
  const stranger = await createPki(["internal-server"]);
  const mixed: Pki = { ...stranger, leaves: pki.leaves };
  assert.ok(await handshake(mixed, "internal-server", "test.internal-server.local"));
});

Deno.test("writePki() refuses to overwrite without force and overwrites with force", async () => {
  const first = await createPki(["internal-server"]);
  const second = await createPki(["internal-server"]);
  await using dir = await tempDir();
  const written = await writePki(first, dir.path);
  assert.deepEqual(
    written.map((p) => p.slice(dir.path.length + 1)),
    ["root.crt", "root.key", "intermediate.crt", "internal-server.crt", "internal-server.key"],
  );

  await assert.rejects(
    () => writePki(second, dir.path),
    (err: unknown) =>
      err instanceof Deno.errors.AlreadyExists && /root\.crt" already exists/.test(err.message),
  );
  assert.equal(await Deno.readTextFile(join(dir.path, "root.crt")), first.rootPem);

  // one existing file is enough to refuse, and nothing is written then
  await Deno.remove(join(dir.path, "root.crt"));
  await assert.rejects(() => writePki(second, dir.path), Deno.errors.AlreadyExists);
  await assert.rejects(() => Deno.stat(join(dir.path, "root.crt")), Deno.errors.NotFound);

  await Deno.chmod(join(dir.path, "internal-server.key"), 0o644);
  await writePki(second, dir.path, { force: true });
  assert.equal(await Deno.readTextFile(join(dir.path, "root.crt")), second.rootPem);
  assert.equal(
    await Deno.readTextFile(join(dir.path, "internal-server.key")),
    second.leaves["internal-server"]!.keyPem,
  );
});

Deno.test({
  name: "writePki() writes key files with mode 0600",
  ignore: Deno.build.os === "windows",
  fn: async () => {
    const pki = await createPki(["internal-server"]);
    await using dir = await tempDir();
    await writePki(pki, join(dir.path, "nested", "certs"));
    for (const name of ["root.key", "internal-server.key"]) {
      const info = await Deno.stat(join(dir.path, "nested", "certs", name));
      assert.equal(info.mode! & 0o777, 0o600, name);
    }
  },
});

Deno.test("fingerprintOfPem() matches openssl and the leaf fingerprint", async () => {
  const pki = await createPki(["internal-server"]);
  const leaf = pki.leaves["internal-server"]!;
  assert.match(leaf.fingerprint, /^[0-9a-f]{64}$/);
  assert.equal(await fingerprintOfPem(leaf.certPem), leaf.fingerprint);
  await using dir = await tempDir();
  await writePki(pki, dir.path);
  const r = await openssl(
    ["x509", "-in", "internal-server.crt", "-noout", "-fingerprint", "-sha256"],
    dir.path,
  );
  const fromOpenssl = /=([0-9A-F:]+)/.exec(r.text)![1]!.replaceAll(":", "").toLowerCase();
  assert.equal(fromOpenssl, leaf.fingerprint);
  await assert.rejects(() => fingerprintOfPem("no certificate here"), TypeError);
});

Deno.test("writePins() writes one pin per operator, loadable as YAML", async () => {
  const { parse } = await import("yaml");
  const pki = await createPki([...DEV_NAMES]);
  await using dir = await tempDir();
  const file = join(dir.path, "directory", "pins.yml");
  await writePins(pki, file);
  const text = await Deno.readTextFile(file);
  assert.match(text, /^# Generated by `tls-pass certs`/);
  const doc = parse(text) as { operators: Record<string, { fingerprints: string[] }> };
  assert.deepEqual(Object.keys(doc.operators), [...DEV_NAMES]);
  for (const name of DEV_NAMES) {
    assert.deepEqual(doc.operators[name]!.fingerprints, [pki.leaves[name]!.fingerprint]);
  }
});

Deno.test("createPki() rejects bad names and days", async () => {
  await assert.rejects(() => createPki(["Bad Name"]), TypeError);
  await assert.rejects(() => createPki(["root"]), TypeError);
  await assert.rejects(() => createPki(["a", "a"]), TypeError);
  await assert.rejects(() => createPki(["a"], { days: 0 }), RangeError);
});
