/**
 * `deno task compile`: builds the single executable with `deno compile` into dist/.
 *
 *   deno task compile                 dist/tls-pass for this machine
 *   deno task compile --all-targets   also dist/tls-pass-<target> for every release platform
 *
 * `deno compile` downloads the matching runtime (denort) from dl.deno.land, or uses DENORT_BIN.
 * Where that download is impossible, this stops with one clear sentence and exit code 1.
 * @module
 */
import { parseArgs } from "node:util";
import { SHIPPED_V8_FLAGS } from "./v8_flags.ts";

const TARGETS = [
  "x86_64-unknown-linux-gnu",
  "aarch64-unknown-linux-gnu",
  "x86_64-apple-darwin",
  "aarch64-apple-darwin",
  "x86_64-pc-windows-msvc",
];

const { values } = parseArgs({
  args: Deno.args,
  options: { "all-targets": { type: "boolean" }, out: { type: "string" } },
  strict: true,
});
const outDir = values.out ?? "dist";
const root = new URL("..", import.meta.url).pathname;

async function compile(target?: string): Promise<void> {
  const output = `${outDir}/tls-pass${target ? `-${target}` : ""}`;
  const args = [
    "compile",
    "-A",
    `--v8-flags=${SHIPPED_V8_FLAGS}`,
    // reuse_port with the portable driver: Deno.listen({reusePort}) (docs/settings.md)
    "--unstable-net",
    // the data-plane worker is loaded by URL at run time (new Worker), so it must be embedded
    "--include",
    "lib/dataplane/native/worker.ts",
    "--output",
    output,
    ...(target ? ["--target", target] : []),
    "cli.ts",
  ];
  const child = new Deno.Command(Deno.execPath(), {
    args,
    cwd: root,
    stdout: "inherit",
    stderr: "piped",
  }).spawn();
  const { code, stderr } = await child.output();
  const text = new TextDecoder().decode(stderr);
  if (code === 0) {
    // deno-lint-ignore no-console
    console.log(`tls-pass: built ${output}`);
    return;
  }
  const offline = /error sending request|dns error|Connect|failed to lookup|network/i.test(text);
  // deno-lint-ignore no-console
  console.error(
    offline
      ? `tls-pass: cannot compile${
        target ? ` for ${target}` : ""
      }: deno compile must download its runtime (denort ${Deno.version.deno}) from dl.deno.land and this machine cannot reach it; run "deno task compile" on a machine with internet access, or set DENORT_BIN to a local denort binary.`
      : `tls-pass: deno compile failed (exit ${code}):\n${text}`,
  );
  Deno.exit(1);
}

await compile();
if (values["all-targets"]) { for (const t of TARGETS) await compile(t); }
