/**
 * The role registry used by cli.ts: for each role, where its settings come from, how they are
 * parsed and how it starts.
 * @module
 */
import type { RoleHandle } from "./role.ts";
import { loadSettings, type SettingsParser } from "./settings/loader.ts";
import type { EpsSettings } from "./settings/eps.ts";
import type { PrivateSettings } from "./settings/private.ts";
import type { PublicSettings } from "./settings/public.ts";

export const ROLE_NAMES = ["public", "private", "eps", "internal-server"] as const;
export type RoleName = typeof ROLE_NAMES[number];

export interface RoleSpec<S = unknown> {
  /** Environment variable with colon-separated settings paths when --settings is not given. */
  envVar?: string;
  /** Settings path used when neither --settings nor the environment variable is given. */
  fallback?: string;
  parse: SettingsParser<S>;
  /**
   * What the settings take from where they were read, after `parse` (the proxies' default
   * `instance` is tagged by their paths: docs/architecture.md, "Instances").
   */
  withSources?(settings: S, sources: readonly string[]): S;
  /**
   * What `start` checks before it binds anything beyond the settings themselves (the directory,
   * the certificate's operator name); `tls-pass check` runs it too. Throws SettingsError;
   * resolves to warnings worth printing.
   */
  preflight?(settings: S): Promise<string[]>;
  start(settings: S, signal?: AbortSignal): Promise<RoleHandle & { ready?: Promise<void> }>;
}

/** Reads a role's settings from `sources`: parsed, then what they take from the sources. */
export async function loadRoleSettings(
  spec: RoleSpec,
  sources: readonly string[],
): Promise<unknown> {
  const s = await loadSettings(sources, spec.parse);
  return spec.withSources ? spec.withSources(s, sources) : s;
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
      const { parsePublicSettings, withInstance } = await import("./settings/public.ts");
      const { preflightPublic, startPublic } = await import("./proxy/public.ts");
      return {
        envVar: "PROXY_SETTINGS",
        parse: parsePublicSettings,
        withSources: (s: PublicSettings, sources: readonly string[]) => withInstance(s, sources),
        preflight: async (s: PublicSettings) => {
          await preflightPublic(s);
          return [];
        },
        start: startPublic,
      } as RoleSpec<unknown> as RoleSpec;
    }
    case "private": {
      const { parsePrivateSettings } = await import("./settings/private.ts");
      const { withInstance } = await import("./settings/public.ts");
      const { preflightPrivate, startPrivate } = await import("./proxy/private.ts");
      return {
        envVar: "PROXY_SETTINGS",
        parse: parsePrivateSettings,
        withSources: (s: PrivateSettings, sources: readonly string[]) => withInstance(s, sources),
        preflight: async (s: PrivateSettings) => {
          await preflightPrivate(s);
          return [];
        },
        start: startPrivate,
      } as RoleSpec<unknown> as RoleSpec;
    }
    case "eps": {
      const { parseEpsSettings } = await import("./settings/eps.ts");
      const { preflightEps, startEps } = await import("./eps/server.ts");
      return {
        envVar: "EPS_SETTINGS",
        parse: parseEpsSettings,
        preflight: async (s: EpsSettings) => (await preflightEps(s)).warnings,
        start: startEps,
      } as RoleSpec<unknown> as RoleSpec;
    }
  }
}
