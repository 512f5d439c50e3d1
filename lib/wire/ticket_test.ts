import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import {
  decodeTicketId,
  encodeTicketToken,
  ReplayWindow,
  ticketCounter,
  ticketIdText,
  ticketMacOk,
} from "./ticket.ts";
import { TOKEN_BYTES } from "./token.ts";

const ID = Uint8Array.from([1, 2, 3, 4, 5, 6, 7, 0xfe]);
const KEY = new Uint8Array(32).fill(7);

Deno.test("ticket token: 32 bytes, id first, counter round-trips, MAC checks with the key only", () => {
  for (const counter of [1, 2, 255, 2 ** 32 - 1, 2 ** 32, 2 ** 40 + 3, Number.MAX_SAFE_INTEGER]) {
    const t = encodeTicketToken(ID, KEY, counter);
    assert.equal(t.length, TOKEN_BYTES);
    assert.equal(ticketIdText(t), "01020304050607fe");
    assert.equal(ticketCounter(t), counter);
    assert.ok(ticketMacOk(t, KEY));
    assert.ok(!ticketMacOk(t, new Uint8Array(32).fill(8)), "another key");
    for (const at of [0, 8, 15, 16, 31]) {
      const bad = t.slice();
      bad[at]! ^= 1;
      assert.ok(!ticketMacOk(bad, KEY), `byte ${at} flipped`);
    }
  }
  // the MAC is HMAC-SHA256's first 16 bytes, as another implementation (node:crypto) computes it,
  // for several keys through the keyed-state cache
  for (const key of [KEY, new Uint8Array(32).fill(9), crypto.getRandomValues(new Uint8Array(32))]) {
    for (const counter of [1, 77, 2 ** 40]) {
      const t = encodeTicketToken(ID, key, counter);
      const want = createHmac("sha256", key).update(t.subarray(0, 16)).digest().subarray(0, 16);
      assert.deepEqual(t.subarray(16), new Uint8Array(want));
    }
  }
  assert.throws(() => encodeTicketToken(ID, KEY, 0), RangeError);
  assert.throws(() => encodeTicketToken(ID, KEY, 1.5), RangeError);
});

Deno.test("ticket id: hex both ways; anything else is null", () => {
  assert.deepEqual(decodeTicketId("01020304050607fe"), ID);
  for (const v of ["01020304050607FE", "0102", "01020304050607fe00", 7, null, "zz020304050607fe"]) {
    assert.equal(decodeTicketId(v), null, String(v));
  }
});

Deno.test("replay window: each counter once, out of order within the window, never too old", () => {
  const w = new ReplayWindow();
  assert.ok(!w.accept(0));
  assert.ok(w.accept(5));
  assert.ok(!w.accept(5));
  assert.ok(w.accept(3), "late but new");
  assert.ok(!w.accept(3));
  assert.ok(w.accept(4));
  assert.ok(w.accept(2000));
  assert.ok(!w.accept(5), "before the window now");
  assert.ok(w.accept(2000 - ReplayWindow.SIZE + 1), "oldest inside the window");
  assert.ok(!w.accept(2000 - ReplayWindow.SIZE), "just outside");
  // every counter of a long shuffled run is accepted exactly once
  const v = new ReplayWindow();
  let seed = 42;
  const rand = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  // shuffled locally: no counter arrives more than 600 places late (racing dial-backs)
  const order = Array.from({ length: 5000 }, (_, i) => ({ c: i + 1, at: i + rand() * 600 }))
    .sort((a, b) => a.at - b.at).map((x) => x.c);
  for (const c of order) assert.ok(v.accept(c), `first ${c}`);
  for (const c of order.slice(-500)) assert.ok(!v.accept(c), `again ${c}`);
});
