/**
 * Settings of the EPS role (`tls-pass run eps`), declared once (./schema.ts); reference in
 * docs/settings.md.
 * @module
 */
import * as check from "./check.ts";
import { loadSettings } from "./loader.ts";
import { ADMIN_SHAPE } from "./admin.ts";
import {
  address,
  defaultsOf,
  duration,
  existingDir,
  type Infer,
  integer,
  operatorName,
  optional,
  parseBlock,
  readableFile,
  required,
  size,
  withDefault,
} from "./schema.ts";

/** The declaration of every EPS server key (docs/settings.md, "EPS server"). */
export const EPS_SHAPE = {
  operator: required(
    operatorName,
    "This EPS server's operator. At start, its certificate must name it (CN and DNS SAN).",
  ),
  listen: optional(
    address,
    "Links from peer EPS servers and from the own proxy. Peers reach it at the `address` the directory gives for this operator.",
    { defaultDoc: "none; required unless `proxy_listen` is set" },
  ),
  proxyListen: optional(
    address,
    "A second listener that accepts only the own proxy (this operator's certificate), e.g. on loopback.",
    { defaultDoc: "none" },
  ),
  certificateFile: required(
    readableFile,
    "This operator's certificate, PEM (leaf, then intermediate).",
  ),
  keyFile: required(readableFile, "Its private key, PEM."),
  directoryDir: required(existingDir, "The directory folder."),
  callTimeoutMs: withDefault(
    duration(),
    5000,
    "Default deadline of a call routed through this server.",
  ),
  maxMessageBytes: withDefault(
    size(1024, 64 * 1024 * 1024),
    1024 * 1024,
    "Largest JSON-RPC message.",
    {
      defaultDoc: "`1048576` (1 MiB)",
      range: "1024 – 67 108 864 (64 MiB)",
    },
  ),
  maxStreamsPerLink: withDefault(
    integer(1, 65536),
    1024,
    "Streams (calls in progress) at once on one link.",
  ),
  keepaliveIntervalMs: withDefault(
    duration(),
    15_000,
    "Ping interval on each link; a link that misses two pings is closed.",
  ),
  handshakeTimeoutMs: withDefault(duration(), 10_000, "Deadline of the TLS handshake of a link."),
  ...ADMIN_SHAPE,
} as const;

/** The EPS server's settings: every key of EPS_SHAPE, whose docs say what each means. */
export type EpsSettings = Infer<typeof EPS_SHAPE>;

export const EPS_DEFAULTS = defaultsOf(EPS_SHAPE);

/** Validates merged EPS settings, reporting every problem (docs/settings.md, "Validation"). */
export function parseEpsSettings(
  data: Record<string, unknown>,
  problems: check.Problems,
): EpsSettings {
  const [s] = parseBlock(EPS_SHAPE, data, "", problems);
  if (s.listen === undefined && s.proxyListen === undefined) {
    problems.push(
      "listen: is required unless proxy_listen is set (the own proxy needs somewhere to attach)",
    );
  }
  return s;
}

/** Loads and validates EPS settings from files and folders. */
export function loadEpsSettings(sources: readonly string[]): Promise<EpsSettings> {
  return loadSettings(sources, parseEpsSettings);
}
