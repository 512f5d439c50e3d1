/**
 * Settings of the demo internal server (`tls-pass run internal-server`), declared once
 * (./schema.ts); reference in docs/settings.md.
 * @module
 */
import type { Problems } from "./check.ts";
import { ADMIN_SHAPE } from "./admin.ts";
import {
  address,
  boolean,
  checkReadable,
  defaultsOf,
  fileKeys,
  type Infer,
  parseBlock,
  path,
  raw,
  size,
  withDefault,
} from "./schema.ts";

/** The declaration of every internal server key (docs/settings.md, "Internal server"). */
export const INTERNAL_SERVER_SHAPE = {
  listen: withDefault(address, "127.0.0.1:8888", "Where to listen."),
  tls: withDefault(boolean, true, "HTTPS when `true`, plain HTTP when `false`."),
  certificateFile: raw(
    path,
    "Certificate chain, PEM (leaf first). With `tls: false` it may stay (for example in a merged base file) and is not read.",
    { defaultDoc: "required when `tls` is `true`", range: "readable file when `tls` is `true`" },
  ),
  keyFile: raw(path, "Private key, PEM. Same rule as `certificate_file`.", {
    defaultDoc: "required when `tls` is `true`",
    range: "readable file when `tls` is `true`",
  }),
  maxBodyBytes: withDefault(
    size(1, 1024 ** 3),
    1024 * 1024,
    "Largest request body; a larger one is answered with 413.",
    { defaultDoc: "`1048576` (1 MiB)", range: "1 – 1 073 741 824 (1 GiB)" },
  ),
  ...ADMIN_SHAPE,
} as const;

/**
 * The internal server's settings: `listen` (default 127.0.0.1:8888), `tls` (HTTPS when true, the
 * default), the PEM `certificateFile` (leaf first) and `keyFile`, required when `tls`, and
 * `maxBodyBytes` (default 1 MiB; larger bodies get 413).
 */
export interface InternalServerSettings extends Infer<typeof INTERNAL_SERVER_SHAPE> {
  certificateFile?: string;
  keyFile?: string;
}

export const INTERNAL_SERVER_KEYS = fileKeys(INTERNAL_SERVER_SHAPE);

export const INTERNAL_SERVER_DEFAULTS = defaultsOf(INTERNAL_SERVER_SHAPE);

/** Parses the merged raw settings; pushes every problem as `key.path: problem`. */
export function parseInternalServerSettings(
  data: Record<string, unknown>,
  problems: Problems,
): InternalServerSettings {
  const [settings, rawValues]: [InternalServerSettings, Record<string, unknown>] = parseBlock(
    INTERNAL_SERVER_SHAPE,
    data,
    "",
    problems,
  );
  // without TLS the files are not used: they may stay in a merged base file, unread
  const files = [["certificate_file", "certificateFile"], ["key_file", "keyFile"]] as const;
  for (const [key, field] of files) {
    const v = rawValues[field] as string | undefined;
    if (v === undefined) {
      if (settings.tls) problems.push(`${key}: is required`);
      continue;
    }
    if (settings.tls) checkReadable(v, key, problems);
    settings[field] = v;
  }
  return settings;
}
