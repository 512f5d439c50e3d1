import assert from "node:assert/strict";
import { createPki } from "../certs/pki.ts";
import { Backoff, commonNameOf } from "./link.ts";
import { forwardTimeoutMs, splitMethod } from "./router.ts";

Deno.test("Backoff.next() doubles from 200 ms to 20 s with jitter in [d/2, d]", () => {
  const b = new Backoff();
  const expected = [200, 400, 800, 1600, 3200, 6400, 12800, 20000, 20000, 20000];
  for (const d of expected) {
    const v = b.next();
    assert.ok(v >= d / 2 && v <= d, `${v} not in [${d / 2}, ${d}]`);
  }
  b.reset();
  assert.ok(b.next() <= 200);
});

Deno.test("commonNameOf() reads the operator name of a certificate chain", async () => {
  const pki = await createPki(["eps-a"]);
  assert.equal(commonNameOf(pki.leaves["eps-a"]!.certPem), "eps-a");
});

Deno.test("splitMethod() splits at the last dot", () => {
  const table: [string, ReturnType<typeof splitMethod>][] = [
    ["public-proxy-1.announceConnections", {
      operator: "public-proxy-1",
      method: "announceConnections",
    }],
    ["eps.example.com.ping", { operator: "eps.example.com", method: "ping" }],
    ["noDot", undefined],
    [".method", undefined],
    ["operator.", undefined],
  ];
  for (const [input, want] of table) assert.deepEqual(splitMethod(input), want, input);
});

Deno.test("forwardTimeoutMs() leaves the EPS time to answer before the caller gives up", () => {
  assert.equal(forwardTimeoutMs(5000), 4750);
  assert.equal(forwardTimeoutMs(1000), 900);
  assert.ok(forwardTimeoutMs(1) >= 1);
});
