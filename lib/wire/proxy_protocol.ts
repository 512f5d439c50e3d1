/**
 * The PROXY protocol (docs/architecture.md, "The PROXY protocol"; HAProxy's
 * doc/proxy-protocol.txt): what both directions share — the v2 signature, the command, family
 * and TLV numbers, and the address a header carries. Pure, no I/O. The encoder (the private proxy
 * writes a header to the internal server) and the incremental reader (the public proxy reads one
 * from a load balancer in front) build on these.
 * @module
 */
import { ipv4Bytes, ipv6Bytes } from "./ip.ts";

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

/** A v2 TLV: its type byte and value (at most 65535 bytes). */
export interface ProxyTlv {
  readonly type: number;
  readonly value: Uint8Array;
}

/** The address bytes of `a`'s family, or a RangeError naming `what`. */
function addressBytes(a: ProxiedAddresses, host: string, what: string): Uint8Array {
  const b = a.family === "tcp4" ? ipv4Bytes(host) : ipv6Bytes(host);
  if (b === null) {
    throw new RangeError(
      `Cannot encode PROXY header: ${what} "${host}" is not an ${
        a.family === "tcp4" ? "IPv4" : "IPv6"
      } literal`,
    );
  }
  return b;
}

function checkPort(port: number, what: string): void {
  if (!Number.isInteger(port) || port < 0 || port > 65_535) {
    throw new RangeError(`Cannot encode PROXY header: ${what} port ${port} is not 0 to 65535`);
  }
}

/**
 * The v1 (text) header for `a`: `PROXY TCP4 <src> <dst> <sport> <dport>\r\n` (TCP6 alike, the
 * addresses as given, which must be literals of the family); `PROXY UNKNOWN\r\n` when `a` is null.
 */
export function encodeProxyV1(a: ProxiedAddresses | null): Uint8Array {
  if (a === null) return new TextEncoder().encode(`${PP1_PREFIX}UNKNOWN\r\n`);
  addressBytes(a, a.source.address, "source");
  addressBytes(a, a.destination.address, "destination");
  checkPort(a.source.port, "source");
  checkPort(a.destination.port, "destination");
  const proto = a.family === "tcp4" ? "TCP4" : "TCP6";
  return new TextEncoder().encode(
    `${PP1_PREFIX}${proto} ${a.source.address} ${a.destination.address} ${a.source.port} ${a.destination.port}\r\n`,
  );
}

/**
 * The v2 (binary) header: the PROXY command with TCP over IPv4 or IPv6 and `tlvs` after the
 * addresses; the LOCAL command with no address (the receiver keeps the connection's own) when
 * `a` is null.
 */
export function encodeProxyV2(
  a: ProxiedAddresses | null,
  tlvs: readonly ProxyTlv[] = [],
): Uint8Array {
  let addr = new Uint8Array(0);
  if (a !== null) {
    const src = addressBytes(a, a.source.address, "source");
    const dst = addressBytes(a, a.destination.address, "destination");
    checkPort(a.source.port, "source");
    checkPort(a.destination.port, "destination");
    addr = new Uint8Array(2 * src.length + 4);
    addr.set(src, 0);
    addr.set(dst, src.length);
    const dv = new DataView(addr.buffer);
    dv.setUint16(2 * src.length, a.source.port);
    dv.setUint16(2 * src.length + 2, a.destination.port);
  }
  let n = addr.length;
  for (const t of tlvs) {
    if (t.value.length > 0xffff) {
      throw new RangeError(`Cannot encode PROXY header: TLV ${t.type} is over 65535 bytes`);
    }
    n += 3 + t.value.length;
  }
  if (n > 0xffff) throw new RangeError("Cannot encode PROXY header: over 65535 bytes after 16");
  const out = new Uint8Array(16 + n);
  out.set(PP2_SIGNATURE, 0);
  out[12] = PP2_VERSION | (a === null ? PP2_CMD_LOCAL : PP2_CMD_PROXY);
  out[13] = a === null ? PP2_FAM_UNSPEC : a.family === "tcp4" ? PP2_FAM_TCP4 : PP2_FAM_TCP6;
  out[14] = n >> 8;
  out[15] = n & 0xff;
  out.set(addr, 16);
  let off = 16 + addr.length;
  for (const t of tlvs) {
    out[off] = t.type;
    out[off + 1] = t.value.length >> 8;
    out[off + 2] = t.value.length & 0xff;
    out.set(t.value, off + 3);
    off += 3 + t.value.length;
  }
  return out;
}

/** The IPv4 tail of an IPv4-mapped IPv6 literal (`::ffff:1.2.3.4`), or null. */
function unmapped(host: string): string | null {
  const b = ipv6Bytes(host);
  if (b === null || !b.subarray(0, 10).every((x) => x === 0) || b[10] !== 0xff || b[11] !== 0xff) {
    return null;
  }
  return b.subarray(12).join(".");
}

/**
 * The addresses of a connection from `source` to `destination` (IP literals as the sockets
 * report them): TCP over IPv4 when both are IPv4 (an IPv4-mapped IPv6 address of a dual-stack
 * listener counts as IPv4), else over IPv6 (an IPv4 one written IPv4-mapped). Null when either is
 * not an IP literal.
 */
export function proxiedAddresses(
  source: { readonly hostname: string; readonly port: number },
  destination: { readonly hostname: string; readonly port: number },
): ProxiedAddresses | null {
  const v4 = (h: string) => ipv4Bytes(h) !== null ? h : unmapped(h);
  const s4 = v4(source.hostname);
  const d4 = v4(destination.hostname);
  if (s4 !== null && d4 !== null) {
    return {
      family: "tcp4",
      source: { address: s4, port: source.port },
      destination: { address: d4, port: destination.port },
    };
  }
  const v6 = (h: string) =>
    ipv4Bytes(h) !== null ? `::ffff:${h}` : ipv6Bytes(h) !== null ? h : null;
  const s6 = v6(source.hostname);
  const d6 = v6(destination.hostname);
  if (s6 === null || d6 === null) return null;
  return {
    family: "tcp6",
    source: { address: s6, port: source.port },
    destination: { address: d6, port: destination.port },
  };
}

/**
 * The header the private proxy writes to an internal server (docs/architecture.md, "The PROXY
 * protocol"): v1, or v2 with the client's SNI `authority` (when not empty) as a
 * `PP2_TYPE_AUTHORITY` TLV. `a` null (a public proxy that sent no addresses): v1 UNKNOWN, v2 LOCAL.
 */
export function encodeProxyHeader(
  version: ProxyProtocolVersion,
  a: ProxiedAddresses | null,
  authority = "",
): Uint8Array {
  if (version === "v1") return encodeProxyV1(a);
  const tlvs = authority === "" || a === null
    ? []
    : [{ type: PP2_TYPE_AUTHORITY, value: new TextEncoder().encode(authority) }];
  return encodeProxyV2(a, tlvs);
}
