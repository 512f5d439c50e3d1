/**
 * The public client machine's checks after routing (docs/architecture.md, "Admission"): the
 * announcement's `allow` and the name's rate, then the pending caps before a client waits.
 * @module
 */
import { parseAddress } from "../../wire/cidr.ts";
import { ALERT_INTERNAL_ERROR, ALERT_UNRECOGNIZED_NAME } from "../../wire/tls_alert.ts";
import type { Refusal } from "../events.ts";
import type { Engine } from "./engine.ts";

/**
 * The per-name checks of a client from `address` routed to `domain`: the announcement's `allow`
 * (refused as an unknown name would be: a client outside it cannot tell a protected name from an
 * unannounced one), then the name's rate. Returns refusal, alert, detail.
 */
export function admitName(
  e: Engine,
  domain: string,
  address: string,
  now: number,
): [Refusal, number, string] | undefined {
  const allow = e.routeAllow.get(domain);
  if (allow !== undefined) {
    const addr = parseAddress(address);
    if (addr === null || !allow.has(addr)) {
      return ["name-denied", ALERT_UNRECOGNIZED_NAME, `not in the allow of "${domain}"`];
    }
  }
  const a = e.admission;
  if (a.nameRate > 0 && !e.nameRates.take(domain, a.nameRate, a.nameBurst, now)) {
    return [
      "name-rate",
      ALERT_INTERNAL_ERROR,
      `over ${a.nameRate}/s, burst ${a.nameBurst}, for "${domain}" (name_rate)`,
    ];
  }
  return undefined;
}

/** The pending cap a client of `operator`, `domain` and `host` would go over by waiting, if any. */
export function pendingCap(
  e: Engine,
  operator: string,
  domain: string,
  host: string,
): Refusal | undefined {
  const l = e.limits;
  const perName = e.admission.maxPendingPerName;
  if (perName > 0 && (e.pendingPerName.get(domain) ?? 0) >= perName) return "name-pending";
  if (e.waiting.size >= l.maxPending) return "pending-total";
  if ((e.pendingPerOperator.get(operator) ?? 0) >= l.maxPendingPerOperator) {
    return "pending-operator";
  }
  if ((e.pendingPerClient.get(host) ?? 0) >= l.maxPendingPerClient) return "pending-client";
  return undefined;
}
