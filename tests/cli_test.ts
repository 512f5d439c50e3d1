/**
 * The CLI as a user runs it: usage errors, settings errors, ready line, SIGTERM.
 * Runs `deno run -A cli.ts`, or `$TLS_PASS_BIN` when set.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { runCli } from "./_cli.ts";

const usageCases: [string, string[], RegExp][] = [
  ["no command", [], /Missing COMMAND/],
  ["an unknown command", ["frobnicate"], /Unknown command "frobnicate"/],
  ["an unknown flag", ["run", "internal-server", "--nope"], /Unknown option '--nope'/],
  [
    "an unknown role",
    ["run", "gateway"],
    /Unknown role "gateway": expected one of public, private, eps, internal-server/,
  ],
  ["a missing role", ["run"], /Missing ROLE/],
  ["an extra argument", ["version", "x"], /Unexpected argument "x"/],
  [
    "a bad --log-level",
    ["run", "internal-server", "--log-level", "loud"],
    /Invalid --log-level "loud"/,
  ],
  [
    "a bad --log-format",
    ["run", "internal-server", "--log-format", "xml"],
    /Invalid --log-format "xml"/,
  ],
  ["--settings without a value", ["check", "eps", "--settings"], /--settings/],
];

for (const [what, args, message] of usageCases) {
  Deno.test(`cli exits 2 with a usage line on ${what}`, async () => {
    const r = await runCli(args);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, message);
    assert.match(r.stderr, /^Usage: tls-pass /m);
    assert.equal(r.stdout, "");
  });
}

Deno.test("cli prints help for every command and the version", async () => {
  for (
    const args of [
      ["--help"],
      ["help"],
      ["help", "run"],
      ["run", "--help"],
      ["certs", "--help"],
      ["check", "--help"],
      ["demo", "--help"],
      ["help", "version"],
    ]
  ) {
    const r = await runCli(args);
    assert.equal(r.code, 0, `${args.join(" ")}: ${r.stderr}`);
    assert.match(r.stdout, /tls-pass/, args.join(" "));
  }
  const v = await runCli(["version"]);
  assert.match(v.stdout, /^tls-pass \d+\.\d+\.\d+\n$/);
});

async function withSettings(text: string, fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "tls-pass-cli-" });
  try {
    await Deno.writeTextFile(join(dir, "settings.yml"), text);
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const settingsCases: [string, string, RegExp][] = [
  [
    "an unknown key",
    "tls: false\nlisten: 127.0.0.1:0\nlisten_port: 1\n",
    /settings\.yml: listen_port: unknown key/,
  ],
  [
    "a wrong type",
    "tls: 'no'\nlisten: 127.0.0.1:0\n",
    /settings\.yml: tls: must be true or false, got "no"/,
  ],
  [
    "a missing required key",
    "tls: true\nlisten: 127.0.0.1:0\n",
    /settings\.yml: certificate_file: is required/,
  ],
  [
    "a bad port",
    "tls: false\nlisten: 127.0.0.1:70000\n",
    /settings\.yml: listen: must be "host:port"/,
  ],
  ["invalid YAML", "tls: false\nlisten: [\n", /settings\.yml: .*line \d+, column \d+/],
  [
    "an unset variable",
    "tls: false\nlisten: ${TLS_PASS_CLI_TEST_UNSET}\n",
    /settings\.yml: listen: environment variable "TLS_PASS_CLI_TEST_UNSET" is not set/,
  ],
  [
    "an unreadable key file",
    "tls: true\nlisten: 127.0.0.1:0\ncertificate_file: nope.crt\nkey_file: nope.key\n",
    /settings\.yml: certificate_file: cannot read ".*nope\.crt"/,
  ],
];

for (const [what, text, message] of settingsCases) {
  Deno.test(`cli run exits 2 naming the file and key on ${what}`, async () => {
    await withSettings(text, async (dir) => {
      const r = await runCli(["run", "internal-server", "--settings", dir]);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, message);
      assert.match(r.stderr, new RegExp(`${dir}/settings\\.yml`));
      assert.doesNotMatch(r.stdout, /ready/);
    });
  });
}

Deno.test("cli reports an unreadable settings path with exit 2", async () => {
  const r = await runCli(["check", "internal-server", "--settings", "/nonexistent/tls-pass.yml"]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /\/nonexistent\/tls-pass\.yml: cannot read/);
});

Deno.test("cli check prints the merged settings with file paths, not key contents", async () => {
  await withSettings(
    "tls: true\nlisten: 127.0.0.1:0\ncertificate_file: a.crt\nkey_file: a.key\n",
    async (dir) => {
      await Deno.writeTextFile(join(dir, "a.crt"), "-----BEGIN CERTIFICATE-----\nsecretish\n");
      await Deno.writeTextFile(join(dir, "a.key"), "-----BEGIN PRIVATE KEY-----\nsecret\n");
      await Deno.writeTextFile(join(dir, "z-override.yml"), "max_body_bytes: 2048\n");
      const r = await runCli(["check", "internal-server", "--settings", dir]);
      assert.equal(r.code, 0, r.stderr);
      const s = JSON.parse(r.stdout);
      assert.equal(s.keyFile, join(dir, "a.key"));
      assert.equal(s.maxBodyBytes, 2048);
      assert.doesNotMatch(r.stdout, /PRIVATE KEY|secret/);
    },
  );
});
