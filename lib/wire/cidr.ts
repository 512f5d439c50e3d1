/**
 * Address ranges for the allow and deny lists (docs/architecture.md, "Admission"): parse an IP
 * literal or a CIDR (`127.0.0.2/32`, `10.0.0.0/8`, `::1/128`, `2001:db8::/32`; a bare address is
 * the range of one) and match addresses against a set of them. Pure.
 *
 * Every address is kept as IPv6 (four 32-bit words): an IPv4 address is its IPv4-mapped form
 * `::ffff:a.b.c.d` and an IPv4 prefix of n bits is one of 96 + n, so `10.0.0.0/8` matches both
 * `10.1.2.3` and `::ffff:10.1.2.3` (what a dual-stack socket reports for an IPv4 client).
 * @module
 */

/** An address as four 32-bit words, most significant first. */
export type Address = Uint32Array;

/** One range: `bits` leading bits of `net`. */
export interface Cidr {
  readonly net: Address;
  readonly bits: number;
  /** As written, normalised (`10.0.0.0/8`, `::1/128`). */
  readonly text: string;
}

/** Parses an IPv4 dotted quad into its value, or null. */
function ipv4(s: string): number | null {
  const parts = s.split(".");
  if (parts.length !== 4) return null;
  let v = 0;
  for (const p of parts) {
    if (!/^\d{1,3}$/.test(p) || (p.length > 1 && p[0] === "0")) return null;
    const n = Number(p);
    if (n > 255) return null;
    v = v * 256 + n;
  }
  return v;
}

/**
 * Parses an IP literal (IPv4 or IPv6, without brackets; an IPv6 zone `%eth0` is ignored) into
 * an {@linkcode Address}, or null when it is not one.
 */
export function parseAddress(text: string): Address | null {
  const s = text.startsWith("[") && text.endsWith("]") ? text.slice(1, -1) : text;
  if (!s.includes(":")) {
    const v = ipv4(s);
    return v === null ? null : Uint32Array.of(0, 0, 0xffff, v);
  }
  const zone = s.indexOf("%");
  const body = zone >= 0 ? s.slice(0, zone) : s;
  const groups: number[] = [];
  const halves = body.split("::");
  if (halves.length > 2) return null;
  const read = (part: string, out: number[], last: boolean): boolean => {
    if (part === "") return true;
    const items = part.split(":");
    for (let i = 0; i < items.length; i++) {
      const it = items[i]!;
      if (last && i === items.length - 1 && it.includes(".")) {
        const v = ipv4(it);
        if (v === null) return false;
        out.push(v >>> 16, v & 0xffff);
      } else if (/^[0-9a-fA-F]{1,4}$/.test(it)) out.push(parseInt(it, 16));
      else return false;
    }
    return true;
  };
  const head: number[] = [];
  const tail: number[] = [];
  if (halves.length === 1) {
    if (!read(body, head, true) || head.length !== 8) return null;
    groups.push(...head);
  } else {
    if (!read(halves[0]!, head, false) || !read(halves[1]!, tail, true)) return null;
    if (head.length + tail.length > 7) return null;
    groups.push(...head, ...new Array(8 - head.length - tail.length).fill(0), ...tail);
  }
  const a = new Uint32Array(4);
  for (let i = 0; i < 4; i++) a[i] = ((groups[2 * i]! << 16) | groups[2 * i + 1]!) >>> 0;
  return a;
}

/** Whether `a` is an IPv4-mapped address (`::ffff:a.b.c.d`). */
function mapped(a: Address): boolean {
  return a[0] === 0 && a[1] === 0 && a[2] === 0xffff;
}

/** An address as text: dotted quad for IPv4-mapped ones, else compressed IPv6. */
export function addressText(a: Address): string {
  if (mapped(a)) {
    const v = a[3]!;
    return `${v >>> 24}.${(v >>> 16) & 255}.${(v >>> 8) & 255}.${v & 255}`;
  }
  const g: number[] = [];
  for (const w of a) g.push(w >>> 16, w & 0xffff);
  // the longest run of two or more zero groups becomes "::"
  let best = -1;
  let len = 0;
  for (let i = 0; i < 8;) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > len && j - i >= 2) [best, len] = [i, j - i];
    i = j;
  }
  const hex = (xs: number[]) => xs.map((x) => x.toString(16)).join(":");
  return best < 0 ? hex(g) : `${hex(g.slice(0, best))}::${hex(g.slice(best + len))}`;
}

/**
 * Parses `10.0.0.0/8`, `::1/128` or a bare address. Throws Error with a reason on a bad one,
 * including host bits set past the prefix (`10.0.0.1/8`: most likely a typo).
 */
export function parseCidr(text: string): Cidr {
  const slash = text.indexOf("/");
  const addr = slash < 0 ? text : text.slice(0, slash);
  const net = parseAddress(addr);
  if (net === null || addr.includes("%")) {
    throw new Error(`"${addr}" is not an IPv4 or IPv6 address`);
  }
  const v4 = !addr.includes(":");
  const max = v4 ? 32 : 128;
  let bits = max;
  if (slash >= 0) {
    const p = text.slice(slash + 1);
    if (!/^\d{1,3}$/.test(p) || Number(p) > max) {
      throw new Error(`prefix length "${p}" must be 0 to ${max}`);
    }
    bits = Number(p);
  }
  const total = v4 ? 96 + bits : bits;
  for (let i = 0; i < 4; i++) {
    const keep = Math.max(0, Math.min(32, total - 32 * i));
    const mask = keep === 0 ? 0 : (0xffffffff << (32 - keep)) >>> 0;
    if ((net[i]! & ~mask) >>> 0 !== 0) {
      throw new Error(`"${text}" has bits set past its /${bits} prefix`);
    }
  }
  return { net, bits: total, text: `${addressText(net)}/${bits}` };
}

/** Whether `a` is in `c`. */
export function inCidr(a: Address, c: Cidr): boolean {
  for (let i = 0; i < 4; i++) {
    const keep = Math.max(0, Math.min(32, c.bits - 32 * i));
    if (keep === 0) return true;
    const mask = (0xffffffff << (32 - keep)) >>> 0;
    if (((a[i]! & mask) >>> 0) !== c.net[i]) return false;
  }
  return true;
}

/** A set of ranges; a linear scan (the lists are short, docs/settings.md "allow"). */
export class CidrSet {
  readonly cidrs: readonly Cidr[];
  /** The texts it was made from, joined with ",": what a cache of parsed sets keys on. */
  readonly key: string;
  constructor(texts: readonly string[]) {
    this.cidrs = texts.map(parseCidr);
    this.key = texts.join(",");
  }
  get size(): number {
    return this.cidrs.length;
  }
  has(a: Address): boolean {
    for (const c of this.cidrs) if (inCidr(a, c)) return true;
    return false;
  }
}
