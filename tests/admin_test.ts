/**
 * The admin endpoint of both proxies (docs/architecture.md, "The admin endpoint"): real traffic
 * through an in-process cluster, then /metrics checked by a strict exposition checker, /status,
 * /healthz, /readyz, the error answers, and `tls-pass status` printing the running cluster.
 */
import assert from "node:assert/strict";
import { Cluster, DOMAIN, HOLD_MS, LOOPBACK, until } from "./_cluster.ts";
import { parsePrometheus, sampleValue } from "./_prometheus.ts";
import { runCli } from "./_cli.ts";
import { formatHostPort, type HostPort } from "../lib/role.ts";
import { PRIVATE_DEFAULTS } from "../lib/settings/private.ts";

const REQUESTS = 5;

function includes(text: string, part: string): void {
  assert.ok(text.includes(part), `expected ${JSON.stringify(part)} in:\n${text}`);
}

function adminOf(h: { addrs: object }): HostPort {
  const a = (h.addrs as { admin?: HostPort }).admin;
  if (a === undefined) throw new Error("no admin address in the handle's addrs");
  return a;
}

async function get(admin: HostPort, path: string, init: RequestInit = {}) {
  const res = await fetch(`http://${formatHostPort(admin)}${path}`, {
    ...init,
    signal: AbortSignal.timeout(10_000),
  });
  return {
    status: res.status,
    type: res.headers.get("content-type") ?? "",
    body: await res.text(),
  };
}

