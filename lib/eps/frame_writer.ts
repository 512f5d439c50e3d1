/**
 * The serialised writer of a yamux session (lib/eps/session.ts): a capped queue of frames, sent
 * in as few writes as fit in one buffer (frames queued in the same turn go out together), with a
 * lone SYN/ACK window update folded into the next frame of its stream. The session keeps the
 * policy (when it may write, which ACK to piggyback); this keeps the bytes in order.
 * @module
 */
import { LinkClosedError } from "../errors.ts";
import { errorText } from "../log.ts";
import type { ByteConn } from "../net/conn.ts";
import { writeAll } from "../net/io.ts";
import { encodeHeader, Flag, type FrameHeader, FrameType, HEADER_LENGTH } from "./frame.ts";
import { MAX_DATA_FRAME } from "./stream.ts";

const WRITE_BUFFER = 2 * (HEADER_LENGTH + MAX_DATA_FRAME);

/**
 * The waiters of frames queued one after another share one promise: it settles once the last of
 * them was copied out (a promise and two resolvers per frame were a good part of a call's garbage).
 */
interface Waiters extends PromiseWithResolvers<void> {
  /** Frames of this group not copied out yet. */
  remaining: number;
}

interface OutFrame extends FrameHeader {
  payload: Uint8Array | undefined;
  done: Waiters | undefined;
}

const RESOLVED = Promise.resolve();

export class FrameWriter {
  #queue: (OutFrame | undefined)[] = [];
  #head = 0;
  #bufLazy: Uint8Array | undefined;
  /** The group new waiting frames join; a new one starts once it has settled. */
  #waiters: Waiters | undefined;
  #writing: Promise<void> | undefined;
  /** Set once a write failed: nothing more is written. */
  error: Error | undefined;

  constructor(
    readonly conn: ByteConn,
    readonly name: string,
    /** Called once when a write fails (the session ends). */
    readonly onError: (err: LinkClosedError) => void,
  ) {}

  /** Frames waiting. */
  get length(): number {
    return this.#queue.length - this.#head;
  }

  /** Settles when the writes under way are done. */
  get idle(): Promise<void> {
    return this.#writing ?? Promise.resolve();
  }

  /**
   * Queues one frame; a SYN or ACK window update still queued alone for the same stream rides on
   * it instead (the spec allows both flags on Data and WindowUpdate frames): one frame, one write.
   * With `wait`, the promise settles once the payload was copied out (the caller's buffer is free).
   */
  push(
    type: FrameType,
    flags: number,
    id: number,
    length: number,
    payload: Uint8Array | undefined,
    wait: boolean,
  ): Promise<void> {
    if (id !== 0) {
      const last = this.length > 0 ? this.#queue.at(-1)! : undefined;
      if (
        last !== undefined && last.streamId === id && last.type === FrameType.WindowUpdate &&
        last.length === 0 && last.done === undefined && (last.flags & ~(Flag.SYN | Flag.ACK)) === 0
      ) {
        flags |= last.flags;
        this.#queue.pop();
      }
    }
    let done: Waiters | undefined;
    if (wait) {
      done = this.#waiters ??= { ...Promise.withResolvers<void>(), remaining: 0 };
      done.remaining++;
    }
    this.#queue.push({ type, flags, streamId: id, length, payload, done });
    // Start on a microtask: frames queued in the same turn go out in one write.
    this.#writing ??= RESOLVED.then(() => this.#flush());
    return done ? done.promise : RESOLVED;
  }

  /** Fails every queued frame's waiter with `err` and empties the queue. */
  drop(err: Error): void {
    for (let i = this.#head; i < this.#queue.length; i++) this.#queue[i]?.done?.reject(err);
    this.#queue.length = 0;
    this.#head = 0;
    this.#waiters = undefined;
  }

  async #flush(): Promise<void> {
    const conn = this.conn;
    const owned = conn.writeOwned !== undefined;
    try {
      while (this.#head < this.#queue.length) {
        // the frames that fit one write, in order
        let end = this.#head;
        let size = 0;
        while (end < this.#queue.length) {
          const n = HEADER_LENGTH + (this.#queue[end]!.payload?.length ?? 0);
          if (size + n > WRITE_BUFFER) break;
          size += n;
          end++;
        }
        // a connection that keeps what it is given gets a fresh array: no second copy
        const buf = owned ? new Uint8Array(size) : (this.#bufLazy ??= new Uint8Array(WRITE_BUFFER));
        let used = 0;
        for (; this.#head < end; this.#head++) {
          const f = this.#queue[this.#head]!;
          encodeHeader(f, buf, used);
          used += HEADER_LENGTH;
          if (f.payload) {
            buf.set(f.payload, used);
            used += f.payload.length;
          }
          this.#queue[this.#head] = undefined;
          const w = f.done;
          if (w !== undefined && --w.remaining === 0) {
            if (this.#waiters === w) this.#waiters = undefined; // later frames start a new group
            w.resolve(); // all copied: the callers' buffers are free again
          }
        }
        if (this.#head === this.#queue.length) {
          this.#queue.length = 0;
          this.#head = 0;
        }
        if (owned) await conn.writeOwned!(buf);
        else await writeAll(conn, buf.subarray(0, used));
      }
    } catch (err) {
      this.error = new LinkClosedError(
        `Cannot write to "${this.name}": ${errorText(err)}`,
        { cause: err },
      );
      this.drop(this.error);
      this.onError(this.error);
    } finally {
      this.#writing = undefined;
    }
  }
}
