/**
 * The yamux frame codec (hashicorp/yamux spec.md): a 12-byte big-endian header, then for Data
 * frames `length` bytes of payload. Pure: no I/O, so it is tested without sockets.
 *
 * ```
 * version u8 (0) | type u8 | flags u16 | stream id u32 | length u32
 * ```
 * `length` is the payload size for Data, the window delta for WindowUpdate, the opaque value for
 * Ping and the error code for GoAway; only Data frames carry a payload.
 * @module
 */
import { ProtocolError } from "../errors.ts";

/** Size of a frame header in bytes. */
export const HEADER_LENGTH = 12;
/** The only protocol version. */
export const YAMUX_VERSION = 0;
/** Every stream starts with this receive window (fixed by the spec). */
export const INITIAL_STREAM_WINDOW = 256 * 1024;
/** The largest value of a u32 header field. */
export const MAX_U32 = 0xffff_ffff;

/** Frame types. */
export const FrameType = {
  Data: 0,
  WindowUpdate: 1,
  Ping: 2,
  GoAway: 3,
} as const;
export type FrameType = typeof FrameType[keyof typeof FrameType];

/** Header flags (a bit set). */
export const Flag = {
  SYN: 1,
  ACK: 2,
  FIN: 4,
  RST: 8,
} as const;
export type Flag = typeof Flag[keyof typeof Flag];

/** GoAway reasons, carried in the length field. */
export const GoAwayCode = {
  Normal: 0,
  ProtocolError: 1,
  InternalError: 2,
} as const;
export type GoAwayCode = typeof GoAwayCode[keyof typeof GoAwayCode];

/** A decoded frame header. */
export interface FrameHeader {
  type: FrameType;
  flags: number;
  streamId: number;
  length: number;
}

/** A decoded frame. `payload` is empty unless the frame is Data. */
export interface Frame {
  header: FrameHeader;
  /**
   * The Data payload. Unless `owned`, it is a view into the chunk given to
   * {@linkcode FrameDecoder.push} and is valid only until the next push: copy it to keep it.
   */
  payload: Uint8Array;
  /** True when `payload` was assembled from several chunks into a fresh array the caller may keep. */
  owned: boolean;
}

const EMPTY = new Uint8Array(0);

function checkU32(v: number, what: string): void {
  if (!Number.isInteger(v) || v < 0 || v > MAX_U32) {
    throw new RangeError(`Cannot encode frame header: ${what} is ${v}, expected 0 to ${MAX_U32}`);
  }
}

/**
 * Encodes `h` into the first 12 bytes of `into` (at `offset`), or into a new array, and returns
 * the array written to. Throws RangeError on out-of-range fields.
 */
export function encodeHeader(
  h: FrameHeader,
  into: Uint8Array = new Uint8Array(HEADER_LENGTH),
  offset = 0,
): Uint8Array {
  if (!Number.isInteger(h.type) || h.type < 0 || h.type > FrameType.GoAway) {
    throw new RangeError(`Cannot encode frame header: type is ${h.type}, expected 0 to 3`);
  }
  if (!Number.isInteger(h.flags) || h.flags < 0 || h.flags > 0xffff) {
    throw new RangeError(`Cannot encode frame header: flags is ${h.flags}, expected 0 to 65535`);
  }
  checkU32(h.streamId, "stream id");
  checkU32(h.length, "length");
  if (offset < 0 || into.length - offset < HEADER_LENGTH) {
    throw new RangeError(
      `Cannot encode frame header: ${
        into.length - offset
      } bytes of room, expected ${HEADER_LENGTH}`,
    );
  }
  // Plain byte stores, big-endian: no DataView per frame.
  const { flags, streamId: id, length } = h;
  into[offset] = YAMUX_VERSION;
  into[offset + 1] = h.type;
  into[offset + 2] = flags >>> 8;
  into[offset + 3] = flags;
  into[offset + 4] = id >>> 24;
  into[offset + 5] = id >>> 16;
  into[offset + 6] = id >>> 8;
  into[offset + 7] = id;
  into[offset + 8] = length >>> 24;
  into[offset + 9] = length >>> 16;
  into[offset + 10] = length >>> 8;
  into[offset + 11] = length;
  return into;
}

/**
 * Decodes the header at the start of `bytes` (at least 12 bytes). Throws ProtocolError on a bad
 * version or type, and ("frame-too-large") on a Data frame longer than `maxData`, so a caller
 * refuses it before buffering any payload.
 */
