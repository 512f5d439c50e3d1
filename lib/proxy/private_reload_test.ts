import assert from "node:assert/strict";
import { getLogger } from "@logtape/logtape";
import { SettingsError } from "../errors.ts";
import { PRIVATE_DEFAULTS, type PrivateSettings } from "../settings/private.ts";
import { appliedChanges, reloadPrivate, restartOnlyChanges } from "./private_reload.ts";

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
  endpoints: { "public-proxy-1": { hostname: "127.0.0.1", port: 9999 } },
  announcements: [],
  pool: { ...PRIVATE_DEFAULTS.pool },
};
const log = getLogger(["test"]);

Deno.test("reload diff names the restart-only keys and the applied ones", () => {
  const next: PrivateSettings = {
    ...BASE,
    sockets: "deno",
    endpoints: { "public-proxy-1": { hostname: "127.0.0.1", port: 9998 } },
    graceMs: 1,
    pool: { ...BASE.pool, maxIdle: 4 },
    eps: { ...BASE.eps, callTimeoutMs: 1000 },
  };
  assert.deepEqual(restartOnlyChanges(BASE, next).map((l) => l.split(":")[0]), [
    "endpoints",
    "sockets",
  ]);
  assert.deepEqual(appliedChanges(BASE, next), [
    "grace_ms: 5000 → 1",
    "pool.max_idle: 32 → 4",
    "eps: changed (new links and calls use it)",
  ]);
  assert.deepEqual(restartOnlyChanges(BASE, { ...BASE }), []);
  assert.deepEqual(appliedChanges(BASE, { ...BASE }), []);
});

Deno.test("reload refuses a SettingsError with its lines, and restart-only keys, applying nothing", async () => {
  let applied = 0;
  const target = { settings: BASE, apply: () => (applied++, Promise.resolve([])) };
  const bad = await reloadPrivate(target, () => {
    throw new SettingsError("p.yml", ["p.yml: grace_ms: must be an integer"]);
  }, log);
  assert.deepEqual([bad.ok, bad.problems], [false, ["p.yml: grace_ms: must be an integer"]]);
  const restart = await reloadPrivate(
    target,
    () => Promise.resolve({ ...BASE, operator: "other" }),
    log,
  );
  assert.equal(restart.ok, false);
  assert.match(restart.problems[0]!, /^operator: cannot change without a restart/);
  assert.equal(applied, 0);
  const ok = await reloadPrivate(
    { settings: BASE, apply: () => Promise.resolve(["announcements: added x"]) },
    () => Promise.resolve({ ...BASE, retryMs: 7 }),
    log,
  );
  assert.deepEqual([ok.ok, ok.applied], [true, ["retry_ms: 200 → 7", "announcements: added x"]]);
  assert.ok(Date.parse(ok.at) > 0);
});
