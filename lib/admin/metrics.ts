/**
 * The metrics of a role (docs/architecture.md, "Metrics"; README.md lists the families). Built on
 * prom-client's registry and exposition. The data plane never touches the registry: the control
 * plane feeds {@linkcode ProxyMetrics.onEvent} with the data plane's events, which only bumps
 * plain numbers and observes the set-up phases; everything else (gauges, per-name counts, pool
 * sizes, links) is read from the control plane at scrape time through `collect` callbacks.
 * @module
 */
import client from "prom-client";
import type { DataEvent, EndReason, Phases } from "../dataplane/mod.ts";
import { reapedBy } from "../dataplane/mod.ts";

export type Registry = client.Registry;

/** Buckets of the set-up phase histograms, in seconds: 100 µs to 10 s. */
export const PHASE_BUCKETS = [
  0.0001,
  0.00025,
  0.0005,
  0.001,
  0.0025,
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
  10,
];
/** Buckets of the connection lifetime histogram, in seconds: 1 ms to 1 day. */
export const LIFETIME_BUCKETS = [0.001, 0.01, 0.1, 1, 10, 60, 300, 1800, 3600, 21600, 86400];

type Labels = Record<string, string>;
/** Rows of a labelled gauge or counter at scrape time. */
export type Rows = Iterable<readonly [Labels, number]>;

/** A registry with the process metrics (CPU, memory, event loop lag, …). */
export function newRegistry(): Registry {
  const registry = new client.Registry();
  client.collectDefaultMetrics({ register: registry, eventLoopMonitoringPrecision: 1000 });
  return registry;
}

/** Registers `tls_pass_info{…} 1`: what this process is. */
export function infoGauge(registry: Registry, info: Labels): void {
  const g = new client.Gauge({
    name: "tls_pass_info",
    help: "This process: its role, operator, version and data-plane driver (always 1)",
    labelNames: Object.keys(info),
    registers: [registry],
  });
  g.set(info, 1);
}

/** Registers a gauge whose rows are read at scrape time. */
export function gaugeOf(
  registry: Registry,
  name: string,
  help: string,
  labelNames: readonly string[],
  rows: () => Rows,
): void {
  new client.Gauge({
    name,
    help,
    labelNames,
    registers: [registry],
    collect() {
      this.reset();
      for (const [labels, v] of rows()) this.set(labels, v);
    },
  });
}

/**
 * Registers a counter whose (monotonic) totals are read at scrape time. Rows at 0 are left out
 * (a label set appears with its first count) unless `zeros`: for a fixed, small label set.
 */
export function counterOf(
  registry: Registry,
  name: string,
  help: string,
  labelNames: readonly string[],
  rows: () => Rows,
  zeros = false,
): void {
  new client.Counter({
    name,
    help,
    labelNames,
    registers: [registry],
    collect() {
      this.reset();
      // a series without labels shows from the start, at 0 (so a rate() sees its first rise)
      for (const [labels, v] of rows()) {
        if (v > 0 || zeros || Object.keys(labels).length === 0) this.inc(labels, v);
      }
    },
  });
}

/** Rows from a Map of totals keyed by one label. */
export function rowsOf(label: string, m: ReadonlyMap<string, number>): Rows {
  return [...m].map(([k, v]) => [{ [label]: k }, v] as const);
}

function bump(m: Map<string, number>, key: string, by = 1): void {
  m.set(key, (m.get(key) ?? 0) + by);
}

/** The public port's refusals of a client before it was routed. */
const CLIENT_REFUSALS: ReadonlySet<string> = new Set([
  "connections",
  "bad-hello",
  "bad-proxy-header",
  "health-check",
  "hello-timeout",
  "unknown-name",
  "pending-total",
  "pending-operator",
  "pending-client",
  "denied",
  "client-connections",
  "client-rate",
  "name-denied",
  "name-pending",
  "name-rate",
]);

/** The private port's refusals: of dial-backs, not of clients. */
const DIAL_BACK_REFUSALS: ReadonlySet<string> = new Set([
  "dial-backs",
  "bad-token",
  "token-timeout",
  "pool-full",
]);

/** How a splice ended, as a metric label. */
export function endLabel(r: EndReason): string {
  const reaped = reapedBy(r);
  if (reaped !== null) return reaped;
  return r.kind === "error" ? `${r.side}-error` : r.kind;
}

/** Seconds between two phase stamps (ms), or undefined when either did not happen. */
function span(from: number, to: number): number | undefined {
  return from > 0 && to >= from ? (to - from) / 1000 : undefined;
}

