/**
 * The descriptor budget of a proxy (docs/architecture.md, "The descriptor budget"): planned from
 * the open-file limit, not hoped for. A relayed connection costs a proxy two descriptors (public:
 * the client and its dial-back; private: the dial-back and the internal server). The public proxy
 * keeps two budgets, one for clients and one for dial-backs, so that a flood of clients can never
 * take the descriptors their own dial-backs need: it refuses new clients at once instead.
 * @module
 */
import { getFdLimit } from "../net/fd_limit.ts";

/**
 * Descriptors a role keeps for itself: listeners, EPS link, store, stdio, the worker's own (its
 * epoll and eventfd, and at most 16 for the native splice path's pipes: SPLICE_PIPES of
 * lib/dataplane/native/driver.ts). A running public proxy holds about 36 of them.
 */
export const RESERVED_FDS = 64;
/** When the limit cannot be read (not Linux): as if it were this. */
const UNKNOWN_LIMIT = 32_768;

export interface Budget {
  /** Public: clients at once. Private: connections set up or spliced at once. */
  readonly maxConnections: number;
  /** Public: dial-backs at once (each client's, idle pooled ones, ones still sending a token). */
  readonly maxDialBacks: number;
  /** The soft open-file limit it was planned from, or null when it could not be read. */
  readonly limit: number | null;
  /** Whether `max_connections` came from the settings or from the limit. */
  readonly from: "settings" | "open-file limit";
}

/** The soft open-file limit now, or null when it cannot be read. */
export function softFdLimit(): number | null {
  try {
    return getFdLimit().soft;
  } catch {
    return null;
  }
}

/**
 * The public proxy's budget: dial-backs get one per client plus an allowance for idle pooled and
 * unclaimed ones (an eighth of the descriptors, 16 to 4096); clients get half of the rest.
 */
export function publicBudget(maxConnections: number | undefined, limit: number | null): Budget {
  const fds = Math.max(64, (limit ?? UNKNOWN_LIMIT) - RESERVED_FDS);
  const allowance = Math.min(4096, Math.max(16, Math.floor(fds / 8)));
  const clients = maxConnections ?? Math.max(1, Math.floor((fds - allowance) / 2));
  return {
    maxConnections: clients,
    maxDialBacks: clients + allowance,
    limit,
    from: maxConnections === undefined ? "open-file limit" : "settings",
  };
}

/** The private proxy's budget: two descriptors per connection, idle pooled ones included. */
export function privateBudget(maxConnections: number | undefined, limit: number | null): Budget {
  const fds = Math.max(64, (limit ?? UNKNOWN_LIMIT) - RESERVED_FDS);
  const n = maxConnections ?? Math.max(1, Math.floor(fds / 2));
  return {
    maxConnections: n,
    maxDialBacks: n,
    limit,
    from: maxConnections === undefined ? "open-file limit" : "settings",
  };
}
