/**
 * The admin endpoint's setting, shared by every role (docs/settings.md, "admin_listen").
 * @module
 */
import { address, fileKeys, type Infer, optional } from "./schema.ts";

/** The declaration of `admin_listen` (docs/settings.md, "admin_listen"). */
export const ADMIN_SHAPE = {
  adminListen: optional(
    address,
    "Where the role's admin endpoint listens: `/metrics`, `/status`, `/healthz`, `/readyz`, the status page at `/`, and on a private proxy `POST /drain` and `/undrain`. It has no authentication: keep it on loopback or behind access control. Port 0 picks a free port (shown in the ready line). A change needs a restart.",
    { defaultDoc: "none (off)" },
  ),
} as const;

export const ADMIN_KEYS = fileKeys(ADMIN_SHAPE);

/** `adminListen`: where the admin endpoint listens (`/metrics`, `/status`, …); absent: off. */
export type AdminSettings = Infer<typeof ADMIN_SHAPE>;
