/**
 * IP literals as bytes in network order (shared by the native driver's socket addresses and the
 * PROXY protocol encoder, docs/architecture.md, "The PROXY protocol"). Pure, no I/O.
 * @module
 */

/** The 4 bytes of a dotted IPv4 literal, or null when `s` is not one. */
export function ipv4Bytes(s: string): Uint8Array | null {
  // by hand, not a regex: the native driver parses an address per connect and per pool header
  const n = s.length;
  if (n < 7 || n > 15) return null;
  const out = new Uint8Array(4);
  let part = 0;
  let v = 0;
  let digits = 0;
  for (let i = 0; i < n; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0x30 && c <= 0x39) {
      if (++digits > 3) return null;
      v = v * 10 + c - 0x30;
    } else if (c === 0x2e && digits > 0 && part < 3 && v <= 255) {
      out[part++] = v;
      v = 0;
      digits = 0;
    } else return null;
  }
  if (part !== 3 || digits === 0 || v > 255) return null;
  out[3] = v;
  return out;
}

/** The 16 bytes of an IPv6 literal (no brackets, no zone; `::` and a dotted tail allowed), or null. */
export function ipv6Bytes(s: string): Uint8Array | null {
  if (!s.includes(":") || s.includes("%")) return null;
  let tail4: Uint8Array | null = null;
  const last = s.lastIndexOf(":");
  if (s.slice(last + 1).includes(".")) {
    tail4 = ipv4Bytes(s.slice(last + 1));
    if (!tail4) return null;
    s = s.slice(0, last + 1) + "0:0";
  }
  const halves = s.split("::");
  if (halves.length > 2) return null;
  const parse = (h: string) => (h === "" ? [] : h.split(":"));
  const head = parse(halves[0]!);
  const rest = halves.length === 2 ? parse(halves[1]!) : [];
  const fill = 8 - head.length - rest.length;
  if (halves.length === 1 ? head.length !== 8 : fill < 1) return null;
  const words = [...head, ...Array(halves.length === 2 ? fill : 0).fill("0"), ...rest];
  const out = new Uint8Array(16);
  for (let i = 0; i < 8; i++) {
    const w = words[i]!;
    if (!/^[0-9a-fA-F]{1,4}$/.test(w)) return null;
    const v = parseInt(w, 16);
    out[2 * i] = v >> 8;
    out[2 * i + 1] = v & 0xff;
  }
  if (tail4) out.set(tail4, 12);
  return out;
}
