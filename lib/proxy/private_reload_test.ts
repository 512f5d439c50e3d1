import assert from "node:assert/strict";
import { ReloadRefused } from "../settings/diff.ts";
import { PRIVATE_DEFAULTS, type PrivateSettings } from "../settings/private.ts";
import { privateChanges } from "./private_reload.ts";

const BASE: PrivateSettings = {
  ...PRIVATE_DEFAULTS,
  operator: "private-proxy-1",
  eps: {
    address: { hostname: "127.0.0.1", port: 7776 },
    certificateFile: "c.crt",
    keyFile: "c.key",
    caCertificateFiles: ["root.crt"],
    callTimeoutMs: 5000,
    maxMessageBytes: 1 << 20,
  },
  announceTo: ["public-proxy-1"],
  endpoints: { "public-proxy-1": [{ hostname: "127.0.0.1", port: 9999 }] },
  announcements: [],
  pool: { ...PRIVATE_DEFAULTS.pool },
};

Deno.test("reload diff names the applied keys, and refuses the restart-only ones by name", () => {
  const next: PrivateSettings = {
    ...BASE,
    graceMs: 1,
    pool: { ...BASE.pool, maxIdle: 4 },
    eps: { ...BASE.eps, callTimeoutMs: 1000 },
    announcements: [{
      domain: "a.example.com",
      internal: { hostname: "127.0.0.1", port: 1 },
      expiresInMs: 1000,
      proxyProtocol: "v1",
    }],
  };
  // the announcements' lines (proxy_protocol among them: applied) come from their table, not from the diff
  assert.deepEqual(privateChanges(BASE, next).sort(), [
    "eps.call_timeout_ms: 5000 → 1000",
    "grace_ms: 5000 → 1",
    "pool.max_idle: 32 → 4",
  ]);
  assert.deepEqual(privateChanges(BASE, { ...BASE }), []);
  const restart: PrivateSettings = {
    ...next,
    sockets: "deno",
    endpoints: { "public-proxy-1": [{ hostname: "127.0.0.1", port: 9998 }] },
    pool: { ...BASE.pool, enabled: false },
    adminListen: { hostname: "127.0.0.1", port: 9 },
    instance: "renamed",
  };
  assert.throws(() => privateChanges(BASE, restart), (err: unknown) => {
    assert.ok(err instanceof ReloadRefused);
    assert.deepEqual(err.problems.map((l) => l.split(":")[0]).sort(), [
      "admin_listen",
      "endpoints.public-proxy-1",
      "instance",
      "pool.enabled",
      "sockets",
    ]);
    for (const p of err.problems) assert.match(p, /cannot change without a restart/);
    return true;
  });
});
