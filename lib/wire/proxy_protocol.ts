/**
 * The PROXY protocol (docs/architecture.md, "The PROXY protocol"; HAProxy's
 * doc/proxy-protocol.txt): what both directions share — the v2 signature, the command, family
 * and TLV numbers, and the address a header carries. Pure, no I/O. The encoder (the private proxy
 * writes a header to the internal server) and the incremental reader (the public proxy reads one
 * from a load balancer in front) build on these.
 * @module
 */

/** The 12 bytes every v2 header starts with. */
export const PP2_SIGNATURE: Uint8Array = new Uint8Array([
  0x0d,
  0x0a,
  0x0d,
  0x0a,
  0x00,
  0x0d,
  0x0a,
  0x51,
  0x55,
  0x49,
  0x54,
  0x0a,
]);
/** "PROXY " — every v1 header starts with it. */
export const PP1_PREFIX = "PROXY ";
/** A v1 header is at most 107 bytes, CRLF included. */
export const PP1_MAX_BYTES = 107;

/** The version and command byte of v2: version 2 in the high nibble. */
export const PP2_VERSION = 0x20;
export const PP2_CMD_LOCAL = 0x00;
export const PP2_CMD_PROXY = 0x01;

/** Address family and transport byte of v2. */
export const PP2_FAM_UNSPEC = 0x00;
export const PP2_FAM_TCP4 = 0x11;
export const PP2_FAM_TCP6 = 0x21;

/** TLV types used here. */
export const PP2_TYPE_ALPN = 0x01;
export const PP2_TYPE_AUTHORITY = 0x02;

/** Which header the private proxy writes to an internal server (`proxy_protocol` setting). */
export type ProxyProtocolVersion = "v1" | "v2";

/** The addresses of a proxied TCP connection: the client's, and the one it connected to. */
export interface ProxiedAddresses {
  readonly family: "tcp4" | "tcp6";
  readonly source: { readonly address: string; readonly port: number };
  readonly destination: { readonly address: string; readonly port: number };
}
