/**
 * What every role's admin endpoint shares (docs/architecture.md, "The admin endpoint"): the
 * registry with the process metrics, the common part of `/status`, and starting the endpoint when
 * `admin_listen` is set.
 * @module
 */
import denoJson from "../../deno.json" with { type: "json" };
import { type AdminServer, type AdminSource, startAdmin } from "./server.ts";
import { counterOf, gaugeOf, infoGauge, newRegistry, type Registry } from "./metrics.ts";
import type { CallCounts } from "./eps_calls.ts";
import { reloadTable, type StatusDocument, type StatusTable } from "./status.ts";
import type { HostPort, ReloadResult } from "../role.ts";

export const VERSION: string = denoJson.version;

/** What a role's Reloader tells its admin (lib/settings/diff.ts). */
export interface ReloadHistory {
  readonly last: ReloadResult | null;
  readonly counts: { readonly applied: number; readonly refused: number };
}

/** The common part of a role's admin: registry, start time, readiness, the last reload. */
export class RoleAdmin {
  readonly registry: Registry;
  readonly startedAt = Date.now();
  /** The role's reloads (set once the role has its Reloader). */
  reloads: ReloadHistory | undefined;

  constructor(readonly role: string, readonly operator: string | undefined) {
    this.registry = newRegistry();
    counterOf(
      this.registry,
      "tls_pass_reloads_total",
      "SIGHUP reloads, by result (applied, refused)",
      ["result"],
      () => {
        const c = this.reloads?.counts ?? { applied: 0, refused: 0 };
        return [[{ result: "applied" }, c.applied], [{ result: "refused" }, c.refused]];
      },
      true,
    );
  }

  get lastReload(): ReloadResult | null {
    return this.reloads?.last ?? null;
  }

  /** Sets `tls_pass_info` (role, version, operator and `extra`, e.g. the data-plane driver). */
  info(extra: Record<string, string> = {}): void {
    const labels: Record<string, string> = { role: this.role, version: VERSION, ...extra };
    if (this.operator !== undefined) labels.operator = this.operator;
    infoGauge(this.registry, labels);
  }

  /** A `/status` document from the role's parts. */
  document(
    ready: { ready: boolean; problems: string[] },
    summary: Record<string, string | number>,
    tables: StatusTable[],
    details: Record<string, unknown>,
  ): StatusDocument {
    const doc: StatusDocument = {
      role: this.role,
      version: VERSION,
      pid: Deno.pid,
      startedAt: new Date(this.startedAt).toISOString(),
      uptimeS: Math.round((Date.now() - this.startedAt) / 1000),
      ready: ready.ready,
      readyProblems: ready.problems,
      summary,
      tables: [...tables, reloadTable(this.lastReload)],
      lastReload: this.lastReload,
      ...details,
    };
    if (this.operator !== undefined) doc.operator = this.operator;
    return doc;
  }
}

/** What both proxies measure of their EPS link: whether it is up, the calls they made on it. */
export function epsLinkMetrics(
  registry: Registry,
  eps: { readonly attached: boolean },
  calls: CallCounts,
): void {
  gaugeOf(registry, "tls_pass_links_up", "Links up: this proxy's link to its EPS", ["peer"], () => [
    [{ peer: "eps" }, eps.attached ? 1 : 0],
  ]);
  counterOf(
    registry,
    "tls_pass_eps_calls_total",
    "EPS calls this proxy made, by method and result code",
    ["method", "code"],
    () => calls.rows(),
  );
}

/** Starts the admin endpoint when `listen` is set; undefined otherwise. */
export function openAdmin(
  listen: HostPort | undefined,
  source: AdminSource,
  signal?: AbortSignal,
): Promise<AdminServer | undefined> {
  return listen === undefined ? Promise.resolve(undefined) : startAdmin(listen, source, signal);
}
