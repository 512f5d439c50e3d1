import assert from "node:assert/strict";
import { join } from "node:path";
import { SettingsError } from "../errors.ts";
import { calleesOf, domainAllowed, loadDirectory, mayCall } from "./directory.ts";

const OPERATORS = `
ca_certificate_files: [ca/root.crt]
operators:
  public-proxy-1:
    address: 127.0.0.1:5556
    permissions:
      - { method: announceConnections, from: [private-proxy-1] }
    proxy: { private_endpoint: 127.0.0.1:9999 }
  private-proxy-1:
    permissions:
      - { method: incomingConnection, from: [public-proxy-1] }
    proxy: { allowed_domains: [".internal-server.local", "exact.example.com"] }
`;
const PINS = `operators:
  public-proxy-1:
    fingerprints: ["${"AB".repeat(32)}"]
`;

async function withDir(
  files: Record<string, string>,
  fn: (dir: string) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.mkdir(join(dir, "ca"));
    await Deno.writeTextFile(join(dir, "ca", "root.crt"), "not checked here");
    await Deno.mkdir(join(dir, "directory"));
    for (const [name, text] of Object.entries(files)) {
      await Deno.writeTextFile(join(dir, "directory", name), text);
    }
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("loadDirectory() merges the pins into the operators and resolves CA paths", async () => {
  await withDir(
    { "operators.yml": OPERATORS.replace("ca/", "../ca/"), "pins.yml": PINS },
    async (dir) => {
      const d = await loadDirectory([join(dir, "directory")]);
      assert.deepEqual(d.caCertificateFiles, [join(dir, "ca", "root.crt")]);
      const pub = d.operators.get("public-proxy-1")!;
      assert.deepEqual(pub.address, { hostname: "127.0.0.1", port: 5556 });
      assert.deepEqual(pub.fingerprints, ["ab".repeat(32)]);
      assert.deepEqual(pub.proxy.privateEndpoint, { hostname: "127.0.0.1", port: 9999 });
      const priv = d.operators.get("private-proxy-1")!;
      assert.equal(priv.address, undefined);
      assert.deepEqual(priv.fingerprints, []);
    },
  );
});

Deno.test("mayCall() denies by default and allows only listed callers", async () => {
  await withDir({ "operators.yml": OPERATORS.replace("ca/", "../ca/") }, async (dir) => {
    const d = await loadDirectory([join(dir, "directory")]);
    assert.equal(mayCall(d, "private-proxy-1", "public-proxy-1", "announceConnections"), true);
    assert.equal(mayCall(d, "public-proxy-1", "public-proxy-1", "announceConnections"), false);
    assert.equal(mayCall(d, "private-proxy-1", "public-proxy-1", "withdrawConnections"), false);
    assert.equal(mayCall(d, "private-proxy-1", "nobody", "announceConnections"), false);
    assert.equal(mayCall(d, "public-proxy-1", "private-proxy-1", "incomingConnection"), true);
    assert.deepEqual(calleesOf(d, "private-proxy-1"), ["public-proxy-1"]);
    assert.deepEqual(calleesOf(d, "public-proxy-1"), ["private-proxy-1"]);
  });
});

Deno.test("domainAllowed() follows the suffix rules", async () => {
  await withDir({ "operators.yml": OPERATORS.replace("ca/", "../ca/") }, async (dir) => {
    const d = await loadDirectory([join(dir, "directory")]);
    const table: [string, boolean][] = [
      ["test.internal-server.local", true],
      ["Test.Internal-Server.Local.", true],
      ["a.b.internal-server.local", true],
      ["*.internal-server.local", true],
      ["internal-server.local", false],
      ["evilinternal-server.local", false],
      ["exact.example.com", true],
      ["sub.exact.example.com", false],
      ["*.exact.example.com", false],
    ];
    for (const [domain, ok] of table) {
      assert.equal(domainAllowed(d, "private-proxy-1", domain), ok, domain);
    }
    assert.equal(domainAllowed(d, "public-proxy-1", "test.internal-server.local"), false);
    assert.equal(domainAllowed(d, "unknown", "test.internal-server.local"), false);
  });
});

Deno.test("loadDirectory() reports every problem with file and key", async () => {
  const bad = `
ca_certificate_files: [missing.crt]
operators:
  Bad_Name: {}
  public-proxy-1:
    address: nowhere
    fingerprints: [xyz]
    colour: blue
    permissions:
      - { method: "a.b", from: [ghost] }
`;
  await withDir({ "operators.yml": bad }, async (dir) => {
    const err = await loadDirectory([join(dir, "directory")]).catch((e) => e);
    assert.ok(err instanceof SettingsError);
    const text = err.problems.join("\n");
    for (
      const key of [
        "ca_certificate_files[0]",
        "operators.Bad_Name",
        "operators.public-proxy-1.address",
        "operators.public-proxy-1.fingerprints[0]",
        "operators.public-proxy-1.colour: unknown key",
        "operators.public-proxy-1.permissions[0].method",
        'operator "ghost" is not in the directory',
      ]
    ) assert.ok(text.includes(key), `missing ${key} in:\n${text}`);
    assert.ok(err.problems.every((p: string) => p.includes("operators.yml")));
  });
});
