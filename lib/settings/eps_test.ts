import assert from "node:assert/strict";
import { join } from "node:path";
import { SettingsError } from "../errors.ts";
import { loadEpsSettings } from "./eps.ts";

Deno.test("loadEpsSettings() fills defaults and resolves paths against the file", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.mkdir(join(dir, "directory"));
    await Deno.writeTextFile(join(dir, "a.crt"), "x");
    await Deno.writeTextFile(join(dir, "a.key"), "x");
    await Deno.writeTextFile(
      join(dir, "settings.yml"),
      "operator: eps-a\nlisten: 127.0.0.1:0\ncertificate_file: a.crt\nkey_file: a.key\ndirectory_dir: directory\n",
    );
    const s = await loadEpsSettings([join(dir, "settings.yml")]);
    assert.deepEqual(s, {
      operator: "eps-a",
      listen: { hostname: "127.0.0.1", port: 0 },
      certificateFile: join(dir, "a.crt"),
      keyFile: join(dir, "a.key"),
      directoryDir: join(dir, "directory"),
      callTimeoutMs: 5000,
      maxMessageBytes: 1048576,
      maxStreamsPerLink: 1024,
      keepaliveIntervalMs: 15000,
      handshakeTimeoutMs: 10000,
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("loadEpsSettings() reports every problem at once", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(
      join(dir, "settings.yml"),
      "operator: Not An Operator\ncertificate_file: none.crt\ncall_timeout_ms: 0\nspeed: 3\n",
    );
    const err = await loadEpsSettings([join(dir, "settings.yml")]).catch((e) => e);
    assert.ok(err instanceof SettingsError);
    const text = err.problems.join("\n");
    for (
      const key of [
        "operator: must be",
        "listen: is required unless proxy_listen",
        "certificate_file: cannot read",
        "key_file: is required",
        "directory_dir: is required",
        "call_timeout_ms: must be",
        "speed: unknown key",
      ]
    ) assert.ok(text.includes(key), `missing ${key} in:\n${text}`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
