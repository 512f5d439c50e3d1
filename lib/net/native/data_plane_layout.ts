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

/** Why a pair ended, in a report `[id, aToB, bToA, code, side, errno]`. */
export const R_EOF = 0;
export const R_ABORTED = 1;
export const R_READ = 2;
export const R_WRITE = 3;
/** The worker could not watch a socket (epoll_ctl failed). */
export const R_WATCH = 4;
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
/** A power of two, as `RING_SLOTS`. */
export const REPORT_SLOTS = 16_384;
/** Float64 index where the slots start (after the 16-byte header). */
const REPORTS_AT = 2;
export const REPORT_BYTES = (REPORTS_AT + REPORT_SLOTS * REPORT_INTS) * 8;

/** Float64 index of the slot of `RHEAD` or `RTAIL` value `i`. */
export function reportAt(i: number): number {
  return REPORTS_AT + (i & (REPORT_SLOTS - 1)) * REPORT_INTS;
}

/** The worker's first message. */
export interface WorkerInit {
  sab: SharedArrayBuffer;
  reports: SharedArrayBuffer;
  wakeFd: number;
}
