import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { createPki, writePki } from "../certs/pki.ts";
import { SettingsError } from "../errors.ts";
import { parseInternalServerSettings } from "./internal_server.ts";
import { loadSettings } from "./loader.ts";

const DEV_FILE = fileURLToPath(
  new URL("../../settings/dev/roles/internal-server/settings.yml", import.meta.url),
);

async function tempDir(): Promise<AsyncDisposable & { path: string }> {
  const path = await Deno.makeTempDir({ prefix: "tls-pass-settings-" });
  return { path, [Symbol.asyncDispose]: () => Deno.remove(path, { recursive: true }) };
}

/** Loads `text` as one settings file in `dir`; returns the settings or the SettingsError. */
async function load(dir: string, text: string) {
  const file = join(dir, "settings.yml");
  await Deno.writeTextFile(file, text);
  try {
    return await loadSettings([file], parseInternalServerSettings);
  } catch (err) {
    if (err instanceof SettingsError) return err;
    throw err;
  }
}

Deno.test("the dev settings file is valid once the dev certificates exist", async () => {
  await using tmp = await tempDir();
  const roleDir = join(tmp.path, "settings", "dev", "roles", "internal-server");
  await Deno.mkdir(roleDir, { recursive: true });
  await Deno.copyFile(DEV_FILE, join(roleDir, "settings.yml"));
  const certs = join(tmp.path, "settings", "dev", "certs");
  await writePki(await createPki(["internal-server"]), certs);
  const s = await loadSettings([roleDir], parseInternalServerSettings);
  assert.deepEqual(s, {
    listen: { hostname: "127.0.0.1", port: 8888 },
    tls: true,
    certificateFile: join(certs, "internal-server.crt"),
    keyFile: join(certs, "internal-server.key"),
    maxBodyBytes: 1048576,
    adminListen: { hostname: "127.0.0.1", port: 9105 },
  });
});

Deno.test("internal server settings: defaults for everything but the key material", async () => {
  await using tmp = await tempDir();
  await Deno.writeTextFile(join(tmp.path, "a.crt"), "x");
  await Deno.writeTextFile(join(tmp.path, "a.key"), "x");
  const s = await load(tmp.path, "certificate_file: a.crt\nkey_file: a.key\n");
  assert.deepEqual(s, {
    listen: { hostname: "127.0.0.1", port: 8888 },
    tls: true,
    certificateFile: join(tmp.path, "a.crt"),
    keyFile: join(tmp.path, "a.key"),
    maxBodyBytes: 1024 * 1024,
  });
});

Deno.test("internal server settings: plain HTTP needs no key material, and ignores it", async () => {
  await using tmp = await tempDir();
  assert.deepEqual(await load(tmp.path, "tls: false\nlisten: '[::1]:0'\n"), {
    listen: { hostname: "::1", port: 0 },
    tls: false,
    maxBodyBytes: 1024 * 1024,
  });
  const s = await load(tmp.path, "tls: false\ncertificate_file: missing.crt\n");
  assert.ok(!(s instanceof SettingsError), String(s));
});

const BAD: [string, RegExp[]][] = [
  ["{}", [/certificate_file: is required/, /key_file: is required/]],
  [
    "certificate_file: nope.crt\nkey_file: nope.key\n",
    [/certificate_file: cannot read ".*nope\.crt"/, /key_file: cannot read ".*nope\.key"/],
  ],
  ["tls: false\nlisten: 8888\n", [/listen: must be "host:port"/]],
  ["tls: false\nlisten: 127.0.0.1:70000\n", [/listen: must be "host:port"/]],
  ["tls: 'yes'\n", [/tls: must be true or false, got "yes"/]],
  ["tls: false\nmax_body_bytes: 0\n", [/max_body_bytes: must be an integer from 1 to/]],
  ["tls: false\nport: 1\n", [/port: unknown key \(known: listen, tls, /]],
  ["tls: false\nkey_file: 7\n", [/key_file: must be a non-empty string, got 7/]],
];

for (const [text, expected] of BAD) {
  Deno.test(`internal server settings reject ${JSON.stringify(text)}`, async () => {
    await using tmp = await tempDir();
    const err = await load(tmp.path, text);
    assert.ok(err instanceof SettingsError, "must fail");
    assert.equal(err.problems.length, expected.length, err.message);
    for (const [i, re] of expected.entries()) {
      assert.match(err.problems[i]!, re);
      assert.ok(err.problems[i]!.startsWith(join(tmp.path, "settings.yml")), err.problems[i]);
    }
  });
}
