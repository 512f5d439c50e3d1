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
export const REPORT_INTS = 6;

/** The worker's first message. */
export interface WorkerInit {
  sab: SharedArrayBuffer;
  wakeFd: number;
}
