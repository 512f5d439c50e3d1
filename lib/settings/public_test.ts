import assert from "node:assert/strict";
import { join } from "node:path";
import { devRoleCopy, EPS_BLOCK, problemsOf, withDir } from "./_proxy_fixtures.ts";
import { loadPublicSettings, withInstance } from "./public.ts";

Deno.test("loadPublicSettings() fills defaults and resolves paths against the file", async () => {
  await withDir(async (dir) => {
    await Deno.writeTextFile(
      join(dir, "settings.yml"),
      `operator: public-proxy-1
public_listen: 127.0.0.1:4433
private_listen: 127.0.0.1:9999
${EPS_BLOCK}directory_dir: directory
store_path: state/announcements.jsonl
`,
    );
    const s = await loadPublicSettings([join(dir, "settings.yml")]);
    assert.equal(s.operator, "public-proxy-1");
    assert.deepEqual(s.publicListen, { hostname: "127.0.0.1", port: 4433 });
    assert.equal(s.privateEndpoint, undefined);
    assert.equal(s.eps.certificateFile, join(dir, "a.crt"));
    assert.equal(s.directoryDir, join(dir, "directory"));
    assert.deepEqual(s.store, { kind: "file", path: join(dir, "state/announcements.jsonl") });
    assert.equal(s.helloTimeoutMs, 10_000);
    assert.equal(s.maxClientHelloBytes, 65_536);
    assert.equal(s.dialBackTimeoutMs, 10_000);
    assert.equal(s.tokenTimeoutMs, 5000);
    assert.equal(s.maxPending, 4096);
    assert.equal(s.maxPendingPerOperator, 4096);
    assert.equal(s.maxPendingPerClient, 4096);
    assert.equal(s.graceMs, 5000);
    assert.equal(s.maxPooledPerOperator, 64);
    assert.equal(s.redispatchAfterMs, 1000);
    assert.equal(s.maxDispatches, 3);
  });
});

Deno.test("loadPublicSettings(): redispatch_after_ms must be below dial_back_timeout_ms", async () => {
  await withDir(async (dir) => {
    const file = join(dir, "settings.yml");
    const base = `operator: public-proxy-1
public_listen: 127.0.0.1:4433
private_listen: 127.0.0.1:9999
${EPS_BLOCK}directory_dir: directory
store: memory
`;
    await Deno.writeTextFile(
      file,
      `${base}dial_back_timeout_ms: 2000\nredispatch_after_ms: 2000\n`,
    );
    const text = problemsOf(await loadPublicSettings([file]).catch((e) => e));
    assert.match(text, /redispatch_after_ms: 2000 must be below dial_back_timeout_ms \(2000\)/);
    await Deno.writeTextFile(file, `${base}max_dispatches: 0\n`);
    assert.match(problemsOf(await loadPublicSettings([file]).catch((e) => e)), /max_dispatches:/);
    await Deno.writeTextFile(file, `${base}redispatch_after_ms: 250\nmax_dispatches: 1\n`);
    const s = await loadPublicSettings([file]);
    assert.deepEqual([s.redispatchAfterMs, s.maxDispatches], [250, 1]);
  });
});

Deno.test("loadPublicSettings() reports every problem at once", async () => {
  await withDir(async (dir) => {
    await Deno.writeTextFile(
      join(dir, "settings.yml"),
      `operator: Public Proxy
public_listen: nowhere
hello_timeout_ms: 0
store: s3
colour: blue
max_pooled_per_operator: -1
eps: {address: 127.0.0.1:1, certificate_file: missing.crt}
`,
    );
    const text = problemsOf(await loadPublicSettings([join(dir, "settings.yml")]).catch((e) => e));
    for (
      const part of [
        "operator: must be a lower-case host name",
        "public_listen: must be",
        "private_listen: is required",
        "hello_timeout_ms: must be",
        "store: must be one of",
        "colour: unknown key",
        "max_pooled_per_operator: must be",
        "eps.certificate_file: cannot read",
        "eps.key_file: is required",
        "directory_dir: is required",
      ]
    ) assert.ok(text.includes(part), `missing "${part}" in:\n${text}`);
  });
});

Deno.test("loadPublicSettings() accepts the dev settings of public-proxy-1", async () => {
  await withDir(async (dir) => {
    const s = await loadPublicSettings([await devRoleCopy(dir, "public-proxy-1")]);
    assert.equal(s.operator, "public-proxy-1");
    assert.deepEqual(s.publicListen, { hostname: "127.0.0.1", port: 4433 });
    assert.deepEqual(s.privateListen, { hostname: "127.0.0.1", port: 9999 });
    assert.equal(s.eps.certificateFile, join(dir, "certs", "public-proxy-1.crt"));
    assert.equal(s.directoryDir, join(dir, "directory"));
    assert.equal(s.store.kind, "file");
  });
});

