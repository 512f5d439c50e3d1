/**
 * One yamux stream: a bidirectional byte stream inside a {@linkcode Session}, shaped like the
 * read/write half of `ByteConn` (read, write, closeWrite, close).
 *
 * Flow control: the peer may send at most our receive window; credit (WindowUpdate) is granted
 * only as {@linkcode Stream.read} consumes bytes, never when they arrive, so a stream holds at
 * most one window of unread data. Writes wait for the peer's credit.
 * @module
 */
import { LinkClosedError, ProtocolError } from "../errors.ts";
import { Flag, FrameType } from "./frame.ts";

/** Largest Data payload this side sends in one frame. */
export const MAX_DATA_FRAME = 64 * 1024;

/** What a stream needs from its session (internal seam between stream.ts and session.ts). */
export interface StreamHost {
  /** The peer's name, for messages. */
  readonly peer: string;
  /** The receive window a stream grows back to as its reader consumes. */
  readonly maxWindow: number;
  /** Queues a frame; resolves once the writer holds it. Rejects once the session has ended. */
  send(
    type: FrameType,
    flags: number,
    id: number,
    length: number,
    payload?: Uint8Array,
  ): Promise<void>;
  /** Queues a control frame without waiting (a failure ends the session, not the caller). */
  post(type: FrameType, flags: number, id: number, length: number): void;
  /** The stream is done: drop it from the session's table. Called once. */
  release(id: number): void;
  /** The stream was closed locally while the peer may still send: discard, and sweep later. */
  draining(id: number): void;
}

/**
 * The session's handle on its streams' receive side and lifecycle (internal): one set of
 * functions for every stream, each taking the stream (no closures allocated per stream).
 */
export interface StreamControl {
  /** Bytes the peer may still send before it needs more credit. */
  recvWindow(s: Stream): number;
  /** Raises the receive window by `delta` (the session announces it in a WindowUpdate). */
  grant(s: Stream, delta: number): void;
  /** A Data payload arrived (already checked against recvWindow). Throws ProtocolError after FIN. */
  receive(s: Stream, payload: Uint8Array, owned: boolean): void;
  /** The peer granted `delta` more bytes of send window. */
  windowUpdate(s: Stream, delta: number): void;
  /** The peer sent FIN: no more data will come. */
  remoteFin(s: Stream): void;
  /** The peer sent RST. */
  remoteReset(s: Stream): void;
  /** The session ended (or the stream was swept): fail everything with `err`, do not send. */
  fail(s: Stream, err: Error): void;
}

/** @internal The {@linkcode StreamControl} of every stream (for session.ts only). */
export let streamControl: StreamControl;

interface Waiter {
  promise: Promise<void>;
  resolve: () => void;
}

function waiter(): Waiter {
  const { promise, resolve } = Promise.withResolvers<void>();
  return { promise, resolve };
}

/** A bidirectional stream of a yamux session. Created by `Session.open()` / `accept()`. */
export class Stream {
  /** The yamux stream id (odd: opened by the dialler, even: by the listener). */
  readonly id: number;
  #host: StreamHost;
  // receive side
  #chunks: Uint8Array[] = [];
  #head = 0; // index of the first unread chunk
  #offset = 0; // read position inside it
  #buffered = 0;
  #recvWindow: number;
  #uncredited = 0; // consumed (or discarded) but not yet granted back
  #readEnded = false; // FIN received
  #readWait: Waiter | undefined;
  // send side
  #sendWindow: number;
  #sendWait: Waiter | undefined;
  #writeEnded = false; // FIN queued
  #tail: Promise<unknown> = Promise.resolve(); // serialises write()/closeWrite()/end()
  #busy = 0; // write()/closeWrite()/end() calls not yet settled
  // lifecycle
  #localClosed = false; // close() called
  #error: Error | undefined; // reset or session end
  #released = false;
  #closed = Promise.withResolvers<void>();

  static {
    streamControl = {
      recvWindow: (s) => s.#recvWindow,
      grant: (s, delta) => {
        s.#recvWindow += delta;
      },
      receive: (s, payload, owned) => s.#receive(payload, owned),
      windowUpdate: (s, delta) => {
        s.#sendWindow += delta;
        s.#wakeSend();
      },
      remoteFin: (s) => s.#remoteFin(),
      remoteReset: (s) => {
        s.#fail(new LinkClosedError(`Stream ${s.id} was reset by "${s.#host.peer}"`));
      },
      fail: (s, err) => s.#fail(err),
    };
  }

  /** @internal Use `Session.open()` or `Session.accept()`. */
  constructor(id: number, host: StreamHost, window: number) {
    this.id = id;
    this.#host = host;
    this.#recvWindow = window;
    this.#sendWindow = window;
  }

  /** Resolves when both directions are done or the stream was reset. Never rejects. */
  get closed(): Promise<void> {
    return this.#closed.promise;
  }

