/**
 * What the metrics cost (docs/architecture.md, "Metrics"): `deno bench lib/admin/metrics_bench.ts`.
 * One connection's events through `ProxyMetrics.onEvent()` (what a W1 request adds to a proxy),
 * and one scrape of a registry with the families of a public proxy (what one GET /metrics costs).
 */
import type { DataEvent } from "../dataplane/mod.ts";
import { counterOf, gaugeOf, newRegistry, ProxyMetrics, rowsOf } from "./metrics.ts";

const phases = { accepted: 1, hello: 1.2, dialBack: 2, internal: 0, piped: 2.1, ended: 0 };
const piped: DataEvent = {
  type: "piped",
  conn: 1,
  connId: "abcde-1",
  via: "pool",
  operator: "private-proxy-1",
  domain: "test.internal-server.local",
  client: "127.0.0.1:50000",
  phases,
};
const ended: DataEvent = {
  ...piped,
  type: "ended",
  up: 700,
  down: 900,
  reason: { kind: "done" },
  phases: { ...phases, ended: 30 },
};
const names = new Set(["test.internal-server.local"]);

const registry = newRegistry();
const metrics = new ProxyMetrics(registry, "public", (d) => names.has(d) ? d : undefined);
// the scrape-time families of a public proxy with one operator and a few refusal reasons
gaugeOf(registry, "x_links_up", "links", ["peer"], () => [[{ peer: "eps" }, 1]]);
gaugeOf(registry, "x_pool_idle", "idle", ["operator"], () => [[{ operator: "a" }, 3]]);
counterOf(registry, "x_calls_total", "calls", ["method", "code"], () => [
  [{ method: "incomingConnection", code: "ok" }, 10],
  [{ method: "openPool", code: "ok" }, 4],
]);
counterOf(
  registry,
  "x_refused_total",
  "refused",
  ["reason"],
  () => rowsOf("reason", new Map([["unknown-name", 2], ["bad-hello", 1]])),
);

Deno.bench("one connection's events (piped, ended) through ProxyMetrics.onEvent()", () => {
  metrics.onEvent(piped);
  metrics.onEvent(ended);
});

Deno.bench("one scrape: registry.metrics() of a public proxy's families", async () => {
  await registry.metrics();
});