Deno.test("loadPublicSettings(): accept_proxy_protocol is false by default, a boolean when set", async () => {
  await withDir(async (dir) => {
    const base = `operator: public-proxy-1
public_listen: 127.0.0.1:4433
private_listen: 127.0.0.1:9999
${EPS_BLOCK}directory_dir: directory
store_path: state/announcements.jsonl
`;
    const file = join(dir, "settings.yml");
    await Deno.writeTextFile(file, base);
    assert.equal((await loadPublicSettings([file])).acceptProxyProtocol, false);
    await Deno.writeTextFile(file, `${base}accept_proxy_protocol: true\n`);
    assert.equal((await loadPublicSettings([file])).acceptProxyProtocol, true);
    await Deno.writeTextFile(file, `${base}accept_proxy_protocol: "yes"\n`);
    await assert.rejects(
      loadPublicSettings([file]),
      (err: Error) =>
        err.message.includes(`${file}: accept_proxy_protocol: must be true or false, got "yes"`),
    );
  });
});

Deno.test("instance: from files it defaults to the host name tagged by the settings' paths, is checked when set", async () => {
  await withDir(async (dir) => {
    const base = `operator: public-proxy-1
public_listen: 127.0.0.1:4433
private_listen: 127.0.0.1:9999
${EPS_BLOCK}directory_dir: directory
store: memory
`;
    const file = join(dir, "settings.yml");
    await Deno.writeTextFile(file, base);
    // what `run` and a SIGHUP read (cli.ts: loadRoleSettings); in code the default is the host name
    const fromFiles = async (sources: string[]) =>
      withInstance(await loadPublicSettings(sources), sources).instance;
    assert.equal((await loadPublicSettings([file])).instance, undefined);
    const name = await fromFiles([file]);
    // the host name, tagged by the settings' paths: stable across restarts, distinct per folder
    const host = Deno.hostname().replace(/[^A-Za-z0-9._-]/g, "-");
    assert.match(name!, new RegExp(`^${host.slice(0, 57).replace(/[.]/g, "\\.")}-[0-9a-f]{6}$`));
    assert.equal(await fromFiles([file]), name, "the same name every time");
    // another source (a second file in the folder, as a second proxy's own would be)
    const second = join(dir, "second.yml");
    await Deno.copyFile(file, second);
    assert.notEqual(
      await fromFiles([second]),
      name,
      "other paths, another name",
    );
    assert.match(name!, /^[A-Za-z0-9._-]{1,64}$/);
    await Deno.writeTextFile(file, `${base}instance: replica_2.eu-west\n`);
    assert.equal((await loadPublicSettings([file])).instance, "replica_2.eu-west");
    for (const bad of ['"two words"', '""', "x".repeat(65), "7"]) {
      await Deno.writeTextFile(file, `${base}instance: ${bad}\n`);
      await assert.rejects(
        loadPublicSettings([file]),
        (err: Error) =>
          err.message.includes(`${file}: instance: must be 1–64 characters of A-Z a-z 0-9 . _ -`),
        bad,
      );
    }
  });
});

Deno.test("loadPublicSettings() reads the limits block and the allow/deny lists", async () => {
  await withDir(async (dir) => {
    const base = `operator: public-proxy-1
public_listen: 127.0.0.1:4433
private_listen: 127.0.0.1:9999
${EPS_BLOCK}directory_dir: directory
store: memory
`;
    const file = join(dir, "settings.yml");
    await Deno.writeTextFile(file, base);
    const d = await loadPublicSettings([file]);
    // every limit is off by default, and the lists are empty
    assert.deepEqual(d.limits, {
      maxConnectionsPerClient: 0,
      clientRate: 0,
      clientBurst: 0,
      maxPendingPerName: 0,
      nameRate: 0,
      nameBurst: 0,
    });
    assert.deepEqual([d.allow, d.deny], [[], []]);
    await Deno.writeTextFile(
      file,
      `${base}limits:
  max_connections_per_client: 256
  client_rate: 2.5
  max_pending_per_name: 1000
  name_rate: 500
  name_burst: 2000
allow: [10.0.0.0/8, "::1", 127.0.0.2]
deny: ["2001:DB8::/32"]
`,
    );
    const s = await loadPublicSettings([file]);
    assert.deepEqual(s.limits, {
      maxConnectionsPerClient: 256,
      clientRate: 2.5,
      clientBurst: 3, // one second's worth, rounded up
      maxPendingPerName: 1000,
      nameRate: 500,
      nameBurst: 2000,
    });
    assert.deepEqual(s.allow, ["10.0.0.0/8", "::1/128", "127.0.0.2/32"]);
    assert.deepEqual(s.deny, ["2001:db8::/32"]);
    await Deno.writeTextFile(
      file,
      `${base}limits:
  max_connections_per_client: -1
  client_rate: fast
  name_burst: 10
  per_name: 3
allow: [10.0.0.1/8, nope, 7]
deny: 10.0.0.0/8
`,
    );
    const text = problemsOf(await loadPublicSettings([file]).catch((e) => e));
    for (
      const part of [
        "settings.yml: limits.max_connections_per_client: must be an integer from 0 to 10000000, got -1",
        'limits.client_rate: must be a number of connections a second from 0 (off) to 1000000, got "fast"',
        "limits.name_burst: is only used with limits.name_rate above 0",
        "limits.per_name: unknown key",
        'allow[0]: "10.0.0.1/8" has bits set past its /8 prefix',
        'allow[1]: "nope" is not an IPv4 or IPv6 address',
        "allow[2]: must be a CIDR",
        'deny: must be a list, got "10.0.0.0/8"',
      ]
    ) assert.ok(text.includes(part), `missing "${part}" in:\n${text}`);
  });
});
