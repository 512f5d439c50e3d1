import assert from "node:assert/strict";
import {
  EFD_CLOEXEC,
  EFD_NONBLOCK,
  EPOLL_EVENT_BYTES,
  Libc,
  nativeProblem,
  SOCK_CLOEXEC,
} from "./libc.ts";
import { Socks } from "./socks.ts";

const ignore = nativeProblem() !== undefined;

Deno.test({
  name: "an epoll event for a descriptor closed and reused in the same batch is stale",
  ignore,
  fn: () => {
    const libc = Libc.get();
    const s = libc.sym;
    const ep = s.epollCreate1(SOCK_CLOEXEC);
    const socks = new Socks(libc, ep);
    const events = new Uint8Array(4 * EPOLL_EVENT_BYTES);
    const view = new DataView(events.buffer);
    let b = -1;
    try {
      // an eventfd with a count of 1 is readable at once: it plays a socket with data
      const a = s.eventfd(1, EFD_NONBLOCK | EFD_CLOEXEC);
      const x = socks.add(a, 1);
      x.reading = true;
      assert.equal(socks.watch(x), 0);
      assert.equal(s.epollWait(ep, events, 4, 0), 1);
      assert.equal(socks.lookupEvent(view, 0), x, "the kernel hands back fd and generation");
      // while this batch is handled: x is closed, and a new socket gets its descriptor
      socks.release(x);
      b = s.eventfd(1, EFD_NONBLOCK | EFD_CLOEXEC);
      assert.equal(b, a, "the lowest free descriptor is reused");
      const y = socks.add(b, 2);
      assert.equal(socks.lookupEvent(view, 0), undefined, "the old event names the old generation");
      assert.equal(socks.lookup(b, y.gen), y);
      // the new socket's own events are not stale
      y.reading = true;
      assert.equal(socks.watch(y), 0);
      assert.equal(s.epollWait(ep, events, 4, 0), 1);
      assert.equal(socks.lookupEvent(view, 0), y);
      assert.notEqual(x.gen, y.gen);
    } finally {
      socks.closeAll();
      s.close(ep);
    }
    assert.ok(b >= 0);
  },
});

Deno.test({
  name: "generations skip 0 (no registration looks like an unset one)",
  ignore,
  fn: () => {
    const socks = new Socks(Libc.get(), -1);
    const seen = new Set<number>();
    for (let i = 0; i < 1000; i++) seen.add(socks.nextGen());
    assert.equal(seen.size, 1000);
    assert.ok(!seen.has(0));
  },
});
