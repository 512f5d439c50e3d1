/** Test fixtures shared by the public and private proxy settings tests. */
import assert from "node:assert/strict";
import { join } from "node:path";
import { SettingsError } from "../errors.ts";

export const EPS_BLOCK = `eps:
  address: 127.0.0.1:5556
  certificate_file: a.crt
  key_file: a.key
  ca_certificate_files: [root.crt]
`;

export async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.mkdir(join(dir, "directory"));
    for (const f of ["a.crt", "a.key", "root.crt"]) await Deno.writeTextFile(join(dir, f), "x");
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

export function problemsOf(err: unknown): string {
  assert.ok(err instanceof SettingsError, `expected SettingsError, got ${err}`);
  return err.problems.join("\n");
}

/** Copies a dev role's settings into `dir` with stand-in certificate files beside it. */
export async function devRoleCopy(dir: string, role: string): Promise<string> {
  const src = new URL(`../../settings/dev/roles/${role}/settings.yml`, import.meta.url);
  await Deno.mkdir(join(dir, "roles", role), { recursive: true });
  await Deno.mkdir(join(dir, "certs"), { recursive: true });
  await Deno.mkdir(join(dir, "directory"), { recursive: true });
  for (const f of ["root.crt", `${role}.crt`, `${role}.key`]) {
    await Deno.writeTextFile(join(dir, "certs", f), "x");
  }
  const file = join(dir, "roles", role, "settings.yml");
  await Deno.copyFile(src, file);
  return file;
}
