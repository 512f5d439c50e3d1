import assert from "node:assert/strict";
import { join } from "node:path";
import { devRoleCopy, EPS_BLOCK, problemsOf, withDir } from "./_proxy_fixtures.ts";
import { loadPrivateSettings } from "./private.ts";

Deno.test("loadPrivateSettings() reads announcements and defaults", async () => {
  await withDir(async (dir) => {
    await Deno.writeTextFile(
      join(dir, "settings.yml"),
      `operator: private-proxy-1
${EPS_BLOCK}announce_to: [public-proxy-1]
endpoints: {public-proxy-1: 127.0.0.1:9999}
announcements:
  - {domain: Test.Internal-Server.local, internal: 127.0.0.1:8888}
  - {domain: "*.wild.local", internal: 127.0.0.1:8889, expires_in_ms: 7200000}
`,
    );
    const s = await loadPrivateSettings([join(dir, "settings.yml")]);
    assert.deepEqual(s.announceTo, ["public-proxy-1"]);
    assert.deepEqual(s.endpoints, { "public-proxy-1": [{ hostname: "127.0.0.1", port: 9999 }] });
    assert.deepEqual(s.announcements, [
      {
        domain: "test.internal-server.local",
        internal: { hostname: "127.0.0.1", port: 8888 },
        expiresInMs: 1_800_000,
      },
      {
        domain: "*.wild.local",
        internal: { hostname: "127.0.0.1", port: 8889 },
        expiresInMs: 7_200_000,
      },
    ]);
    assert.equal(s.reannounceIntervalMs, 600_000);
    assert.equal(s.dialTimeoutMs, 5000);
    assert.equal(s.connectTimeoutMs, 5000);
    assert.deepEqual(s.pool, { enabled: true, minIdle: 0, maxIdle: 32, idleTimeoutMs: 30_000 });
  });
});

Deno.test("loadPrivateSettings() reports every problem at once", async () => {
  await withDir(async (dir) => {
    await Deno.writeTextFile(
      join(dir, "settings.yml"),
      `operator: private-proxy-1
${EPS_BLOCK}announce_to: [public-proxy-1]
endpoints: {other-proxy: 127.0.0.1:9999}
reannounce_interval_ms: 60000
announcements:
  - {domain: "bad name", internal: 127.0.0.1:8888}
  - {domain: a.local, internal: 8888, expires_in_ms: 1000}
  - {domain: a.local, internal: 127.0.0.1:1, extra: 1}
pool: {enabled: maybe, min_idle: 8, max_idle: 4, idle_timeout_ms: 10, size: 3}
`,
    );
    const text = problemsOf(await loadPrivateSettings([join(dir, "settings.yml")]).catch((e) => e));
    for (
      const part of [
        'endpoints.other-proxy: operator "other-proxy" is not in announce_to',
        "endpoints.public-proxy-1: is required",
        "announcements[0].domain: must be a host name",
        "announcements[1].internal: must be",
        "announcements[1].expires_in_ms: 1000 must exceed reannounce_interval_ms",
        "announcements[2].extra: unknown key",
        'announcements[2].domain: "a.local" is announced twice',
        "pool.enabled: must be",
        "pool.idle_timeout_ms: must be",
        "pool.size: unknown key",
        "pool.min_idle: 8 exceeds pool.max_idle (4)",
      ]
    ) assert.ok(text.includes(part), `missing "${part}" in:\n${text}`);
  });
});

Deno.test("loadPrivateSettings() accepts the dev settings of private-proxy-1", async () => {
  await withDir(async (dir) => {
    const s = await loadPrivateSettings([await devRoleCopy(dir, "private-proxy-1")]);
    assert.equal(s.operator, "private-proxy-1");
    assert.deepEqual(s.announceTo, ["public-proxy-1"]);
    assert.deepEqual(s.endpoints, { "public-proxy-1": [{ hostname: "127.0.0.1", port: 9999 }] });
    assert.deepEqual(s.announcements.map((a) => a.domain), ["test.internal-server.local"]);
    assert.deepEqual(s.eps.address, { hostname: "127.0.0.1", port: 7776 });
  });
});

Deno.test("loadPrivateSettings() reads proxy_protocol per announcement, v1 or v2 only", async () => {
  await withDir(async (dir) => {
    const file = join(dir, "settings.yml");
    const write = (pp: string) =>
      Deno.writeTextFile(
        file,
        `operator: private-proxy-1
${EPS_BLOCK}announce_to: [public-proxy-1]
endpoints: {public-proxy-1: 127.0.0.1:9999}
announcements:
  - {domain: a.local, internal: 127.0.0.1:8888, proxy_protocol: v1}
  - {domain: b.local, internal: 127.0.0.1:8889, proxy_protocol: ${pp}}
  - {domain: c.local, internal: 127.0.0.1:8890}
`,
      );
    await write("v2");
    const s = await loadPrivateSettings([file]);
    assert.deepEqual(s.announcements.map((a) => a.proxyProtocol), ["v1", "v2", undefined]);
    assert.equal("proxyProtocol" in s.announcements[2]!, false);
    for (const bad of ["v3", "true", "V1", "2"]) {
      await write(bad);
      const text = problemsOf(await loadPrivateSettings([file]).catch((e) => e));
      assert.ok(
        text.includes(`${file}: announcements[1].proxy_protocol: `) &&
          text.includes("must be v1 or v2 (or absent: no PROXY protocol header)"),
        text,
      );
    }
  });
});

Deno.test("loadPrivateSettings() reads endpoints as one address or a list (one per replica)", async () => {
  await withDir(async (dir) => {
    const file = join(dir, "settings.yml");
    const write = (endpoints: string) =>
      Deno.writeTextFile(
        file,
        `operator: private-proxy-1
${EPS_BLOCK}announce_to: [public-proxy-1, public-proxy-2]
endpoints: ${endpoints}
announcements:
  - {domain: a.local, internal: 127.0.0.1:8888}
`,
      );
    await write(
      "{public-proxy-1: [127.0.0.1:9999, 'tunnel.example.com:9998'], public-proxy-2: 127.0.0.1:7}",
    );
    const s = await loadPrivateSettings([file]);
    assert.deepEqual(s.endpoints, {
      "public-proxy-1": [
        { hostname: "127.0.0.1", port: 9999 },
        { hostname: "tunnel.example.com", port: 9998 },
      ],
      "public-proxy-2": [{ hostname: "127.0.0.1", port: 7 }],
    });
    await write("{public-proxy-1: [], public-proxy-2: [127.0.0.1:7, 127.0.0.1:7, 9]}");
    const text = problemsOf(await loadPrivateSettings([file]).catch((e) => e));
    for (
      const part of [
        "endpoints.public-proxy-1: must list 1 to 64 addresses, got 0 (or be one address)",
        'endpoints.public-proxy-2[1]: "127.0.0.1:7" is listed twice',
        "endpoints.public-proxy-2[2]: must be",
      ]
    ) assert.ok(text.includes(part), `missing "${part}" in:\n${text}`);
  });
});
