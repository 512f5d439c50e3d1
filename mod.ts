/**
 * tls-pass as a library: every role can be embedded and tested in one process.
 *
 * ```ts
 * import { loadSettings, parsePublicSettings, startPublic } from "./mod.ts";
 * await using pub = await startPublic(await loadSettings(["settings/dev/roles/public-proxy-1"], parsePublicSettings));
 * ```
 * @module
 */
export type { HostPort, RoleHandle, StartRole } from "./lib/role.ts";
export { LinkClosedError, ProtocolError, RpcCode, RpcError, SettingsError } from "./lib/errors.ts";
export type { ProtocolErrorCode } from "./lib/errors.ts";

export { loadSettings, settingsSources } from "./lib/settings/loader.ts";
export { parsePublicSettings, type PublicSettings } from "./lib/settings/public.ts";
export { parsePrivateSettings, type PrivateSettings } from "./lib/settings/private.ts";
export { type EpsSettings, parseEpsSettings } from "./lib/settings/eps.ts";
export {
  type InternalServerSettings,
  parseInternalServerSettings,
} from "./lib/settings/internal_server.ts";

export { type PublicHandle, startPublic } from "./lib/proxy/public.ts";
export { type PrivateHandle, startPrivate } from "./lib/proxy/private.ts";
export { startEps } from "./lib/eps/server.ts";
export { startInternalServer } from "./lib/internal/server.ts";

export { connectEps, type EpsClient, type EpsClientSettings } from "./lib/eps/client.ts";
export { loadDirectory } from "./lib/eps/directory.ts";
export {
  type ClientHelloInfo,
  ClientHelloReader,
  parseClientHello,
  readClientHello,
} from "./lib/wire/client_hello.ts";
export { splice } from "./lib/net/splice.ts";
export { createPki, type Pki, writePins, writePki } from "./lib/certs/pki.ts";
