/**
 * The checks an operator's own link certificate must pass before a role binds anything
 * (docs/settings.md, "`tls-pass check ROLE`"): its subject CN is the operator, the same name is
 * one of its DNS SANs (peers refuse a link without it, docs/architecture.md, "The picture"), and
 * its extended key usages allow what the role does with it. `run` and `check` run the same code.
 * @module
 */
import { X509Certificate } from "node:crypto";
import { SettingsError } from "../errors.ts";
import { errorText } from "../log.ts";

/** What a role does with its certificate: a TLS server (listens) and/or a TLS client (dials). */
export type Usage = "serverAuth" | "clientAuth";

/** The DER of the OIDs id-kp-serverAuth (1.3.6.1.5.5.7.3.1) and id-kp-clientAuth (…3.2). */
const OID: Record<Usage, string> = {
  serverAuth: "2b06010505070301",
  clientAuth: "2b06010505070302",
};

/** id-ce-extKeyUsage (2.5.29.37) as a DER OID: tag, length, value. */
const EKU_OID = "0603551d25";

function hex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** One DER element at `at`: its tag, where its value starts and ends. */
function element(der: Uint8Array, at: number): { tag: number; start: number; end: number } {
  const tag = der[at]!;
  let len = der[at + 1]!;
  let start = at + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + der[start + i]!;
    start += n;
  }
  if (start + len > der.length) throw new RangeError("DER element runs past the certificate");
  return { tag, start, end: start + len };
}

/**
 * The extended key usages of a certificate as DER OID values (hex), or undefined when it has no
 * extKeyUsage extension (any use). Node's X509Certificate#keyUsage gives the key usage on Deno,
 * so the extension is read from the DER: `OID 2.5.29.37, [critical], OCTET STRING { SEQUENCE {
 * OID… } }`.
 */
function extendedKeyUsages(x: X509Certificate): string[] | undefined {
  const der = new Uint8Array(x.raw);
  const h = hex(der);
  let at = -1;
  for (let i = h.indexOf(EKU_OID); i >= 0; i = h.indexOf(EKU_OID, i + 1)) {
    if (i % 2 === 0) {
      at = i / 2 + EKU_OID.length / 2;
      break;
    }
  }
  if (at < 0) return undefined;
  let e = element(der, at);
  if (e.tag === 0x01) e = element(der, e.end); // critical
  if (e.tag !== 0x04) throw new RangeError("extKeyUsage is not an OCTET STRING");
  const seq = element(der, e.start);
  if (seq.tag !== 0x30) throw new RangeError("extKeyUsage is not a SEQUENCE");
  const out: string[] = [];
  for (let i = seq.start; i < seq.end;) {
    const oid = element(der, i);
    if (oid.tag === 0x06) out.push(hex(der.subarray(oid.start, oid.end)));
    i = oid.end;
  }
  return out;
}

/** The subject CN of a certificate as node:crypto prints the subject, or "" without one. */
function commonName(x: X509Certificate): string {
  return /(?:^|\n)CN=([^\n]*)/.exec(x.subject)?.[1] ?? "";
}

/** The DNS names of the subjectAltName extension (`DNS:a, DNS:b, IP Address:…`). */
function dnsNames(x: X509Certificate): string[] {
  return (x.subjectAltName ?? "").split(", ")
    .filter((s) => s.startsWith("DNS:"))
    .map((s) => s.slice(4).replace(/^"|"$/g, "").toLowerCase());
}

/**
 * Checks the first certificate of `certPem` (leaf first, as `certificate_file` holds it) for
 * `operator`. Throws SettingsError for `file` naming `key` with every problem at once.
 */
export function checkOwnCertificate(
  certPem: string,
  options: { operator: string; key: string; file: string; usages: readonly Usage[] },
): void {
  const { operator, key, file } = options;
  let x: X509Certificate;
  try {
    x = new X509Certificate(certPem);
  } catch (err) {
    throw new SettingsError(file, [`${key}: cannot read the certificate: ${errorText(err)}`]);
  }
  const problems: string[] = [];
  const cn = commonName(x);
  if (cn !== operator) {
    problems.push(
      cn === ""
        ? `${key}: certificate "${file}" has no subject CN, expected the operator "${operator}"`
        : `${key}: certificate CN is "${cn}", expected the operator "${operator}"`,
    );
  }
  if (!dnsNames(x).includes(operator)) {
    problems.push(
      `${key}: certificate "${file}" has no DNS SAN "${operator}" (peers refuse a link without it)`,
    );
  }
  let ekus: string[] | undefined;
  try {
    ekus = extendedKeyUsages(x);
  } catch (err) {
    problems.push(`${key}: cannot read the extended key usages of "${file}": ${errorText(err)}`);
  }
  if (ekus !== undefined) {
    const missing = options.usages.filter((u) => !ekus.includes(OID[u]));
    if (missing.length > 0) {
      problems.push(
        `${key}: certificate "${file}" lacks the extended key usage ${
          missing.join(" and ")
        } (EPS links need ${options.usages.join(" and ")})`,
      );
    }
  }
  if (problems.length > 0) throw new SettingsError(file, problems);
}
