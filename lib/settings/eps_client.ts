/**
 * The `eps:` block of a proxy's settings: how it reaches its own EPS server, declared once
 * (./schema.ts). A module of the settings layer (it imports nothing of lib/eps);
 * lib/eps/client.ts takes the parsed value.
 * @module
 */
import * as check from "./check.ts";
import {
  address,
  block,
  duration,
  type Field,
  type Infer,
  list,
  readableFile,
  required,
  size,
  withDefault,
} from "./schema.ts";

/** The declaration of the `eps:` block (docs/settings.md, "The `eps:` block of both proxies"). */
export const EPS_CLIENT_SHAPE = {
  address: required(address, "The EPS server's `listen` or `proxy_listen` address."),
  certificateFile: required(
    readableFile,
    "This operator's certificate, PEM (leaf, then intermediate).",
  ),
  keyFile: required(readableFile, "Its private key, PEM."),
  caCertificateFiles: required(
    list(readableFile, "list of paths"),
    "The CA certificates that issued the EPS server's certificate.",
    { range: "readable files" },
  ),
  callTimeoutMs: withDefault(duration(), 5000, "Default deadline of an outgoing call."),
  maxMessageBytes: withDefault(
    size(1024, 2 ** 31),
    1024 * 1024,
    "Largest JSON-RPC message sent or received.",
    { defaultDoc: "`1048576` (1 MiB)" },
  ),
} as const;

/**
 * The `eps:` block, parsed: the EPS server's link `address`; this operator's certificate
 * (leaf + intermediate) and key, as the proxy attaches as its operator; the CAs that issued the
 * EPS server's certificate; the default deadline of an outgoing call; the largest message.
 */
export type EpsClientSettings = Infer<typeof EPS_CLIENT_SHAPE>;

/** The `eps:` block as a field of a proxy's settings (absent: every required key missing). */
export const epsClientBlock: Field<EpsClientSettings> = block(EPS_CLIENT_SHAPE);

/** Parses the `eps:` block of a proxy's settings. */
export function parseEpsClientSettings(
  v: unknown,
  prefix: string,
  problems: check.Problems,
): EpsClientSettings {
  return epsClientBlock.parse(v, prefix, problems);
}
