/**
 * The public proxy's admission settings (docs/settings.md, "limits", "allow and deny"): the
 * `limits:` block and the CIDR lists, declared once (./schema.ts) and validated with every problem
 * named. Pure: no I/O.
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
import { block, type Field, type Infer, integer, raw, withDefault } from "./schema.ts";

/** The most ranges one list may hold (each new client is matched against every one). */
export const MAX_CIDRS = 1000;

/** A rate: new connections a second, 0 (off) to 1,000,000; fractions allowed (0.5: one in 2 s). */
const rate: Field<number> = {
  parse: (v, path, problems) => {
    if (typeof v === "number" && Number.isFinite(v) && v >= 0 && v <= 1_000_000) return v;
    problems.push(
      `${path}: must be a number of connections a second from 0 (off) to 1000000, got ${
        JSON.stringify(v)
      }`,
    );
    return 0;
  },
  empty: 0,
  type: "number",
  range: "0 – 1 000 000",
  schema: { type: "number", minimum: 0, maximum: 1_000_000 },
};

const perTable = integer(0, 10_000_000);
const burst = integer(1, 10_000_000);

/** The declaration of the `limits:` block (docs/settings.md, "limits"). */
export const LIMITS_SHAPE = {
  maxConnectionsPerClient: withDefault(
    perTable,
    0,
    "Clients one address may hold open at once (reading a hello, waiting, spliced). Over it: refused at accept, reason `client-connections`.",
    { defaultDoc: "`0` (off)" },
  ),
  clientRate: withDefault(
    rate,
    0,
    "New connections a second from one address (a token bucket's refill; fractions allowed: `0.5` is one every 2 s). Over it: `client-rate`.",
    { defaultDoc: "`0` (off)" },
  ),
  clientBurst: raw(
    burst,
    "New connections one address may open at once (the bucket's size). Only with `client_rate` above 0.",
    { defaultDoc: "one second of `client_rate`, at least 1" },
  ),
  maxPendingPerName: withDefault(
    perTable,
    0,
    "Clients of one announced name waiting for a dial-back at once (a `*.parent` announcement is one name). Over it: `name-pending`.",
    { defaultDoc: "`0` (off)" },
  ),
  nameRate: withDefault(
    rate,
    0,
    "New connections a second to one announced name (token bucket). Over it: `name-rate`.",
    { defaultDoc: "`0` (off)" },
  ),
  nameBurst: raw(
    burst,
    "The per-name bucket's size. Only with `name_rate` above 0.",
    { defaultDoc: "one second of `name_rate`, at least 1" },
  ),
} as const;

/** The `limits:` block, parsed; a 0 is off (docs/settings.md, "limits"). */
export interface LimitsSettings extends Infer<typeof LIMITS_SHAPE> {
  clientBurst: number;
  nameBurst: number;
}

/** The bursts: one second of the rate when absent; refused without a rate. */
function finishLimits(
  v: Infer<typeof LIMITS_SHAPE>,
  rawValues: Record<string, unknown>,
  path: string,
  problems: check.Problems,
): LimitsSettings {
  const at = (k: string) => check.join(path, k);
  const bucket = (rateKey: string, burstKey: string, r: number, b: unknown): number => {
    if (b === undefined) return r === 0 ? 0 : Math.max(1, Math.ceil(r));
    if (r === 0) {
      problems.push(`${at(burstKey)}: is only used with ${at(rateKey)} above 0`);
      return 0;
    }
    return b as number;
  };
  return {
    ...v,
    clientBurst: bucket("client_rate", "client_burst", v.clientRate, rawValues.clientBurst),
    nameBurst: bucket("name_rate", "name_burst", v.nameRate, rawValues.nameBurst),
  };
}

/** The `limits:` block as a field of the public proxy's settings. */
export const limitsBlock: Field<LimitsSettings> = block(LIMITS_SHAPE, finishLimits);

/** Every check off: the defaults (docs/architecture.md, "Admission", says why). */
export const LIMITS_DEFAULTS: LimitsSettings = limitsBlock.parse({}, "limits", []);

/** Parses the `limits:` block at `path`. */
export function parseLimits(v: unknown, path: string, problems: check.Problems): LimitsSettings {
  return limitsBlock.parse(v, path, problems);
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

/** A list of CIDRs as a field. */
export const cidrs: Field<string[]> = {
  parse: cidrList,
  empty: [],
  type: "list of CIDRs",
  range: "at most 1 000 ranges; no bits past the prefix",
  schema: { type: "array", items: { type: "string", minLength: 1 }, maxItems: MAX_CIDRS },
};
