/**
 * Host names: normalisation and the one exact-then-wildcard match every table of names uses
 * (the public proxy's announcements, the data plane's routes, the private proxy's announcements).
 * Pure. See docs/architecture.md, "The wire codecs".
 * @module
 */

const LABEL = /^(?!-)[a-z0-9-]{1,63}(?<!-)$/;

/** Normalises a DNS host name: lower case, no trailing dot; returns null when invalid. */
export function normalizeHostName(name: string): string | null {
  let n = name.toLowerCase();
  if (n.endsWith(".")) n = n.slice(0, -1);
  if (n.length === 0 || n.length > 253) return null;
  for (const label of n.split(".")) if (!LABEL.test(label)) return null;
  return n;
}

/** Normalises a domain or `*.domain` (one wildcard label in front); null when it is not one. */
export function normalizeDomain(v: unknown): string | null {
  if (typeof v !== "string") return null;
  const star = v.startsWith("*.");
  const n = normalizeHostName(star ? v.slice(2) : v);
  return n === null ? null : star ? `*.${n}` : n;
}

/** The wildcard domain that covers `name` (`a.b.c` → `*.b.c`), or null for a single label. */
export function wildcardOf(name: string): string | null {
  const dot = name.indexOf(".");
  return dot < 0 ? null : `*${name.slice(dot)}`;
}

/**
 * Looks the normalised host `name` up in a table of domains: the exact name first, then the
 * `*.parent` that covers it (one label). Returns the domain that matched, or undefined.
 */
export function matchDomain(name: string, has: (domain: string) => boolean): string | undefined {
  if (has(name)) return name;
  const wild = wildcardOf(name);
  return wild !== null && has(wild) ? wild : undefined;
}

/** {@linkcode matchDomain} over a map: the entry of the domain that matched, or undefined. */
export function matchName<T>(name: string, table: ReadonlyMap<string, T>): T | undefined {
  const domain = matchDomain(name, (d) => table.has(d));
  return domain === undefined ? undefined : table.get(domain);
}
