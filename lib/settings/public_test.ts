import assert from "node:assert/strict";
import { join } from "node:path";
import { devRoleCopy, EPS_BLOCK, problemsOf, withDir } from "./_proxy_fixtures.ts";
import { loadPublicSettings } from "./public.ts";

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
  });
});

Deno.test("loadPublicSettings() reports every problem at once", async () => {
  await withDir(async (dir) => {
    await Deno.writeTextFile(
      join(dir, "settings.yml"),
      `operator: Public Proxy
public_listen: nowhere
hello_timeout_ms: 0
store: redis
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
