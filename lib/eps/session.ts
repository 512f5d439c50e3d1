/**
 * A yamux session (hashicorp/yamux spec.md) over one ByteConn: many {@linkcode Stream}s, one
 * reader loop, one serialised writer.
 *
 * Bounds: a Data frame is checked against the stream's receive window on its header, before
 * any payload is buffered (over it: GoAway protocol error, "window-exceeded"); no Data frame may
 * exceed the largest window ("frame-too-large"); at most `maxStreams` streams each way (an
 * inbound SYN over the cap is answered with RST); at most `maxPendingSyns` inbound streams
 * waiting for accept(); a capped writer queue. A protocol violation sends GoAway (protocol
 * error), closes the connection, and `closed` resolves with the ProtocolError.
 * @module
 */
import { LinkClosedError, ProtocolError } from "../errors.ts";
import { errorText, logger, RateLimitedLog } from "../log.ts";
import { type ByteConn, remoteText, tryClose } from "../net/conn.ts";
import {
  Flag,
  type Frame,
  FrameDecoder,
  type FrameHeader,
  FrameType,
  GoAwayCode,
  INITIAL_STREAM_WINDOW,
  MAX_U32,
} from "./frame.ts";
import { FrameWriter } from "./frame_writer.ts";
import { Pings } from "./pings.ts";
import { Stream, streamControl, type StreamHost } from "./stream.ts";

export { GoAwayCode } from "./frame.ts";
export { Stream } from "./stream.ts";

export interface SessionOptions {
  /** True for the dialler (odd stream ids), false for the listener (even ids). */
  client: boolean;
  /** The peer's name for messages and logs, e.g. "eps-b"; default its address. */
  name?: string;
  /** Receive window per stream (≥ 256 KiB, the spec's initial window); default 256 KiB. */
  initialWindow?: number;
  /** Streams open at once in each direction; default 256. */
  maxStreams?: number;
  /** Inbound streams waiting for accept(); default 64. */
  maxPendingSyns?: number;
  /** Keepalive ping interval; default 15 000; 0 disables keepalive. */
  keepaliveIntervalMs?: number;
  /** Unanswered keepalive pings after which the session is closed; default 2. */
  keepaliveMisses?: number;
  /** Called with each inbound stream; if absent, inbound streams wait for accept(). */
  onStream?: (stream: Stream) => void;
}

const READ_BUFFER = 64 * 1024;
/** How long close() waits for its GoAway to be written before closing the connection. */
const GOAWAY_FLUSH_MS = 500;

interface Entry {
  stream: Stream;
  inbound: boolean;
  drainingSince: number; // keepalive tick at which close() left it draining, or -1
  ackSince: number; // keepalive tick since which its ACK waits for the stream's first frame, or -1
}

const log = logger("eps", "yamux");

function checkCount(v: number, key: string, min: number): number {
  if (!Number.isInteger(v) || v < min || v > MAX_U32) {
    throw new RangeError(`Cannot create session: ${key} is ${v}, expected an integer ≥ ${min}`);
  }
  return v;
}

/** A yamux session over one connection. The read loop starts in the constructor. */
export class Session implements AsyncDisposable {
  readonly #conn: ByteConn;
  readonly #client: boolean;
  readonly #name: string;
  readonly #window: number;
  readonly #maxStreams: number;
  readonly #maxPending: number;
  readonly #keepaliveMisses: number;
  readonly #onStream: ((stream: Stream) => void) | undefined;
  readonly #host: StreamHost;

  #streams = new Map<number, Entry>();
  #inbound = 0;
  #outbound = 0;
  #nextId: number;
  #pending = new Set<Entry>(); // inbound, not yet accepted (insertion order)
  #acceptWaiters: PromiseWithResolvers<Stream | null>[] = [];
  /** Callers of openWhenFree() waiting for an outbound stream slot, first come first served. */
  #slotWaiters: { wake(): void }[] = [];
  #draining = new Set<Entry>();
  #unacked = new Set<Entry>(); // inbound, served, ACK not sent yet
  #refusedLog = new RateLimitedLog(log);
  #refused = 0;

  // writer
  readonly #writer: FrameWriter;
  #maxQueue: number;

  // pings and keepalive
  readonly #pings = new Pings();
  #timer: ReturnType<typeof setInterval> | undefined;
  #tick = 0;
  #interval: number;

