/**
 * `tls-pass schema ROLE` (docs/settings.md, "Editor support"): the JSON Schema it prints accepts
 * each role's dev settings, merged as the loader merges them, by an independent validator (ajv),
 * and refuses a bad value, a misspelt key and a missing required key, as the role's own parser
 * does.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { Ajv } from "ajv";
import { loadRaw } from "../lib/settings/loader.ts";
import { REPO_ROOT, runCli } from "./_cli.ts";

const DEV: [dir: string, role: string][] = [
  ["public-proxy-1", "public"],
  ["private-proxy-1", "private"],
  ["public-proxy-eps-1", "eps"],
  ["private-proxy-eps-1", "eps"],
  ["internal-server", "internal-server"],
];

/** A bad value of a key every role's schema declares with a range or a form. */
const BAD: Record<string, [key: string, value: unknown]> = {
  public: ["hello_timeout_ms", 0],
  private: ["retry_ms", -5],
  eps: ["max_streams_per_link", 70_000],
  "internal-server": ["listen", "8888"],
};

/** What `tls-pass schema ROLE` prints: the committed settings/schema/ROLE.json, as JSON. */
async function schemaOf(role: string): Promise<object> {
  const r = await runCli(["schema", role]);
  assert.equal(r.code, 0, r.stderr);
  const committed = await Deno.readTextFile(join(REPO_ROOT, "settings", "schema", `${role}.json`));
  assert.equal(
    r.stdout,
    committed,
    `settings/schema/${role}.json differs: deno task settings-docs`,
  );
  return JSON.parse(r.stdout);
}

for (const [dir, role] of DEV) {
  Deno.test(`tls-pass schema ${role} accepts the dev settings of ${dir}, and refuses bad ones`, async () => {
    const ajv = new Ajv({ allErrors: true, strict: true, strictRequired: false });
    const validate = ajv.compile(await schemaOf(role));
    const { data } = await loadRaw([join(REPO_ROOT, "settings", "dev", "roles", dir)]);
    assert.ok(validate(data), ajv.errorsText(validate.errors));

    const [key, value] = BAD[role]!;
    assert.ok(!validate({ ...data, [key]: value }), `${key}: ${JSON.stringify(value)} accepted`);
    assert.ok(
      validate.errors!.some((e) => e.instancePath === `/${key}`),
      ajv.errorsText(validate.errors),
    );

    assert.ok(!validate({ ...data, colour: "blue" }), "an unknown key accepted");
    const drop = (key: string) =>
      Object.fromEntries(Object.entries(data).filter(([k]) => k !== key));
    // what the schema says across keys, as the role's parse does
    if (role === "public") {
      assert.ok(!validate(drop("store_path")), "store file without store_path accepted");
      assert.ok(!validate({ ...data, store: "memory" }), "store memory with store_path accepted");
      assert.ok(
        validate({ ...drop("store_path"), store: "memory" }),
        ajv.errorsText(validate.errors),
      );
      // a function: validate() is a type guard, and would narrow a shared object
      const redis = () => ({ ...drop("store_path"), store: "redis" });
      assert.ok(!validate(redis()), "store redis without redis_url accepted");
      assert.ok(
        validate({ ...redis(), redis_url: "redis://u:p@127.0.0.1:6379/1", redis_prefix: "x:" }),
        ajv.errorsText(validate.errors),
      );
      assert.ok(!validate({ ...redis(), redis_url: "http://h:1" }), "a bad redis_url accepted");
      assert.ok(
        !validate({ ...data, redis_url: "redis://127.0.0.1:6379" }),
        "store file with redis_url accepted",
      );
    }
    if (role === "eps") {
      const { listen: _l, proxy_listen: _p, ...neither } = data;
      assert.ok(!validate(neither), "neither listen nor proxy_listen accepted");
    }
    if (role === "internal-server") {
      assert.ok(!validate(drop("key_file")), "tls without key_file accepted");
      assert.ok(validate({ ...drop("key_file"), tls: false }), ajv.errorsText(validate.errors));
    }
    if (role !== "internal-server") {
      const { operator: _, ...rest } = data;
      assert.ok(!validate(rest), "a missing operator accepted");
    }
  });
}

Deno.test("tls-pass schema refuses an unknown role with exit 2", async () => {
  const r = await runCli(["schema", "gateway"]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /Unknown role "gateway"/);
});
