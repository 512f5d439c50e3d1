/**
 * The ClientHello reader (docs/architecture.md, "The wire codecs"). Pure: bytes in, a result or a typed
 * {@linkcode ProtocolError} out; {@linkcode readClientHello} is the only function that touches a
 * connection, and only through its `read()`.
 *
 * The reader takes TLS records of content type 22 (handshake) as they arrive, split across reads
 * down to single bytes, several records in one read, and one ClientHello spanning several records.
 * It refuses input as soon as a header announces more than `maxBytes` in total, so nothing beyond
 * the bound is ever waited for. It extracts the SNI host name (normalised), the ALPN protocol
 * names and the supported versions, and keeps the exact record bytes to replay to the backend.
 *
 * References: RFC 8446 §4.1.2 and §5.1 (records, ClientHello), RFC 6066 §3 (server_name),
 * RFC 7301 §3.1 (ALPN), RFC 8701 (GREASE).
 * @module
 */
import { ProtocolError } from "../errors.ts";
import { normalizeHostName } from "./names.ts";

export * from "./tls_alert.ts";

/** Record content type of alerts. */
export const CONTENT_TYPE_ALERT = 21;
/** Record content type of handshake messages. */
export const CONTENT_TYPE_HANDSHAKE = 22;
/** Handshake message type of the ClientHello. */
export const HANDSHAKE_CLIENT_HELLO = 1;
/** Bytes in a record header: type (1), legacy version (2), length (2). */
export const RECORD_HEADER_LENGTH = 5;
/** Bytes in a handshake message header: type (1), length (3). */
export const HANDSHAKE_HEADER_LENGTH = 4;
/** Largest plaintext record payload (2^14). */
export const MAX_RECORD_PAYLOAD = 16_384;
/** Default bound on the records holding a ClientHello (`max_client_hello_bytes`). */
export const DEFAULT_MAX_CLIENT_HELLO_BYTES = 65_536;

/** Extension type of server_name (RFC 6066). */
export const EXT_SERVER_NAME = 0;
/** Extension type of application_layer_protocol_negotiation (RFC 7301). */
export const EXT_ALPN = 16;
/** Extension type of supported_versions (RFC 8446). */
export const EXT_SUPPORTED_VERSIONS = 43;

/** What the proxy needs from a ClientHello. */
export interface ClientHelloInfo {
  /** SNI host_name, normalised (lower case, no trailing dot); null when absent. */
  serverName: string | null;
  /** ALPN protocol names, in order; empty when the extension is absent. */
  alpn: string[];
  /** The legacy_version field (0x0303 for TLS 1.2 and 1.3). */
  legacyVersion: number;
  /** The supported_versions extension, in order, GREASE values removed; empty when absent. */
  supportedVersions: number[];
  /** The complete records holding the ClientHello, exactly as received: replay them to the backend. */
  bytes: Uint8Array;
}

/** The outcome of feeding bytes to a {@linkcode ClientHelloReader}. */
export type ClientHelloResult =
  | { done: false; /** At least this many more bytes are needed. */ need: number }
  | { done: true; hello: ClientHelloInfo };

const EMPTY = new Uint8Array(0);
const MIN_CAPACITY = 512;

function fail(detail: string): never {
  throw new ProtocolError(`Cannot read ClientHello: ${detail}`, "bad-client-hello");
}

function tooLarge(detail: string, maxBytes: number): never {
  throw new ProtocolError(
    `Cannot read ClientHello: ${detail}, exceeds max_client_hello_bytes ${maxBytes}`,
    "client-hello-too-large",
  );
}

function recordName(index: number): string {
  return index === 1 ? "first record" : `record ${index}`;
}

function hex16(v: number): string {
  return `0x${v.toString(16).padStart(4, "0")}`;
}

function checkMaxBytes(maxBytes: number): void {
  if (!Number.isSafeInteger(maxBytes) || maxBytes < 1) {
    throw new RangeError(
      `Cannot read ClientHello: maxBytes must be a positive integer, got ${maxBytes}`,
    );
  }
}

