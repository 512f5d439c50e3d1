/**
 * One-time tokens on the wire: 32 random bytes, presented first on a dial-back and carried as
 * standard base64 in notices and openPool answers. Pure: the bytes come from the caller.
 * @module
 */

/** Length of a token on the wire. */
export const TOKEN_BYTES = 32;

/** Standard base64 of bytes. */
export function tokenText(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s);
}

/** The raw bytes of a base64 token, or null when it is not {@linkcode TOKEN_BYTES} of base64. */
export function decodeToken(v: unknown): Uint8Array | null {
  if (typeof v !== "string") return null;
  try {
    const s = atob(v);
    if (s.length !== TOKEN_BYTES) return null;
    return Uint8Array.from(s, (c) => c.charCodeAt(0));
  } catch {
    return null;
  }
}
