/**
 * The command ring of the native driver (docs/architecture.md, "The drivers"): how the main
 * thread hands commands to the worker, which never returns to its event loop (it blocks in
 * `epoll_wait`) and so cannot take a postMessage.
 *
 * A SharedArrayBuffer: a header of int32s, then {@linkcode RING_BYTES} of frames. `HEAD` (bytes
 * written, wrapping) is the writer's, `TAIL` (bytes read) the reader's; `SLEEPING` is 1 while the
 * worker is (about to be) blocked in `epoll_wait`, and the writer wakes it through the eventfd
 * only when it takes that 1 back to 0, so one wake-up per sleep at most. A frame is one int32
 * (`length * 4 + mail * 2 + more`) and the payload padded to 4 bytes, so a frame header never
 * straddles the end of the ring.
 *
 * A message longer than the ring's free space (a snapshot of 100,000 routes is several MB) goes
 * into the mailbox, a growable SharedArrayBuffer, and the frame only says where (offset and
 * length): it is written whole inside send(), so it reaches the worker before any socket event
 * that happens after send() returns, as small ones do. The mailbox is written from 0 again once
 * the worker has read every mail (`MAIL_DONE` counts them). Only when even that fails (the ring
 * is full of small frames, or the mailbox cannot grow) a message waits in the writer's backlog,
 * in order, and goes in pieces (`more` set on all but the last); `WANT_ROOM` then asks the worker
 * to say (a `room` message) when it has read.
 * @module
 */
import type { HostPort } from "../../role.ts";
import type { DataEvent } from "../events.ts";
import type { Command, PlaneRole, Snapshot } from "../snapshot.ts";

export const HEAD = 0;
export const TAIL = 1;
export const SLEEPING = 2;
/** 1 while the writer has a backlog: the reader posts `room` once it has read frames. */
export const WANT_ROOM = 3;
/** Mails the worker has read (wrapping). */
export const MAIL_DONE = 4;
const HEADER_INTS = 8;
/** Bytes of frames; a power of two, so that HEAD and TAIL may wrap past 2^31. */
export const RING_BYTES = 1 << 20;
const MASK = RING_BYTES - 1;
/** Bytes of the ring's SharedArrayBuffer. */
export const RING_SAB_BYTES = HEADER_INTS * 4 + RING_BYTES;
/** How far the mailbox may grow (address space reserved, memory used as it grows). */
export const MAIL_MAX_BYTES = 256 * 1024 * 1024;
const MORE = 1;
const MAIL = 2;

function align4(n: number): number {
  return (n + 3) & ~3;
}

/** A new mailbox for {@linkcode RingWriter} and {@linkcode RingReader}. */
export function newMailbox(): SharedArrayBuffer {
  return new SharedArrayBuffer(0, { maxByteLength: MAIL_MAX_BYTES });
}

/** The main thread's end: encodes and writes messages, in order, never dropping one. */
export class RingWriter {
  readonly ctl: Int32Array;
  readonly #data: Uint8Array;
  readonly #frames: Int32Array;
  readonly #mail: Uint8Array;
  readonly #backlog: Uint8Array[] = [];
  /** Bytes of `#backlog[0]` already written. */
  #off = 0;
  /** Where the next mail goes, and mails written (wrapping). */
  #mailEnd = 0;
  #mails = 0;

  /** `wake`: called when the worker sleeps and a frame was written. */
  constructor(
    readonly sab: SharedArrayBuffer,
    readonly mailbox: SharedArrayBuffer,
    readonly wake: () => void,
  ) {
    this.ctl = new Int32Array(sab, 0, HEADER_INTS);
    this.#data = new Uint8Array(sab, HEADER_INTS * 4, RING_BYTES);
    this.#frames = new Int32Array(sab, HEADER_INTS * 4, RING_BYTES / 4);
    this.#mail = new Uint8Array(mailbox); // tracks the length as it grows
  }

  /** Messages (or parts of one) not written yet. */
  get backlog(): number {
    return this.#backlog.length;
  }

  /** Writes `msg` (owned by the ring from now on), whole, or queues it behind the backlog. */
  send(msg: Uint8Array): void {
    if (this.#backlog.length === 0 && (this.#inline(msg) || this.#byMail(msg))) {
      return this.#wakeUp(true);
    }
    this.#backlog.push(msg);
    this.flush();
  }

