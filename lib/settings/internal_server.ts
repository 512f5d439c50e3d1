/**
 * Settings of the demo internal server (`tls-pass run internal-server`).
 * @module
 */
import type { HostPort } from "../role.ts";
import { address, boolean, bytes, onlyKeys, type Problems, required, string } from "./check.ts";
import { checkReadable } from "./loader.ts";
import { ADMIN_KEYS, type AdminSettings, parseAdminSettings } from "./admin.ts";

export interface InternalServerSettings extends AdminSettings {
  /** Where to listen, default 127.0.0.1:8888. */
  listen: HostPort;
  /** HTTPS when true (default), plain HTTP when false. */
  tls: boolean;
  /** PEM certificate chain (leaf first); required when `tls`. */
  certificateFile?: string;
  /** PEM private key; required when `tls`. */
  keyFile?: string;
  /** Largest request body accepted, default 1 MiB; larger bodies get 413. */
  maxBodyBytes: number;
}

export const INTERNAL_SERVER_KEYS = [
  "listen",
  "tls",
  "certificate_file",
  "key_file",
  "max_body_bytes",
  ...ADMIN_KEYS,
] as const;

export const INTERNAL_SERVER_DEFAULTS = {
  listen: "127.0.0.1:8888",
  tls: true,
  maxBodyBytes: 1024 * 1024,
} as const;

/** Parses the merged raw settings; pushes every problem as `key.path: problem`. */
export function parseInternalServerSettings(
  data: Record<string, unknown>,
  problems: Problems,
): InternalServerSettings {
  onlyKeys(data, INTERNAL_SERVER_KEYS, "", problems);
  const settings: InternalServerSettings = {
    ...parseAdminSettings(data, problems),
    listen: address(data.listen ?? INTERNAL_SERVER_DEFAULTS.listen, "listen", problems),
    tls: boolean(data.tls ?? INTERNAL_SERVER_DEFAULTS.tls, "tls", problems),
    maxBodyBytes: bytes(
      data.max_body_bytes ?? INTERNAL_SERVER_DEFAULTS.maxBodyBytes,
      "max_body_bytes",
      problems,
      1,
      1024 ** 3,
    ),
  };
  // without TLS the files are not used: they may stay in a merged base file, unread
  const files = [["certificate_file", "certificateFile"], ["key_file", "keyFile"]] as const;
  for (const [key, field] of files) {
    const v = data[key];
    if (settings.tls ? !required(v, key, problems) : v === undefined || v === null) continue;
    const path = string(v, key, problems);
    if (settings.tls) checkReadable(path, key, problems);
    settings[field] = path;
  }
  return settings;
}
