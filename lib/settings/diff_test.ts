import assert from "node:assert/strict";
import { SettingsError } from "../errors.ts";
import {
  checkRestartOnly,
  diffSettings,
  Reloader,
  ReloadRefused,
  sameValue,
  snakeCase,
} from "./diff.ts";

const BASE = {
  operator: "public-proxy-1",
  publicListen: { hostname: "127.0.0.1", port: 4433 },
  eps: {
    address: { hostname: "127.0.0.1", port: 5556 },
    certificateFile: "/a.crt",
    caCertificateFiles: ["/root.crt"],
  },
  store: { kind: "file", path: "/s.jsonl" },
  helloTimeoutMs: 10_000,
};

Deno.test("snakeCase names keys as the settings files do", () => {
  assert.equal(snakeCase("publicListen"), "public_listen");
  assert.equal(snakeCase("caCertificateFiles"), "ca_certificate_files");
  assert.equal(snakeCase("tls"), "tls");
});

Deno.test("diffSettings: no change, nothing reported", () => {
  const d = diffSettings(BASE, structuredClone(BASE), { restartOnly: ["public_listen"] });
  assert.deepEqual(d, { changed: [], restartOnly: [] });
});

Deno.test("diffSettings: a changed limit is reported, not restart-only", () => {
  const d = diffSettings(BASE, { ...BASE, helloTimeoutMs: 500 }, { restartOnly: ["operator"] });
  assert.deepEqual(d.changed, [{ key: "hello_timeout_ms", before: 10_000, after: 500 }]);
  assert.deepEqual(d.restartOnly, []);
  assert.deepEqual(checkRestartOnly(d), ["hello_timeout_ms: 10000 → 500"]);
});

Deno.test("diffSettings: nested keys, whole lists and host:port pairs", () => {
  const next = structuredClone(BASE);
  next.eps.address.port = 5557;
  next.eps.caCertificateFiles.push("/other.crt");
  const d = diffSettings(BASE, next);
  assert.deepEqual(d.changed.map((c) => c.key), ["eps.address", "eps.ca_certificate_files"]);
  assert.match(checkRestartOnly(d)[0]!, /^eps\.address: 127\.0\.0\.1:5556 → 127\.0\.0\.1:5557$/);
});

Deno.test("diffSettings: restart-only keys are named, also below a listed block", () => {
  const next = { ...structuredClone(BASE), publicListen: { hostname: "127.0.0.1", port: 1 } };
  next.eps.certificateFile = "/b.crt";
  const d = diffSettings(BASE, next, { restartOnly: ["public_listen", "eps"] });
  assert.deepEqual(d.restartOnly.map((c) => c.key), ["public_listen", "eps.certificate_file"]);
  assert.throws(() => checkRestartOnly(d), (err: unknown) => {
    assert.ok(err instanceof ReloadRefused);
    assert.deepEqual(err.problems, [
      "public_listen: cannot change without a restart (running 127.0.0.1:4433, the files now say 127.0.0.1:1)",
      'eps.certificate_file: cannot change without a restart (running "/a.crt", the files now say "/b.crt")',
    ]);
    return true;
  });
});

Deno.test("diffSettings: renamed shapes and an added or removed key", () => {
  const next = { ...BASE, store: { kind: "memory" }, privateEndpoint: { hostname: "h", port: 1 } };
  const d = diffSettings(BASE, next, {
    restartOnly: ["store", "store_path"],
    names: { "store.kind": "store", "store.path": "store_path" },
  });
  assert.deepEqual(d.changed.map((c) => c.key), ["store", "store_path", "private_endpoint"]);
  assert.deepEqual(d.restartOnly.map((c) => c.key), ["store", "store_path"]);
  assert.equal(d.changed[1]!.after, undefined);
});

Deno.test("sameValue ignores absent optional keys", () => {
  assert.ok(sameValue({ a: 1, b: undefined }, { a: 1 }));
  assert.ok(!sameValue({ a: [1, 2] }, { a: [2, 1] }));
});

Deno.test("Reloader: runs one reload at a time, keeps the last result, maps errors", async () => {
  const order: string[] = [];
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const r = new Reloader<number>(async (n) => {
    order.push(`start ${n}`);
    if (n === 1) await gate;
    if (n === 3) throw new ReloadRefused(["listen: cannot change without a restart"]);
    order.push(`end ${n}`);
    return [`applied ${n}`];
  });
  assert.equal(r.last, null);
  const first = r.reload(() => Promise.resolve(1));
  const second = r.reload(() => Promise.resolve(2));
  await Promise.resolve();
  release();
  assert.deepEqual((await first).applied, ["applied 1"]);
  assert.deepEqual((await second).applied, ["applied 2"]);
  assert.deepEqual(order, ["start 1", "end 1", "start 2", "end 2"]);

  const refused = await r.reload(() => Promise.resolve(3));
  assert.equal(refused.ok, false);
  assert.deepEqual(refused.problems, ["listen: cannot change without a restart"]);
  const bad = await r.reload(() =>
    Promise.reject(new SettingsError("s.yml", ["s.yml: key_file: cannot read"]))
  );
  assert.deepEqual(bad.problems, ["s.yml: key_file: cannot read"]);
  assert.equal(r.last, bad);
  assert.ok(!Number.isNaN(Date.parse(bad.at)));
});
