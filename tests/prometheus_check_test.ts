/** The exposition checker of the admin tests refuses what Prometheus would (tests/_prometheus.ts). */
import assert from "node:assert/strict";
import { parsePrometheus, sampleValue } from "./_prometheus.ts";

const GOOD = `# HELP h_seconds A histogram
# TYPE h_seconds histogram
h_seconds_bucket{le="0.1",via="pool"} 1
h_seconds_bucket{le="+Inf",via="pool"} 2
h_seconds_sum{via="pool"} 0.3
h_seconds_count{via="pool"} 2
# HELP x_total A counter
# TYPE x_total counter
x_total{reason="a \\"quoted\\" one"} 3
`;

Deno.test("the exposition checker accepts a good exposition and reads its values", () => {
  const f = parsePrometheus(GOOD);
  assert.equal(f.get("h_seconds")?.type, "histogram");
  assert.equal(sampleValue(f, "x_total", { reason: 'a "quoted" one' }), 3);
  assert.equal(sampleValue(f, "h_seconds_count", { via: "pool" }), 2);
});

Deno.test("the exposition checker refuses what is not the text format", () => {
  const bad: [string, RegExp][] = [
    [GOOD.replace("# HELP x_total A counter\n", ""), /TYPE x_total without its HELP/],
    [GOOD.replace("# TYPE x_total counter\n", ""), /x_total has no HELP and TYPE/],
    [GOOD + "y 1\n", /y has no HELP and TYPE/],
    [GOOD.replace('le="0.1",via="pool"} 1', 'le="0.1",via="pool"} 3'), /not cumulative/],
    [GOOD.replace('h_seconds_count{via="pool"} 2', 'h_seconds_count{via="pool"} 5'), /\+Inf/],
    [GOOD.replace("x_total{reason", "x_total{1reason"), /bad labels/],
    [GOOD.replace("} 3", "} three"), /bad value/],
    [GOOD.replace("} 3", "} -3"), /negative counter/],
    [GOOD.trimEnd(), /end with a newline/],
    [GOOD + "h_seconds_sum 1\n", /outside its family's block/],
  ];
  for (const [text, why] of bad) assert.throws(() => parsePrometheus(text), why);
});