Deno.test("admin: metrics, status, health and tls-pass status after real traffic", async () => {
  await using c = await Cluster.start({
    public: { adminListen: LOOPBACK },
    // min_idle: pooled dial-backs wait before the first client
    private: { adminListen: LOOPBACK, pool: { ...PRIVATE_DEFAULTS.pool, minIdle: 2 } },
  });
  const pub = adminOf(c.pub);
  const priv = adminOf(c.priv!);
  // pooled dial-backs idle a while first: that time is no part of a connection's set-up
  await until(() => c.pub.pool.idle("private-proxy-1") > 0, "a pooled dial-back idles");
  await new Promise((r) => setTimeout(r, HOLD_MS)); // the idle period under test, not a wait
  for (let i = 0; i < REQUESTS; i++) {
    const r = await c.request("/jsonrpc", JSON.stringify({ n: i, pad: "x".repeat(1000) }));
    assert.deepEqual(r.status, 200);
  }
  // one client for a name nobody announced: a refusal by reason
  await c.request("/", undefined, "nobody.example.com").catch(() => {});
  await until(
    () => c.pub.stats.ended >= REQUESTS && c.priv!.stats.ended >= REQUESTS,
    "splices end",
  );
  await until(() => c.pub.stats.unknownNames >= 1, "the unknown name refused");

  const m = await get(pub, "/metrics");
  assert.deepEqual(m.status, 200);
  assert.match(m.type, /^text\/plain; version=0\.0\.4/);
  const f = parsePrometheus(m.body);
  const v = (name: string, labels: Record<string, string> = {}): number => {
    const x = sampleValue(f, name, labels);
    if (x === undefined) throw new Error(`${name}${JSON.stringify(labels)} missing: public`);
    return x;
  };
  assert.ok(v("tls_pass_connections_accepted_total") >= REQUESTS + 1);
  assert.ok(v("tls_pass_connections_refused_total", { reason: "unknown-name" }) >= 1);
  assert.deepEqual(v("tls_pass_connections_active"), 0);
  assert.ok(v("tls_pass_connections_ended_total", { reason: "done" }) >= REQUESTS);
  assert.ok(v("tls_pass_bytes_total", { direction: "up" }) > REQUESTS * 1000);
  assert.ok(v("tls_pass_bytes_total", { direction: "down" }) > REQUESTS * 1000);
  assert.ok(v("tls_pass_name_connections_total", { domain: DOMAIN }) >= REQUESTS);
  assert.deepEqual(v("tls_pass_links_up", { peer: "eps" }), 1);
  assert.deepEqual(v("tls_pass_announcements", { operator: "private-proxy-1" }), 1);
  const hits = sampleValue(f, "tls_pass_pool_hits_total", { operator: "private-proxy-1" }) ?? 0;
  const misses = sampleValue(f, "tls_pass_pool_misses_total", { operator: "private-proxy-1" }) ??
    0;
  assert.deepEqual(hits + misses, REQUESTS);
  assert.equal(
    sampleValue(f, "tls_pass_eps_calls_total", { method: "incomingConnection", code: "ok" }) ?? 0,
    misses,
  );
  assert.deepEqual(v("tls_pass_hello_read_seconds_count"), REQUESTS);
  assert.deepEqual(
    (sampleValue(f, "tls_pass_setup_seconds_count", { via: "pool" }) ?? 0) +
      (sampleValue(f, "tls_pass_setup_seconds_count", { via: "notice" }) ?? 0),
    REQUESTS,
  );
  assert.ok(
    v("tls_pass_connection_duration_seconds_count", { via: misses > 0 ? "notice" : "pool" }) > 0,
  );
  assert.deepEqual(f.get("tls_pass_setup_seconds")?.type, "histogram");
  assert.ok(v("process_resident_memory_bytes") > 0);
  assert.deepEqual(v("tls_pass_info", { role: "public", operator: "public-proxy-1" }), 1);

  const pm = parsePrometheus((await get(priv, "/metrics")).body);
  const pv = (name: string, labels: Record<string, string> = {}): number => {
    const x = sampleValue(pm, name, labels);
    if (x === undefined) throw new Error(`${name}${JSON.stringify(labels)} missing: private`);
    return x;
  };
  assert.deepEqual(pv("tls_pass_connections_accepted_total"), REQUESTS);
  assert.deepEqual(pv("tls_pass_internal_connect_seconds_count"), REQUESTS);
  assert.ok(pv("tls_pass_eps_calls_total", { method: "announceConnections", code: "ok" }) >= 1);
  assert.deepEqual(pv("tls_pass_name_connections_total", { domain: DOMAIN }), REQUESTS);
  assert.ok(pv("tls_pass_pool_target", { operator: "public-proxy-1" }) >= 0);
  // plausible phases: loopback set-ups take milliseconds, not the pool's idle time
  for (const [m, get] of [[f, v], [pm, pv]] as const) {
    for (const via of ["pool", "notice"]) {
      const n = sampleValue(m, "tls_pass_setup_seconds_count", { via }) ?? 0;
      if (n === 0) continue;
      const mean = get("tls_pass_setup_seconds_sum", { via }) / n;
      assert.ok(mean < HOLD_MS / 2000, `mean set-up ${mean} s via ${via}`);
      const life = get("tls_pass_connection_duration_seconds_sum", { via }) /
        get("tls_pass_connection_duration_seconds_count", { via });
      assert.ok(life < HOLD_MS / 1000, `mean lifetime ${life} s via ${via}`);
    }
  }
  assert.ok(
    pv("tls_pass_internal_connect_seconds_sum") / REQUESTS < 0.1,
    "internal connects on loopback",
  );

  const s = await get(pub, "/status");
  assert.deepEqual(s.status, 200);
  const doc = JSON.parse(s.body);
  assert.deepEqual(doc.role, "public");
  assert.deepEqual(doc.ready, true);
  assert.deepEqual(doc.announcements.map((a: { domain: string }) => a.domain), [DOMAIN]);
  assert.deepEqual(doc.announcements[0].operator, "private-proxy-1");
  assert.deepEqual(doc.links, [{ peer: "eps", up: true }]);
  assert.deepEqual(doc.refusals["unknown-name"] >= 1, true);
  const ps = JSON.parse((await get(priv, "/status")).body);
  assert.deepEqual(ps.role, "private");
  assert.deepEqual(ps.announcements[0].domain, DOMAIN);

  assert.deepEqual((await get(pub, "/healthz")).status, 200);
  assert.deepEqual((await get(priv, "/readyz")).body, "ready\n");
  const missing = await get(pub, "/nope");
  assert.deepEqual(missing.status, 404);
  includes(missing.body, "/metrics");
  assert.deepEqual((await get(pub, "/metrics", { method: "POST" })).status, 405);
  const drainOnPublic = await get(pub, "/drain?domain=x", { method: "POST" });
  assert.deepEqual(drainOnPublic.status, 404);
  includes(drainOnPublic.body, "private proxy");
  assert.deepEqual((await get(priv, "/drain", { method: "POST" })).status, 400);
  const page = await get(pub, "/");
  assert.match(page.type, /^text\/html/);
  includes(page.body, "/status");

  const text = await runCli(["status", "--admin", formatHostPort(pub)]);
  assert.deepEqual(text.code, 0, text.stderr);
  includes(text.stdout, "tls-pass public public-proxy-1");
  includes(text.stdout, ": ready");
  assert.match(text.stdout, new RegExp(`\\n  ${DOMAIN.replaceAll(".", "\\.")} +private-proxy-1 `));
  includes(text.stdout, "Refusals since start, by reason");
  const json = await runCli(["status", "--admin", formatHostPort(priv), "--json"]);
  assert.deepEqual(json.code, 0, json.stderr);
  assert.deepEqual(JSON.parse(json.stdout).role, "private");
});

Deno.test("admin: tls-pass status names an endpoint it cannot reach", async () => {
  // a port nothing listens on: bind one, close it
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  const r = await runCli(["status", "--admin", `127.0.0.1:${port}`]);
  assert.deepEqual(r.code, 1);
  includes(r.stderr, `Cannot reach the admin endpoint 127.0.0.1:${port}`);
  const bad = await runCli(["status", "--admin", "nonsense"]);
  assert.deepEqual(bad.code, 2);
  includes(bad.stderr, 'Invalid --admin "nonsense"');
});
