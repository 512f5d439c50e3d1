/**
 * The deployment kit in examples/ (examples/README.md): every settings file passes
 * `tls-pass check ROLE` once certificates exist, and every systemd unit passes
 * `systemd-analyze verify`.
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { createPki, writePins, writePki } from "../lib/certs/pki.ts";
import { REPO_ROOT, runCli } from "./_cli.ts";

const EXAMPLES = join(REPO_ROOT, "examples");

/** Each side's role folders and the role they run (examples/README.md, "Layout"). */
const SIDES = {
  "public-side": { operator: "edge.example.net", roles: { eps: "eps", "public-proxy": "public" } },
  "private-side": {
    operator: "office.example.org",
    roles: { eps: "eps", "private-proxy": "private", "internal-server": "internal-server" },
  },
  // examples/ha/README.md: two public replicas and two private instances
  "ha": {
    operator: undefined,
    roles: {
      "public-proxy-a": "public",
      "public-proxy-b": "public",
      "private-proxy-a": "private",
      "private-proxy-b": "private",
    },
  },
} as const;

/** The names the PKI of the examples issues: both operators and the application. */
const NAMES = ["edge.example.net", "office.example.org", "app.example.org"];

async function copyTree(from: string, to: string): Promise<void> {
  await Deno.mkdir(to, { recursive: true });
  for await (const e of Deno.readDir(from)) {
    if (e.isDirectory) await copyTree(join(from, e.name), join(to, e.name));
    else await Deno.copyFile(join(from, e.name), join(to, e.name));
  }
}

/**
 * One side as it is installed in /etc/tls-pass: its role folders, the shared directory, and
 * certs/ with a throwaway PKI for the example names (`ca.crt` is the root the directory and the
 * proxies trust; each leaf file holds the leaf, then the intermediate).
 */
async function installSide(
  side: keyof typeof SIDES,
  root: string,
  pki: Awaited<ReturnType<typeof createPki>>,
  pins: boolean,
): Promise<string> {
  const etc = join(root, side);
  await copyTree(join(EXAMPLES, side), etc);
  await copyTree(join(EXAMPLES, "directory"), join(etc, "directory"));
  await writePki(pki, join(etc, "certs"));
  await Deno.copyFile(join(etc, "certs", "root.crt"), join(etc, "certs", "ca.crt"));
  if (pins) await writePins(pki, join(etc, "directory", "pins.yml"));
  return etc;
}

Deno.test("examples: every settings file of both sides passes tls-pass check, with and without pins", async () => {
  const root = await Deno.makeTempDir({ prefix: "tls-pass-examples-" });
  try {
    const pki = await createPki(NAMES);
    for (const pins of [false, true]) {
      for (const [side, { roles }] of Object.entries(SIDES)) {
        const etc = await installSide(
          side as keyof typeof SIDES,
          join(root, pins ? "pinned" : "plain"),
          pki,
          pins,
        );
        for (const [folder, role] of Object.entries(roles)) {
          const r = await runCli(["check", role, "--settings", join(etc, folder)]);
          assert.equal(r.code, 0, `${side}/${folder}: ${r.stderr}`);
          assert.equal(r.stderr, "", `${side}/${folder} warned: ${r.stderr}`);
          const s = JSON.parse(r.stdout);
          const operator = SIDES[side as keyof typeof SIDES].operator ??
            (role === "public" ? "edge.example.net" : "office.example.org");
          if (role !== "internal-server") assert.equal(s.operator, operator);
        }
      }
    }
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("examples: check refuses an example whose certificate is the other side's", async () => {
  // the same check as above must be able to fail: swap the public side's certificate for the
  // private operator's (a real mistake when copying files between machines)
  const root = await Deno.makeTempDir({ prefix: "tls-pass-examples-" });
  try {
    const etc = await installSide("public-side", root, await createPki(NAMES), false);
    for (const ext of ["crt", "key"]) {
      await Deno.copyFile(
        join(etc, "certs", `office.example.org.${ext}`),
        join(etc, "certs", `edge.example.net.${ext}`),
      );
    }
    const cert = join(etc, "certs", "edge.example.net.crt");
    for (
      const [folder, role, key] of [
        ["eps", "eps", "certificate_file"],
        ["public-proxy", "public", "eps.certificate_file"],
      ]
    ) {
      const r = await runCli(["check", role!, "--settings", join(etc, folder!)]);
      assert.equal(r.code, 2, r.stderr);
      assert.ok(r.stderr.includes(cert), r.stderr);
      assert.ok(
        r.stderr.includes(
          `${key}: certificate CN is "office.example.org", expected the operator "edge.example.net"`,
        ),
        r.stderr,
      );
    }
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

/** The binary path the units name in ExecStart. */
const UNIT_BINARY = "/usr/local/bin/tls-pass";

function systemdAnalyze(): string | undefined {
  for (const p of ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]) {
    try {
      if (Deno.statSync(p).isFile) return p;
    } catch { /* not here */ }
  }
  return undefined;
}

const analyze = systemdAnalyze();

Deno.test({
  name: "examples: every systemd unit passes systemd-analyze verify",
  ignore: analyze === undefined,
  fn: async () => {
    const units: string[] = [];
    for await (const e of Deno.readDir(join(EXAMPLES, "systemd"))) {
      if (e.name.endsWith(".service")) units.push(e.name);
    }
    units.sort();
    assert.deepEqual(units, [
      "tls-pass-eps.service",
      "tls-pass-internal-server.service",
      "tls-pass-private.service",
      "tls-pass-public.service",
    ]);
    const dir = await Deno.makeTempDir({ prefix: "tls-pass-units-" });
    try {
      for (const name of units) {
        const text = await Deno.readTextFile(join(EXAMPLES, "systemd", name));
        assert.ok(text.includes(`ExecStart=${UNIT_BINARY} run `), `${name}: ExecStart`);
        // verify checks that ExecStart's binary exists and is executable: the test machine has
        // no /usr/local/bin/tls-pass, so the copy names a real executable instead (this Deno);
        // nothing is run
        await Deno.writeTextFile(join(dir, name), text.replaceAll(UNIT_BINARY, Deno.execPath()));
      }
      const out = await new Deno.Command(analyze!, {
        args: ["verify", "--man=no", ...units.map((u) => join(dir, u))],
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
        signal: AbortSignal.timeout(30_000),
      }).output();
      const text = new TextDecoder().decode(out.stderr) + new TextDecoder().decode(out.stdout);
      assert.equal(out.code, 0, text);
      // an unknown key or a bad value is only a warning for verify: none is allowed here
      assert.equal(text.trim(), "", text);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "examples: systemd-analyze verify fails a unit with a bad key (the check above can fail)",
  ignore: analyze === undefined,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "tls-pass-units-" });
    try {
      const text = (await Deno.readTextFile(join(EXAMPLES, "systemd", "tls-pass-eps.service")))
        .replaceAll(UNIT_BINARY, Deno.execPath())
        .replace("[Service]", "[Service]\nRestartt=on-failure");
      await Deno.writeTextFile(join(dir, "tls-pass-eps.service"), text);
      const out = await new Deno.Command(analyze!, {
        args: ["verify", "--man=no", join(dir, "tls-pass-eps.service")],
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
        signal: AbortSignal.timeout(30_000),
      }).output();
      assert.match(new TextDecoder().decode(out.stderr), /Unknown key 'Restartt'/);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

if (analyze === undefined) {
  // deno-lint-ignore no-console
  console.warn("examples_test: systemd-analyze not found: the unit checks are skipped");
}
