/**
 * Reading a certificate, its key and CA certificates for a reload (docs/architecture.md,
 * "Reload"): every file must be readable PEM and the key must be the certificate's. Used by the
 * EPS links and the internal server, so a bad file reads the same everywhere.
 * @module
 */
import { createPrivateKey, X509Certificate } from "node:crypto";
import { SettingsError } from "../errors.ts";
import { errorText } from "../log.ts";

/** A file a setting names. */
export interface TlsFile {
  /** The settings key, e.g. `eps.certificate_file`. */
  key: string;
  path: string;
}

/**
 * Reads and checks the files now (synchronously: the caller swaps the material at once). Throws
 * SettingsError naming the key and the file of every problem.
 */
export function readKeyPairSync(
  cert: TlsFile,
  key: TlsFile,
  ca: readonly TlsFile[] = [],
): { cert: string; key: string; ca: string[] } {
  const problems: string[] = [];
  const read = (f: TlsFile): string => {
    try {
      return Deno.readTextFileSync(f.path);
    } catch (err) {
      problems.push(`${f.key}: cannot read "${f.path}": ${errorText(err)}`);
      return "";
    }
  };
  const certPem = read(cert);
  const keyPem = read(key);
  const caPems = ca.map(read);
  const parse = (f: TlsFile, pem: string): X509Certificate | undefined => {
    if (pem === "") return undefined;
    try {
      return new X509Certificate(pem);
    } catch (err) {
      problems.push(`${f.key}: "${f.path}" is not a PEM certificate: ${errorText(err)}`);
      return undefined;
    }
  };
  const x = parse(cert, certPem);
  if (keyPem !== "") {
    try {
      // node:tls would take a garbage key without a word: check it is this certificate's
      if (x && !x.checkPrivateKey(createPrivateKey(keyPem))) {
        problems.push(`${key.key}: "${key.path}" is not the key of the certificate "${cert.path}"`);
      }
    } catch (err) {
      problems.push(`${key.key}: "${key.path}" is not a PEM private key: ${errorText(err)}`);
    }
  }
  ca.forEach((f, i) => parse(f, caPems[i]!));
  if (problems.length > 0) throw new SettingsError(cert.path, problems);
  return { cert: certPem, key: keyPem, ca: caPems };
}