  // lifecycle
  #localGoAway = false;
  #remoteGoAway = false;
  #shutdown: Promise<void> | undefined;
  #closed = Promise.withResolvers<Error | undefined>();
  #reading: Promise<void>;

  constructor(conn: ByteConn, options: SessionOptions) {
    this.#conn = conn;
    this.#client = options.client;
    this.#name = options.name ?? remoteText(conn, "peer");
    this.#writer = new FrameWriter(conn, this.#name, (err) => {
      if (!this.#shutdown) void this.#end(err, undefined);
    });
    this.#window = checkCount(
      options.initialWindow ?? INITIAL_STREAM_WINDOW,
      "initialWindow",
      INITIAL_STREAM_WINDOW,
    );
    this.#maxStreams = checkCount(options.maxStreams ?? 256, "maxStreams", 1);
    this.#maxPending = checkCount(options.maxPendingSyns ?? 64, "maxPendingSyns", 1);
    const interval = options.keepaliveIntervalMs ?? 15_000;
    if (!Number.isFinite(interval) || interval < 0) {
      throw new RangeError(
        `Cannot create session: keepaliveIntervalMs is ${interval}, expected ≥ 0`,
      );
    }
    this.#interval = interval;
    this.#keepaliveMisses = checkCount(options.keepaliveMisses ?? 2, "keepaliveMisses", 1);
    this.#onStream = options.onStream;
    this.#nextId = this.#client ? 1 : 2;
    // SYN/FIN/RST/window updates of every stream, ping answers: generous, but finite.
    this.#maxQueue = 4 * this.#maxStreams + 256;
    this.#host = {
      peer: this.#name,
      maxWindow: this.#window,
      send: (type, flags, id, length, payload) =>
        this.#enqueue(type, flags, id, length, payload, true),
      post: (type, flags, id, length) => {
        void this.#enqueue(type, flags, id, length, undefined, false);
      },
      release: (id) => this.#release(id),
      draining: (id) => {
        const e = this.#streams.get(id);
        if (e && e.drainingSince < 0) {
          e.drainingSince = this.#tick;
          this.#draining.add(e);
        }
      },
    };
    if (interval > 0) this.#timer = setInterval(() => this.#keepalive(), interval);
    this.#reading = this.#readLoop();
  }

  /** Resolves (never rejects) when the session has ended: undefined, or the fault that ended it. */
  get closed(): Promise<Error | undefined> {
    return this.#closed.promise;
  }

  /** True once the session is closing or closed. */
  get isClosed(): boolean {
    return this.#shutdown !== undefined;
  }

  /** Inbound streams answered with RST (over maxStreams or maxPendingSyns, or after GoAway). */
  get refusedStreams(): number {
    return this.#refused;
  }

  /** Streams in the table: open, waiting for accept(), or draining after close(). */
  get streamCount(): number {
    return this.#streams.size;
  }

  /**
   * Opens a stream: the SYN is queued at once, and data may follow before the peer's ACK, up to
   * the initial window. Throws LinkClosedError once either side sent GoAway or the session ended,
   * ProtocolError "too-many-streams" when `maxStreams` outbound streams are open.
   */
  open(): Stream {
    if (this.#shutdown || this.#localGoAway || this.#remoteGoAway) {
      throw new LinkClosedError(
        `Cannot open stream to "${this.#name}": the session is ${
          this.#shutdown ? "closed" : "going away"
        }`,
      );
    }
    if (this.#outbound >= this.#maxStreams) {
      throw new ProtocolError(
        `Cannot open stream to "${this.#name}": ${this.#outbound} streams open, the limit is ${this.#maxStreams}`,
        "too-many-streams",
      );
    }
    const id = this.#nextId;
    if (id > MAX_U32) {
      throw new LinkClosedError(`Cannot open stream to "${this.#name}": stream ids are used up`);
    }
    this.#nextId += 2;
    const entry = this.#add(id, false);
    this.#grant(entry, Flag.SYN);
    return entry.stream;
  }

  /**
   * Opens a stream like {@linkcode open}, but when `maxStreams` outbound streams are open it waits
   * for one to end (first come, first served) until `signal` aborts, instead of refusing: a burst
   * of calls is served as fast as the streams turn over. At most `4 × maxStreams` callers wait;
   * beyond that it refuses as `open()` does.
   */
  async openWhenFree(signal: AbortSignal): Promise<Stream> {
    while (this.#outbound >= this.#maxStreams && !this.#shutdown && !this.#remoteGoAway) {
      signal.throwIfAborted();
      if (this.#slotWaiters.length >= 4 * this.#maxStreams) break; // open() refuses below
      await new Promise<void>((resolve, reject) => {
        const w = {
          wake: () => {
            signal.removeEventListener("abort", onAbort);
            resolve();
          },
        };
        const onAbort = () => {
          const i = this.#slotWaiters.indexOf(w);
          if (i >= 0) this.#slotWaiters.splice(i, 1);
          reject(signal.reason);
        };
        signal.addEventListener("abort", onAbort, { once: true });
        this.#slotWaiters.push(w);
      });
    }
    return this.open();
  }

  /** The next inbound stream (its ACK is sent now), or null once the session is closed. */
  accept(): Promise<Stream | null> {
    for (const entry of this.#pending) {
      this.#pending.delete(entry);
      this.#grant(entry, Flag.ACK);
      return Promise.resolve(entry.stream);
    }
    if (this.#shutdown) return Promise.resolve(null);
    const w = Promise.withResolvers<Stream | null>();
    this.#acceptWaiters.push(w);
    return w.promise;
  }

  /** Sends a Ping and resolves to the round-trip time in milliseconds. */
  async ping(signal?: AbortSignal): Promise<number> {
    signal?.throwIfAborted();
    if (this.#shutdown) {
      throw new LinkClosedError(`Cannot ping "${this.#name}": the session is closed`);
    }
    return await this.#pings.ask(
      this.#name,
      (id) => this.#post(FrameType.Ping, Flag.SYN, 0, id),
      signal,
    );
  }

  /**
   * Sends GoAway: the peer may open no more streams (their SYNs are answered with RST), and
   * open() here refuses too; open streams go on. Resolves once the frame is handed to the writer.
   */
  async goAway(code: GoAwayCode = GoAwayCode.Normal): Promise<void> {
    if (this.#localGoAway || this.#shutdown) return;
    this.#localGoAway = true;
    await this.#enqueue(FrameType.GoAway, 0, 0, code, undefined, true);
  }

  /** Sends GoAway (normal), resets every open stream and closes the connection. Idempotent. */
  close(): Promise<void> {
    return this.#end(undefined, GoAwayCode.Normal);
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  // ---- streams ----------------------------------------------------------------------------

  #add(id: number, inbound: boolean): Entry {
    const stream = new Stream(id, this.#host, INITIAL_STREAM_WINDOW);
    const entry: Entry = { stream, inbound, drainingSince: -1, ackSince: -1 };
    this.#streams.set(id, entry);
    if (inbound) this.#inbound++;
    else this.#outbound++;
    return entry;
  }

  /** Sends SYN or ACK with the window beyond the spec's initial one. */
  #grant(entry: Entry, flag: number): void {
    const delta = this.#window - INITIAL_STREAM_WINDOW;
    streamControl.grant(entry.stream, delta);
    this.#post(FrameType.WindowUpdate, flag, entry.stream.id, delta);
  }

  #release(id: number): void {
    const entry = this.#streams.get(id);
    if (!entry) return;
    this.#streams.delete(id);
    if (entry.inbound) this.#inbound--;
    else {
      this.#outbound--;
      this.#slotWaiters.shift()?.wake();
    }
    this.#pending.delete(entry);
    this.#draining.delete(entry);
    this.#unacked.delete(entry);
  }

  #inboundSyn(id: number): Entry | undefined {
    if (this.#client === (id % 2 === 1)) {
      throw new ProtocolError(
        `Cannot accept stream ${id} from "${this.#name}": its id has the wrong parity for a ${
          this.#client ? "listener" : "dialler"
        }`,
      );
    }
    let why: string | undefined;
    if (this.#localGoAway) why = "the session is going away";
    else if (this.#inbound >= this.#maxStreams) {
      why = `${this.#inbound} streams open, the limit is ${this.#maxStreams}`;
    } else if (this.#pending.size >= this.#maxPending) {
      why = `${this.#pending.size} streams wait for accept, the limit is ${this.#maxPending}`;
    }
    if (why !== undefined) {
      this.#post(FrameType.WindowUpdate, Flag.RST, id, 0);
      this.#refused++;
      this.#refusedLog.warn("refused", "Refused {count} streams from {peer}: {reason}", {
        peer: this.#name,
        reason: why,
      });
      return undefined;
    }
    const entry = this.#add(id, true);
    const w = this.#acceptWaiters.shift();
    if (this.#onStream) {
      if (this.#window === INITIAL_STREAM_WINDOW) {
        // No window to grant: the ACK rides on the stream's first frame (usually the answer),
        // as js-libp2p-yamux does; the keepalive tick sends it alone if that takes long.
        entry.ackSince = this.#tick;
        this.#unacked.add(entry);
      } else this.#grant(entry, Flag.ACK);
      try {
        this.#onStream(entry.stream);
      } catch (err) {
        log.warning("Stream handler for {peer} threw: {error}", {
          peer: this.#name,
          error: errorText(err),
        });
        entry.stream.reset();
      }
    } else if (w) {
      this.#grant(entry, Flag.ACK);
      w.resolve(entry.stream);
    } else {
      this.#pending.add(entry);
    }
    return entry;
  }

  // ---- reading ----------------------------------------------------------------------------

  async #readLoop(): Promise<void> {
    const decoder = new FrameDecoder(this.#window, (h) => this.#checkHeader(h));
    const buf = new Uint8Array(READ_BUFFER);
    let end: Error | undefined;
    try {
      for (;;) {
        const n = await this.#conn.read(buf);
        if (this.#shutdown) return;
        if (n === null) {
          if (!this.#remoteGoAway) {
            end = new LinkClosedError(`Session with "${this.#name}" ended: connection closed`);
          }
          break;
        }
        decoder.push(buf.subarray(0, n));
        for (let f: Frame | undefined; (f = decoder.next()) !== undefined;) {
          this.#handle(f);
          if (this.#shutdown) return;
        }
      }
    } catch (err) {
      if (this.#shutdown) return;
      if (err instanceof ProtocolError) {
        log.warning("Closing session with {peer}: {error}", {
          peer: this.#name,
          error: err.message,
        });
        void this.#end(err, GoAwayCode.ProtocolError);
      } else {
        void this.#end(
          new LinkClosedError(`Cannot read from "${this.#name}": ${errorText(err)}`, {
            cause: err,
          }),
          undefined,
        );
      }
      return;
    }
    void this.#end(end, undefined);
  }

  /** Runs on each header before its payload is buffered. */
  #checkHeader(h: FrameHeader): void {
    if (h.type !== FrameType.Data || h.length === 0) return;
    const entry = this.#streams.get(h.streamId);
    let limit: number;
    if (entry) limit = streamControl.recvWindow(entry.stream);
    else if (h.flags & Flag.SYN) limit = INITIAL_STREAM_WINDOW;
    else return; // unknown stream: discarded, bounded by the decoder's maxData
    if (h.length > limit) {
      throw new ProtocolError(
        `Cannot accept frame on stream ${h.streamId} from "${this.#name}": length ${h.length} exceeds the window ${limit}`,
        "window-exceeded",
      );
    }
  }

  #handle(f: Frame): void {
    const h = f.header;
    switch (h.type) {
      case FrameType.Ping:
        if (h.flags & Flag.SYN) this.#post(FrameType.Ping, Flag.ACK, 0, h.length);
        else if (h.flags & Flag.ACK) this.#pings.pong(h.length);
        return;
      case FrameType.GoAway:
        return this.#onGoAway(h.length);
    }
    const id = h.streamId;
    if (id === 0) {
      throw new ProtocolError(
        `Cannot accept ${
          h.type === FrameType.Data ? "Data" : "WindowUpdate"
        } frame on stream 0 from "${this.#name}"`,
      );
    }
    let entry = this.#streams.get(id);
    if (h.flags & Flag.SYN) {
      if (entry) {
        throw new ProtocolError(
          `Cannot accept stream ${id} from "${this.#name}": it is already open`,
        );
      }
      entry = this.#inboundSyn(id);
    }
    if (!entry) return; // unknown, refused or already gone: ignore (spec)
    const c = streamControl;
    const s = entry.stream;
    if (h.type === FrameType.Data) c.receive(s, f.payload, f.owned);
    else if (h.length > 0) c.windowUpdate(s, h.length);
    if (h.flags & Flag.FIN) c.remoteFin(s);
    if (h.flags & Flag.RST) c.remoteReset(s);
  }

  #onGoAway(code: number): void {
    if (code === GoAwayCode.Normal) {
      this.#remoteGoAway = true;
      return;
    }
    const what = code === GoAwayCode.ProtocolError
      ? "protocol error"
      : code === GoAwayCode.InternalError
      ? "internal error"
      : "unknown code";
    void this.#end(
      new LinkClosedError(`Session with "${this.#name}" ended: GoAway ${code} (${what})`),
      undefined,
    );
  }

  #keepalive(): void {
    if (this.#shutdown) return;
    this.#tick++;
    const due = this.#pings.keepalive(performance.now(), this.#interval, this.#keepaliveMisses);
    if (due === "wait") return;
    if (typeof due === "object") {
      void this.#end(
        new LinkClosedError(
          `Session with "${this.#name}" ended: ${due.dead} keepalive pings unanswered`,
        ),
        undefined,
      );
      return;
    }
    this.#post(FrameType.Ping, Flag.SYN, 0, due);
    for (const e of this.#unacked) {
      if (this.#tick - e.ackSince >= 1) this.#post(FrameType.WindowUpdate, 0, e.stream.id, 0);
    }
    // Streams closed locally whose peer never sent FIN: reset after two more ticks.
    for (const e of this.#draining) {
      if (this.#tick - e.drainingSince > 2) e.stream.reset();
    }
  }

  // ---- writing ----------------------------------------------------------------------------

  #post(type: FrameType, flags: number, id: number, length: number): void {
    void this.#enqueue(type, flags, id, length, undefined, false);
  }

  #enqueue(
    type: FrameType,
    flags: number,
    id: number,
    length: number,
    payload: Uint8Array | undefined,
    wait: boolean,
  ): Promise<void> {
    if (this.#writer.error || this.#shutdown) {
      if (!wait) return Promise.resolve();
      return Promise.reject(
        this.#writer.error ??
          new LinkClosedError(`Cannot write to "${this.#name}": the session is closed`),
      );
    }
    if (this.#writer.length >= this.#maxQueue) {
      void this.#end(
        new ProtocolError(
          `Cannot queue frame for "${this.#name}": ${this.#maxQueue} frames wait, the peer does not read`,
        ),
        undefined,
      );
      return wait ? Promise.reject(this.#closedError()) : Promise.resolve();
    }
    if (id !== 0 && this.#unacked.size > 0) {
      const e = this.#streams.get(id);
      if (e !== undefined && e.ackSince >= 0) {
        e.ackSince = -1;
        this.#unacked.delete(e);
        flags |= Flag.ACK;
      }
    }
    return this.#writer.push(type, flags, id, length, payload, wait);
  }

  #closedError(): LinkClosedError {
    return new LinkClosedError(`Session with "${this.#name}" is closed`);
  }

  // ---- ending -----------------------------------------------------------------------------

  /** Ends the session once: optional GoAway, fail everything, close the connection. */
  #end(err: Error | undefined, goAway: GoAwayCode | undefined): Promise<void> {
    if (this.#shutdown) return this.#shutdown;
    let resolveShutdown!: () => void;
    this.#shutdown = new Promise((r) => resolveShutdown = r);
    void (async () => {
      if (this.#timer !== undefined) clearInterval(this.#timer);
      this.#refusedLog.close();
      this.#timer = undefined;
      const streamErr = err ??
        new LinkClosedError(`Session with "${this.#name}" closed`);
      const ended = new LinkClosedError(`Session with "${this.#name}" closed`, { cause: err });
      this.#pings.failAll(ended);
      for (const w of this.#acceptWaiters) w.resolve(null);
      this.#acceptWaiters = [];
      for (const w of this.#slotWaiters.splice(0)) w.wake(); // open() then says why

      for (const e of [...this.#streams.values()]) streamControl.fail(e.stream, streamErr);
      this.#pending.clear();
      this.#writer.drop(ended);
      if (goAway !== undefined && !this.#writer.error) {
        // Bypass #enqueue (it refuses once shutting down); wait briefly for the writer.
        const done = this.#writer.push(FrameType.GoAway, 0, 0, goAway, undefined, true);
        const flushed = (async () => {
          await done.catch(() => {});
          await this.#writer.idle;
        })();
        let timer: ReturnType<typeof setTimeout> | undefined;
        await Promise.race([
          flushed,
          new Promise<void>((r) => timer = setTimeout(r, GOAWAY_FLUSH_MS)),
        ]);
        clearTimeout(timer);
      }
      tryClose(this.#conn);
      await this.#reading;
      await this.#writer.idle;
      if (err) {
        log.debug("Session with {peer} ended: {error}", { peer: this.#name, error: err.message });
      }
      this.#closed.resolve(err);
      resolveShutdown();
    })();
    return this.#shutdown;
  }
}
