/**
 * The dev PKI (`tls-pass certs`): a root CA, an intermediate CA and one leaf per name, all ECDSA
 * P-256 made with WebCrypto and `@peculiar/x509`, plus the directory pins (SHA-256 fingerprints).
 * For development and tests only: the root key is written beside the certificates.
 * @module
 */
import "reflect-metadata"; // @peculiar/x509 (through tsyringe) needs a Reflect polyfill first
import * as x509 from "@peculiar/x509";
import { dirname, join } from "node:path";

/** A leaf certificate and its key. */
export interface LeafCert {
  name: string;
  /** Leaf then intermediate, PEM. */
  certPem: string;
  /** PKCS#8 PEM. */
  keyPem: string;
  /** SHA-256 of the leaf's DER, lowercase hex. */
  fingerprint: string;
}

/** The whole dev PKI in memory. */
export interface Pki {
  rootPem: string;
  rootKeyPem: string;
  intermediatePem: string;
  leaves: Record<string, LeafCert>;
}

export interface PkiOptions {
  /** Leaf validity in days, default 825. */
  days?: number;
}

/** The dev names: one leaf each (the roles of settings/dev). */
export const DEV_NAMES: readonly string[] = Object.freeze([
  "public-proxy-1",
  "private-proxy-1",
  "internal-server",
]);

const DAY_MS = 86_400_000;
const CA_DAYS = 3650;
const KEY_ALGORITHM: EcKeyGenParams = { name: "ECDSA", namedCurve: "P-256" };
const SIGNING_ALGORITHM: EcdsaParams = { name: "ECDSA", hash: "SHA-256" };
const RESERVED = new Set(["root", "intermediate"]);
const NAME = /^(?=.{1,253}$)(?!-)[a-z0-9-]{1,63}(?<!-)(\.(?!-)[a-z0-9-]{1,63}(?<!-))*$/;

function generateKeys(): Promise<CryptoKeyPair> {
  return crypto.subtle.generateKey(KEY_ALGORITHM, true, ["sign", "verify"]);
}

async function keyPem(key: CryptoKey): Promise<string> {
  const der = await crypto.subtle.exportKey("pkcs8", key);
  return x509.PemConverter.encode(der, "PRIVATE KEY");
}

function hex(bytes: ArrayBuffer): string {
  return Array.from(new Uint8Array(bytes), (b) => b.toString(16).padStart(2, "0")).join("");
}

async function fingerprintOfDer(der: BufferSource): Promise<string> {
  return hex(await crypto.subtle.digest("SHA-256", der));
}

/** Start a little in the past, so a clock that is slightly behind still accepts the certificate. */
function validity(days: number): { notBefore: Date; notAfter: Date } {
  const now = Date.now();
  return { notBefore: new Date(now - 3_600_000), notAfter: new Date(now + days * DAY_MS) };
}

function checkNames(names: readonly string[]): void {
  const seen = new Set<string>();
  for (const name of names) {
    if (typeof name !== "string" || !NAME.test(name)) {
      throw new TypeError(
        `Cannot create dev PKI: name ${JSON.stringify(name)} is not a lower-case host name`,
      );
    }
    if (RESERVED.has(name)) {
      throw new TypeError(`Cannot create dev PKI: name "${name}" is reserved for the CA files`);
    }
    if (seen.has(name)) throw new TypeError(`Cannot create dev PKI: name "${name}" is repeated`);
    seen.add(name);
  }
}

/**
 * Creates a root CA, an intermediate CA (path length 0) and, for each name, a leaf signed by the
 * intermediate with subject CN=name and SANs `name`, `*.name.local`, `localhost`, 127.0.0.1, ::1,
 * usable as TLS server and client.
 */