  #free(): number {
    return RING_BYTES - ((Atomics.load(this.ctl, HEAD) - Atomics.load(this.ctl, TAIL)) | 0);
  }

  /** One frame holding all of `msg`, if it fits. */
  #inline(msg: Uint8Array): boolean {
    if (4 + align4(msg.length) > this.#free()) return false;
    this.#frame(msg, msg.length * 4);
    return true;
  }

  /** `msg` into the mailbox and a frame naming it, if the ring and the mailbox have room. */
  #byMail(msg: Uint8Array): boolean {
    if (this.#free() < 12) return false;
    const at = Atomics.load(this.ctl, MAIL_DONE) === this.#mails ? 0 : this.#mailEnd;
    const end = at + msg.length;
    if (end > this.mailbox.byteLength) {
      let size = Math.max(64 * 1024, this.mailbox.byteLength);
      while (size < end) size *= 2;
      if (size > MAIL_MAX_BYTES) size = MAIL_MAX_BYTES;
      if (end > size) return false;
      this.mailbox.grow(size);
    }
    this.#mail.set(msg, at);
    this.#mailEnd = end;
    this.#mails = (this.#mails + 1) | 0;
    this.#frame(new Uint8Array(Int32Array.of(at, msg.length).buffer), 8 * 4 + MAIL);
    return true;
  }

  /** Writes one frame: `header`, then `payload`; the caller checked the room. */
  #frame(payload: Uint8Array, header: number): void {
    const head = Atomics.load(this.ctl, HEAD);
    const at = head & MASK;
    this.#frames[at >> 2] = header;
    this.#copyIn(payload, (at + 4) & MASK);
    Atomics.store(this.ctl, HEAD, (head + 4 + align4(payload.length)) | 0);
  }

  /** Writes as much of the backlog as fits (whole by mail, else in pieces). */
  flush(): void {
    let wrote = false;
    while (this.#backlog.length > 0) {
      const msg = this.#backlog[0]!;
      if (this.#off === 0 && (this.#inline(msg) || this.#byMail(msg))) {
        this.#backlog.shift();
        wrote = true;
        continue;
      }
      const free = this.#free();
      if (free < 8) break;
      const rest = msg.length - this.#off;
      const n = Math.min(rest, (free - 4) & ~3);
      this.#frame(msg.subarray(this.#off, this.#off + n), n * 4 + (n < rest ? MORE : 0));
      wrote = true;
      this.#off += n;
      if (this.#off === msg.length) {
        this.#backlog.shift();
        this.#off = 0;
      }
    }
    this.#wakeUp(wrote);
  }

  #wakeUp(wrote: boolean): void {
    // Set before the wake-up check, which the worker mirrors (SLEEPING set, then WANT_ROOM and
    // HEAD checked): either it sees the frames and the backlog, or this sees it sleeping. Also
    // when nothing fit: the worker may have emptied the ring since, and be about to sleep.
    const backlog = this.#backlog.length > 0;
    Atomics.store(this.ctl, WANT_ROOM, backlog ? 1 : 0);
    if ((wrote || backlog) && Atomics.compareExchange(this.ctl, SLEEPING, 1, 0) === 1) this.wake();
  }

  #copyIn(bytes: Uint8Array, at: number): void {
    const first = Math.min(bytes.length, RING_BYTES - at);
    this.#data.set(bytes.subarray(0, first), at);
    if (first < bytes.length) this.#data.set(bytes.subarray(first), 0);
  }
}

/** The worker's end: reassembles messages from frames. */
export class RingReader {
  readonly ctl: Int32Array;
  readonly #data: Uint8Array;
  readonly #frames: Int32Array;
  readonly #mail: Uint8Array;
  /** The message being reassembled, `#buf[0, #len)`; grows by doubling. */
  #buf = new Uint8Array(64 * 1024);
  #len = 0;

  constructor(readonly sab: SharedArrayBuffer, mailbox: SharedArrayBuffer) {
    this.ctl = new Int32Array(sab, 0, HEADER_INTS);
    this.#data = new Uint8Array(sab, HEADER_INTS * 4, RING_BYTES);
    this.#frames = new Int32Array(sab, HEADER_INTS * 4, RING_BYTES / 4);
    this.#mail = new Uint8Array(mailbox);
  }

