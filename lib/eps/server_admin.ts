/**
 * The EPS server's metrics and `/status` (docs/architecture.md, "The admin endpoint"): its links
 * (each peer operator and the own proxy), the own proxy's attached instances
 * (docs/architecture.md, "Instances") and the calls it routed, by method and result code.
 * @module
 */
import { CallCounts } from "../admin/eps_calls.ts";
import { counterOf, gaugeOf } from "../admin/metrics.ts";
import { RoleAdmin } from "../admin/role_admin.ts";
import type { AdminSource } from "../admin/server.ts";
import type { StatusTable } from "../admin/status.ts";
import { formatHostPort, type HostPort } from "../role.ts";

/** One link as `/status` shows it. */
export interface LinkRow {
  peer: string;
  state: "up" | "connecting" | "down";
  /** Whether this EPS dials it (else the peer dials in). */
  dialled: boolean;
  /** Why the last dial failed. */
  reason: string;
}

/** One attached instance of the own proxy as `/status` shows it. */
export interface InstanceRow {
  /** "" for a link that has not attached (an older proxy, or one attaching now). */
  instance: string;
  remote: string;
  /** Calls routed to it and not answered yet. */
  inFlight: number;
  /** The methods it serves; undefined: not said (every method is sent to it). */
  serves: string[] | undefined;
  /** When it attached (ms since the epoch). */
  since: number;
}

export interface EpsAdminParts {
  addrs: Partial<Record<"links" | "proxy", HostPort>>;
  peers(): LinkRow[];
  /** The own proxy's instances, by name. */
  instances(): InstanceRow[];
}

export class EpsAdmin extends RoleAdmin {
  /** Calls routed here, by bare method and result code. */
  readonly calls = new CallCounts();
  parts!: EpsAdminParts;

  constructor(operator: string) {
    super("eps", operator);
  }

  attach(parts: EpsAdminParts): void {
    this.parts = parts;
    this.info();
    gaugeOf(
      this.registry,
      "tls_pass_links_up",
      "Links up: each peer operator, and proxy (the own proxy attached)",
      ["peer"],
      () => [
        ...parts.peers().map((p) => [{ peer: p.peer }, p.state === "up" ? 1 : 0] as const),
        [{ peer: "proxy" }, parts.instances().length > 0 ? 1 : 0] as const,
      ],
    );
    gaugeOf(
      this.registry,
      "tls_pass_eps_instances",
      "Instances of the own proxy attached (an unnamed link counts as one)",
      [],
      () => [[{}, parts.instances().length] as const],
    );
    counterOf(
      this.registry,
      "tls_pass_eps_calls_total",
      "Calls this EPS server routed, by bare method and result code (ok or the JSON-RPC error code)",
      ["method", "code"],
      () => this.calls.rows(),
    );
  }

  ready(): { ready: boolean; problems: string[] } {
    return this.parts === undefined
      ? { ready: false, problems: ["starting"] }
      : { ready: true, problems: [] };
  }

  status(): Record<string, unknown> {
    if (this.parts === undefined) return this.document(this.ready(), {}, [], {});
    const p = this.parts;
    const peers = p.peers();
    const instances = p.instances();
    const attached = instances.length > 0;
    const name = (i: InstanceRow) => i.instance || "(unnamed)";
    const calls = [...this.calls.rows()].map(([l, n]) => ({
      method: l.method ?? "",
      code: l.code ?? "",
      count: n,
    }));
    const tables: StatusTable[] = [
      {
        title: "Links",
        columns: ["peer", "state", "dialled", "last problem"],
        rows: [
          ["proxy (own)", attached ? "up" : "down", "no", ""],
          ...peers.map((x) => [x.peer, x.state, x.dialled ? "yes" : "no", x.reason]),
        ],
      },
      {
        title: "Instances of the own proxy",
        columns: ["instance", "remote", "calls in flight", "serves", "attached"],
        rows: instances.map((i) => [
          name(i),
          i.remote,
          i.inFlight,
          i.serves === undefined ? "any (not said)" : i.serves.join(", "),
          new Date(i.since).toISOString(),
        ]),
        empty: "no instance attached",
      },
      {
        title: "Calls routed",
        columns: ["method", "code", "count"],
        rows: calls.map((c) => [c.method, c.code, c.count]),
        empty: "no call yet",
      },
    ];
    const addrs = Object.fromEntries(
      Object.entries(p.addrs).map(([k, a]) => [k, formatHostPort(a)]),
    );
    const summary = {
      ...addrs,
      "links up": peers.filter((x) => x.state === "up").length,
      "proxy attached": attached ? "yes" : "no",
      "instances": instances.length,
    };
    return this.document(this.ready(), summary, tables, {
      addrs,
      links: [
        { peer: "proxy", up: attached },
        ...peers.map((x) => ({
          peer: x.peer,
          up: x.state === "up",
          state: x.state,
          dialled: x.dialled,
          reason: x.reason,
        })),
      ],
      instances: instances.map((i) => ({
        instance: i.instance,
        remote: i.remote,
        inFlight: i.inFlight,
        serves: i.serves ?? null,
        since: new Date(i.since).toISOString(),
      })),
      calls,
    });
  }

  source(): AdminSource {
    return {
      role: "eps",
      registry: this.registry,
      status: () => this.status(),
      ready: () => this.ready(),
    };
  }
}