/**
 * What a proxy counts from its data plane's events. `nameOf` maps a connection's domain to the
 * announced name it matched (a wildcard's clients count under the wildcard), or undefined.
 */
export class ProxyMetrics {
  /** Connections accepted: routed or refused (a client still sending its hello is not counted yet). */
  accepted = 0;
  /** Splices set up. */
  piped = 0;
  readonly refused = new Map<string, number>();
  /** Public: dial-backs refused on the private port, by reason. */
  readonly dialBacksRefused = new Map<string, number>();
  readonly ended = new Map<string, number>();
  bytesUp = 0;
  bytesDown = 0;
  /** Splices set up per announced name. */
  readonly perName = new Map<string, number>();
  /** Public: clients served from an idle pooled dial-back, per private operator. */
  readonly poolHits = new Map<string, number>();
  /** Public: clients that needed a notice (no idle pooled dial-back), per private operator. */
  readonly poolMisses = new Map<string, number>();
  /** Public: waiting clients sent to another instance, by reason (docs/architecture.md, "Re-dispatch"). */
  readonly redispatches = new Map<string, number>();
  readonly #hello: client.Histogram;
  readonly #dialBack: client.Histogram<"via">;
  readonly #internal: client.Histogram;
  readonly #setupTotal: client.Histogram<"via">;
  readonly #lifetime: client.Histogram<"via">;

