import assert from "node:assert/strict";
import {
  DEFAULT_PORTS,
  PUBLIC_OPERATOR,
  replicaDir,
  replicaPrivatePort,
  settingsDocuments,
} from "./make_settings.ts";
import { benchPorts, tlsPassRoles } from "./topologies.ts";

// deno-lint-ignore no-explicit-any
type Doc = Record<string, any>;
const docsOf = (replicas?: { count: number; redisUrl: string }) =>
  settingsDocuments("/s", "/pki", DEFAULT_PORTS, "/store", {}, true, 1, replicas) as Record<
    string,
    Doc
  >;

Deno.test("settingsDocuments() with one replica: the file store, no instance, one endpoint", () => {
  const docs = docsOf();
  assert.deepEqual(Object.keys(docs).sort(), [
    "directory/directory.yml",
    "roles/private-proxy-1/settings.yml",
    "roles/private-proxy-eps-1/settings.yml",
    "roles/public-proxy-1/settings.yml",
    "roles/public-proxy-eps-1/settings.yml",
  ]);
  const pub = docs["roles/public-proxy-1/settings.yml"]!;
  assert.equal(pub.store, "file");
  assert.equal(pub.store_path, "/store/announcements.jsonl");
  assert.equal(pub.instance, undefined);
  assert.equal(pub.reuse_port, undefined);
  assert.equal(pub.redis_url, undefined);
  const priv = docs["roles/private-proxy-1/settings.yml"]!;
  assert.equal(priv.instance, undefined);
  assert.deepEqual(priv.endpoints, { [PUBLIC_OPERATOR]: "127.0.0.1:4434" });
});

Deno.test("settingsDocuments() with two replicas: one public port, own private ports, Redis", () => {
  const docs = docsOf({ count: 2, redisUrl: "redis://127.0.0.1:6390" });
  const pubs = [0, 1].map((i) => docs[`${replicaDir("public", i)}/settings.yml`]!);
  const privs = [0, 1].map((i) => docs[`${replicaDir("private", i)}/settings.yml`]!);
  assert.deepEqual(pubs.map((p) => p.instance), ["pub-1", "pub-2"]);
  assert.deepEqual(privs.map((p) => p.instance), ["priv-1", "priv-2"]);
  assert.deepEqual(pubs.map((p) => p.public_listen), ["127.0.0.1:4433", "127.0.0.1:4433"]);
  assert.deepEqual(pubs.map((p) => p.private_listen), ["127.0.0.1:4434", "127.0.0.1:4437"]);
  assert.deepEqual(pubs.map((p) => p.private_endpoint), ["127.0.0.1:4434", "127.0.0.1:4437"]);
  for (const p of pubs) {
    assert.equal(p.reuse_port, true);
    assert.equal(p.store, "redis");
    assert.equal(p.redis_url, "redis://127.0.0.1:6390");
    assert.equal(p.store_path, undefined);
  }
  for (const p of privs) {
    assert.deepEqual(p.endpoints, { [PUBLIC_OPERATOR]: ["127.0.0.1:4434", "127.0.0.1:4437"] });
  }
  assert.equal(replicaDir("public", 1), "roles/public-proxy-1-r2");
  assert.equal(replicaPrivatePort(DEFAULT_PORTS, 2), 4438);
  assert.throws(() => docsOf({ count: 2, redisUrl: "" }), /redis_url/);
});

Deno.test("tlsPassRoles() names one path as before and every replica and instance of several", () => {
  const four = { publicEps: "pe", privateEps: "qe", private: "q", public: "p" };
  assert.deepEqual(tlsPassRoles(four).map(([n]) => n), [
    "public-eps",
    "private-eps",
    "private",
    "public",
  ]);
  const roles = tlsPassRoles({ ...four, publics: ["p", "p2"], privates: ["q", "q2"] });
  assert.deepEqual(roles, [
    ["public-eps", "eps", "pe"],
    ["private-eps", "eps", "qe"],
    ["private-1", "private", "q"],
    ["private-2", "private", "q2"],
    ["public-1", "public", "p"],
    ["public-2", "public", "p2"],
  ]);
  assert.deepEqual(benchPorts(1), [4433, 4434, 4435, 4436]);
  assert.deepEqual(benchPorts(3), [4433, 4434, 4435, 4436, 4437, 4438]);
});
