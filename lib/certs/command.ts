/**
 * `tls-pass certs`: writes the dev PKI and the directory pins.
 * @module
 */
import { join } from "node:path";
import { createPki, DEV_NAMES, type Pki, writePins, writePki } from "./pki.ts";

/** Where the dev certificates live, relative to the working folder (the repo root). */
export const DEV_CERTS_DIR = "settings/dev/certs";
/** The generated pins file, merged into the dev directory. */
export const DEV_PINS_FILE = "settings/dev/directory/pins.yml";
/** Leaves that are operators (the internal server is not one, so it gets no pin). */
const OPERATOR_NAMES = DEV_NAMES.filter((n) => n !== "internal-server");

export interface CertsOptions {
  out?: string | undefined;
  force?: boolean;
}

/**
 * Writes root CA, intermediate CA and one leaf per dev name into `out` (default
 * settings/dev/certs), and the pins into settings/dev/directory/pins.yml (or `<out>/pins.yml` when
 * `out` is given). Refuses to overwrite without `force`. Returns the paths written.
 */
export async function runCerts(options: CertsOptions = {}): Promise<string[]> {
  const out = options.out ?? DEV_CERTS_DIR;
  const pki = await createPki([...DEV_NAMES]);
  const written = await writePki(pki, out, { force: options.force === true });
  const pinsFile = options.out === undefined ? DEV_PINS_FILE : join(out, "pins.yml");
  await writePins(operatorsOnly(pki), pinsFile);
  return [...written, pinsFile];
}

/** Creates the dev certificates unless they exist; returns true when it wrote them. */
export async function ensureDevCerts(): Promise<boolean> {
  try {
    await Deno.stat(join(DEV_CERTS_DIR, "root.crt"));
    return false;
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
  await runCerts({ force: true });
  return true;
}

function operatorsOnly(pki: Pki): Pki {
  return {
    ...pki,
    leaves: Object.fromEntries(
      Object.entries(pki.leaves).filter(([name]) => OPERATOR_NAMES.includes(name)),
    ),
  };
}
