/**
 * The command ring shared by the main thread and the data-plane worker: an Int32Array over a
 * SharedArrayBuffer. `HEAD` is written by the main thread, `TAIL` by the worker, `SLEEPING` is 1
 * while the worker is (about to be) blocked in `epoll_wait`, then `RING_SLOTS` slots of
 * `SLOT_INTS` ints: `[op, id, fdA, fdB]`.
 * @module
 */
export const HEAD = 0;
export const TAIL = 1;
export const SLEEPING = 2;
/** 1 while the route mail (see {@linkcode OP_ROUTES}) is written and not yet read by the worker. */
export const MAIL_BUSY = 3;
export const SLOTS_AT = 4;
export const SLOT_INTS = 4;
/** A power of two, so that a slot index survives `HEAD` and `TAIL` wrapping past 2^31. */
export const RING_SLOTS = 16_384;
export const RING_BYTES = (SLOTS_AT + RING_SLOTS * SLOT_INTS) * 4;

/** Where the slot of `HEAD` or `TAIL` value `i` starts (they wrap to negative int32s). */
export function slotAt(i: number): number {
  return SLOTS_AT + (i & (RING_SLOTS - 1)) * SLOT_INTS;
}

/** Splice `fdA` and `fdB` as pair `id`. */
export const OP_SPLICE = 1;
/** End pair `id` at once (reason "aborted"). */
export const OP_KILL = 2;
/** End every pair and leave the loop. */
export const OP_STOP = 3;
/**
 * Park `fdA` as pooled dial-back `id` (a private proxy's idle connection): the worker waits for
 * its pool header and serves the client itself when it has a route for the name (connects the
 * internal server, writes what came after the header, splices under the same id); else it hands
 * the socket back by postMessage (`handback`). {@linkcode OP_KILL} ends it too.
 */
export const OP_PARK = 4;
/** End parked connection `id` if no client came yet (idle timeout); a taken one goes on. */
export const OP_UNPARK = 5;
/** Read the routes from the mail: `fdA` is the length of its JSON ({@linkcode RouteMail}). */
export const OP_ROUTES = 6;
/**
 * The front door (a public proxy's public port): `fdA` is a listening socket the worker now
 * accepts on, `fdB` the ClientHello size cap, `id` the hello timeout in ms. A client whose hello (read within the hello timeout)
 * names a name with an idle pooled connection ({@linkcode OP_POOL}) is served there: pool header,
 * hello, splice, under the pooled connection's id. Every other client is handed back (`client`).
 */
export const OP_FRONT = 7;
/** Stop accepting: close listening socket `fdA` of the front door. */
export const OP_FRONT_CLOSE = 8;
/** Keep idle pooled connection `fdA` as `id` in bucket `fdB` for the front door (public side). */
export const OP_POOL = 9;

/** Bytes of the route mail (a SharedArrayBuffer); more routes than fit are left to the main thread. */
export const MAIL_BYTES = 256 * 1024;

/** The routes a data plane serves parked connections with: exact names, IP-literal targets. */
export interface RouteMail {
  connectTimeoutMs?: number;
  /** `index`: the caller's number for the route, reported back with each client served. */
  routes?: { name: string; index: number; addr: number[] }[];
  /**
   * The front door's routes: an announced name (exact or `*.parent`), when it expires (ms since
   * the epoch) and the pool buckets (OP_POOL) that may serve it.
   */
  front?: { name: string; expiresAt: number; buckets: number[] }[];
}

/** Why a pair ended, in a report `[id, aToB, bToA, code, side, errno]`. */
export const R_EOF = 0;
export const R_ABORTED = 1;
export const R_READ = 2;
export const R_WRITE = 3;
/** The worker could not watch a socket (epoll_ctl failed). */
export const R_WATCH = 4;
/** The connect to the internal server of a parked connection's client failed (`side` 1). */
export const R_CONNECT = 5;
/**
 * A parked connection's client came and the worker serves it: `[id, route index, 0, R_TAKEN,
 * 0, 0]`; its splice goes on under the same id and ends with one of the codes above.
 */
export const R_TAKEN = 6;
/** A parked connection ended before a client came: `side` is a `P_*` reason, `errno` its errno. */
export const R_IDLE_END = 7;
export const P_EOF = 0;
export const P_READ = 1;
export const P_BAD_HEADER = 2;
export const P_ABORTED = 3;
export const P_WATCH = 4;
/** A pooled connection of the front door sent bytes while idle. */
export const P_DATA = 5;
export const REPORT_INTS = 6;

/**
 * The report ring, the other way: the worker writes the end of each splice, the main thread reads
 * them when its reactor runs or its poll timer fires (a postMessage per end cost about a tenth of
 * the public proxy's main-thread CPU in W1). A SharedArrayBuffer of `REPORT_BYTES`: an Int32 header
 * (`RHEAD` written by the worker, `RTAIL` by the main thread), then `REPORT_SLOTS` slots of
 * `REPORT_INTS` float64s. When it is full the worker falls back to postMessage.
 */
export const RHEAD = 0;
export const RTAIL = 1;
/**
 * 1 while a `nudge` message is on its way to the main thread: a report it must act on soon (a
 * parked connection taken or ended: the pool refills) wakes it, at most one message at a time.
 */
export const RNUDGE = 2;
/**
 * How many more clients the front door may serve before the main thread counts them (its
 * `max_connections` minus what it holds); the main thread sets it, the worker takes one per client.
 */
export const RROOM = 3;
/**
 * Messages of reports (`done`) posted and not yet settled by the main thread: while one is on its
 * way the worker writes new reports behind it, not into the ring, which the main thread may read
 * first (an end would overtake the R_TAKEN it belongs to, and its promise never resolve).
 */
export const RINFLIGHT = 4;
/** A power of two, as `RING_SLOTS`. */
export const REPORT_SLOTS = 16_384;
/** Float64 index where the slots start (after the 24-byte header: six int32s). */
const REPORTS_AT = 3;
export const REPORT_BYTES = (REPORTS_AT + REPORT_SLOTS * REPORT_INTS) * 8;

/** Float64 index of the slot of `RHEAD` or `RTAIL` value `i`. */
export function reportAt(i: number): number {
  return REPORTS_AT + (i & (REPORT_SLOTS - 1)) * REPORT_INTS;
}

/** The worker's first message. */
export interface WorkerInit {
  sab: SharedArrayBuffer;
  reports: SharedArrayBuffer;
  mail: SharedArrayBuffer;
  wakeFd: number;
}
