import assert from "node:assert/strict";
import { join } from "node:path";
import { SettingsError } from "../errors.ts";
import * as check from "./check.ts";
import { loadRaw, loadSettings, settingsSources } from "./loader.ts";

async function tempTree(files: Record<string, string>): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "tls-pass-settings-" });
  for (const [name, text] of Object.entries(files)) {
    const path = join(dir, name);
    await Deno.mkdir(join(path, ".."), { recursive: true });
    await Deno.writeTextFile(path, text);
  }
  return dir;
}

async function rejects(p: Promise<unknown>): Promise<SettingsError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof SettingsError, `expected SettingsError, got ${err}`);
    return err;
  }
  assert.fail("expected a SettingsError");
}

interface Demo {
  listen: { hostname: string; port: number };
  certificateFile: string;
  names: string[];
}

function parseDemo(data: Record<string, unknown>, problems: string[]): Demo {
  check.onlyKeys(data, ["listen", "certificate_file", "names"], "", problems);
  return {
    listen: check.address(data.listen, "listen", problems),
    certificateFile: check.string(data.certificate_file ?? "none", "certificate_file", problems),
    names: data.names === undefined ? [] : check.list(data.names, "names", problems, check.string),
  };
}

Deno.test("loadRaw() merges a folder's files in name order: maps merge, scalars and lists replace", async () => {
  const dir = await tempTree({
    "b.yml": "a: {y: 2}\nlist: [3]\nscalar: b\n",
    "a.yaml": "a: {x: 1}\nlist: [1, 2]\nscalar: a\n",
    "c.json": '{"a": {"z": 3}}',
    "ignored.txt": "not: read",
  });
  try {
    const raw = await loadRaw([dir]);
    assert.deepEqual(raw.data, { a: { x: 1, y: 2, z: 3 }, list: [3], scalar: "b" });
    assert.deepEqual(raw.files.map((f) => f.slice(dir.length + 1)), ["a.yaml", "b.yml", "c.json"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("loadRaw() merges later sources over earlier ones", async () => {
  const dir = await tempTree({ "one.yml": "a: 1\nb: 1\n", "two.yml": "b: 2\n" });
  try {
    const raw = await loadRaw([join(dir, "two.yml"), join(dir, "one.yml")]);
    assert.deepEqual(raw.data, { a: 1, b: 1 });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("loadRaw() resolves _file/_files/_dir/_path keys against the file's folder", async () => {
  const dir = await tempTree({
    "sub/s.yml":
      "certificate_file: ../certs/a.crt\nca_certificate_files: [x.crt, /abs.crt]\nname: rel.txt\n",
  });
  try {
    const raw = await loadRaw([join(dir, "sub")]);
    assert.equal(raw.data.certificate_file, join(dir, "certs/a.crt"));
    assert.deepEqual(raw.data.ca_certificate_files, [join(dir, "sub/x.crt"), "/abs.crt"]);
    assert.equal(raw.data.name, "rel.txt");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("loadRaw() reads ${VAR} from the environment and names the key of an unset one", async () => {
  const dir = await tempTree({
    "s.yml": "listen: ${TLS_PASS_TEST_HOST}:4433\nother: ${TLS_PASS_TEST_UNSET_X}\n",
  });
  Deno.env.set("TLS_PASS_TEST_HOST", "127.0.0.1");
  try {
    const err = await rejects(loadRaw([join(dir, "s.yml")]));
    assert.match(
      err.message,
      /s\.yml: other: environment variable "TLS_PASS_TEST_UNSET_X" is not set/,
    );
    await Deno.writeTextFile(join(dir, "s.yml"), "listen: ${TLS_PASS_TEST_HOST}:4433\n");
    assert.equal((await loadRaw([join(dir, "s.yml")])).data.listen, "127.0.0.1:4433");
  } finally {
    Deno.env.delete("TLS_PASS_TEST_HOST");
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("loadRaw() reports invalid YAML with line and column", async () => {
  const dir = await tempTree({ "bad.yml": "a: 1\n  b: [\n" });
  try {
    const err = await rejects(loadRaw([join(dir, "bad.yml")]));
    assert.match(err.message, /bad\.yml: .*line \d+, column \d+/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("loadRaw() reports duplicate keys and a non-mapping top level", async () => {
  const dir = await tempTree({ "dup.yml": "a: 1\na: 2\n", "list.yml": "- 1\n" });
  try {
    const err = await rejects(loadRaw([join(dir, "dup.yml"), join(dir, "list.yml")]));
    assert.equal(err.problems.length, 2);
    assert.match(err.problems[0]!, /dup\.yml: .*[Uu]nique/);
    assert.match(err.problems[1]!, /list\.yml: \(top level\): must be a mapping/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("loadRaw() reports an unreadable file and an empty folder", async () => {
  const dir = await tempTree({ "empty/.keep": "" });
  try {
    const err = await rejects(loadRaw([join(dir, "missing.yml"), join(dir, "empty")]));
    assert.match(err.problems[0]!, /missing\.yml: cannot read/);
    assert.match(err.problems[1]!, /empty: folder holds no/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("loadSettings() reports every problem at once, each with the file that set the key", async () => {
  const dir = await tempTree({
    "a.yml": "listen: 127.0.0.1:99999\nnames: [ok]\n",
    "b.yml": "names: [ok, 5]\nbogus: 1\n",
  });
  try {
    const err = await rejects(loadSettings([dir], parseDemo));
    assert.deepEqual(
      err.problems.map((p) => p.replace(dir, "DIR")),
      [
        "DIR/b.yml: bogus: unknown key (known: listen, certificate_file, names)",
        'DIR/a.yml: listen: must be "host:port" (IPv6 as "[::1]:port"), got "127.0.0.1:99999"',
        "DIR/b.yml: names[1]: must be a non-empty string, got 5",
      ],
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("loadSettings() returns typed settings when all is well", async () => {
  const dir = await tempTree({ "s.yml": "listen: '[::1]:0'\ncertificate_file: c.pem\n" });
  try {
    const s = await loadSettings([dir], parseDemo);
    assert.deepEqual(s, {
      listen: { hostname: "::1", port: 0 },
      certificateFile: join(dir, "c.pem"),
      names: [],
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("settingsSources() prefers flags, then the colon-separated variable, then the fallback", () => {
  Deno.env.set("TLS_PASS_TEST_SETTINGS", "a:b");
  try {
    assert.deepEqual(settingsSources(["x"], "TLS_PASS_TEST_SETTINGS", "f"), ["x"]);
    assert.deepEqual(settingsSources([], "TLS_PASS_TEST_SETTINGS", "f"), ["a", "b"]);
    assert.deepEqual(settingsSources([], "TLS_PASS_TEST_UNSET_Y", "f"), ["f"]);
    assert.deepEqual(settingsSources([], undefined), []);
  } finally {
    Deno.env.delete("TLS_PASS_TEST_SETTINGS");
  }
});
