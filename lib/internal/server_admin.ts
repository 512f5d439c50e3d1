/**
 * The internal server's metrics and `/status` (docs/architecture.md, "The admin endpoint"):
 * requests answered, by status code.
 * @module
 */
import { counterOf } from "../admin/metrics.ts";
import { RoleAdmin } from "../admin/role_admin.ts";
import type { AdminSource } from "../admin/server.ts";
import { formatHostPort, type HostPort } from "../role.ts";

export class InternalServerAdmin extends RoleAdmin {
  readonly answered = new Map<string, number>();
  addr: HostPort | undefined;

  constructor() {
    super("internal-server", undefined);
    this.info();
    counterOf(
      this.registry,
      "tls_pass_http_requests_total",
      "Requests the internal server answered, by status code",
      ["code"],
      () => [...this.answered].map(([code, n]) => [{ code }, n] as const),
    );
  }

  count(status: number): void {
    const k = String(status);
    this.answered.set(k, (this.answered.get(k) ?? 0) + 1);
  }

  source(): AdminSource {
    const ready = () =>
      this.addr === undefined
        ? { ready: false, problems: ["starting"] }
        : { ready: true, problems: [] };
    return {
      role: "internal-server",
      registry: this.registry,
      ready,
      status: () =>
        this.document(ready(), { listen: this.addr ? formatHostPort(this.addr) : "" }, [{
          title: "Requests by status",
          columns: ["status", "count"],
          rows: [...this.answered],
          empty: "no request yet",
        }], { requests: Object.fromEntries(this.answered) }),
    };
  }
}
