/**
 * What a new user who follows the seed does (README, "The seed's commands"): `make` and
 * `make examples` in the repo, then the seed's five commands verbatim as five processes with
 * `PATH=$REPO/bin:$PATH` and the seed's environment variables, its curl line and its GNU parallel
 * stress line (with `seq 1 200`), all from the repo root. With TLS_PASS_BIN set, `make` links
 * bin/tls-pass to that binary, so the launchers run it.
 *
 * Binds the dev ports: holds their lock (tests/_dev_ports.ts) against tests/e2e_test.ts.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { REPO_ROOT, runCli, spawnCli, type SpawnedCli } from "./_cli.ts";
import { lockDevPorts } from "./_dev_ports.ts";

/** The seed's five commands, verbatim (docs/architecture.md and README name them). */
const SEED_COMMANDS = [
  "internal-server",
  "PROXY_SETTINGS=settings/dev/roles/public-proxy-1 proxy run public",
  "PROXY_SETTINGS=settings/dev/roles/private-proxy-1 proxy run private",
  "EPS_SETTINGS=settings/dev/roles/public-proxy-eps-1 eps server run",
  "EPS_SETTINGS=settings/dev/roles/private-proxy-eps-1 eps server run",
] as const;

const SEED_CURL =
  "curl --cacert settings/dev/certs/root.crt --resolve test.internal-server.local:4433:127.0.0.1 https://test.internal-server.local:4433/jsonrpc";

const stressLine = (n: number) =>
  `seq 1 ${n} | parallel -j 25 curl --cacert settings/dev/certs/root.crt --resolve test.internal-server.local:4433:127.0.0.1 https://test.internal-server.local:4433/jsonrpc --data "{}"`;

const ANSWER = '{"message":"success"}';

const BIN = join(REPO_ROOT, "bin");
/** The seed's shell: bin/ first on PATH, as README says (`export PATH="$PWD/bin:$PATH"`). */
const SHELL_ENV = { PATH: `${BIN}:${Deno.env.get("PATH") ?? ""}` };

interface Ran {
  code: number;
  out: string;
  err: string;
}

