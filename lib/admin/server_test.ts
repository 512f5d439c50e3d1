import assert from "node:assert/strict";
import client from "prom-client";
import { parsePrometheus } from "../../tests/_prometheus.ts";
import { type AdminSource, handleAdmin, startAdmin } from "./server.ts";

function source(over: Partial<AdminSource> = {}): AdminSource {
  const registry = new client.Registry();
  new client.Gauge({ name: "x_nan", help: "a NaN", registers: [registry] }).set(NaN);
  return {
    role: "public",
    registry,
    status: () => ({ role: "public" }),
    ready: () => ({ ready: false, problems: ["no link to its EPS"] }),
    ...over,
  };
}

const req = (path: string, method = "GET") => new Request(`http://admin${path}`, { method });

Deno.test("admin: /metrics spells NaN as the text format does (prom-client writes Nan)", async () => {
  const r = await handleAdmin(req("/metrics"), source());
  const text = await r.text();
  assert.match(text, /^x_nan NaN$/m);
  assert.ok(Number.isNaN(parsePrometheus(text).get("x_nan")!.samples[0]!.value));
});

Deno.test("admin: readiness, wrong methods and paths, drain on a role without it", async () => {
  const notReady = await handleAdmin(req("/readyz"), source());
  assert.equal(notReady.status, 503);
  assert.equal(await notReady.text(), "not ready: no link to its EPS\n");
  const post = await handleAdmin(req("/status", "POST"), source());
  assert.equal(post.status, 405);
  assert.equal(post.headers.get("allow"), "GET, HEAD");
  await post.body?.cancel();
  const get = await handleAdmin(req("/drain?domain=a"), source());
  assert.equal(get.status, 405);
  assert.equal(get.headers.get("allow"), "POST");
  await get.body?.cancel();
  const none = await handleAdmin(req("/drain?domain=a", "POST"), source());
  assert.equal(none.status, 404);
  assert.match(await none.text(), /only served by a private proxy \(this is public\)/);
  const missing = await handleAdmin(req("/nothing"), source());
  assert.equal(missing.status, 404);
  await missing.body?.cancel();
});

Deno.test("admin: POST /drain answers the drain's result, or 409 with its error", async () => {
  const calls: [string, boolean][] = [];
  const s = source({
    role: "private",
    drain: (domain, wait) => {
      calls.push([domain, wait]);
      if (domain === "nope.example") return Promise.reject(new RangeError("no announcement nope"));
      return Promise.resolve({ state: "drained" });
    },
    undrain: () => Promise.resolve({ state: "announced" }),
  });
  const ok = await handleAdmin(req("/drain?domain=a.example&wait=false", "POST"), s);
  assert.deepEqual(await ok.json(), {
    ok: true,
    domain: "a.example",
    result: { state: "drained" },
  });
  const bad = await handleAdmin(req("/drain?domain=nope.example", "POST"), s);
  assert.equal(bad.status, 409);
  assert.match((await bad.json()).error, /no announcement nope/);
  const noDomain = await handleAdmin(req("/undrain", "POST"), s);
  assert.equal(noDomain.status, 400);
  await noDomain.body?.cancel();
  const csrf = await handleAdmin(
    new Request("http://admin/drain?domain=a.example", {
      method: "POST",
      headers: { origin: "http://evil.example" },
    }),
    s,
  );
  assert.equal(csrf.status, 403);
  await csrf.body?.cancel();
  assert.deepEqual(calls, [["a.example", false], ["nope.example", true]]);
});

Deno.test("admin: a port in use is named as admin_listen", async () => {
  using l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  await assert.rejects(
    startAdmin({ hostname: "127.0.0.1", port }, source()),
    (err: unknown) => {
      assert.ok(err instanceof Deno.errors.AddrInUse);
      assert.match(err.message, new RegExp(`^admin_listen 127\\.0\\.0\\.1:${port}: `));
      return true;
    },
  );
});
