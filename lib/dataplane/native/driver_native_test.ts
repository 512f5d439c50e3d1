/**
 * What only the native driver has (docs/architecture.md, "The drivers"): a worker that can die,
 * and accepts that fail for want of descriptors. The cases both drivers share are in
 * ../driver_test.ts.
 * @module
 */
import assert from "node:assert/strict";
import { emptySnapshot, type Snapshot } from "../snapshot.ts";
import type { DataEvent } from "../events.ts";
import { nativeProblem, startNative } from "./driver.ts";

const ignore = nativeProblem() !== undefined;

async function within<T>(p: Promise<T>, what: string, ms = 10_000): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`Timed out after ${ms} ms: ${what}`)), ms);
  });
  try {
    return await Promise.race([p, late]);
  } finally {
    clearTimeout(timer);
  }
}

Deno.test({
  name: "native driver: failed rejects when the worker dies, and close() still resolves",
  ignore,
  fn: async () => {
    const plane = await startNative({ role: "private", snapshot: emptySnapshot(), onEvents() {} });
    try {
      // a snapshot the core cannot take (routes that are not a list): its loop throws
      const bad = { ...emptySnapshot(), privateRoutes: 5 } as unknown as Snapshot;
      plane.send({ type: "snapshot", snapshot: bad });
      await assert.rejects(within(plane.failed, "failed"), /The native data plane failed/);
      plane.send({ type: "stop" }); // ignored: nobody to send it to
      await within(plane.stop(), "stop() of a dead data plane");
    } finally {
      await within(plane.close(), "close()");
    }
  },
});

/** JSON lines of a child's stdout. */
async function* lines(stream: ReadableStream<Uint8Array>): AsyncGenerator<unknown> {
  const dec = new TextDecoder();
  let rest = "";
  for await (const chunk of stream) {
    rest += dec.decode(chunk, { stream: true });
    for (let i = rest.indexOf("\n"); i >= 0; i = rest.indexOf("\n")) {
      yield JSON.parse(rest.slice(0, i));
      rest = rest.slice(i + 1);
    }
  }
}

Deno.test({
  name: "native driver: a failed accept (EMFILE) pauses the listener ~100 ms, then it goes on",
  ignore,
  fn: async () => {
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", new URL("./testdata/accept_child.ts", import.meta.url).pathname],
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    const out = lines(child.stdout);
    const next = async (type: string): Promise<Record<string, unknown>> => {
      for (;;) {
        const r = await within(out.next(), `the child's ${type}`);
        assert.ok(!r.done, `the child ended before ${type}`);
        const e = r.value as { type: string };
        if (e.type === type) return e as Record<string, unknown>;
      }
    };
    const conns: Deno.TcpConn[] = [];
    try {
      const { addrs } = await next("ports") as { addrs: { private: Deno.ConnectOptions } };
      // dial-backs that send nothing: each holds a descriptor of the child until the limit
      for (let i = 0; i < 8; i++) conns.push(await Deno.connect(addrs.private));
      const first = (await next("acceptFailed")) as Extract<DataEvent, { type: "acceptFailed" }>;
      assert.equal(first.port, "private");
      assert.equal(first.error, "EMFILE");
      const t0 = performance.now();
      await next("acceptFailed");
      await next("acceptFailed");
      // each retry after its pause: a listener that spun would fail thousands of times a second
      assert.ok(performance.now() - t0 >= 150, `retried after ${performance.now() - t0} ms`);
      // descriptors come free: the queued dial-backs are accepted (and refused for no token)
      for (const c of conns.splice(0)) c.close();
      const refused = (await next("refused")) as Extract<DataEvent, { type: "refused" }>;
      assert.equal(refused.why, "bad-token");
    } finally {
      for (const c of conns) c.close();
      const w = child.stdin.getWriter();
      await w.write(new TextEncoder().encode("close\n"));
      await w.close();
      for await (const _ of out) {
        // the rest of its events
      }
      assert.equal((await within(child.status, "the child's exit")).code, 0);
    }
  },
});
