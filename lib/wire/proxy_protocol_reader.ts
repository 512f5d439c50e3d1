/**
 * The incremental PROXY protocol reader (docs/architecture.md, "PROXY protocol from a load
 * balancer"): what the public proxy reads before the ClientHello when `accept_proxy_protocol` is
 * set. Pure: bytes in as they arrive (split anywhere), a header or a typed
 * {@linkcode ProtocolError} out. It detects v1 (`PROXY …\r\n`, at most 107 bytes) or v2 (the
 * signature, a 16-byte header and its length) from the first bytes, refuses a byte that cannot
 * start either at once, and never consumes a byte past the header: what follows it in the same
 * chunk (the ClientHello) is handed back untouched.
 *
 * Bounded: a v1 line is at most 107 bytes; a v2 header's length may hold its family's address
 * block and at most {@linkcode PP2_MAX_TLV_BYTES} of TLVs.
 *
 * Reference: HAProxy's doc/proxy-protocol.txt (sections 2.1 and 2.2).
 * @module
 */
import { ProtocolError } from "../errors.ts";
import {
  PP1_MAX_BYTES,
  PP1_PREFIX,
  PP2_CMD_LOCAL,
  PP2_CMD_PROXY,
  PP2_FAM_TCP4,
  PP2_FAM_TCP6,
  PP2_SIGNATURE,
  PP2_VERSION,
  type ProxiedAddresses,
} from "./proxy_protocol.ts";

/** Bytes of TLVs a v2 header may carry after its address block (cloud balancers send < 100). */
export const PP2_MAX_TLV_BYTES = 1024;
/** The fixed part of a v2 header: signature, version and command, family, length. */
export const PP2_HEADER_BYTES = 16;

/** One TLV of a v2 header. */
export interface ProxyTlv {
  readonly type: number;
  readonly value: Uint8Array;
}

/** A complete PROXY protocol header. */
export interface ProxyHeader {
  readonly version: 1 | 2;
  /**
   * `proxy`: relayed for a client, `addresses` (when present) name it. `local`: the balancer's
   * own connection (a health check: v2 LOCAL; a v1 UNKNOWN is a `proxy` without addresses).
   */
  readonly command: "proxy" | "local";
  /**
   * The client's and the balancer's addresses. Absent for `local`, and for a v2 PROXY of a
   * family this reader does not use (UNSPEC, UDP, UNIX): the connection's own addresses stand.
   */
  readonly addresses?: ProxiedAddresses;
  /** v2 TLVs in order (empty for v1 and for LOCAL). */
  readonly tlvs: readonly ProxyTlv[];
  /** Bytes of the header, all of them consumed. */
  readonly length: number;
}

/** What one {@linkcode ProxyHeaderReader.push} gives. */
export type ProxyHeaderResult =
  | { readonly done: false }
  /** `rest`: the bytes of the chunk after the header (a view of it; may be empty). */
  | { readonly done: true; readonly header: ProxyHeader; readonly rest: Uint8Array };

const V1_PREFIX = new TextEncoder().encode(PP1_PREFIX);
/** Address block sizes of the v2 families (doc/proxy-protocol.txt, 2.2). */
const V2_ADDRESS_BYTES: ReadonlyMap<number, number> = new Map([
  [0x00, 0], // UNSPEC
  [0x11, 12], // TCP over IPv4
  [0x12, 12], // UDP over IPv4
  [0x21, 36], // TCP over IPv6
  [0x22, 36], // UDP over IPv6
  [0x31, 216], // UNIX stream
  [0x32, 216], // UNIX datagram
]);

function fail(detail: string): never {
  throw new ProtocolError(`Cannot read PROXY protocol header: ${detail}`, "protocol");
}

function hex(b: number): string {
  return `0x${b.toString(16).padStart(2, "0")}`;
}

