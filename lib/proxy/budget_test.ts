import assert from "node:assert/strict";
import { privateBudget, publicBudget, RESERVED_FDS } from "./budget.ts";

Deno.test("publicBudget() keeps every client's dial-back within the open-file limit", () => {
  for (const limit of [256, 1024, 20_000, 1_048_576]) {
    const b = publicBudget(undefined, limit);
    assert.equal(b.from, "open-file limit");
    // every client with its dial-back, plus the allowance, fits in what is left after the reserve
    assert.ok(b.maxConnections + b.maxDialBacks <= limit - RESERVED_FDS, `limit ${limit}`);
    assert.ok(b.maxDialBacks > b.maxConnections, "room for idle pooled dial-backs");
  }
  assert.deepEqual(publicBudget(undefined, 256).maxConnections, 84);
});

Deno.test("publicBudget() and privateBudget() take max_connections from the settings", () => {
  const b = publicBudget(100, 20_000);
  assert.equal(b.maxConnections, 100);
  assert.equal(b.from, "settings");
  assert.ok(b.maxDialBacks > 100);
  assert.equal(privateBudget(50, null).maxConnections, 50);
  assert.equal(privateBudget(undefined, 1024).maxConnections, (1024 - RESERVED_FDS) / 2);
});
