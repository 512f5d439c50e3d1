/**
 * The internal server through the CLI child process and real curl.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { parseAddr, runCli, spawnCli } from "./_cli.ts";

async function curl(args: string[]): Promise<{ code: number; out: string; err: string }> {
  const r = await new Deno.Command("curl", {
    args: ["--silent", "--show-error", "--max-time", "10", ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: r.code, out: dec.decode(r.stdout), err: dec.decode(r.stderr) };
}

Deno.test("internal-server answers real curl through the CLI and stops on SIGTERM", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tls-pass-internal-" });
  try {
    const certs = join(dir, "certs");
    const made = await runCli(["certs", "--out", certs]);
    assert.equal(made.code, 0, made.stderr);
    await Deno.writeTextFile(
      join(dir, "settings.yml"),
      "listen: 127.0.0.1:0\ncertificate_file: certs/internal-server.crt\nkey_file: certs/internal-server.key\n",
    );
    await using role = await spawnCli([
      "run",
      "internal-server",
      "--settings",
      join(dir, "settings.yml"),
    ]);
    assert.equal(role.ready.event, "ready");
    assert.equal(role.ready.role, "internal-server");
    const addr = Object.values(role.ready.addrs)[0]!;
    const { port } = parseAddr(addr);
    const base = [
      "--cacert",
      join(certs, "root.crt"),
      "--resolve",
      `test.internal-server.local:${port}:127.0.0.1`,
    ];
    const url = `https://test.internal-server.local:${port}/jsonrpc`;

    const get = await curl([...base, url]);
    assert.equal(get.code, 0, get.err);
    assert.equal(get.out, '{"message":"success"}');

    const echoUrl = `https://test.internal-server.local:${port}/echo`;
    const echo = await curl([...base, "--data", '{"b":[2,{"d":1,"c":0}],"a":1}', echoUrl]);
    assert.equal(echo.out, '{"a":1,"b":[2,{"c":0,"d":1}]}');

    const bad = await curl([
      ...base,
      "--data",
      "not json",
      "--write-out",
      "\n%{http_code}",
      echoUrl,
    ]);
    assert.equal(bad.out, '{"message":"bad request: POST a JSON object to /echo"}\n400');
    // GNU parallel's --data "{}" becomes --data 7: /jsonrpc answers success to any body
    const any = await curl([...base, "--data", "7", url]);
    assert.equal(any.out, '{"message":"success"}');

    const big = await curl([
      ...base,
      "--data-binary",
      `@${await bigFile(dir)}`,
      "--write-out",
      "\n%{http_code}",
      url,
    ]);
    assert.match(big.out, /\n413$/, big.err);

    // a name the certificate does not cover fails verification
    const wrong = await curl([
      "--cacert",
      join(certs, "root.crt"),
      "--resolve",
      `other.example.com:${port}:127.0.0.1`,
      `https://other.example.com:${port}/`,
    ]);
    assert.notEqual(wrong.code, 0);

    const started = performance.now();
    const status = await role.stop("SIGTERM");
    assert.equal(status.code, 0, role.stderr());
    assert.ok(performance.now() - started < 2000, "exits within 2 s of SIGTERM");
    assert.equal(await portOpen(port), false, "listener closed");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("internal-server stops on SIGINT with exit 0", async () => {
  await using role = await spawnCli([
    "run",
    "internal-server",
    "--settings",
    await plainSettings(),
  ]);
  const status = await role.stop("SIGINT");
  assert.equal(status.code, 0, role.stderr());
  assert.equal(status.signal, null);
});

async function plainSettings(): Promise<string> {
  const file = await Deno.makeTempFile({ prefix: "tls-pass-plain-", suffix: ".yml" });
  await Deno.writeTextFile(file, "listen: 127.0.0.1:0\ntls: false\n");
  return file;
}

async function bigFile(dir: string): Promise<string> {
  const path = join(dir, "big.json");
  await Deno.writeTextFile(path, `{"a":"${"x".repeat(1024 * 1024 + 10)}"}`);
  return path;
}

async function portOpen(port: number): Promise<boolean> {
  try {
    const c = await Deno.connect({ hostname: "127.0.0.1", port });
    c.close();
    return true;
  } catch {
    return false;
  }
}