export async function createPki(names: string[], options: PkiOptions = {}): Promise<Pki> {
  checkNames(names);
  const days = options.days ?? 825;
  if (!Number.isInteger(days) || days < 1 || days > CA_DAYS) {
    throw new RangeError(
      `Cannot create dev PKI: days is ${days}, expected an integer from 1 to ${CA_DAYS}`,
    );
  }

  const rootKeys = await generateKeys();
  const rootName = "CN=tls-pass dev root CA, O=tls-pass dev";
  const root = await x509.X509CertificateGenerator.createSelfSigned({
    name: rootName,
    keys: rootKeys,
    signingAlgorithm: SIGNING_ALGORITHM,
    ...validity(CA_DAYS),
    extensions: [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(
        x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign,
        true,
      ),
      await x509.SubjectKeyIdentifierExtension.create(rootKeys.publicKey),
    ],
  });

  const interKeys = await generateKeys();
  const interName = "CN=tls-pass dev intermediate CA, O=tls-pass dev";
  const intermediate = await x509.X509CertificateGenerator.create({
    subject: interName,
    issuer: root.subject,
    publicKey: interKeys.publicKey,
    signingKey: rootKeys.privateKey,
    signingAlgorithm: SIGNING_ALGORITHM,
    ...validity(CA_DAYS - 1),
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(
        x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign,
        true,
      ),
      await x509.SubjectKeyIdentifierExtension.create(interKeys.publicKey),
      await x509.AuthorityKeyIdentifierExtension.create(rootKeys.publicKey),
    ],
  });
  const intermediatePem = intermediate.toString("pem");

  const leaves: Record<string, LeafCert> = {};
  for (const name of names) {
    const keys = await generateKeys();
    const leaf = await x509.X509CertificateGenerator.create({
      subject: `CN=${name}`,
      issuer: intermediate.subject,
      publicKey: keys.publicKey,
      signingKey: interKeys.privateKey,
      signingAlgorithm: SIGNING_ALGORITHM,
      ...validity(days),
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        new x509.ExtendedKeyUsageExtension([
          x509.ExtendedKeyUsage.serverAuth,
          x509.ExtendedKeyUsage.clientAuth,
        ]),
        new x509.SubjectAlternativeNameExtension([
          { type: "dns", value: name },
          { type: "dns", value: `*.${name}.local` },
          { type: "dns", value: "localhost" },
          { type: "ip", value: "127.0.0.1" },
          { type: "ip", value: "::1" },
        ]),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
        await x509.AuthorityKeyIdentifierExtension.create(interKeys.publicKey),
      ],
    });
    leaves[name] = {
      name,
      certPem: `${leaf.toString("pem")}\n${intermediatePem}\n`,
      keyPem: `${await keyPem(keys.privateKey)}\n`,
      fingerprint: await fingerprintOfDer(leaf.rawData),
    };
  }

  return {
    rootPem: `${root.toString("pem")}\n`,
    rootKeyPem: `${await keyPem(rootKeys.privateKey)}\n`,
    intermediatePem: `${intermediatePem}\n`,
    leaves,
  };
}

/** SHA-256 of the DER of the first certificate in `pem`, lowercase hex. */
export function fingerprintOfPem(pem: string): Promise<string> {
  const m = /-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\s]+)-----END CERTIFICATE-----/.exec(pem);
  if (!m) {
    return Promise.reject(
      new TypeError("Cannot compute fingerprint: no PEM certificate found in the text"),
    );
  }
  const b64 = m[1]!.replace(/\s+/g, "");
  return fingerprintOfDer(Uint8Array.from(atob(b64), (c) => c.charCodeAt(0)));
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw err;
  }
}

/**
 * Writes `root.crt`, `root.key`, `intermediate.crt` and `<name>.crt`/`<name>.key` per leaf into
 * `dir` (created if missing); keys are mode 0600. Without `force` it writes nothing when any of
 * these files exists. Returns the paths written.
 */
export async function writePki(
  pki: Pki,
  dir: string,
  options: { force?: boolean } = {},
): Promise<string[]> {
  const files: [string, string, boolean][] = [
    ["root.crt", pki.rootPem, false],
    ["root.key", pki.rootKeyPem, true],
    ["intermediate.crt", pki.intermediatePem, false],
  ];
  for (const leaf of Object.values(pki.leaves)) {
    files.push([`${leaf.name}.crt`, leaf.certPem, false], [`${leaf.name}.key`, leaf.keyPem, true]);
  }
  const paths = files.map(([name]) => join(dir, name));
  if (!options.force) {
    for (const path of paths) {
      if (await exists(path)) {
        throw new Deno.errors.AlreadyExists(
          `Cannot write dev PKI: "${path}" already exists (use --force to overwrite)`,
        );
      }
    }
  }
  await Deno.mkdir(dir, { recursive: true });
  for (const [i, [, text, secret]] of files.entries()) {
    const path = paths[i]!;
    await Deno.writeTextFile(path, text, secret ? { mode: 0o600 } : {});
    // mode applies only when the file is created; an overwritten key keeps its old mode otherwise
    if (secret && Deno.build.os !== "windows") await Deno.chmod(path, 0o600);
  }
  return paths;
}

/** Writes the directory pins for every leaf: `operators.<name>.fingerprints`. */
export async function writePins(pki: Pki, file: string): Promise<void> {
  const lines = [
    "# Generated by `tls-pass certs`: SHA-256 fingerprints of the dev leaf certificates.",
    "# Do not edit; run `tls-pass certs --force` to make new certificates and pins.",
    "operators:",
  ];
  for (const leaf of Object.values(pki.leaves)) {
    lines.push(`  ${leaf.name}:`, `    fingerprints: ["${leaf.fingerprint}"]`);
  }
  await Deno.mkdir(dirname(file), { recursive: true });
  await Deno.writeTextFile(file, `${lines.join("\n")}\n`);
}