/**
 * Incremental ClientHello reader: feed chunks as they arrive from the socket. Chunks are copied
 * into one buffer the reader owns (grown by doubling), so the caller may reuse its read buffer;
 * `hello.bytes` and {@linkcode ClientHelloReader.extra} are views of that buffer.
 */
export class ClientHelloReader {
  readonly #maxBytes: number;
  #buf: Uint8Array = EMPTY;
  #len = 0;
  /** Offset of the first record not yet complete. */
  #scan = 0;
  /** Complete record payloads as [start, end) offset pairs. */
  #ranges: number[] = [];
  /** Payload bytes in complete records. */
  #payload = 0;
  /** Handshake body length once its header has arrived, else -1. */
  #bodyLength = -1;
  #typeChecked = false;
  #hello: ClientHelloInfo | null = null;
  #extra: Uint8Array = EMPTY;
  #borrow: boolean;

  /**
   * `borrowFirst`: the first chunk is used in place, not copied (the data-plane worker parses in
   * its read buffer, which it leaves alone while it uses the result: no garbage per client).
   */
  constructor(maxBytes: number = DEFAULT_MAX_CLIENT_HELLO_BYTES, borrowFirst = false) {
    checkMaxBytes(maxBytes);
    this.#maxBytes = maxBytes;
    this.#borrow = borrowFirst;
  }

  /** Bytes received beyond the records holding the ClientHello (e.g. early data); replay them too. */
  get extra(): Uint8Array {
    return this.#extra;
  }

  /**
   * Adds a chunk and reports whether the ClientHello is complete.
   * @throws {ProtocolError} code "bad-client-hello" or "client-hello-too-large"
   */
  push(chunk: Uint8Array): ClientHelloResult {
    if (this.#hello !== null) {
      throw new Error("Cannot push to ClientHelloReader: the ClientHello is already complete");
    }
    this.#append(chunk);
    return this.#advance();
  }

