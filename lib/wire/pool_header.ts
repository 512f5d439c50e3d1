/**
 * The pool header (docs/architecture.md, "The pool header"): what a public proxy writes first on
 * a pooled dial-back when a client takes it, then the ClientHello. Pure, so that both proxies'
 * cores (core/public_conns.ts encodes, core/private_conns.ts decodes) use the same code.
 *
 * Type 2 (written now): the type byte, a 2-byte big-endian length of the fields, then fields of
 * one tag byte, one length byte and the value: {@linkcode PoolField.Name} (the SNI in ASCII,
 * required), {@linkcode PoolField.Conn} (the connection id, optional),
 * {@linkcode PoolField.Source} and {@linkcode PoolField.Destination} (the client's address and the
 * one it connected to, `ip:port` or `[ip6]:port` in ASCII, optional, both or neither: what the
 * private proxy writes in a PROXY protocol header), and a tag the decoder does not know is skipped, so a newer peer may add fields. Type 1 (a peer from before connection ids, still
 * decoded): the type byte, one length byte, the SNI.
 * @module
 */
import { ProtocolError } from "../errors.ts";
import { isConnId } from "./conn_id.ts";
import { ipv4Bytes, ipv6Bytes } from "./ip.ts";

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
  /** The client's source address, `ip:port` (PROXY protocol), optional, with Destination. */
  Source: 3,
  /** The address the client connected to, `ip:port` (PROXY protocol), optional, with Source. */
  Destination: 4,
} as const;

/** What a pool header says. */
export interface PoolHeader {
  readonly name: string;
  /** The connection id; absent from a type 1 header (a peer from before connection ids). */
  readonly conn?: string;
  /** The client's address and the one it connected to (absent from a peer before them). */
  readonly source?: HostPort;
  readonly destination?: HostPort;
}

/** An IP literal and a port. */
export interface HostPort {
  readonly hostname: string;
  readonly port: number;
}

/** `ip:port`, `[ip6]:port`. */
export function addressText(a: HostPort): string {
  return a.hostname.includes(":") ? `[${a.hostname}]:${a.port}` : `${a.hostname}:${a.port}`;
}

/** The IP literal and port of `ip:port` or `[ip6]:port`, or null when it is not one. */
export function parseAddressText(s: string): HostPort | null {
  const colon = s.lastIndexOf(":");
  if (colon < 1) return null;
  let host = s.slice(0, colon);
  const digits = s.length - colon - 1;
  if (digits < 1 || digits > 5) return null;
  let port = 0;
  for (let i = colon + 1; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x30 || c > 0x39) return null;
    port = port * 10 + c - 0x30;
  }
  if (port > 65_535) return null;
  if (host.startsWith("[") && host.endsWith("]")) {
    host = host.slice(1, -1);
    if (ipv6Bytes(host) === null) return null;
  } else if (ipv4Bytes(host) === null) return null;
  return { hostname: host, port };
}

/** A decoded header and its length on the wire. */
export interface DecodedPoolHeader extends PoolHeader {
  readonly length: number;
}

/** `value`'s length on the wire: an ASCII field of 1 to 255 bytes (`what` names it in the error). */
function asciiLength(value: string, what: string): number {
  let ok = value.length >= 1 && value.length <= 255;
  for (let i = 0; ok && i < value.length; i++) ok = value.charCodeAt(i) < 0x80;
  if (!ok) {
    throw new RangeError(
      `Cannot encode pool header: ${what} "${value}" is not 1 to 255 ASCII bytes`,
    );
  }
  return value.length;
}

/** Writes the field `tag` with the ASCII `value` at `out[off]`; the offset after it. */
function putField(out: Uint8Array, off: number, tag: number, value: string): number {
  out[off] = tag;
  out[off + 1] = value.length;
  for (let i = 0; i < value.length; i++) out[off + 2 + i] = value.charCodeAt(i);
  return off + 2 + value.length;
}

