/**
 * Connection ids (docs/architecture.md, "Connection ids"): the public proxy names each client
 * connection `PREFIX-N`, a random per-process prefix of {@linkcode PREFIX_CHARS} base-36 characters
 * and the data plane's connection number in base 36 (`k3f9x-1a`), so an id is short, readable in
 * a log line and unique across processes and restarts. The id travels to the private proxy in
 * the notice (`conn`) or the pool header, and both proxies log it. Pure: the random bytes come
 * from the caller.
 * @module
 */

/** Characters of the random per-process prefix (36^5: about 60 million prefixes). */
export const PREFIX_CHARS = 5;
/** Longest id accepted from a peer. */
export const MAX_CONN_ID_CHARS = 64;

const ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz";
const ID_PATTERN = /^[0-9A-Za-z._:-]+$/;

/** A new random prefix, `xxxxx-` (base 36). */
export function connIdPrefix(
  random: (into: Uint8Array) => void = (b) => void crypto.getRandomValues(b),
): string {
  const raw = new Uint8Array(PREFIX_CHARS);
  random(raw);
  let s = "";
  for (const b of raw) s += ALPHABET[b % 36]; // the bias of 256 mod 36 costs nothing here
  return `${s}-`;
}

/** The id of connection number `n` under `prefix`. */
export function connIdOf(prefix: string, n: number): string {
  return `${prefix}${n.toString(36)}`;
}

/**
 * Whether `v` is an id a peer may send: 1 to {@linkcode MAX_CONN_ID_CHARS} characters of
 * `[0-9A-Za-z._:-]` (nothing that could break a log line).
 */
export function isConnId(v: unknown): v is string {
  return typeof v === "string" && v.length >= 1 && v.length <= MAX_CONN_ID_CHARS &&
    ID_PATTERN.test(v);
}