  /**
   * Reads into `buf`; resolves to the count, or null once the peer has sent FIN and every byte
   * was read. Throws LinkClosedError after a reset, close() or the end of the session.
   */
  async read(buf: Uint8Array): Promise<number | null> {
    for (;;) {
      if (this.#error) throw this.#error;
      if (this.#localClosed) throw this.#closedError("read from");
      if (this.#buffered > 0) {
        if (buf.length === 0) return 0;
        return this.#take(buf);
      }
      if (this.#readEnded) return null;
      if (buf.length === 0) return 0;
      this.#readWait ??= waiter();
      await this.#readWait.promise;
    }
  }

  /**
   * Reads everything up to the peer's FIN, at most `maxBytes`: resolves to the bytes, or to null
   * as soon as more than `maxBytes` arrived (the caller resets the stream). Bytes are credited
   * back as they arrive, so a message larger than the window still flows. A message that came in
   * one frame is returned as is, without a copy. Throws like {@linkcode read}.
   */
  async readToEnd(maxBytes: number): Promise<Uint8Array | null> {
    const parts: Uint8Array[] = [];
    let total = 0;
    for (;;) {
      if (this.#error) throw this.#error;
      if (this.#localClosed) throw this.#closedError("read from");
      if (this.#buffered > 0) {
        const n = this.#buffered;
        for (let i = this.#head; i < this.#chunks.length; i++) {
          const c = this.#chunks[i]!;
          parts.push(i === this.#head && this.#offset > 0 ? c.subarray(this.#offset) : c);
        }
        this.#chunks = [];
        this.#head = 0;
        this.#offset = 0;
        this.#buffered = 0;
        total += n;
        if (total > maxBytes) return null;
        this.#credit(n);
      }
      if (this.#readEnded) break;
      this.#readWait ??= waiter();
      await this.#readWait.promise;
    }
    if (parts.length === 1) return parts[0]!;
    const out = new Uint8Array(total);
    let off = 0;
    for (const p of parts) {
      out.set(p, off);
      off += p.length;
    }
    return out;
  }

  /**
   * Writes all of `buf`, in frames of at most the peer's window; waits for credit when the
   * window is used up (backpressure). Resolves to `buf.length`. Nothing is buffered beyond the
   * frame being written: `buf` must not change until the promise settles.
   */
  write(buf: Uint8Array): Promise<number> {
    return this.#serial(async () => {
      await this.#send(buf, false);
      return buf.length;
    });
  }

  /**
   * Writes all of `buf`, then half-closes: like `write(buf)` then `closeWrite()`, but the FIN
   * rides on the last Data frame. A message that fits the window and nothing queued before it
   * is queued at once, so a stream opened, written and ended in one turn goes out as a single
   * frame (SYN, data, FIN). `buf` must not change until the promise settles.
   */
  end(buf: Uint8Array): Promise<void> {
    if (buf.length === 0) return this.closeWrite();
    if (
      this.#busy === 0 && !this.#error && !this.#writeEnded && buf.length <= this.#sendWindow &&
      buf.length <= MAX_DATA_FRAME
    ) {
      this.#writeEnded = true;
      this.#sendWindow -= buf.length;
      const sent = this.#host.send(FrameType.Data, Flag.FIN, this.id, buf.length, buf);
      const done = sent.then(() => {
        if (this.#readEnded) this.#release();
      });
      this.#track(done);
      return done;
    }
    return this.#serial(() => this.#send(buf, true));
  }

  /** Sends `buf` in frames of at most the window; with `fin`, the last one carries FIN. */
  async #send(buf: Uint8Array, fin: boolean): Promise<void> {
    let off = 0;
    while (off < buf.length) {
      this.#checkWritable();
      if (this.#sendWindow <= 0) {
        this.#sendWait ??= waiter();
        await this.#sendWait.promise;
        continue;
      }
      const n = Math.min(buf.length - off, this.#sendWindow, MAX_DATA_FRAME);
      this.#sendWindow -= n;
      const last = fin && off + n === buf.length;
      if (last) this.#writeEnded = true;
      await this.#host.send(
        FrameType.Data,
        last ? Flag.FIN : 0,
        this.id,
        n,
        buf.subarray(off, off + n),
      );
      off += n;
    }
    if (fin && this.#readEnded) this.#release();
  }

  /** Sends FIN after any pending write: the peer reads EOF, reading here goes on. Idempotent. */
  closeWrite(): Promise<void> {
    return this.#serial(async () => {
      if (this.#writeEnded) return;
      if (this.#error) throw this.#error;
      this.#writeEnded = true;
      await this.#host.send(FrameType.WindowUpdate, Flag.FIN, this.id, 0);
      if (this.#readEnded) this.#release();
    });
  }

  /**
   * Closes the stream: FIN (after the frame being written, if any) unless already sent; unread
   * data is dropped and further data from the peer discarded (with credit, so the peer is never
   * stuck) until its FIN. A peer that never sends FIN is reset after about three keepalive
   * intervals. Pending and later reads and writes throw. Idempotent; a no-op after a reset.
   */
  close(): void {
    if (this.#localClosed || this.#error) return;
    this.#localClosed = true;
    this.#discardBuffered();
    this.#wakeRead();
    if (!this.#writeEnded) {
      this.#writeEnded = true;
      // Queued behind pending writes so the FIN follows their data.
      this.#tail = this.#tail.then(
        () =>
          this.#error ? undefined : this.#host.send(FrameType.WindowUpdate, Flag.FIN, this.id, 0),
      ).catch(() => {});
    }
    if (this.#readEnded) this.#release();
    else this.#host.draining(this.id);
  }

  /** Sends RST: both directions end at once on both sides. Idempotent. */
  reset(): void {
    if (this.#error || this.#released) return;
    this.#host.post(FrameType.WindowUpdate, Flag.RST, this.id, 0);
    this.#fail(new LinkClosedError(`Stream ${this.id} to "${this.#host.peer}" was reset`));
  }

  #serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#tail.then(fn);
    this.#track(run);
    return run;
  }

  /** Makes `op` the write that later ones wait for. */
  #track(op: Promise<unknown>): void {
    this.#busy++;
    this.#tail = op.then(
      () => void this.#busy--,
      () => void this.#busy--,
    );
  }

  #checkWritable(): void {
    if (this.#error) throw this.#error;
    if (this.#writeEnded) throw this.#closedError("write to");
  }

  #closedError(action: string): LinkClosedError {
    return new LinkClosedError(
      `Cannot ${action} stream ${this.id} to "${this.#host.peer}": it is closed`,
    );
  }

  #take(buf: Uint8Array): number {
    let n = 0;
    while (n < buf.length && this.#head < this.#chunks.length) {
      const chunk = this.#chunks[this.#head]!;
      const k = Math.min(buf.length - n, chunk.length - this.#offset);
      buf.set(chunk.subarray(this.#offset, this.#offset + k), n);
      n += k;
      this.#offset += k;
      if (this.#offset === chunk.length) {
        this.#chunks[this.#head++] = undefined as unknown as Uint8Array; // let it be collected
        this.#offset = 0;
      }
    }
    if (this.#head === this.#chunks.length) {
      this.#chunks.length = 0;
      this.#head = 0;
    } else if (this.#head > 64) {
      this.#chunks.splice(0, this.#head);
      this.#head = 0;
    }
    this.#buffered -= n;
    this.#credit(n);
    return n;
  }

  #discardBuffered(): void {
    const n = this.#buffered;
    this.#chunks = [];
    this.#head = 0;
    this.#offset = 0;
    this.#buffered = 0;
    if (n > 0) this.#credit(n);
  }

  /** Grants consumed bytes back to the peer once they add up to half a window. */
  #credit(n: number): void {
    this.#uncredited += n;
    if (this.#readEnded || this.#error || this.#released) return;
    if (this.#uncredited < this.#host.maxWindow / 2) return;
    const delta = this.#uncredited;
    this.#uncredited = 0;
    this.#recvWindow += delta;
    this.#host.post(FrameType.WindowUpdate, 0, this.id, delta);
  }

  #receive(payload: Uint8Array, owned: boolean): void {
    const n = payload.length;
    if (n === 0) return;
    if (this.#readEnded) {
      throw new ProtocolError(
        `Cannot accept data on stream ${this.id} from "${this.#host.peer}": it was closed by FIN`,
      );
    }
    this.#recvWindow -= n; // the session checked n <= recvWindow before buffering
    if (this.#localClosed) { // draining: drop it, but keep the peer's window open
      this.#credit(n);
      return;
    }
    this.#chunks.push(owned ? payload : payload.slice());
    this.#buffered += n;
    this.#wakeRead();
  }

  #remoteFin(): void {
    if (this.#readEnded) return;
    this.#readEnded = true;
    this.#wakeRead();
    if (this.#writeEnded) this.#release(); // our FIN is queued: both directions are done
  }

  #fail(err: Error): void {
    if (this.#error) return;
    this.#error = err;
    this.#chunks = [];
    this.#head = 0;
    this.#offset = 0;
    this.#buffered = 0;
    this.#wakeRead();
    this.#wakeSend();
    this.#release();
  }

  #release(): void {
    if (this.#released) return;
    this.#released = true;
    this.#host.release(this.id);
    this.#closed.resolve();
  }

  #wakeRead(): void {
    const w = this.#readWait;
    this.#readWait = undefined;
    w?.resolve();
  }

  #wakeSend(): void {
    const w = this.#sendWait;
    this.#sendWait = undefined;
    w?.resolve();
  }
}