/**
 * The type 2 pool header for a client with SNI `name` (a normalised host name, ≤ 253 ASCII bytes),
 * connection id `conn`, and its address `source` and the one it connected to `destination`.
 * Written straight into one buffer (the public proxy's worker writes one per pooled client).
 */
export function encodePoolHeader(
  name: string,
  conn?: string,
  addresses?: { readonly source: HostPort; readonly destination: HostPort },
): Uint8Array {
  let n = 2 + asciiLength(name, "name");
  if (conn !== undefined) {
    if (!isConnId(conn)) {
      throw new RangeError(`Cannot encode pool header: connection id "${conn}" is not valid`);
    }
    n += 2 + asciiLength(conn, "connection id");
  }
  let source = "";
  let destination = "";
  if (addresses !== undefined) {
    source = addressText(addresses.source);
    destination = addressText(addresses.destination);
    n += 4 + asciiLength(source, "source") + asciiLength(destination, "destination");
  }
  const out = new Uint8Array(3 + n);
  out[0] = POOL_HEADER_V2;
  out[1] = n >> 8;
  out[2] = n & 0xff;
  let off = putField(out, 3, PoolField.Name, name);
  if (conn !== undefined) off = putField(out, off, PoolField.Conn, conn);
  if (addresses !== undefined) {
    off = putField(out, off, PoolField.Source, source);
    putField(out, off, PoolField.Destination, destination);
  }
  return out;
}

/** The type 1 pool header (what a peer from before connection ids writes; for tests). */
export function encodePoolHeaderV1(name: string): Uint8Array {
  const out = new Uint8Array(2 + asciiLength(name, "name"));
  putField(out, 0, POOL_HEADER_V1, name); // the same layout: type, length, the name
  return out;
}

/** Printable ASCII without space, or a ProtocolError naming `what`. */
function text(bytes: Uint8Array, from: number, to: number, what: string): string {
  for (let i = from; i < to; i++) {
    const b = bytes[i]!;
    if (b < 0x21 || b > 0x7e) {
      throw new ProtocolError(`Cannot decode pool header: byte ${b} in the ${what} is not ASCII`);
    }
  }
  // one string at once (a field is at most 255 bytes), not one concatenation per byte
  return String.fromCharCode.apply(null, bytes.subarray(from, to) as unknown as number[]);
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
  let source: HostPort | undefined;
  let destination: HostPort | undefined;
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
    } else if (tag === PoolField.Source || tag === PoolField.Destination) {
      const what = tag === PoolField.Source ? "source" : "destination";
      if ((tag === PoolField.Source ? source : destination) !== undefined) {
        throw new ProtocolError(`Cannot decode pool header: the ${what} comes twice`);
      }
      const v = text(bytes, from, off, what);
      const a = parseAddressText(v);
      if (a === null) {
        throw new ProtocolError(
          `Cannot decode pool header: ${what} "${v}" is not an IP address and port`,
        );
      }
      if (tag === PoolField.Source) source = a;
      else destination = a;
    } // any other tag: a field of a newer peer, skipped
  }
  if (name === undefined) throw new ProtocolError("Cannot decode pool header: no name");
  if ((source === undefined) !== (destination === undefined)) {
    throw new ProtocolError(
      `Cannot decode pool header: a ${source === undefined ? "destination" : "source"} without a ${
        source === undefined ? "source" : "destination"
      }`,
    );
  }
  return {
    name,
    ...(conn !== undefined ? { conn } : {}),
    ...(source !== undefined ? { source, destination: destination! } : {}),
    length: end,
  };
}

function decodeV1(bytes: Uint8Array): DecodedPoolHeader | null {
  if (bytes.length < 2) return null;
  const n = bytes[1]!;
  if (n === 0) throw new ProtocolError("Cannot decode pool header: empty name");
  if (bytes.length < 2 + n) return null;
  return { name: text(bytes, 2, 2 + n, "name"), length: 2 + n };
}