export function decodeHeader(bytes: Uint8Array, maxData: number): FrameHeader {
  if (bytes.length < HEADER_LENGTH) {
    throw new RangeError(
      `Cannot decode frame header: ${bytes.length} bytes, expected ${HEADER_LENGTH}`,
    );
  }
  // Plain byte arithmetic: as fast as a DataView and no object per call.
  const version = bytes[0]!;
  if (version !== YAMUX_VERSION) {
    throw new ProtocolError(`Cannot decode frame: version is ${version}, expected 0`);
  }
  const type = bytes[1]!;
  if (type > FrameType.GoAway) {
    throw new ProtocolError(`Cannot decode frame: unknown type ${type}`);
  }
  const flags = (bytes[2]! << 8) | bytes[3]!;
  const streamId = bytes[4]! * 0x100_0000 + ((bytes[5]! << 16) | (bytes[6]! << 8) | bytes[7]!);
  const length = bytes[8]! * 0x100_0000 + ((bytes[9]! << 16) | (bytes[10]! << 8) | bytes[11]!);
  if (type === FrameType.Data && length > maxData) {
    throw new ProtocolError(
      `Cannot accept frame on stream ${streamId}: length ${length} exceeds ${maxData}`,
      "frame-too-large",
    );
  }
  return { type: type as FrameType, flags, streamId, length };
}

/** Checks a header before its payload is buffered; throws (ProtocolError) to refuse it. */
export type HeaderCheck = (header: FrameHeader) => void;

/**
 * Incremental decoder: feed chunks of any size with {@linkcode push}, then call
 * {@linkcode next} until it returns undefined. A frame may span chunks and a chunk may hold many
 * frames. A Data frame's length is checked against `maxData` (and by `check`, if given) as soon
 * as its header is complete, before any of its payload is buffered; at most one payload of
 * `maxData` bytes is ever held. Once it has thrown, the decoder throws the same error again.
 */
export class FrameDecoder {
  readonly maxData: number;
  #check: HeaderCheck | undefined;
  #chunk: Uint8Array = EMPTY;
  #pos = 0;
  #head = new Uint8Array(HEADER_LENGTH); // a header split across chunks
  #headFill = 0;
  #header: FrameHeader | undefined; // header decoded, payload pending
  #body: Uint8Array | undefined; // a payload split across chunks
  #bodyFill = 0;
  #error: unknown;

  constructor(maxData: number, check?: HeaderCheck) {
    if (!Number.isInteger(maxData) || maxData < 0 || maxData > MAX_U32) {
      throw new RangeError(
        `Cannot create decoder: maxData is ${maxData}, expected 0 to ${MAX_U32}`,
      );
    }
    this.maxData = maxData;
    this.#check = check;
  }

  /** Bytes held for a frame not yet complete. */
  get buffered(): number {
    return this.#headFill + this.#bodyFill;
  }

  /** Bytes of the last pushed chunk not yet consumed by next(). */
  get remaining(): number {
    return this.#chunk.length - this.#pos;
  }

  /** Adds a chunk. The previous one must have been drained (next() returned undefined). */
  push(chunk: Uint8Array): void {
    if (this.#pos < this.#chunk.length) {
      throw new Error("Cannot push chunk: the previous chunk is not drained");
    }
    this.#chunk = chunk;
    this.#pos = 0;
  }

  /** The next complete frame, or undefined when more bytes are needed. */
  next(): Frame | undefined {
    if (this.#error !== undefined) throw this.#error;
    try {
      return this.#next();
    } catch (err) {
      this.#error = err;
      this.#chunk = EMPTY;
      this.#pos = 0;
      this.#body = undefined;
      throw err;
    }
  }

  #next(): Frame | undefined {
    const chunk = this.#chunk;
    let header = this.#header;
    if (header === undefined) {
      const avail = chunk.length - this.#pos;
      if (this.#headFill === 0 && avail >= HEADER_LENGTH) {
        header = decodeHeader(chunk.subarray(this.#pos, this.#pos + HEADER_LENGTH), this.maxData);
        this.#pos += HEADER_LENGTH;
      } else {
        const n = Math.min(HEADER_LENGTH - this.#headFill, avail);
        this.#head.set(chunk.subarray(this.#pos, this.#pos + n), this.#headFill);
        this.#pos += n;
        this.#headFill += n;
        if (this.#headFill < HEADER_LENGTH) return undefined;
        this.#headFill = 0;
        header = decodeHeader(this.#head, this.maxData);
      }
      this.#check?.(header);
      if (header.type !== FrameType.Data || header.length === 0) {
        return { header, payload: EMPTY, owned: false };
      }
      this.#header = header;
    }
    // Payload of a Data frame.
    const len = header.length;
    const avail = chunk.length - this.#pos;
    if (this.#body === undefined) {
      if (avail >= len) { // all here: a view, no copy
        const payload = chunk.subarray(this.#pos, this.#pos + len);
        this.#pos += len;
        this.#header = undefined;
        return { header, payload, owned: false };
      }
      this.#body = new Uint8Array(len); // bounded by maxData, checked above
      this.#bodyFill = 0;
    }
    const n = Math.min(len - this.#bodyFill, avail);
    this.#body.set(chunk.subarray(this.#pos, this.#pos + n), this.#bodyFill);
    this.#pos += n;
    this.#bodyFill += n;
    if (this.#bodyFill < len) return undefined;
    const payload = this.#body;
    this.#body = undefined;
    this.#bodyFill = 0;
    this.#header = undefined;
    return { header, payload, owned: true };
  }
}
