import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { generatedFiles } from "../../tools/settings_docs.ts";
import { ROLE_SHAPES, TABLES } from "./reference.ts";
import { fileKeys, type Shape } from "./schema.ts";
import { PUBLIC_RESTART_ONLY } from "../proxy/public_reload.ts";
import { PRIVATE_RESTART_ONLY } from "../proxy/private_reload.ts";
import { EPS_RESTART_ONLY } from "../eps/server.ts";
import { INTERNAL_SERVER_RESTART_ONLY } from "../internal/server.ts";
import { parsePublicSettings } from "./public.ts";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));

Deno.test("docs/settings.md and settings/schema/*.json are what `deno task settings-docs` writes", async () => {
  for (const [path, want] of await generatedFiles()) {
    const have = await Deno.readTextFile(`${ROOT}${path}`).catch(() => "(missing)");
    assert.ok(have === want, `${path} is stale: run \`deno task settings-docs\` and commit it`);
  }
});

Deno.test("docs/settings.md has every settings table once", async () => {
  const page = await Deno.readTextFile(`${ROOT}docs/settings.md`);
  for (const name of Object.keys(TABLES)) {
    const n = page.split(`<!-- settings-table: ${name} -->`).length - 1;
    assert.equal(n, 1, `table "${name}" appears ${n} times`);
  }
});

/** The key paths a shape declares, nested blocks joined with ".". */
function keyPaths(shape: Shape, prefix = ""): string[] {
  return Object.entries(shape).flatMap(([name, k]) => {
    const key = `${prefix}${fileKeys({ [name]: k })[0]}`;
    return [key, ...(k.field.shape ? keyPaths(k.field.shape, `${key}.`) : [])];
  });
}

Deno.test("every restart-only key of a role's reload is a declared key", () => {
  const lists: [string, readonly string[]][] = [
    ["public", PUBLIC_RESTART_ONLY],
    ["private", PRIVATE_RESTART_ONLY],
    ["eps", EPS_RESTART_ONLY],
    ["internal-server", INTERNAL_SERVER_RESTART_ONLY],
  ];
  for (const [role, list] of lists) {
    const known = keyPaths(ROLE_SHAPES[role]!);
    for (const key of list) assert.ok(known.includes(key), `${role}: "${key}" is not declared`);
  }
});

Deno.test("a role's parse reports every problem at once, a misspelt key with a guess", () => {
  const problems: string[] = [];
  parsePublicSettings(
    { helo_timeout_ms: 5, max_pending: 0, limits: { client_burst: 3 } },
    problems,
  );
  for (
    const part of [
      "helo_timeout_ms: unknown key, did you mean `hello_timeout_ms`?",
      "operator: is required",
      "public_listen: is required",
      "eps: is required",
      "max_pending: must be an integer from 1 to 1000000, got 0",
      "limits.client_burst: is only used with limits.client_rate above 0",
      "store_path: is required",
    ]
  ) assert.ok(problems.some((p) => p.startsWith(part)), `no "${part}" in:\n${problems.join("\n")}`);
});