  /** Whether frames wait to be read. */
  pending(): boolean {
    return Atomics.load(this.ctl, HEAD) !== Atomics.load(this.ctl, TAIL);
  }

  /**
   * Reads every complete message written so far, calling `onMessage` with a view valid during
   * the call. Returns whether the writer waits for room (then it should be told): the ring is
   * empty after this, so there is room.
   */
  read(onMessage: (bytes: Uint8Array) => void): boolean {
    const ctl = this.ctl;
    let tail = Atomics.load(ctl, TAIL);
    const head = Atomics.load(ctl, HEAD);
    while (tail !== head) {
      const at = tail & MASK;
      const h = this.#frames[at >> 2]!;
      const n = h >>> 2;
      if ((h & MAIL) !== 0) {
        const from = this.#frames[((at + 4) & MASK) >> 2]!;
        const len = this.#frames[((at + 8) & MASK) >> 2]!;
        this.#append(this.#mail, from, len);
        Atomics.add(ctl, MAIL_DONE, 1); // copied: the writer may reuse the space
      } else this.#copyOut((at + 4) & MASK, n);
      tail = (tail + 4 + align4(n)) | 0;
      Atomics.store(ctl, TAIL, tail);
      if ((h & MORE) === 0) {
        const len = this.#len;
        this.#len = 0;
        onMessage(this.#buf.subarray(0, len));
      }
    }
    return this.wantsRoom() && Atomics.compareExchange(ctl, WANT_ROOM, 1, 0) === 1;
  }

  /** Whether the writer has a backlog (checked again before the worker sleeps). */
  wantsRoom(): boolean {
    return Atomics.load(this.ctl, WANT_ROOM) === 1;
  }

  #copyOut(at: number, n: number): void {
    const first = Math.min(n, RING_BYTES - at);
    this.#append(this.#data, at, first);
    if (first < n) this.#append(this.#data, 0, n - first);
  }

  /** Appends `from[at, at + n)` to the message being reassembled. */
  #append(from: Uint8Array, at: number, n: number): void {
    const want = this.#len + n;
    if (want > this.#buf.length) {
      const grown = new Uint8Array(Math.max(want, this.#buf.length * 2));
      grown.set(this.#buf.subarray(0, this.#len));
      this.#buf = grown;
    }
    this.#buf.set(from.subarray(at, at + n), this.#len);
    this.#len = want;
  }
}

// -- what crosses between the threads besides the ring ------------------------------------------

/** Where the worker binds a listener: an IP literal, and the address as the caller wrote it. */
export interface ListenAt {
  readonly ip: string;
  readonly port: number;
  readonly what: string;
  /** SO_REUSEPORT before the bind (the public port with `reuse_port`). */
  readonly reusePort?: boolean;
}

/** The worker's first (and only) message from the main thread. */
export interface WorkerInit {
  readonly sab: SharedArrayBuffer;
  readonly mailbox: SharedArrayBuffer;
  /** The eventfd that wakes the worker (the main thread's: it closes it after the worker). */
  readonly wakeFd: number;
  readonly role: PlaneRole;
  /** What the connection ids start with (DataPlaneOptions.idPrefix). */
  readonly idPrefix?: string;
  readonly snapshot: Snapshot;
  readonly listen?: { readonly public: ListenAt; readonly private: ListenAt };
  /** The main thread's `performance.timeOrigin`: the core's times are on the main clock. */
  readonly timeOrigin: number;
  /** The splice path of bulk directions (worker.ts): pipes at most, and each one's capacity. */
  readonly splice?: { readonly pipes: number; readonly pipeBytes: number };
}

/** A message of the ring: a command, or the driver's own `exit` (after `kill`, from close()). */
export type RingMessage = Command | { readonly type: "exit" };

/** The worker's messages to the main thread. */
export type WorkerMessage =
  | { readonly t: "ready"; readonly addrs: { public?: HostPort; private?: HostPort } }
  | { readonly t: "bindFailed"; readonly message: string }
  /** One loop turn's events, in order. */
  | { readonly t: "events"; readonly events: readonly DataEvent[] }
  /** The ring was read while the writer had a backlog. */
  | { readonly t: "room" }
  /** The loop failed (a bug); every socket is closed. */
  | { readonly t: "failed"; readonly error: string }
  /** Every socket is closed and the loop has ended. */
  | { readonly t: "exited" };
