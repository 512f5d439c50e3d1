import assert from "node:assert/strict";
import { getFdLimit, raiseFdLimit, relayedConnectionsFor } from "./fd_limit.ts";

const linux = Deno.build.os === "linux";

Deno.test({
  name: "getFdLimit() reads a soft limit no higher than the hard one",
  ignore: !linux,
  fn() {
    const { soft, hard } = getFdLimit();
    assert.ok(Number.isInteger(soft) && soft > 0, `soft ${soft}`);
    assert.ok(Number.isInteger(hard) && hard >= soft, `hard ${hard} < soft ${soft}`);
  },
});

Deno.test({
  name: "raiseFdLimit() raises the soft limit to the hard one and lowers nothing",
  ignore: !linux,
  fn() {
    const before = getFdLimit();
    // target = the current hard limit: as root nothing above it is asked, so the test changes
    // no more than the soft limit of the test process
    const report = raiseFdLimit(before.hard);
    assert.equal(report.problem, undefined);
    assert.deepEqual(report.before, before);
    const after = getFdLimit();
    assert.deepEqual(report.after, after);
    assert.equal(after.hard, before.hard);
    assert.equal(after.soft, after.hard);
    // twice is a no-op
    const again = raiseFdLimit(before.hard);
    assert.equal(again.problem, undefined);
    assert.deepEqual(again.after, after);
  },
});

Deno.test("relayedConnectionsFor() counts two descriptors per connection above a reserve", () => {
  assert.equal(relayedConnectionsFor(20_000), 9_968);
  assert.equal(relayedConnectionsFor(1_024), 480);
  assert.equal(relayedConnectionsFor(10), 0);
});
