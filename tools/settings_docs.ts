/**
 * Writes what the settings declarations generate (docs/architecture.md, "Settings"): the key
 * tables of docs/settings.md and settings/schema/ROLE.json, both formatted by `deno fmt` as
 * committed. `deno task settings-docs`; lib/settings/reference_test.ts fails when the committed
 * files differ from what this writes.
 * @module
 */
import { fileURLToPath } from "node:url";
import { fillTables, ROLE_SHAPES, roleSchemaText } from "../lib/settings/reference.ts";

const ROOT = fileURLToPath(new URL("../", import.meta.url));

/** `text` as `deno fmt` formats a file with extension `ext` in this repository. */
async function fmt(text: string, ext: "md" | "json"): Promise<string> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["fmt", `--config=${ROOT}deno.json`, `--ext=${ext}`, "-"],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(text));
  await writer.close();
  const { code, stdout, stderr } = await child.output();
  if (code !== 0) throw new Error(`deno fmt: ${new TextDecoder().decode(stderr)}`);
  return new TextDecoder().decode(stdout);
}

/** Every generated file, by path relative to the repository, with the content it must have. */
export async function generatedFiles(): Promise<Map<string, string>> {
  const files = new Map<string, string>();
  const page = await Deno.readTextFile(`${ROOT}docs/settings.md`);
  files.set("docs/settings.md", await fmt(fillTables(page), "md"));
  for (const role of Object.keys(ROLE_SHAPES)) {
    files.set(`settings/schema/${role}.json`, await fmt(roleSchemaText(role), "json"));
  }
  return files;
}

if (import.meta.main) {
  await Deno.mkdir(`${ROOT}settings/schema`, { recursive: true });
  for (const [path, text] of await generatedFiles()) {
    await Deno.writeTextFile(`${ROOT}${path}`, text);
    // deno-lint-ignore no-console
    console.log(`wrote ${path}`);
  }
}
