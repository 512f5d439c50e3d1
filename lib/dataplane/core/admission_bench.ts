/**
 * What the admission checks cost a new client (docs/architecture.md, "Admission"):
 * `deno bench lib/dataplane/core/admission_bench.ts`. `Engine.admit()` with every list and
 * per-address limit on (none hit), against all off.
 */
import { emptySnapshot, NO_ADMISSION } from "../snapshot.ts";
import { Engine } from "./engine.ts";

function engine(on: boolean): Engine {
  const e = new Engine("public", (b) => b.fill(1));
  const s = emptySnapshot();
  e.setSnapshot({
    ...s,
    limits: {
      ...s.limits,
      admission: on
        ? {
          ...NO_ADMISSION,
          allow: ["127.0.0.0/8", "::1/128", "10.0.0.0/8"],
          deny: ["10.9.0.0/16", "2001:db8::/32"],
          maxConnectionsPerClient: 1_000_000,
          clientRate: 1_000_000,
          clientBurst: 1_000_000,
        }
        : NO_ADMISSION,
    },
  });
  return e;
}

const off = engine(false);
const on = engine(true);
let now = 0;

Deno.bench("admit(): every check off", { baseline: true }, () => {
  off.admit("127.0.0.1", now++);
});

Deno.bench("admit(): allow, deny, per-address connections and rate on", () => {
  on.admit("127.0.0.1", now++);
});

Deno.bench("admit(): the same, from 1,000 addresses in turn", () => {
  on.admit(`127.0.${(now >> 8) & 3}.${now & 255}`, now++);
});
