/**
 * The admin endpoint's setting, shared by every role (docs/settings.md, "admin_listen").
 * @module
 */
import type { HostPort } from "../role.ts";
import * as check from "./check.ts";

export const ADMIN_KEYS = ["admin_listen"] as const;

export interface AdminSettings {
  /** Where the admin endpoint listens (`/metrics`, `/status`, …); absent: off. */
  adminListen?: HostPort;
}

/** Reads `admin_listen` (absent or null: off). */
export function parseAdminSettings(
  data: Record<string, unknown>,
  problems: check.Problems,
): AdminSettings {
  const v = data.admin_listen;
  if (v === undefined || v === null) return {};
  return { adminListen: check.address(v, "admin_listen", problems) };
}
