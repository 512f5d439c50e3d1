/**
 * The public proxy's admission settings (docs/settings.md, "limits", "allow and deny"): the
 * `limits:` block and the CIDR lists, validated with every problem named. Pure: no I/O.
 *
 * ```yaml
 * limits:
 *   max_connections_per_client: 256   # open at once per client address; 0 (default): off
 *   client_rate: 50                   # new connections a second per address; 0: off
 *   client_burst: 500                 # at once per address; default: one second of client_rate
 *   max_pending_per_name: 1000        # clients of one name waiting for a dial-back; 0: off
 *   name_rate: 500                    # new connections a second per name; 0: off
 *   name_burst: 2000
 * allow: [10.0.0.0/8, "::1/128"]      # only these may connect (default: everyone)
 * deny: [10.9.0.0/16]                 # these may not (wins over allow)
 * ```
 * @module
 */
import * as check from "./check.ts";
import { parseCidr } from "../wire/cidr.ts";

/** The `limits:` block, parsed; a 0 is off (docs/settings.md, "limits"). */
export interface LimitsSettings {
  maxConnectionsPerClient: number;
  clientRate: number;
  clientBurst: number;
  maxPendingPerName: number;
  nameRate: number;
  nameBurst: number;
}

/** Every check off: the defaults (docs/architecture.md, "Admission", says why). */
export const LIMITS_DEFAULTS: LimitsSettings = {
  maxConnectionsPerClient: 0,
  clientRate: 0,
  clientBurst: 0,
  maxPendingPerName: 0,
  nameRate: 0,
  nameBurst: 0,
};

const LIMITS_KEYS = [
  "max_connections_per_client",
  "client_rate",
  "client_burst",
  "max_pending_per_name",
  "name_rate",
  "name_burst",
] as const;

/** The most ranges one list may hold (each new client is matched against every one). */
export const MAX_CIDRS = 1000;

/** A rate: new connections a second, 0 (off) to 1,000,000; fractions allowed (0.5: one in 2 s). */
function rate(v: unknown, path: string, problems: check.Problems): number {
  if (typeof v === "number" && Number.isFinite(v) && v >= 0 && v <= 1_000_000) return v;
  problems.push(
    `${path}: must be a number of connections a second from 0 (off) to 1000000, got ${
      JSON.stringify(v)
    }`,
  );
  return 0;
}

/** Parses the `limits:` block at `path`. */
export function parseLimits(v: unknown, path: string, problems: check.Problems): LimitsSettings {
  const m = check.mapping(v, path, problems);
  check.onlyKeys(m, LIMITS_KEYS, path, problems);
  const at = (k: string) => check.join(path, k);
  const int = (k: string) => check.integer(m[k] ?? 0, at(k), problems, 0, 10_000_000);
  const bucket = (rateKey: string, burstKey: string): [number, number] => {
    const r = rate(m[rateKey] ?? 0, at(rateKey), problems);
    if (m[burstKey] === undefined) return [r, r === 0 ? 0 : Math.max(1, Math.ceil(r))];
    if (r === 0) {
      problems.push(`${at(burstKey)}: is only used with ${at(rateKey)} above 0`);
      return [0, 0];
    }
    return [r, check.integer(m[burstKey], at(burstKey), problems, 1, 10_000_000)];
  };
  const [clientRate, clientBurst] = bucket("client_rate", "client_burst");
  const [nameRate, nameBurst] = bucket("name_rate", "name_burst");
  return {
    maxConnectionsPerClient: int("max_connections_per_client"),
    clientRate,
    clientBurst,
    maxPendingPerName: int("max_pending_per_name"),
    nameRate,
    nameBurst,
  };
}

/** A list of CIDRs (`10.0.0.0/8`, `::1/128`, or a bare address), normalised; absent: empty. */
export function cidrList(v: unknown, path: string, problems: check.Problems): string[] {
  if (v === undefined || v === null) return [];
  const out = check.list(v, path, problems, (item, p, pr) => {
    if (typeof item !== "string") {
      pr.push(
        `${p}: must be a CIDR such as "10.0.0.0/8" or "::1/128", got ${JSON.stringify(item)}`,
      );
      return "";
    }
    try {
      return parseCidr(item).text;
    } catch (err) {
      pr.push(`${p}: ${(err as Error).message}`);
      return "";
    }
  });
  if (out.length > MAX_CIDRS) {
    problems.push(`${path}: ${out.length} ranges, at most ${MAX_CIDRS}`);
  }
  return out;
}
