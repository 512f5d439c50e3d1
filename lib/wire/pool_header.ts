/**
 * The pool header (docs/architecture.md, "Pre-warmed dial-backs"): what a public proxy writes
 * first on a pooled dial-back when a client takes it — type 1, one length byte, the SNI in ASCII —
 * then the ClientHello. Pure, so that both proxies' cores (core/public_conns.ts encodes,
 * core/private_conns.ts decodes) use the same code.
 * @module
 */
import { ProtocolError } from "../errors.ts";

/** First byte of the pool header: "a client for this name follows". */
export const POOL_HEADER_TYPE = 1;

/** The pool header for a client with SNI `name` (a normalised host name, ≤ 253 ASCII bytes). */
export function encodePoolHeader(name: string): Uint8Array {
  const bytes = new TextEncoder().encode(name);
  if (bytes.length < 1 || bytes.length > 255 || bytes.length !== name.length) {
    throw new RangeError(`Cannot encode pool header: name "${name}" is not 1 to 255 ASCII bytes`);
  }
  const out = new Uint8Array(2 + bytes.length);
  out[0] = POOL_HEADER_TYPE;
  out[1] = bytes.length;
  out.set(bytes, 2);
  return out;
}

/**
 * Decodes a pool header at the start of `bytes`: the name and the header's length, or null when
 * more bytes are needed. Throws ProtocolError on a wrong type, an empty or non-ASCII name.
 */
export function decodePoolHeader(bytes: Uint8Array): { name: string; length: number } | null {
  if (bytes.length < 1) return null;
  if (bytes[0] !== POOL_HEADER_TYPE) {
    throw new ProtocolError(
      `Cannot decode pool header: type is ${bytes[0]}, expected ${POOL_HEADER_TYPE}`,
    );
  }
  if (bytes.length < 2) return null;
  const n = bytes[1]!;
  if (n === 0) throw new ProtocolError("Cannot decode pool header: empty name");
  if (bytes.length < 2 + n) return null;
  let name = "";
  for (let i = 2; i < 2 + n; i++) {
    const b = bytes[i]!;
    if (b < 0x21 || b > 0x7e) {
      throw new ProtocolError(`Cannot decode pool header: byte ${b} in the name is not ASCII`);
    }
    name += String.fromCharCode(b);
  }
  return { name, length: 2 + n };
}