/** Runs `line` with bash from the repo root, bounded by `timeoutMs`. */
async function sh(line: string, timeoutMs: number, env: Record<string, string> = {}): Promise<Ran> {
  const r = await new Deno.Command("bash", {
    args: ["-c", line],
    cwd: REPO_ROOT,
    env: { ...SHELL_ENV, ...env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(timeoutMs),
  }).output();
  const dec = new TextDecoder();
  return { code: r.code, out: dec.decode(r.stdout), err: dec.decode(r.stderr) };
}

/** make's environment: the Deno running the tests (npx's on CI) and TLS_PASS_BIN when set. */
function makeEnv(): Record<string, string> {
  const bin = Deno.env.get("TLS_PASS_BIN");
  // an empty TLS_PASS_BIN tells make to drop a binary linked by an earlier run
  return { DENO: Deno.execPath(), TLS_PASS_BIN: bin ?? "" };
}

async function ensureDevCerts(): Promise<void> {
  try {
    await Deno.stat(join(REPO_ROOT, "settings/dev/certs/root.crt"));
    await Deno.stat(join(REPO_ROOT, "settings/dev/directory/pins.yml"));
  } catch {
    const r = await runCli(["certs", "--force"]);
    assert.equal(r.code, 0, r.stderr);
  }
}

Deno.test("seed: make, make examples, the five commands, the curl and the parallel stress line", async (t) => {
  await using _ports = await lockDevPorts();
  await ensureDevCerts();

  await t.step("make writes bin/tls-pass, bin/proxy and bin/eps", async () => {
    const r = await sh("make", 180_000, makeEnv());
    assert.equal(r.code, 0, `${r.out}\n${r.err}`);
    // the one line that says which bin/tls-pass this is (none when it is up to date)
    assert.match(
      r.out,
      /^$|make: bin\/tls-pass (compiled|is .* \(TLS_PASS_BIN\))|make: deno compile cannot download its runtime here, so bin\/ gets launchers that run "[^"]+ run -A cli\.ts"/,
    );
    for (const name of ["tls-pass", "proxy", "eps"]) {
      const info = await Deno.stat(join(BIN, name));
      assert.ok((info.mode ?? 0) & 0o100, `bin/${name} is executable`);
    }
    if (Deno.env.get("TLS_PASS_BIN")) {
      assert.equal(
        await Deno.realPath(join(BIN, "tls-pass")),
        await Deno.realPath(Deno.env.get("TLS_PASS_BIN")!),
      );
    }
  });

  await t.step("make examples writes bin/internal-server", async () => {
    const r = await sh("make examples", 180_000, makeEnv());
    assert.equal(r.code, 0, `${r.out}\n${r.err}`);
    assert.ok(((await Deno.stat(join(BIN, "internal-server"))).mode ?? 0) & 0o100);
  });

  await t.step("--help works under each name and names the command as called", async () => {
    const cases: [string, RegExp][] = [
      ["proxy --help", /^Usage: proxy run public\|private /],
      ["proxy run public --help", /^Usage: proxy run public\|private /],
      ["eps --help", /^Usage: eps server run /],
      ["eps server run --help", /^Usage: eps server run /],
      ["internal-server --help", /^Usage: internal-server /],
      [
        "tls-pass --help",
        /^tls-pass \S+: TLS-passthrough reverse tunnel\n\nUsage:\n {2}tls-pass run /,
      ],
    ];
    for (const [line, usage] of cases) {
      const r = await sh(line, 30_000);
      assert.equal(r.code, 0, `${line}: ${r.err}`);
      assert.match(r.out, usage, line);
    }
    const wrong = await sh("proxy run eps", 30_000);
    assert.equal(wrong.code, 2);
    assert.match(wrong.err, /^proxy: Unknown role "eps": expected public or private\n/);
    assert.match(wrong.err, /Run "proxy --help" for more\./);
  });

  const roles: SpawnedCli[] = [];
  try {
    await t.step("the seed's five commands start, each prints its ready line", async () => {
      // all at once, in the seed's order: a role whose peer is not up yet waits for it
      const started = await Promise.allSettled(
        SEED_COMMANDS.map((line) =>
          spawnCli([line], { command: ["bash", "-c", line], env: SHELL_ENV, timeoutMs: 60_000 })
        ),
      );
      for (const s of started) if (s.status === "fulfilled") roles.push(s.value);
      for (const s of started) if (s.status === "rejected") throw s.reason;
      assert.deepEqual(
        roles.map((r) => r.ready.role),
        ["internal-server", "public", "private", "eps", "eps"],
      );
      // bash execs the launcher, which execs tls-pass: the ready line's pid is the child's own
      for (const r of roles) assert.equal(r.ready.pid, r.child.pid);
    });

    await t.step("the seed's curl answers success", async () => {
      const r = await sh(SEED_CURL, 30_000);
      assert.equal(r.code, 0, r.err);
      assert.equal(r.out, ANSWER);
    });

    await t.step("the seed's stress line (seq 1 200): every answer a success", async () => {
      const n = 200;
      const started = performance.now();
      const r = await sh(stressLine(n), 120_000);
      const seconds = (performance.now() - started) / 1000;
      // parallel's exit code is the number of failed curls
      assert.equal(r.code, 0, r.err.slice(-2000));
      // 25 curls at once and no newline after an answer: answers share lines, so count them
      assert.equal(r.out.split(ANSWER).length - 1, n, r.out.slice(0, 2000));
      assert.equal(r.out.replaceAll(ANSWER, "").trim(), "", "nothing but answers");
      // deno-lint-ignore no-console
      console.log(
        `seed stress: ${n} requests in ${seconds.toFixed(1)} s = ${
          (n / seconds).toFixed(0)
        } requests/s, 0 failures`,
      );
    });

    await t.step("SIGTERM to each PID stops it with exit 0", async () => {
      for (const role of roles.splice(0).reverse()) {
        const status = await role.stop("SIGTERM");
        assert.equal(status.code, 0, `${role.ready.role} exited ${status.code}:\n${role.stderr()}`);
      }
    });
  } finally {
    await Promise.all(roles.map((r) => r.stop("SIGTERM")));
  }
});
