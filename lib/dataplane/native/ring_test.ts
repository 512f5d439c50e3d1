import assert from "node:assert/strict";
import {
  HEAD,
  MAIL_DONE,
  newMailbox,
  RING_BYTES,
  RING_SAB_BYTES,
  RingReader,
  RingWriter,
  SLEEPING,
  TAIL,
} from "./ring.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

function pair(): { w: RingWriter; r: RingReader; wakes: () => number } {
  const sab = new SharedArrayBuffer(RING_SAB_BYTES);
  const mail = newMailbox();
  let wakes = 0;
  const w = new RingWriter(sab, mail, () => wakes++);
  return { w, r: new RingReader(sab, mail), wakes: () => wakes };
}

function readAll(r: RingReader): { got: string[]; room: boolean } {
  const got: string[] = [];
  const room = r.read((b) => got.push(dec.decode(b)));
  return { got, room };
}

Deno.test("ring: messages arrive in order across many wraps and past HEAD/TAIL 2^31", () => {
  const { w, r } = pair();
  w.ctl[HEAD] = w.ctl[TAIL] = 0x7fff_0000; // wraps to negative int32s soon
  let sent = 0;
  let seen = 0;
  for (let round = 0; round < 200; round++) {
    for (let i = 0; i < 50; i++) {
      w.send(enc.encode(`${sent++}:${"x".repeat((sent * 7919) % 3000)}`));
    }
    for (const m of readAll(r).got) {
      assert.equal(m.slice(0, m.indexOf(":")), String(seen++));
    }
  }
  assert.equal(seen, sent);
  assert.ok(w.ctl[HEAD]! < 0, "HEAD wrapped");
});

Deno.test("ring: a message larger than the ring goes whole through the mailbox, in order", () => {
  const { w, r } = pair();
  const big = "y".repeat(3 * RING_BYTES + 5);
  w.send(enc.encode("before"));
  w.send(enc.encode(big));
  w.send(enc.encode("after"));
  assert.equal(w.backlog, 0);
  assert.deepEqual(readAll(r).got, ["before", big, "after"]);
  assert.equal(w.ctl[MAIL_DONE], 1);
  // read: the next mail starts at 0 again (the mailbox does not grow)
  const size = w.mailbox.byteLength;
  w.send(enc.encode(big));
  w.send(enc.encode(big.replaceAll("y", "z"))); // the first is not read yet: goes after it
  assert.ok(w.mailbox.byteLength > size);
  const got = readAll(r).got;
  assert.equal(got.length, 2);
  assert.equal(got[0], big);
  assert.equal(got[1], big.replaceAll("y", "z"));
});

Deno.test("ring: with the ring full, messages wait in the backlog and go in pieces", () => {
  const { w, r } = pair();
  const small = "s".repeat(1000);
  let n = 0;
  while (w.backlog === 0) w.send(enc.encode(`${n++}${small}`));
  const big = "b".repeat(2 * RING_BYTES + 3);
  w.send(enc.encode(big));
  w.send(enc.encode("last"));
  const got: string[] = [];
  for (let turns = 0; turns < 100; turns++) {
    const { got: g, room } = readAll(r);
    got.push(...g);
    if (room) w.flush();
    else if (w.backlog === 0 && !r.pending()) break;
  }
  assert.equal(got.length, n + 2);
  for (let i = 0; i < n; i++) assert.equal(got[i], `${i}${small}`);
  assert.equal(got[n], big);
  assert.equal(got[n + 1], "last");
});

Deno.test("ring: the writer wakes the worker only while it sleeps, once per sleep", () => {
  const { w, r, wakes } = pair();
  w.send(enc.encode("a"));
  assert.equal(wakes(), 0);
  Atomics.store(w.ctl, SLEEPING, 1);
  w.send(enc.encode("b"));
  w.send(enc.encode("c"));
  assert.equal(wakes(), 1);
  assert.equal(Atomics.load(w.ctl, SLEEPING), 0);
  assert.deepEqual(readAll(r).got, ["a", "b", "c"]);
});
