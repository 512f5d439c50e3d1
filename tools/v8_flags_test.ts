/**
 * The shipped V8 flags are spelled out where a file cannot import them: the launcher, the EPS
 * benchmark's task, the README and the deployment example. They must all say what
 * tools/v8_flags.ts says.
 * @module
 */
import assert from "node:assert/strict";
import { SHIPPED_V8_FLAGS } from "./v8_flags.ts";

const root = new URL("../", import.meta.url);

Deno.test("the shipped V8 flags are the same wherever they are written out", async () => {
  const tasks = JSON.parse(await Deno.readTextFile(new URL("deno.json", root))).tasks;
  assert.ok(
    String(tasks["bench:eps"]).includes(`--v8-flags=${SHIPPED_V8_FLAGS} `),
    `deno.json task bench:eps: ${tasks["bench:eps"]}`,
  );
  for (const file of ["tools/bin/tls-pass", "README.md", "examples/README.md"]) {
    const text = await Deno.readTextFile(new URL(file, root));
    const spelled = [...text.matchAll(/--v8-flags=([^\s"'`]+)/g)].map((m) => m[1]);
    assert.ok(spelled.length > 0, `${file} names no --v8-flags`);
    for (const f of spelled) assert.equal(f, SHIPPED_V8_FLAGS, file);
  }
});
