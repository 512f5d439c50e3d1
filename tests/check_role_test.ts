/**
 * `tls-pass check ROLE` makes the checks `run` makes before binding (docs/settings.md,
 * "`tls-pass check ROLE`"): the directory loads, the certificate names the operator. Each case
 * takes the dev settings and merges one override file into them.
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { ensureDevCerts } from "../lib/certs/command.ts";
import { REPO_ROOT, runCli } from "./_cli.ts";

const DEV = join(REPO_ROOT, "settings/dev");
const CERTS = join(DEV, "certs");

/** The dev settings folder of each role checked here. */
const DEV_ROLE = {
  eps: join(DEV, "roles/public-proxy-eps-1"),
  public: join(DEV, "roles/public-proxy-1"),
  private: join(DEV, "roles/private-proxy-1"),
} as const;

/** Runs `check ROLE` on the dev settings plus `override` (YAML), in a temp folder. */
async function checkWith(
  role: keyof typeof DEV_ROLE,
  override: string,
  files: Record<string, string> = {},
) {
  await ensureDevCerts();
  const dir = await Deno.makeTempDir({ prefix: "tls-pass-check-" });
  try {
    for (const [name, text] of Object.entries(files)) {
      await Deno.mkdir(join(dir, name, ".."), { recursive: true });
      await Deno.writeTextFile(join(dir, name), text);
    }
    await Deno.writeTextFile(join(dir, "override.yml"), override);
    const r = await runCli([
      "check",
      role,
      "--settings",
      DEV_ROLE[role],
      "--settings",
      join(dir, "override.yml"),
    ]);
    return { ...r, dir };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("cli check passes the dev settings of every role with the directory and certificates", async () => {
  await ensureDevCerts();
  for (const role of Object.keys(DEV_ROLE) as (keyof typeof DEV_ROLE)[]) {
    const r = await runCli(["check", role, "--settings", DEV_ROLE[role]]);
    assert.equal(r.code, 0, `${role}: ${r.stderr}`);
    assert.equal(r.stderr, "");
    assert.equal(
      JSON.parse(r.stdout).operator,
      role === "private" ? "private-proxy-1" : "public-proxy-1",
    );
  }
});

Deno.test("cli check eps exits 2 naming the file and key when the certificate names another operator", async () => {
  const crt = join(CERTS, "private-proxy-1.crt");
  const r = await checkWith(
    "eps",
    `certificate_file: ${crt}\nkey_file: ${join(CERTS, "private-proxy-1.key")}\n`,
  );
  assert.equal(r.code, 2, r.stderr);
  assert.equal(r.stdout, "");
  assert.ok(r.stderr.includes(`Cannot load settings "${crt}"`), r.stderr);
  assert.ok(
    r.stderr.includes(
      'certificate_file: certificate CN is "private-proxy-1", expected the operator "public-proxy-1"',
    ),
    r.stderr,
  );
});

for (
  const [role, own, other] of [
    ["public", "public-proxy-1", "private-proxy-1"],
    ["private", "private-proxy-1", "public-proxy-1"],
  ] as const
) {
  Deno.test(`cli check ${role} exits 2 naming the file and key when the eps certificate names another operator`, async () => {
    const crt = join(CERTS, `${other}.crt`);
    const r = await checkWith(
      role,
      `eps: {certificate_file: ${crt}, key_file: ${join(CERTS, `${other}.key`)}}\n`,
    );
    assert.equal(r.code, 2, r.stderr);
    assert.equal(r.stdout, "");
    assert.ok(r.stderr.includes(`Cannot load settings "${crt}"`), r.stderr);
    assert.ok(
      r.stderr.includes(
        `eps.certificate_file: certificate CN is "${other}", expected the operator "${own}"`,
      ),
      r.stderr,
    );
  });
}

Deno.test("cli check exits 2 when the key is not the certificate's", async () => {
  const r = await checkWith("private", `eps: {key_file: ${join(CERTS, "public-proxy-1.key")}}\n`);
  assert.equal(r.code, 2, r.stderr);
  assert.match(
    r.stderr,
    /eps\.key_file: ".*public-proxy-1\.key" is not the key of the certificate/,
  );
});

for (const role of ["eps", "public"] as const) {
  Deno.test(`cli check ${role} exits 2 naming the directory file and key when the directory is bad`, async () => {
    const r = await checkWith(role, "directory_dir: directory\n", {
      "directory/operators.yml": [
        `ca_certificate_files: [${join(CERTS, "root.crt")}]`,
        "operators:",
        "  public-proxy-1:",
        "    addres: 127.0.0.1:5556",
        "    permissions:",
        "      - { method: openPool, from: [private-proxy-9] }",
      ].join("\n"),
    });
    assert.equal(r.code, 2, r.stderr);
    assert.equal(r.stdout, "");
    const file = join(r.dir, "directory", "operators.yml");
    assert.ok(r.stderr.includes(`${file}: operators.public-proxy-1.addres: unknown key`), r.stderr);
    assert.ok(
      r.stderr.includes(
        `${file}: operators.public-proxy-1.permissions[0].from[0]: operator "private-proxy-9" is not in the directory`,
      ),
      r.stderr,
    );
  });

  Deno.test(`cli check ${role} exits 2 when the directory folder holds no settings file`, async () => {
    const r = await checkWith(role, "directory_dir: directory\n", { "directory/README": "x" });
    assert.equal(r.code, 2, r.stderr);
    assert.ok(
      r.stderr.includes(
        `${join(r.dir, "directory")}: folder holds no *.yml, *.yaml or *.json file`,
      ),
      r.stderr,
    );
  });
}

Deno.test("cli check eps warns, and passes, when the operator is not in the directory", async () => {
  const r = await checkWith("eps", "directory_dir: directory\n", {
    "directory/operators.yml": `ca_certificate_files: [${
      join(CERTS, "root.crt")
    }]\noperators: {}\n`,
  });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(
    r.stderr,
    'tls-pass: warning: Operator "public-proxy-1" is not in the directory: no peer may call it\n',
  );
  assert.equal(JSON.parse(r.stdout).operator, "public-proxy-1");
});
