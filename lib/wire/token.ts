/**
 * One-time tokens on the wire: 32 random bytes, presented first on a dial-back and carried as
 * standard base64 in notices and openPool answers. Pure: the bytes come from the caller.
 * @module
 */

/** Length of a token on the wire. */
export const TOKEN_BYTES = 32;

/** Standard base64 of bytes. */
export function tokenText(bytes: Uint8Array): string {
  return bytes.toBase64(); // native: a string built byte by byte and btoa cost a few µs per token
}

/** The raw bytes of a base64 token, or null when it is not {@linkcode TOKEN_BYTES} of base64. */
export function decodeToken(v: unknown): Uint8Array | null {
  if (typeof v !== "string") return null;
  try {
    const bytes = Uint8Array.fromBase64(v);
    return bytes.length === TOKEN_BYTES ? bytes : null;
  } catch {
    return null; // not base64 (SyntaxError)
  }
}
