/**
 * The role registry used by cli.ts: for each role, where its settings come from, how they are
 * parsed and how it starts.
 * @module
 */
import type { RoleHandle } from "./role.ts";
import type { SettingsParser } from "./settings/loader.ts";

export const ROLE_NAMES = ["public", "private", "eps", "internal-server"] as const;
export type RoleName = typeof ROLE_NAMES[number];

export interface RoleSpec<S = unknown> {
  /** Environment variable with colon-separated settings paths when --settings is not given. */
  envVar?: string;
  /** Settings path used when neither --settings nor the environment variable is given. */
  fallback?: string;
  parse: SettingsParser<S>;
  start(settings: S, signal?: AbortSignal): Promise<RoleHandle & { ready?: Promise<void> }>;
}

/** Loads the spec of a role. Role modules are imported on demand so that one role's start-up does not load the others. */
export async function roleSpec(role: RoleName): Promise<RoleSpec> {
  switch (role) {
    case "internal-server": {
      const { parseInternalServerSettings } = await import("./settings/internal_server.ts");
      const { startInternalServer } = await import("./internal/server.ts");
      return {
        fallback: "settings/dev/roles/internal-server",
        parse: parseInternalServerSettings,
        start: startInternalServer,
      } as RoleSpec<unknown> as RoleSpec;
    }
    case "public": {
      const { parsePublicSettings } = await import("./settings/public.ts");
      const { startPublic } = await import("./proxy/public.ts");
      return {
        envVar: "PROXY_SETTINGS",
        parse: parsePublicSettings,
        start: startPublic,
      } as RoleSpec<unknown> as RoleSpec;
    }
    case "private": {
      const { parsePrivateSettings } = await import("./settings/private.ts");
      const { startPrivate } = await import("./proxy/private.ts");
      return {
        envVar: "PROXY_SETTINGS",
        parse: parsePrivateSettings,
        start: startPrivate,
      } as RoleSpec<unknown> as RoleSpec;
    }
    case "eps": {
      const { parseEpsSettings } = await import("./settings/eps.ts");
      const { startEps } = await import("./eps/server.ts");
      return {
        envVar: "EPS_SETTINGS",
        parse: parseEpsSettings,
        start: startEps,
      } as RoleSpec<unknown> as RoleSpec;
    }
  }
}
