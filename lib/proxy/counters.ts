/**
 * The control planes' counting helpers: rate-limited warnings ({@linkcode RateLimitedLog} of
 * lib/log.ts) and the count of ended splices both proxies keep.
 * @module
 */
import { type EndReason, reapedBy } from "../dataplane/mod.ts";

export { RateLimitedLog as Counters } from "../log.ts";

/** Counts an ended splice, and whether it was reaped idle (either proxy's stats). */
export function countEnded(
  stats: { ended: number; idleTimeouts: number; vanishedPeers: number },
  reason: EndReason,
): void {
  stats.ended++;
  const by = reapedBy(reason);
  if (by === "idle-timeout") stats.idleTimeouts++;
  else if (by === "keepalive") stats.vanishedPeers++;
}
