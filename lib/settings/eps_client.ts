/**
 * The `eps:` block of a proxy's settings: how it reaches its own EPS server. A module of the
 * settings layer (it imports nothing of lib/eps); lib/eps/client.ts takes the parsed value.
 * @module
 */
import type { HostPort } from "../role.ts";
import * as check from "./check.ts";
import { checkReadable } from "./loader.ts";

export interface EpsClientSettings {
  /** The EPS server's link address. */
  address: HostPort;
  /** This operator's certificate (leaf + intermediate) and key: the proxy attaches as its operator. */
  certificateFile: string;
  keyFile: string;
  /** CAs that issued the EPS server's certificate. */
  caCertificateFiles: string[];
  /** Default deadline of an outgoing call. */
  callTimeoutMs: number;
  maxMessageBytes: number;
}

const KEYS = [
  "address",
  "certificate_file",
  "key_file",
  "ca_certificate_files",
  "call_timeout_ms",
  "max_message_bytes",
] as const;

/** Parses the `eps:` block of a proxy's settings. */
export function parseEpsClientSettings(
  v: unknown,
  prefix: string,
  problems: check.Problems,
): EpsClientSettings {
  const m = check.mapping(v, prefix, problems);
  check.onlyKeys(m, KEYS, prefix, problems);
  const k = (key: string) => check.join(prefix, key);
  const req = (key: string) => check.required(m[key], k(key), problems);
  const s: EpsClientSettings = {
    address: req("address")
      ? check.address(m.address, k("address"), problems)
      : { hostname: "", port: 0 },
    certificateFile: req("certificate_file")
      ? check.string(m.certificate_file, k("certificate_file"), problems)
      : "",
    keyFile: req("key_file") ? check.string(m.key_file, k("key_file"), problems) : "",
    caCertificateFiles: req("ca_certificate_files")
      ? check.list(m.ca_certificate_files, k("ca_certificate_files"), problems, check.string)
      : [],
    callTimeoutMs: check.durationMs(m.call_timeout_ms ?? 5000, k("call_timeout_ms"), problems),
    maxMessageBytes: check.bytes(
      m.max_message_bytes ?? 1024 * 1024,
      k("max_message_bytes"),
      problems,
      1024,
    ),
  };
  checkReadable(s.certificateFile, k("certificate_file"), problems);
  checkReadable(s.keyFile, k("key_file"), problems);
  s.caCertificateFiles.forEach((f, i) =>
    checkReadable(f, `${k("ca_certificate_files")}[${i}]`, problems)
  );
  return s;
}
