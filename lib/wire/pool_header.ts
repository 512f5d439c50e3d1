/**
 * The pool header (docs/architecture.md, "The pool header"): what a public proxy writes first on
 * a pooled dial-back when a client takes it, then the ClientHello. Pure, so that both proxies'
 * cores (core/public_conns.ts encodes, core/private_conns.ts decodes) use the same code.
 *
 * Type 2 (written now): the type byte, a 2-byte big-endian length of the fields, then fields of
 * one tag byte, one length byte and the value: {@linkcode PoolField.Name} (the SNI in ASCII,
 * required), {@linkcode PoolField.Conn} (the connection id, optional); tags 3 and 4 are kept for
 * the client's source and destination addresses (PROXY protocol), and a tag the decoder does not
 * know is skipped, so a newer peer may add fields. Type 1 (a peer from before connection ids, still
 * decoded): the type byte, one length byte, the SNI.
 * @module
 */
import { ProtocolError } from "../errors.ts";
import { isConnId } from "./conn_id.ts";

/** Type byte of the original header: one length byte, the SNI. */
export const POOL_HEADER_V1 = 1;
/** Type byte of the header with fields (written now). */
export const POOL_HEADER_V2 = 2;
/** Most bytes of fields a type 2 header may carry. */
export const MAX_POOL_FIELDS_BYTES = 1024;
/** Longest pool header: type, length and the fields. */
export const MAX_POOL_HEADER_BYTES = 3 + MAX_POOL_FIELDS_BYTES;

/** Field tags of a type 2 header. */
export const PoolField = {
  /** The client's SNI (ASCII host name), required, once. */
  Name: 1,
  /** The connection id the public proxy gave the client (docs/architecture.md, "Connection ids"). */
  Conn: 2,
  /** Reserved: the client's source address (PROXY protocol). */
  Source: 3,
  /** Reserved: the address the client connected to (PROXY protocol). */
  Destination: 4,
} as const;

/** What a pool header says. */
export interface PoolHeader {
  readonly name: string;
  /** The connection id; absent from a type 1 header (a peer from before connection ids). */
  readonly conn?: string;
}

/** A decoded header and its length on the wire. */
export interface DecodedPoolHeader extends PoolHeader {
  readonly length: number;
}

/** The bytes of an ASCII field value (`what` names it in the error). */
function ascii(value: string, what: string): Uint8Array {
  const bytes = new TextEncoder().encode(value);
  if (bytes.length < 1 || bytes.length > 255 || bytes.length !== value.length) {
    throw new RangeError(
      `Cannot encode pool header: ${what} "${value}" is not 1 to 255 ASCII bytes`,
    );
  }
  return bytes;
}

/**
 * The type 2 pool header for a client with SNI `name` (a normalised host name, ≤ 253 ASCII bytes)
 * and connection id `conn`.
 */
export function encodePoolHeader(name: string, conn?: string): Uint8Array {
  const fields: [number, Uint8Array][] = [[PoolField.Name, ascii(name, "name")]];
  if (conn !== undefined) {
    if (!isConnId(conn)) {
      throw new RangeError(`Cannot encode pool header: connection id "${conn}" is not valid`);
    }
    fields.push([PoolField.Conn, ascii(conn, "connection id")]);
  }
  let n = 0;
  for (const [, v] of fields) n += 2 + v.length;
  const out = new Uint8Array(3 + n);
  out[0] = POOL_HEADER_V2;
  out[1] = n >> 8;
  out[2] = n & 0xff;
  let off = 3;
  for (const [tag, v] of fields) {
    out[off] = tag;
    out[off + 1] = v.length;
    out.set(v, off + 2);
    off += 2 + v.length;
  }
  return out;
}

/** The type 1 pool header (what a peer from before connection ids writes; for tests). */
export function encodePoolHeaderV1(name: string): Uint8Array {
  const bytes = ascii(name, "name");
  const out = new Uint8Array(2 + bytes.length);
  out[0] = POOL_HEADER_V1;
  out[1] = bytes.length;
  out.set(bytes, 2);
  return out;
}

/** Printable ASCII without space, or a ProtocolError naming `what`. */
function text(bytes: Uint8Array, from: number, to: number, what: string): string {
  let s = "";
  for (let i = from; i < to; i++) {
    const b = bytes[i]!;
    if (b < 0x21 || b > 0x7e) {
      throw new ProtocolError(`Cannot decode pool header: byte ${b} in the ${what} is not ASCII`);
    }
    s += String.fromCharCode(b);
  }
  return s;
}

/**
 * Decodes a pool header (type 1 or 2) at the start of `bytes`: the name, the connection id when
 * it has one, and the header's length; or null when more bytes are needed. Throws ProtocolError on
 * an unknown type, a bad length, an empty or non-ASCII name, a missing or repeated field.
 */
export function decodePoolHeader(bytes: Uint8Array): DecodedPoolHeader | null {
  if (bytes.length < 1) return null;
  if (bytes[0] === POOL_HEADER_V1) return decodeV1(bytes);
  if (bytes[0] !== POOL_HEADER_V2) {
    throw new ProtocolError(
      `Cannot decode pool header: type is ${
        bytes[0]
      }, expected ${POOL_HEADER_V1} or ${POOL_HEADER_V2}`,
    );
  }
  if (bytes.length < 3) return null;
  const n = (bytes[1]! << 8) | bytes[2]!;
  if (n < 3 || n > MAX_POOL_FIELDS_BYTES) {
    throw new ProtocolError(
      `Cannot decode pool header: fields length ${n} is not 3 to ${MAX_POOL_FIELDS_BYTES}`,
    );
  }
  const end = 3 + n;
  if (bytes.length < end) return null;
  let name: string | undefined;
  let conn: string | undefined;
  for (let off = 3; off < end;) {
    if (off + 2 > end) throw new ProtocolError("Cannot decode pool header: a field is cut off");
    const tag = bytes[off]!;
    const len = bytes[off + 1]!;
    const from = off + 2;
    off = from + len;
    if (off > end) {
      throw new ProtocolError(`Cannot decode pool header: field ${tag} overruns the header`);
    }
    if (tag === PoolField.Name || tag === PoolField.Conn) {
      const what = tag === PoolField.Name ? "name" : "connection id";
      if ((tag === PoolField.Name ? name : conn) !== undefined) {
        throw new ProtocolError(`Cannot decode pool header: the ${what} comes twice`);
      }
      if (len === 0) throw new ProtocolError(`Cannot decode pool header: empty ${what}`);
      const v = text(bytes, from, off, what);
      if (tag === PoolField.Name) name = v;
      else if (isConnId(v)) conn = v;
      else throw new ProtocolError(`Cannot decode pool header: connection id "${v}" is not valid`);
    } // any other tag: a field of a newer peer, skipped
  }
  if (name === undefined) throw new ProtocolError("Cannot decode pool header: no name");
  return conn === undefined ? { name, length: end } : { name, conn, length: end };
}

function decodeV1(bytes: Uint8Array): DecodedPoolHeader | null {
  if (bytes.length < 2) return null;
  const n = bytes[1]!;
  if (n === 0) throw new ProtocolError("Cannot decode pool header: empty name");
  if (bytes.length < 2 + n) return null;
  return { name: text(bytes, 2, 2 + n, "name"), length: 2 + n };
}