  constructor(
    readonly registry: Registry,
    readonly role: "public" | "private",
    readonly nameOf: (domain: string) => string | undefined,
  ) {
    const h = (name: string, help: string, labelNames: string[] = [], buckets = PHASE_BUCKETS) =>
      new client.Histogram({ name, help, labelNames, buckets, registers: [registry] });
    this.#hello = h(
      "tls_pass_hello_read_seconds",
      "Public: from accept to a complete ClientHello",
    );
    this.#dialBack = h(
      "tls_pass_dial_back_wait_seconds",
      "Public: from the complete ClientHello (routed in the same turn) to the dial-back (via=pool: taken at once; via=notice: the notice's round trip and the dial). Private: from the notice to the dial-back connected with its token written",
      ["via"],
    );
    this.#internal = h(
      "tls_pass_internal_connect_seconds",
      "Private: connecting the internal server",
    );
    this.#setupTotal = h(
      "tls_pass_setup_seconds",
      "From accept (public) or the notice or pooled client (private) to bytes flowing both ways",
      ["via"],
    );
    this.#lifetime = h(
      "tls_pass_connection_duration_seconds",
      "Lifetime of a spliced connection, from accept to close",
      ["via"],
      LIFETIME_BUCKETS,
    );
    counterOf(
      registry,
      "tls_pass_connections_accepted_total",
      "Connections accepted: routed or refused (public: clients; private: notices accepted and pooled clients)",
      [],
      () => [[{}, this.accepted]],
    );
    counterOf(
      registry,
      "tls_pass_connections_refused_total",
      "Connections refused before a splice, by reason",
      ["reason"],
      () => rowsOf("reason", this.refused),
    );
    gaugeOf(
      registry,
      "tls_pass_connections_active",
      "Splices open now",
      [],
      () => [[{}, this.active]],
    );
    counterOf(
      registry,
      "tls_pass_connections_ended_total",
      "Splices that ended, by reason (done, idle-timeout, keepalive, client-error, …)",
      ["reason"],
      () => rowsOf("reason", this.ended),
    );
    counterOf(
      registry,
      "tls_pass_bytes_total",
      "Bytes relayed by ended splices: up (towards the internal server) and down",
      ["direction"],
      () => [[{ direction: "up" }, this.bytesUp], [{ direction: "down" }, this.bytesDown]],
    );
    counterOf(
      registry,
      "tls_pass_name_connections_total",
      "Splices set up per announced name (a wildcard's clients count under the wildcard)",
      ["domain"],
      () => {
        // a withdrawn name's series goes: the label set stays bounded by the announcements
        this.prune((name) => this.nameOf(name) === name);
        return rowsOf("domain", this.perName);
      },
    );
    if (role === "public") {
      counterOf(
        registry,
        "tls_pass_dial_backs_refused_total",
        "Dial-backs refused on the private port, by reason (bad-token, token-timeout, pool-full, dial-backs)",
        ["reason"],
        () => rowsOf("reason", this.dialBacksRefused),
      );
      counterOf(
        registry,
        "tls_pass_pool_hits_total",
        "Clients served from an idle pooled dial-back, per private operator",
        ["operator"],
        () => rowsOf("operator", this.poolHits),
      );
      counterOf(
        registry,
        "tls_pass_pool_misses_total",
        "Clients that needed a notice (no idle pooled dial-back), per private operator",
        ["operator"],
        () => rowsOf("operator", this.poolMisses),
      );
      counterOf(
        registry,
        "tls_pass_redispatches_total",
        "Waiting clients sent to another private instance with their ClientHello replayed, by reason (timer: no dial-back within redispatch_after_ms; failed: the notice failed; pooled: a pooled dial-back taken for the client closed before answering)",
        ["reason"],
        () => [
          [{ reason: "timer" }, this.redispatches.get("timer") ?? 0],
          [{ reason: "failed" }, this.redispatches.get("failed") ?? 0],
          [{ reason: "pooled" }, this.redispatches.get("pooled") ?? 0],
        ],
        true,
      );
    }
  }

  get active(): number {
    let ended = 0;
    for (const v of this.ended.values()) ended += v;
    return this.piped - ended;
  }

  /** Counts one event; cheap: plain numbers, and the phase histograms at a splice's end. */
  onEvent(e: DataEvent): void {
    switch (e.type) {
      case "needDialBack":
        // a re-dispatch is the same client: counted once, at its first notice
        // (a pooled dial-back that closed unanswered counts at its poolDropped)
        if (e.attempt > 1) {
          if (e.why !== "pooled") bump(this.redispatches, e.why ?? "timer");
          return;
        }
        this.accepted++;
        bump(this.poolMisses, e.operator);
        return;
      case "piped": {
        this.piped++;
        // a client that had a notice (attempt) was counted there
        const fresh = e.attempt === undefined;
        if (this.role === "private" || (e.via === "pool" && fresh)) this.accepted++;
        if (this.role === "public" && e.via === "pool" && fresh) bump(this.poolHits, e.operator);
        const name = this.nameOf(e.domain);
        if (name !== undefined) bump(this.perName, name);
        this.#setup(e.phases, e.via);
        return;
      }
      case "refused":
        // public: a client refused before its routing (a refusal after needDialBack was counted
        // there; the private port's refusals are dial-backs, not clients)
        if (
          this.role === "private" || CLIENT_REFUSALS.has(e.why) ||
          (e.why === "dial-back-closed" && e.attempt === undefined)
        ) this.accepted++;
        if (this.role === "public" && DIAL_BACK_REFUSALS.has(e.why)) {
          bump(this.dialBacksRefused, e.why);
        } else bump(this.refused, e.why);
        return;
      case "poolDropped":
        // public: a pooled dial-back taken for a client closed unanswered, the client tried again
        if (e.retry === true) bump(this.redispatches, "pooled");
        return;
      case "connectFailed":
        // private: a notice taken or a pooled client whose connect then failed
        this.accepted++;
        bump(this.refused, `${e.side}-connect-failed`);
        return;
      case "ended":
        bump(this.ended, endLabel(e.reason));
        this.bytesUp += e.up;
        this.bytesDown += e.down;
        this.#lifetime.observe({ via: e.via }, (e.phases.ended - e.phases.accepted) / 1000);
        return;
    }
  }

  /** The set-up phases of a splice, observed when it is piped (a long splice need not end first). */
  #setup(p: Phases, via: "pool" | "notice"): void {
    const observe = (h: client.Histogram<string>, v: number | undefined, labels?: Labels) => {
      if (v === undefined) return;
      if (labels) h.observe(labels, v);
      else h.observe(v);
    };
    const labels = { via };
    if (this.role === "public") {
      observe(this.#hello, span(p.accepted, p.hello));
      observe(this.#dialBack, span(p.hello, p.dialBack), labels);
    } else {
      observe(this.#dialBack, span(p.accepted, p.dialBack), labels);
      // the internal connect starts with the connection (with the dial-back, for a notice)
      observe(this.#internal, span(p.accepted, p.internal));
    }
    observe(this.#setupTotal, span(p.accepted, p.piped), labels);
  }

  /** Private: a notice refused by its checks (it never reached the data plane). */
  noticeRefused(): void {
    this.accepted++;
    bump(this.refused, "notice-refused");
  }

  /** Forgets the per-name totals of names no longer announced (bounded label sets). */
  prune(announced: (name: string) => boolean): void {
    for (const name of this.perName.keys()) if (!announced(name)) this.perName.delete(name);
  }
}