/** Reads one header; feed it chunks with {@linkcode push} until it is done. Not reusable. */
export class ProxyHeaderReader {
  #buf = new Uint8Array(PP2_HEADER_BYTES);
  #got = 0;
  #version: 0 | 1 | 2 = 0;
  /** v2: bytes of the whole header, once its fixed part is in. */
  #total = 0;
  #done = false;

  /** Takes the next bytes; throws ProtocolError as soon as they cannot be a valid header. */
  push(chunk: Uint8Array): ProxyHeaderResult {
    if (this.#done) throw new Error("ProxyHeaderReader: header already read");
    let i = 0;
    while (i < chunk.length) {
      if (this.#version === 0) {
        this.#append(chunk[i++]!);
        this.#detect();
        continue;
      }
      if (this.#version === 1) {
        // only up to the LF: what follows the line belongs to the ClientHello
        const room = PP1_MAX_BYTES - this.#got;
        const end = Math.min(chunk.length, i + room);
        let lf = -1;
        for (let j = i; j < end; j++) {
          if (chunk[j] === 0x0a) {
            lf = j;
            break;
          }
        }
        const take = lf < 0 ? end : lf + 1;
        this.#appendAll(chunk.subarray(i, take));
        i = take;
        if (lf >= 0) return this.#finish(parseV1(this.#buf.subarray(0, this.#got)), chunk, i);
        if (this.#got >= PP1_MAX_BYTES) fail(`no CRLF in the first ${PP1_MAX_BYTES} bytes (v1)`);
        continue;
      }
      // v2
      if (this.#got < PP2_HEADER_BYTES) {
        this.#append(chunk[i++]!);
        if (this.#got === PP2_HEADER_BYTES) this.#v2Fixed();
      } else {
        const take = Math.min(chunk.length - i, this.#total - this.#got);
        this.#appendAll(chunk.subarray(i, i + take));
        i += take;
      }
      if (this.#total > 0 && this.#got === this.#total) {
        return this.#finish(parseV2(this.#buf.subarray(0, this.#got)), chunk, i);
      }
    }
    return { done: false };
  }

  /** Bytes read so far (for a message when the connection ends early). */
  get got(): number {
    return this.#got;
  }

  #finish(header: ProxyHeader, chunk: Uint8Array, i: number): ProxyHeaderResult {
    this.#done = true;
    this.#buf = undefined!;
    return { done: true, header, rest: chunk.subarray(i) };
  }

  #append(b: number): void {
    this.#buf[this.#got++] = b;
  }

  #appendAll(bytes: Uint8Array): void {
    if (this.#got + bytes.length > this.#buf.length) {
      const cap = this.#version === 1 ? PP1_MAX_BYTES : this.#total;
      const grown = new Uint8Array(Math.max(cap, this.#got + bytes.length));
      grown.set(this.#buf.subarray(0, this.#got));
      this.#buf = grown;
    }
    this.#buf.set(bytes, this.#got);
    this.#got += bytes.length;
  }

  /** Decides v1 or v2 from the first bytes, refusing at the first byte that fits neither. */
  #detect(): void {
    const n = this.#got;
    const b = this.#buf[n - 1]!;
    const v1 = n <= V1_PREFIX.length &&
      this.#buf.subarray(0, n).every((x, k) => x === V1_PREFIX[k]);
    const v2 = n <= PP2_SIGNATURE.length &&
      this.#buf.subarray(0, n).every((x, k) => x === PP2_SIGNATURE[k]);
    if (v1 && n === V1_PREFIX.length) this.#version = 1;
    else if (v2 && n === PP2_SIGNATURE.length) this.#version = 2;
    else if (!v1 && !v2) {
      fail(
        n === 1
          ? `first byte ${hex(b)} starts neither "PROXY " (v1) nor the v2 signature${
            b === 0x16 ? " (a TLS record: is the load balancer sending PROXY headers?)" : ""
          }`
          : `byte ${n} (${hex(b)}) breaks the ${
            this.#buf[0] === 0x50 ? `"PROXY " prefix (v1)` : "v2 signature"
          }`,
      );
    }
  }

  /** The v2 fixed part is in: checks version, command and family, and the length's bound. */
  #v2Fixed(): void {
    const verCmd = this.#buf[12]!;
    const fam = this.#buf[13]!;
    const len = (this.#buf[14]! << 8) | this.#buf[15]!;
    if ((verCmd & 0xf0) !== PP2_VERSION) fail(`version ${verCmd >> 4}, not 2 (v2)`);
    const cmd = verCmd & 0x0f;
    if (cmd !== PP2_CMD_LOCAL && cmd !== PP2_CMD_PROXY) fail(`unknown command ${hex(cmd)} (v2)`);
    const addr = V2_ADDRESS_BYTES.get(fam);
    if (addr === undefined) fail(`unknown address family and protocol ${hex(fam)} (v2)`);
    if (cmd === PP2_CMD_PROXY && len < addr) {
      fail(`length ${len} is shorter than the ${addr}-byte address block of family ${hex(fam)}`);
    }
    if (len > addr + PP2_MAX_TLV_BYTES) {
      fail(
        `length ${len} is over the limit: the ${addr}-byte address block and ${PP2_MAX_TLV_BYTES} bytes of TLVs`,
      );
    }
    this.#total = PP2_HEADER_BYTES + len;
  }
}

/** Parses a complete v1 line (CRLF included). */
function parseV1(line: Uint8Array): ProxyHeader {
  const n = line.length;
  if (n < 2 || line[n - 2] !== 0x0d) fail("a v1 line must end with CRLF, got a lone LF");
  for (let k = 0; k < n - 2; k++) {
    const c = line[k]!;
    if (c < 0x20 || c > 0x7e) fail(`byte ${hex(c)} at ${k} in a v1 line (US-ASCII text only)`);
  }
  const text = new TextDecoder().decode(line.subarray(0, n - 2));
  const fields = text.split(" ");
  const proto = fields[1];
  // UNKNOWN: "the receiver must ignore anything presented before the CRLF" and use the real
  // connection's endpoints — a client the sender could not describe, not a health check
  if (proto === "UNKNOWN") return { version: 1, command: "proxy", tlvs: [], length: n };
  if (proto !== "TCP4" && proto !== "TCP6") {
    fail(`v1 protocol ${JSON.stringify(proto ?? "")}, expected TCP4, TCP6 or UNKNOWN`);
  }
  if (fields.length !== 6) {
    fail(`a v1 ${proto} line has 6 fields separated by single spaces, got ${fields.length}`);
  }
  const family = proto === "TCP4" ? "tcp4" : "tcp6";
  const ip = (s: string, what: string) => {
    const parsed = family === "tcp4" ? parseIpv4(s) : parseIpv6(s);
    if (parsed === null) fail(`v1 ${what} address ${JSON.stringify(s)} is not ${proto}`);
    return family === "tcp4" ? s : formatIpv6(parsed);
  };
  return {
    version: 1,
    command: "proxy",
    addresses: {
      family,
      source: { address: ip(fields[2]!, "source"), port: v1Port(fields[4]!, "source") },
      destination: {
        address: ip(fields[3]!, "destination"),
        port: v1Port(fields[5]!, "destination"),
      },
    },
    tlvs: [],
    length: n,
  };
}

function v1Port(s: string, what: string): number {
  if (!/^(0|[1-9][0-9]{0,4})$/.test(s) || Number(s) > 65535) {
    fail(`v1 ${what} port ${JSON.stringify(s)} is not a decimal 0..65535 without leading zeros`);
  }
  return Number(s);
}

/** Parses a complete v2 header (fixed part already checked). */
function parseV2(h: Uint8Array): ProxyHeader {
  const length = h.length;
  if ((h[12]! & 0x0f) === PP2_CMD_LOCAL) {
    // "discard the protocol block including the family which is ignored"
    return { version: 2, command: "local", tlvs: [], length };
  }
  const fam = h[13]!;
  const addr = V2_ADDRESS_BYTES.get(fam)!;
  const view = new DataView(h.buffer, h.byteOffset, h.byteLength);
  const tlvs: ProxyTlv[] = [];
  let at = PP2_HEADER_BYTES + addr;
  while (at < length) {
    if (length - at < 3) fail(`${length - at} stray bytes after the last TLV (v2)`);
    const type = h[at]!;
    const len = view.getUint16(at + 1);
    if (at + 3 + len > length) {
      fail(`TLV ${hex(type)} of ${len} bytes runs past the header's end (v2)`);
    }
    tlvs.push({ type, value: h.slice(at + 3, at + 3 + len) });
    at += 3 + len;
  }
  const a = PP2_HEADER_BYTES;
  let addresses: ProxiedAddresses | undefined;
  if (fam === PP2_FAM_TCP4) {
    addresses = {
      family: "tcp4",
      source: { address: h.subarray(a, a + 4).join("."), port: view.getUint16(a + 8) },
      destination: { address: h.subarray(a + 4, a + 8).join("."), port: view.getUint16(a + 10) },
    };
  } else if (fam === PP2_FAM_TCP6) {
    addresses = {
      family: "tcp6",
      source: { address: formatIpv6(h.subarray(a, a + 16)), port: view.getUint16(a + 32) },
      destination: {
        address: formatIpv6(h.subarray(a + 16, a + 32)),
        port: view.getUint16(a + 34),
      },
    };
  }
  // UNSPEC, UDP, UNIX with PROXY: "fall back to the UNSPEC mode" — the real endpoints stand
  return { version: 2, command: "proxy", ...(addresses ? { addresses } : {}), tlvs, length };
}

/** A dotted quad without leading zeros, or null. */
export function parseIpv4(s: string): Uint8Array | null {
  const parts = s.split(".");
  if (parts.length !== 4) return null;
  const out = new Uint8Array(4);
  for (let k = 0; k < 4; k++) {
    const p = parts[k]!;
    if (!/^(0|[1-9][0-9]{0,2})$/.test(p) || Number(p) > 255) return null;
    out[k] = Number(p);
  }
  return out;
}

/** An IPv6 address in text (hex groups, at most one `::`, no zone, no dotted tail), or null. */
export function parseIpv6(s: string): Uint8Array | null {
  const halves = s.split("::");
  if (halves.length > 2) return null;
  const groups = (t: string) => t === "" ? [] : t.split(":");
  const head = groups(halves[0]!);
  const tail = halves.length === 2 ? groups(halves[1]!) : [];
  const count = head.length + tail.length;
  if (halves.length === 1 ? count !== 8 : count > 7) return null;
  const all = [...head, ...new Array<string>(8 - count).fill("0"), ...tail];
  const out = new Uint8Array(16);
  for (let k = 0; k < 8; k++) {
    const g = all[k]!;
    if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return null;
    const v = parseInt(g, 16);
    out[2 * k] = v >> 8;
    out[2 * k + 1] = v & 0xff;
  }
  return out;
}

/** 16 bytes as RFC 5952 text: lower case, the longest run (≥ 2) of zero groups as `::`. */
export function formatIpv6(b: Uint8Array): string {
  const g: number[] = [];
  for (let k = 0; k < 8; k++) g.push((b[2 * k]! << 8) | b[2 * k + 1]!);
  let best = -1;
  let bestLen = 0;
  for (let k = 0; k < 8;) {
    if (g[k] !== 0) {
      k++;
      continue;
    }
    let e = k;
    while (e < 8 && g[e] === 0) e++;
    if (e - k > bestLen) [best, bestLen] = [k, e - k];
    k = e;
  }
  const text = (xs: number[]) => xs.map((x) => x.toString(16)).join(":");
  if (bestLen < 2) return text(g);
  return `${text(g.slice(0, best))}::${text(g.slice(best + bestLen))}`;
}