  #append(chunk: Uint8Array): void {
    const n = chunk.length;
    if (n === 0) return;
    if (this.#borrow && this.#len === 0) {
      this.#borrow = false;
      this.#buf = chunk; // a later chunk grows a copy of it
      this.#len = n;
      return;
    }
    const want = this.#len + n;
    if (want > this.#buf.length) {
      const grown = new Uint8Array(Math.max(want, this.#buf.length * 2, MIN_CAPACITY));
      grown.set(this.#buf.subarray(0, this.#len));
      this.#buf = grown;
    }
    this.#buf.set(chunk, this.#len);
    this.#len = want;
  }

  /** Scans every record header and payload that arrived since the last call. */
  #advance(): ClientHelloResult {
    const buf = this.#buf;
    const len = this.#len;
    for (;;) {
      const start = this.#scan;
      const avail = len - start;
      const index = this.#ranges.length / 2 + 1;
      if (avail === 0) return { done: false, need: RECORD_HEADER_LENGTH + this.#messageLeft() };
      const type = buf[start]!;
      if (type !== CONTENT_TYPE_HANDSHAKE) {
        const hint = index === 1 && type >= 0x80
          ? " (an SSLv2-compatible hello?)"
          : index === 1 && type >= 0x41 && type <= 0x5a
          ? " (plain text?)"
          : "";
        fail(`${recordName(index)} has content type ${type}, expected 22${hint}`);
      }
      if (avail >= 2 && buf[start + 1] !== 3) {
        fail(`${recordName(index)} has version major ${buf[start + 1]}, expected 3`);
      }
      if (avail < RECORD_HEADER_LENGTH) {
        return { done: false, need: RECORD_HEADER_LENGTH - avail + this.#messageLeft() };
      }
      const length = (buf[start + 3]! << 8) | buf[start + 4]!;
      if (length === 0 || length > MAX_RECORD_PAYLOAD) {
        fail(`${recordName(index)} has length ${length}, expected 1 to ${MAX_RECORD_PAYLOAD}`);
      }
      const end = start + RECORD_HEADER_LENGTH + length;
      if (end > this.#maxBytes) {
        tooLarge(`${recordName(index)} ends at byte ${end}`, this.#maxBytes);
      }
      const payloadStart = start + RECORD_HEADER_LENGTH;
      if (this.#bodyLength < 0) this.#peekHeader(payloadStart, Math.min(end, len), length, index);
      if (len < end) {
        // The record is incomplete; the message may need further records after it.
        const after = this.#messageLeft() - length;
        return { done: false, need: end - len + (after > 0 ? RECORD_HEADER_LENGTH + after : 0) };
      }
      this.#ranges.push(payloadStart, end);
      this.#payload += length;
      this.#scan = end;
      if (this.#bodyLength >= 0) {
        const surplus = this.#payload - HANDSHAKE_HEADER_LENGTH - this.#bodyLength;
        if (surplus >= 0) {
          if (surplus > 0) {
            fail(`${surplus} bytes follow the ClientHello in ${recordName(index)}, expected none`);
          }
          return { done: true, hello: this.#finish(end) };
        }
      }
    }
  }

  /** Handshake bytes still missing from complete records (a lower bound while the header is partial). */
  #messageLeft(): number {
    return this.#bodyLength >= 0
      ? HANDSHAKE_HEADER_LENGTH + this.#bodyLength - this.#payload
      : HANDSHAKE_HEADER_LENGTH - this.#payload;
  }

  /** Checks the handshake header as soon as its bytes are in (they may span records). */
  #peekHeader(partStart: number, partEnd: number, recordLength: number, index: number): void {
    const known = this.#payload + partEnd - partStart;
    if (!this.#typeChecked && known >= 1) {
      const type = this.#payloadByte(0, partStart);
      if (type !== HANDSHAKE_CLIENT_HELLO) {
        fail(`handshake message type is ${type}, expected 1 (ClientHello)`);
      }
      this.#typeChecked = true;
    }
    if (known < HANDSHAKE_HEADER_LENGTH) return;
    const body = (this.#payloadByte(1, partStart) << 16) |
      (this.#payloadByte(2, partStart) << 8) | this.#payloadByte(3, partStart);
    this.#bodyLength = body;
    // Lower bound on the records needed: the headers seen so far, the message, and one more
    // header if the message does not fit in the current record.
    const message = HANDSHAKE_HEADER_LENGTH + body;
    const more = message > this.#payload + recordLength ? RECORD_HEADER_LENGTH : 0;
    const least = index * RECORD_HEADER_LENGTH + message + more;
    if (least > this.#maxBytes) {
      tooLarge(
        `a ClientHello of ${message} bytes needs at least ${least} bytes of records`,
        this.#maxBytes,
      );
    }
  }

  /** The byte at offset `i` of the handshake stream (complete records, then the current one). */
  #payloadByte(i: number, partStart: number): number {
    const r = this.#ranges;
    for (let k = 0; k < r.length; k += 2) {
      const size = r[k + 1]! - r[k]!;
      if (i < size) return this.#buf[r[k]! + i]!;
      i -= size;
    }
    return this.#buf[partStart + i]!;
  }

  #finish(end: number): ClientHelloInfo {
    const buf = this.#buf;
    const r = this.#ranges;
    const size = HANDSHAKE_HEADER_LENGTH + this.#bodyLength;
    let message: Uint8Array;
    if (r.length === 2) {
      message = buf.subarray(r[0]!, r[0]! + size);
    } else {
      // The message spans records: join the payloads (the one copy this case needs).
      message = new Uint8Array(size);
      let off = 0;
      for (let k = 0; k < r.length && off < size; k += 2) {
        const part = buf.subarray(r[k]!, Math.min(r[k + 1]!, r[k]! + size - off));
        message.set(part, off);
        off += part.length;
      }
    }
    const hello = parseBody(message.subarray(HANDSHAKE_HEADER_LENGTH), buf.subarray(0, end));
    this.#hello = hello;
    this.#extra = buf.subarray(end, this.#len);
    return hello;
  }
}

function isGrease(v: number): boolean {
  return (v & 0x0f0f) === 0x0a0a && (v >> 8) === (v & 0xff);
}

/** Bytes as a string, one char per byte (the values read are short: ≤ 255 bytes). */
function latin1(b: Uint8Array, from: number, to: number): string {
  let s = "";
  for (let i = from; i < to; i++) s += String.fromCharCode(b[i]!);
  return s;
}

function show(s: string): string {
  return JSON.stringify(s.length > 64 ? `${s.slice(0, 61)}...` : s);
}

const EXTENSION_NAMES: Record<number, string> = {
  [EXT_SERVER_NAME]: "server_name",
  [EXT_ALPN]: "application_layer_protocol_negotiation",
  [EXT_SUPPORTED_VERSIONS]: "supported_versions",
};

function extensionName(type: number): string {
  const name = EXTENSION_NAMES[type];
  return name === undefined ? `extension ${type}` : `extension ${type} (${name})`;
}

/** Parses a ClientHello body (after the 4-byte handshake header). */
function parseBody(b: Uint8Array, bytes: Uint8Array): ClientHelloInfo {
  const n = b.length;
  let p = 0;
  const take = (count: number, what: string): void => {
    if (p + count > n) fail(`${what} needs ${count} bytes at offset ${p}, only ${n - p} left`);
  };
  take(2 + 32 + 1, "legacy_version, random and session_id length");
  const legacyVersion = (b[0]! << 8) | b[1]!;
  if (legacyVersion >> 8 !== 3) fail(`legacy_version is ${hex16(legacyVersion)}, expected 0x03xx`);
  p = 34;
  const sessionId = b[p++]!;
  if (sessionId > 32) fail(`session_id length is ${sessionId}, expected at most 32`);
  take(sessionId + 2, "session_id and cipher_suites length");
  p += sessionId;
  const suites = (b[p]! << 8) | b[p + 1]!;
  p += 2;
  if (suites < 2 || suites % 2 !== 0) {
    fail(`cipher_suites length is ${suites}, expected an even number from 2`);
  }
  take(suites + 1, "cipher_suites and compression_methods length");
  p += suites;
  const compression = b[p++]!;
  if (compression < 1) fail("compression_methods is empty, expected at least 1 method");
  take(compression, "compression_methods");
  p += compression;

  const info: ClientHelloInfo = {
    serverName: null,
    alpn: [],
    legacyVersion,
    supportedVersions: [],
    bytes,
  };
  if (p === n) return info; // no extensions block (allowed before TLS 1.3)
  take(2, "extensions length");
  const total = (b[p]! << 8) | b[p + 1]!;
  p += 2;
  if (total !== n - p) fail(`extensions length is ${total}, expected the ${n - p} bytes left`);
  const seen: number[] = [];
  while (p < n) {
    take(4, "extension header");
    const type = (b[p]! << 8) | b[p + 1]!;
    const length = (b[p + 2]! << 8) | b[p + 3]!;
    p += 4;
    if (p + length > n) {
      fail(`${extensionName(type)} has length ${length}, only ${n - p} bytes left`);
    }
    if (seen.includes(type)) fail(`${extensionName(type)} appears twice`);
    seen.push(type);
    const end = p + length;
    if (type === EXT_SERVER_NAME) info.serverName = parseServerName(b, p, end);
    else if (type === EXT_ALPN) info.alpn = parseAlpn(b, p, end);
    else if (type === EXT_SUPPORTED_VERSIONS) info.supportedVersions = parseVersions(b, p, end);
    p = end;
  }
  return info;
}

/** Reads a 2-byte list length that must fill the extension exactly and not be empty. */
function listLength(b: Uint8Array, p: number, end: number, what: string): number {
  if (end - p < 2) fail(`${what} is ${end - p} bytes, expected at least 2`);
  const length = (b[p]! << 8) | b[p + 1]!;
  if (length !== end - p - 2) {
    fail(`${what} list length is ${length}, expected ${end - p - 2}`);
  }
  if (length === 0) fail(`${what} list is empty`);
  return length;
}

function parseServerName(b: Uint8Array, p: number, end: number): string {
  listLength(b, p, end, "server_name");
  p += 2;
  let name: string | null = null;
  while (p < end) {
    if (end - p < 3) fail(`server_name entry needs 3 bytes, only ${end - p} left`);
    const type = b[p]!;
    const length = (b[p + 1]! << 8) | b[p + 2]!;
    p += 3;
    if (p + length > end) {
      fail(`server_name entry has length ${length}, only ${end - p} bytes left`);
    }
    if (type === 0) {
      if (name !== null) fail("server_name holds two host_name entries, expected one");
      // 253 characters plus a trailing dot at most; longer names are refused before decoding.
      if (length === 0 || length > 254) {
        fail(`server_name host_name length is ${length}, expected 1 to 254`);
      }
      name = latin1(b, p, p + length);
    }
    p += length;
  }
  if (name === null) fail("server_name holds no host_name entry");
  const normal = normalizeHostName(name);
  if (normal === null) fail(`server_name ${show(name)} is not a valid host name`);
  return normal;
}

function parseAlpn(b: Uint8Array, p: number, end: number): string[] {
  listLength(b, p, end, "application_layer_protocol_negotiation");
  p += 2;
  const names: string[] = [];
  while (p < end) {
    const length = b[p++]!;
    if (length === 0) fail("ALPN protocol name is empty, expected 1 to 255 bytes");
    if (p + length > end) {
      fail(`ALPN protocol name has length ${length}, only ${end - p} bytes left`);
    }
    names.push(latin1(b, p, p + length));
    p += length;
  }
  return names;
}

function parseVersions(b: Uint8Array, p: number, end: number): number[] {
  if (end - p < 1) fail("supported_versions is empty, expected a list");
  const length = b[p++]!;
  if (length !== end - p) fail(`supported_versions list length is ${length}, expected ${end - p}`);
  if (length < 2 || length % 2 !== 0) {
    fail(`supported_versions list length is ${length}, expected an even number from 2`);
  }
  const versions: number[] = [];
  for (; p < end; p += 2) {
    const v = (b[p]! << 8) | b[p + 1]!;
    if (!isGrease(v)) versions.push(v);
  }
  return versions;
}

/**
 * Parses a whole buffer holding the records of a ClientHello; bytes after those records are
 * ignored (use {@linkcode ClientHelloReader} to keep them).
 * @throws {ProtocolError} "bad-client-hello" (also when the input ends early) or "client-hello-too-large"
 */
export function parseClientHello(
  bytes: Uint8Array,
  maxBytes: number = DEFAULT_MAX_CLIENT_HELLO_BYTES,
): ClientHelloInfo {
  const result = new ClientHelloReader(maxBytes).push(bytes);
  if (!result.done) {
    fail(`input ended after ${bytes.length} bytes, need at least ${result.need} more`);
  }
  return result.hello;
}

/** Read buffer of {@linkcode readClientHello}: most ClientHellos fit in one read. */
const READ_SIZE = 4096;

/**
 * Reads from `conn` until the ClientHello is complete. No deadline inside: the caller closes the
 * connection on timeout, which ends the pending read.
 * `pre`: bytes already read from `conn` (by the data-plane worker), taken first.
 * @returns the hello and any bytes read after it (both to be replayed, hello first)
 * @throws {ProtocolError} "bad-client-hello" (also on EOF before the end) or "client-hello-too-large"
 */
export async function readClientHello(
  conn: { read(buf: Uint8Array): Promise<number | null> },
  maxBytes: number = DEFAULT_MAX_CLIENT_HELLO_BYTES,
  pre?: Uint8Array,
): Promise<{ hello: ClientHelloInfo; extra: Uint8Array }> {
  const reader = new ClientHelloReader(maxBytes);
  let total = 0;
  let need = RECORD_HEADER_LENGTH + HANDSHAKE_HEADER_LENGTH;
  if (pre !== undefined && pre.length > 0) {
    total = pre.length;
    const result = reader.push(pre);
    if (result.done) return { hello: result.hello, extra: reader.extra };
    need = result.need;
  }
  const buf = new Uint8Array(READ_SIZE);
  for (;;) {
    const n = await conn.read(buf);
    if (n === null) {
      fail(`connection ended after ${total} bytes, need at least ${need} more`);
    }
    total += n;
    const result = reader.push(buf.subarray(0, n));
    if (result.done) return { hello: result.hello, extra: reader.extra };
    need = result.need;
  }
}
