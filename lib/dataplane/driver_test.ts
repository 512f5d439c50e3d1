/**
 * Conformance of the two drivers (docs/architecture.md, "The drivers"): the same cases, over
 * real loopback sockets, against the portable and the native driver. Every wait is bounded, and
 * every socket, listener and data plane is closed at the end.
 * @module
 */
import assert from "node:assert/strict";
import type { HostPort } from "../role.ts";
import { parseClientHello } from "../wire/client_hello.ts";
import { encodePoolHeader } from "../wire/pool_header.ts";
import { ALERT_INTERNAL_ERROR, ALERT_UNRECOGNIZED_NAME, tlsAlert } from "../wire/tls_alert.ts";
import { decodeToken, tokenText } from "../wire/token.ts";
import type { DataEvent } from "./events.ts";
import type { DataPlane, DataPlaneOptions } from "./mod.ts";
import {
  type Command,
  DEFAULT_LIMITS,
  emptySnapshot,
  type PlaneRole,
  type Snapshot,
} from "./snapshot.ts";
import { startPortable } from "./portable/driver.ts";
import { nativeProblem, SPLICE_PIPE_BYTES, startNative } from "./native/driver.ts";
import {
  decodeSockaddr,
  IPPROTO_TCP,
  Libc,
  SO_KEEPALIVE,
  SOL_SOCKET,
  TCP_KEEPIDLE,
} from "./native/libc.ts";
import { keepAliveTimings } from "./keepalive.ts";

const HELLO = Deno.readFileSync(new URL("../wire/testdata/curl_tls13.bin", import.meta.url));
const SNI = parseClientHello(HELLO).serverName!;
const LOOPBACK: HostPort = { hostname: "127.0.0.1", port: 0 };
const WAIT_MS = 10_000;
const enc = new TextEncoder();

interface Driver {
  readonly name: string;
  readonly start: (options: DataPlaneOptions) => Promise<DataPlane>;
  readonly ignore: boolean;
}

const DRIVERS: readonly Driver[] = [
  { name: "portable", start: startPortable, ignore: false },
  { name: "native", start: startNative, ignore: nativeProblem() !== undefined },
];

/** Runs `case_` as one test per driver. */
function conformance(name: string, case_: (d: Driver) => Promise<void>): void {
  for (const d of DRIVERS) {
    Deno.test({ name: `${d.name} driver: ${name}`, ignore: d.ignore, fn: () => case_(d) });
  }
}

/** `p`, or a rejection after `ms`. */
async function within<T>(p: Promise<T>, what: string, ms = WAIT_MS): Promise<T> {
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

/** The events of a data plane, taken by type in the order they came. */
class Events {
  readonly all: DataEvent[] = [];
  readonly #unread: DataEvent[] = [];
  #wake: (() => void) | undefined;

  push(batch: readonly DataEvent[]): void {
    this.all.push(...batch);
    this.#unread.push(...batch);
    this.#wake?.();
  }

  /** The next event of `type` not taken yet. */
  next<K extends DataEvent["type"]>(type: K): Promise<Extract<DataEvent, { type: K }>> {
    const find = async () => {
      for (;;) {
        const i = this.#unread.findIndex((e) => e.type === type);
        if (i >= 0) return this.#unread.splice(i, 1)[0] as Extract<DataEvent, { type: K }>;
        await new Promise<void>((resolve) => this.#wake = resolve);
      }
    };
    return within(find(), `event ${type} (got ${this.all.map((e) => e.type).join(", ")})`);
  }
}

interface Running {
  readonly plane: DataPlane;
  readonly events: Events;
  /** `plane.send()`, checking that no events are delivered inside it. */
  send(cmd: Command): void;
}

/** Opens a data plane on `d` (a public one listens on loopback, any ports), closed after `fn`. */
async function withPlane(
  d: Driver,
  role: PlaneRole,
  snapshot: Snapshot,
  fn: (r: Running) => Promise<void>,
  extra: Partial<Pick<DataPlaneOptions, "splicePipes">> = {},
): Promise<void> {
  const events = new Events();
  let sending = false;
  let inside = 0;
  const plane = await d.start({
    role,
    idPrefix: "dr-",
    snapshot,
    ...extra,
    ...(role === "public" ? { listen: { public: LOOPBACK, private: LOOPBACK } } : {}),
    onEvents: (batch) => {
      if (sending) inside++;
      events.push(batch);
    },
  });
  const send = (cmd: Command) => {
    sending = true;
    try {
      plane.send(cmd);
    } finally {
      sending = false;
    }
  };
  try {
    send({ type: "snapshot", snapshot });
    await fn({ plane, events, send });
  } finally {
    await within(plane.close(), "close()");
    await within(plane.close(), "a second close()");
  }
  assert.equal(inside, 0, "events were delivered inside send()");
}

function publicSnapshot(operator = "op1"): Snapshot {
  return { ...emptySnapshot(), version: 1, publicRoutes: [[SNI, { operator }]] };
}

function privateSnapshot(internal: HostPort): Snapshot {
  return { ...emptySnapshot(), version: 1, privateRoutes: [[SNI, { internal }]] };
}

function randomToken(): string {
  return tokenText(crypto.getRandomValues(new Uint8Array(32)));
}

async function readExact(c: Deno.Conn, n: number): Promise<Uint8Array> {
  const out = new Uint8Array(n);
  for (let off = 0; off < n;) {
    const r = await within(c.read(out.subarray(off)), `read ${n} bytes`);
    if (r === null) throw new Error(`EOF after ${off} of ${n} bytes`);
    off += r;
  }
  return out;
}

/** Reads until EOF; everything read. */
async function readToEnd(c: Deno.Conn): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  const buf = new Uint8Array(64 * 1024);
  for (;;) {
    const r = await within(c.read(buf), "read to EOF");
    if (r === null) return concat(...parts);
    parts.push(buf.slice(0, r));
  }
}

async function writeAll(c: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let off = 0; off < bytes.length;) off += await c.write(bytes.subarray(off));
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  parts.reduce((off, p) => (out.set(p, off), off + p.length), 0);
  return out;
}

/** A notice's dial-back for the private plane `r`: `endpoint` (the dial-back) and `internal`. */
function sendDialBack(
  r: Running,
  endpoint: HostPort,
  internal: HostPort,
  token = randomToken(),
): void {
  r.send({ type: "dialBack", operator: "op1", domain: SNI, endpoint, token, internal });
}

function connect(a: HostPort | undefined): Promise<Deno.TcpConn> {
  assert.ok(a !== undefined);
  return within(Deno.connect({ hostname: a.hostname, port: a.port }), `connect ${a.port}`);
}

/** Closes each of `conns`, ignoring the ones closed already. */
function closeAll(...conns: (Deno.Conn | Deno.Listener | undefined)[]): void {
  for (const c of conns) {
    try {
      c?.close();
    } catch {
      // closed already
    }
  }
}

/**
 * A public client routed by notice: returns the client and its dial-back, spliced (the hello was
 * read back on the dial-back).
 */
async function routedByNotice(r: Running): Promise<[Deno.TcpConn, Deno.TcpConn]> {
  const client = await connect(r.plane.addrs.public);
  let dialBack: Deno.TcpConn | undefined;
  try {
    await writeAll(client, HELLO);
    const need = await r.events.next("needDialBack");
    assert.equal(need.domain, SNI);
    assert.equal(need.operator, "op1");
    // the driver reported the accepted socket's local address: the public port as the client saw it
    const to = client.remoteAddr;
    assert.equal(need.local, `${to.hostname}:${to.port}`);
    assert.equal(need.client, `${client.localAddr.hostname}:${client.localAddr.port}`);
    dialBack = await connect(r.plane.addrs.private);
    await writeAll(dialBack, decodeToken(need.token)!);
    assert.deepEqual(await readExact(dialBack, HELLO.length), HELLO);
    const piped = await r.events.next("piped");
    assert.equal(piped.conn, need.conn);
    assert.equal(piped.via, "notice");
    return [client, dialBack];
  } catch (err) {
    closeAll(client, dialBack);
    throw err;
  }
}

/** A pool grant of one token (of `instance`), redeemed: the idle pooled dial-back. */
async function idlePooled(r: Running, instance?: string): Promise<Deno.TcpConn> {
  const token = randomToken();
  r.send({
    type: "grantPool",
    operator: "op1",
    domains: [SNI],
    tokens: [token],
    idleTimeoutMs: 10_000,
    ...(instance !== undefined ? { instance } : {}),
  });
  const pooled = await connect(r.plane.addrs.private);
  try {
    await writeAll(pooled, decodeToken(token)!);
    const idle = await r.events.next("poolIdle");
    assert.deepEqual([idle.operator, idle.instance], ["op1", instance]);
    return pooled;
  } catch (err) {
    closeAll(pooled);
    throw err;
  }
}

/** What a taken pooled dial-back gets: the pool header (returned), then the hello (checked). */
async function readPoolHeader(pooled: Deno.TcpConn): Promise<Uint8Array> {
  const start = await readExact(pooled, 3); // its type byte, then its fields' length
  const header = concat(start, await readExact(pooled, (start[1]! << 8) + start[2]!));
  assert.deepEqual(await readExact(pooled, HELLO.length), HELLO);
  return header;
}

// -- the public proxy ------------------------------------------------------------------------------

conformance("a routed client gets its dial-back; bytes flow, half-closed", async (d) => {
  await withPlane(d, "public", publicSnapshot(), async (r) => {
    assert.equal(r.plane.driver, d.name);
    assert.equal(r.plane.addrs.public?.hostname, "127.0.0.1"); // the real ports: not 0
    assert.ok(r.plane.addrs.public!.port > 0 && r.plane.addrs.private!.port > 0);
    const [client, dialBack] = await routedByNotice(r);
    try {
      const up = enc.encode("GET / from the client");
      const down = enc.encode("200 from the server");
      await writeAll(client, up);
      assert.deepEqual(await readExact(dialBack, up.length), up);
      await client.closeWrite(); // half-close: the server reads EOF, then answers
      assert.equal((await readToEnd(dialBack)).length, 0);
      await writeAll(dialBack, down);
      await dialBack.closeWrite();
      assert.deepEqual(await readToEnd(client), down);
      const ended = await r.events.next("ended");
      assert.deepEqual(ended.reason, { kind: "done" });
      assert.equal(ended.up, HELLO.length + up.length);
      assert.equal(ended.down, down.length);
      assert.equal(ended.domain, SNI);
      assert.equal(ended.via, "notice");
      // the core's times are this thread's performance.now(), whichever thread runs the core
      assert.ok(Math.abs(ended.phases.ended - performance.now()) < 1000);
    } finally {
      closeAll(client, dialBack);
    }
    await within(r.plane.stop(), "stop()");
  });
});

conformance("a pool grant: the pooled dial-back gets the pool header and the hello", async (d) => {
  await withPlane(d, "public", publicSnapshot(), async (r) => {
    const pooled = await idlePooled(r);
    let client: Deno.TcpConn | undefined;
    try {
      client = await connect(r.plane.addrs.public);
      await writeAll(client, HELLO);
      const header = await readPoolHeader(pooled);
      // its first answer starts the pipe (docs/architecture.md, "Pooled dial-backs that close
      // unanswered")
      await writeAll(pooled, enc.encode("hi"));
      const piped = await r.events.next("piped");
      assert.equal(piped.via, "pool");
      assert.match(piped.connId, /^dr-[0-9a-z]+$/); // the prefix reached the engine
      // with the client's address and the one it connected to (docs/architecture.md, "The PROXY protocol")
      const addrs = {
        source: { hostname: client.localAddr.hostname, port: client.localAddr.port },
        destination: { hostname: client.remoteAddr.hostname, port: client.remoteAddr.port },
      };
      assert.deepEqual(header, encodePoolHeader(SNI, piped.connId, addrs));
      assert.deepEqual(await readExact(client, 2), enc.encode("hi"));
      await pooled.closeWrite();
      await client.closeWrite();
      assert.equal((await readToEnd(client)).length, 0);
      assert.equal((await readToEnd(pooled)).length, 0);
      const ended = await r.events.next("ended");
      assert.equal(ended.via, "pool");
      assert.equal(ended.up, HELLO.length);
      assert.equal(ended.down, 2);
    } finally {
      closeAll(pooled, client);
    }
  });
});

conformance("re-dispatch and instances cross the driver both ways", async (d) => {
  // docs/architecture.md, "Re-dispatch": the fields of the commands and events survive the
  // native driver's ring (JSON) and its event messages
  const snapshot: Snapshot = {
    ...emptySnapshot({ ...emptySnapshot().limits, redispatchAfterMs: 60_000, maxDispatches: 2 }),
    version: 1,
    publicRoutes: [[SNI, { operator: "op1", instances: ["a", "b"] }]],
  };
  await withPlane(d, "public", snapshot, async (r) => {
    const client = await connect(r.plane.addrs.public);
    let pooled: Deno.TcpConn | undefined;
    try {
      await writeAll(client, HELLO);
      const first = await r.events.next("needDialBack");
      assert.deepEqual([first.attempt, first.why, first.instances], [1, undefined, ["a", "b"]]);
      // the pooled dial-back of "b" goes idle meanwhile; the failed notice's re-dispatch takes it
      pooled = await idlePooled(r, "b");
      r.send({ type: "noticeFailed", conn: first.conn, retry: true, attempt: 1 });
      await readPoolHeader(pooled);
      await writeAll(pooled, enc.encode("x")); // its first answer: the pipe
      const piped = await r.events.next("piped");
      assert.deepEqual([piped.conn, piped.via, piped.instance], [first.conn, "pool", "b"]);
      closeAll(pooled, client);
      const ended = await r.events.next("ended");
      assert.equal(ended.instance, "b");
    } finally {
      closeAll(pooled, client);
    }
  });
});

conformance(
  "a pooled dial-back that closes before answering: the client's next dial-back gets its hello",
  async (d) => {
    // docs/architecture.md, "Pooled dial-backs that close unanswered": the private side closed it as
    // a client took it; the client never knows
    const snapshot: Snapshot = {
      ...publicSnapshot(),
      limits: { ...publicSnapshot().limits, maxDispatches: 3 },
    };
    await withPlane(d, "public", snapshot, async (r) => {
      const pooled = await idlePooled(r);
      let client: Deno.TcpConn | undefined;
      let dialBack: Deno.TcpConn | undefined;
      try {
        client = await connect(r.plane.addrs.public);
        await writeAll(client, HELLO);
        await readPoolHeader(pooled);
        pooled.close(); // unanswered
        const dropped = await r.events.next("poolDropped");
        assert.deepEqual([dropped.retry, typeof dropped.conn], [true, "number"]);
        const need = await r.events.next("needDialBack");
        assert.deepEqual([need.conn, need.why, need.attempt], [dropped.conn, "pooled", 1]);
        dialBack = await connect(r.plane.addrs.private);
        await writeAll(dialBack, decodeToken(need.token)!);
        assert.deepEqual(await readExact(dialBack, HELLO.length), HELLO);
        assert.equal((await r.events.next("piped")).via, "notice");
        await writeAll(dialBack, enc.encode("answer"));
        await dialBack.closeWrite();
        // the client got the answer and nothing of the one that closed
        assert.deepEqual(await readToEnd(client), enc.encode("answer"));
      } finally {
        closeAll(pooled, client, dialBack);
      }
    });
  },
);

conformance("an unknown name gets TLS alert 112 (unrecognized_name)", async (d) => {
  await withPlane(d, "public", emptySnapshot(), async (r) => {
    const client = await connect(r.plane.addrs.public);
    try {
      await writeAll(client, HELLO);
      assert.deepEqual(await readToEnd(client), tlsAlert(ALERT_UNRECOGNIZED_NAME));
      const refused = await r.events.next("refused");
      assert.equal(refused.why, "unknown-name");
      assert.equal(refused.domain, SNI);
    } finally {
      closeAll(client);
    }
  });
});

conformance("stop(): a waiting client gets internal_error, then stop() resolves", async (d) => {
  await withPlane(d, "public", publicSnapshot(), async (r) => {
    const client = await connect(r.plane.addrs.public);
    try {
      await writeAll(client, HELLO);
      await r.events.next("needDialBack");
      const stopped = r.plane.stop();
      assert.deepEqual(await readToEnd(client), tlsAlert(ALERT_INTERNAL_ERROR));
      await client.closeWrite(); // the lingering refusal ends at the client's EOF
      await within(stopped, "stop()");
      await within(r.plane.stop(), "a second stop()");
      await r.events.next("drained");
    } finally {
      closeAll(client);
    }
  });
});

conformance("a hello that does not complete in time: hello-timeout", async (d) => {
  const snapshot = publicSnapshot();
  const limits = { ...snapshot.limits, helloTimeoutMs: 50 };
  await withPlane(d, "public", { ...snapshot, limits }, async (r) => {
    const client = await connect(r.plane.addrs.public);
    try {
      await writeAll(client, HELLO.subarray(0, 20));
      const started = performance.now();
      assert.equal((await r.events.next("refused")).why, "hello-timeout");
      assert.ok(performance.now() - started < 5000);
      await within(client.read(new Uint8Array(1)).catch(() => null), "the client's close");
    } finally {
      closeAll(client);
    }
  });
});

conformance("a connection that sends nothing and closes is refused without an alert", async (d) => {
  await withPlane(d, "public", publicSnapshot(), async (r) => {
    const client = await connect(r.plane.addrs.public);
    try {
      await client.closeWrite();
      const refused = await r.events.next("refused");
      assert.equal(refused.why, "bad-hello");
      assert.equal(refused.detail, "EOF");
      assert.equal((await readToEnd(client)).length, 0);
    } finally {
      closeAll(client);
    }
  });
});

conformance("a snapshot of 100,000 routes arrives whole", async (d) => {
  await withPlane(d, "public", emptySnapshot(), async (r) => {
    const routes: [string, { operator: string }][] = [];
    for (let i = 0; i < 100_000; i++) routes.push([`host-${i}.example.com`, { operator: `o${i}` }]);
    routes.push([SNI, { operator: "last" }]);
    for (const version of [2, 3]) {
      r.send({ type: "snapshot", snapshot: { ...emptySnapshot(), version, publicRoutes: routes } });
    }
    const client = await connect(r.plane.addrs.public);
    try {
      await writeAll(client, HELLO);
      assert.equal((await r.events.next("needDialBack")).operator, "last");
    } finally {
      closeAll(client);
    }
  });
});

/** What starting a public data plane on `listen` fails with. */
async function startError(
  d: Driver,
  listen: NonNullable<DataPlaneOptions["listen"]>,
): Promise<Error> {
  let plane: DataPlane | undefined;
  try {
    plane = await within(
      d.start({ role: "public", snapshot: emptySnapshot(), listen, onEvents() {} }),
      "start()",
    );
  } catch (err) {
    assert.ok(err instanceof Error);
    return err;
  }
  await plane.close();
  throw new Error("started on a port in use");
}

conformance("a bind to a port in use rejects with a clear message", async (d) => {
  const taken = Deno.listen(LOOPBACK);
  try {
    const port = taken.addr.port;
    const busy = { ...LOOPBACK, port };
    for (
      const listen of [{ public: busy, private: LOOPBACK }, { public: LOOPBACK, private: busy }]
    ) {
      const err = await startError(d, listen);
      if (d.name !== "native") continue;
      assert.equal(err.message, `Cannot listen on 127.0.0.1:${port}: EADDRINUSE (address in use)`);
    }
  } finally {
    taken.close();
  }
});

// -- the private proxy -----------------------------------------------------------------------------

/** Two test listeners: the public proxy's private port and an internal server. */
async function withListeners(
  fn: (endpoint: Deno.TcpListener, internal: Deno.TcpListener) => Promise<void>,
): Promise<void> {
  const endpoint = Deno.listen(LOOPBACK);
  const internal = Deno.listen(LOOPBACK);
  try {
    await fn(endpoint, internal);
  } finally {
    closeAll(endpoint, internal);
  }
}

function addrOf(l: Deno.TcpListener): HostPort {
  return { hostname: l.addr.hostname, port: l.addr.port };
}

conformance("openPooled: the pool header's client reaches the internal server", async (d) => {
  await withListeners(async (endpoint, internal) => {
    await withPlane(d, "private", privateSnapshot(addrOf(internal)), async (r) => {
      const token = randomToken();
      r.send({
        type: "openPooled",
        operator: "op1",
        endpoint: addrOf(endpoint),
        tokens: [token],
        idleTimeoutMs: 10_000,
      });
      const pooled = await within(endpoint.accept(), "accept the pooled dial-back");
      let server: Deno.TcpConn | undefined;
      try {
        assert.deepEqual(await readExact(pooled, 32), decodeToken(token));
        await r.events.next("poolIdle");
        const early = enc.encode("early");
        await writeAll(pooled, concat(encodePoolHeader(SNI), HELLO, early));
        server = await within(internal.accept(), "accept at the internal server");
        assert.deepEqual(
          await readExact(server, HELLO.length + early.length),
          concat(HELLO, early),
        );
        assert.equal((await r.events.next("poolUsed")).domain, SNI);
        assert.equal((await r.events.next("piped")).via, "pool");
        await writeAll(server, enc.encode("reply"));
        assert.deepEqual(await readExact(pooled, 5), enc.encode("reply"));
        await pooled.closeWrite();
        assert.equal((await readToEnd(server)).length, 0);
        await server.closeWrite();
        assert.equal((await readToEnd(pooled)).length, 0);
        const ended = await r.events.next("ended");
        assert.deepEqual(ended.reason, { kind: "done" });
        assert.equal(ended.up, HELLO.length + early.length);
        assert.equal(ended.down, 5);
      } finally {
        closeAll(pooled, server);
      }
    });
  });
});

conformance("dialBack: connects both, presents the token, pipes", async (d) => {
  await withListeners(async (endpoint, internal) => {
    await withPlane(d, "private", privateSnapshot(addrOf(internal)), async (r) => {
      const token = randomToken();
      sendDialBack(r, addrOf(endpoint), addrOf(internal), token);
      const dialBack = await within(endpoint.accept(), "accept the dial-back");
      let server: Deno.TcpConn | undefined;
      try {
        server = await within(internal.accept(), "accept at the internal server");
        assert.deepEqual(await readExact(dialBack, 32), decodeToken(token));
        assert.equal((await r.events.next("piped")).via, "notice");
        await writeAll(dialBack, HELLO);
        assert.deepEqual(await readExact(server, HELLO.length), HELLO);
        await writeAll(server, enc.encode("back"));
        assert.deepEqual(await readExact(dialBack, 4), enc.encode("back"));
        await server.closeWrite();
        await dialBack.closeWrite();
        assert.equal((await readToEnd(dialBack)).length, 0);
        assert.equal((await readToEnd(server)).length, 0);
        const ended = await r.events.next("ended");
        assert.equal(ended.up, HELLO.length);
        assert.equal(ended.down, 4);
      } finally {
        closeAll(dialBack, server);
      }
    });
  });
});

conformance("dialBack to a closed port: connectFailed with ECONNREFUSED", async (d) => {
  await withListeners(async (endpoint, internal) => {
    const closed = addrOf(internal);
    internal.close();
    await withPlane(d, "private", privateSnapshot(closed), async (r) => {
      sendDialBack(r, addrOf(endpoint), closed);
      const failed = await r.events.next("connectFailed");
      assert.equal(failed.side, "internal");
      assert.deepEqual(failed.reason, {
        kind: "error",
        side: "internal",
        op: "connect",
        code: "ECONNREFUSED",
      });
      // the dial-back was connected (or is being connected) and is closed again
      const dialBack = await within(endpoint.accept(), "accept the dial-back");
      closeAll(dialBack);
    });
  });
});

// -- bulk ------------------------------------------------------------------------------------------

const BULK = 64 * 1024 * 1024;

/** `n` pseudo-random bytes (xorshift32). */
function pattern(n: number, seed: number): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(n);
  const words = new Uint32Array(out.buffer, 0, n >>> 2);
  let x = seed;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    words[i] = x;
  }
  return out;
}

/** A 32-bit FNV-1a checksum, over chunks. */
class Checksum {
  h = 0x811c9dc5;
  length = 0;
  constructor(whole?: Uint8Array) {
    if (whole !== undefined) this.add(whole);
  }
  add(b: Uint8Array): void {
    let h = this.h;
    for (let i = 0; i < b.length; i++) h = Math.imul(h ^ b[i]!, 0x01000193);
    this.h = h >>> 0;
    this.length += b.length;
  }
}

/** Reads to EOF into a checksum; `slow`: small reads, yielding now and then (backpressure). */
async function drain(c: Deno.Conn, slow: boolean): Promise<Checksum> {
  const sum = new Checksum();
  const buf = new Uint8Array(slow ? 4096 : 256 * 1024);
  for (let i = 0;; i++) {
    const n = await c.read(buf);
    if (n === null) return sum;
    sum.add(buf.subarray(0, n));
    if (slow && i % 256 === 255) await new Promise((r) => setTimeout(r, 0));
  }
}

async function send(c: Deno.Conn, data: Uint8Array): Promise<void> {
  for (let off = 0; off < data.length; off += 1 << 20) {
    await writeAll(c, data.subarray(off, Math.min(data.length, off + (1 << 20))));
  }
  await c.closeWrite();
}

conformance("64 MiB each way through a pipe arrive intact, with a slow reader", async (d) => {
  const up = pattern(BULK, 0x12345678);
  const down = pattern(BULK, 0x9abcdef1);
  await withPlane(d, "public", publicSnapshot(), async (r) => {
    const [client, dialBack] = await routedByNotice(r);
    try {
      const [, , gotUp, gotDown] = await within(
        Promise.all([
          send(client, up),
          send(dialBack, down),
          drain(dialBack, false),
          drain(client, true),
        ]),
        "64 MiB each way",
        60_000,
      );
      assert.deepEqual(gotUp, new Checksum(up));
      assert.deepEqual(gotDown, new Checksum(down));
      const ended = await r.events.next("ended");
      assert.deepEqual(ended.reason, { kind: "done" });
      assert.equal(ended.up, HELLO.length + BULK);
      assert.equal(ended.down, BULK);
    } finally {
      closeAll(client, dialBack);
    }
  });
});

// -- the native driver's splice path -------------------------------------------------------------

const nativeIgnore = nativeProblem() !== undefined;

/** F_GETPIPE_SZ of fcntl(2). */
const F_GETPIPE_SZ = 1032;

/**
 * The splice pool's pipe descriptors open in this process now: pipes whose capacity is the pool's
 * (SPLICE_PIPE_BYTES, 1 MiB; every other pipe keeps the kernel's 64 KiB). Counting every pipe
 * would not do: `deno test --parallel` runs other test modules in this same process, and their
 * child processes' stdio pipes come and go meanwhile (the modules of tests/ that start a data
 * plane in-process move no bulk, so none of theirs is spliced).
 */
function pipeFds(): number {
  const libc = Libc.get();
  let n = 0;
  for (const fd of ownFds("pipe:")) {
    if (libc.sym.fcntl(fd, F_GETPIPE_SZ, 0) === SPLICE_PIPE_BYTES) n++;
  }
  return n;
}

/** This process's descriptors open now whose /proc link starts with `kind` ("pipe:", "socket:"). */
function* ownFds(kind: string): Generator<number> {
  for (const e of Deno.readDirSync("/proc/self/fd")) {
    try {
      if (!Deno.readLinkSync(`/proc/self/fd/${e.name}`).startsWith(kind)) continue;
    } catch {
      continue; // closed meanwhile (the readDir's own descriptor)
    }
    yield Number(e.name);
  }
}

/**
 * Waits until the pool's pipe descriptors are `ok` (the worker splices on its own thread: nothing
 * here can be awaited but the descriptors themselves), at most 10 s; returns their number.
 */
async function untilPipeFds(ok: (n: number) => boolean, what: string): Promise<number> {
  const deadline = Date.now() + 10_000;
  for (let n = pipeFds();; n = pipeFds()) {
    if (ok(n)) return n;
    if (Date.now() > deadline) throw new Error(`${what}: ${n} pipe descriptors`);
    await new Promise((res) => setTimeout(res, 10));
  }
}

async function sha256(b: Uint8Array<ArrayBuffer>): Promise<string> {
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", b));
  return Array.from(d, (x) => x.toString(16).padStart(2, "0")).join("");
}

/** Reads exactly to EOF into one buffer of `expect` bytes (more is an error). */
async function readAll(c: Deno.Conn, expect: number): Promise<Uint8Array<ArrayBuffer>> {
  const out = new Uint8Array(expect + 1);
  let off = 0;
  for (;;) {
    const n = await c.read(out.subarray(off, Math.min(out.length, off + 256 * 1024)));
    if (n === null) return out.subarray(0, off);
    off += n;
    if (off > expect) throw new Error(`more than ${expect} bytes`);
  }
}

/**
 * An int socket option of this process's TCP socket bound to local port `port` (the native
 * worker's sockets are this process's descriptors), or undefined when there is none.
 */
function sockOpt(port: number, level: number, name: number): number | undefined {
  const libc = Libc.get();
  const sa = new Uint8Array(28);
  const len = new Uint32Array(1);
  const v = new Int32Array(1);
  const vLen = new Uint32Array(1);
  for (const fd of ownFds("socket:")) {
    len[0] = sa.length;
    if (libc.sym.getsockname(fd, sa, len) !== 0 || len[0] !== 16) continue;
    if (decodeSockaddr(sa.subarray(0, 16)).port !== port) continue;
    vLen[0] = 4;
    if (libc.sym.getsockopt(fd, level, name, v, vLen) !== 0) return undefined;
    return v[0];
  }
  return undefined;
}

Deno.test({
  name: "native driver: the sockets it dials get their keepalive once spliced a second",
  ignore: nativeIgnore,
  async fn() {
    const tcpKeepAliveMs = 30_000;
    await withListeners(async (endpoint, internal) => {
      const snapshot: Snapshot = {
        ...emptySnapshot({ ...DEFAULT_LIMITS, tcpKeepAliveMs }),
        version: 1,
        privateRoutes: [[SNI, { internal: addrOf(internal) }]],
      };
      await withPlane(DRIVERS[1]!, "private", snapshot, async (r) => {
        sendDialBack(r, addrOf(endpoint), addrOf(internal));
        const dialBack = await within(endpoint.accept(), "accept the dial-back");
        let server: Deno.TcpConn | undefined;
        try {
          server = await within(internal.accept(), "accept at the internal server");
          await r.events.next("piped");
          // the worker's two dialled sockets, by their local ports
          const ports = [dialBack.remoteAddr.port, server.remoteAddr.port];
          const deadline = Date.now() + WAIT_MS;
          while (ports.some((p) => sockOpt(p, SOL_SOCKET, SO_KEEPALIVE) !== 1)) {
            if (Date.now() > deadline) throw new Error("no keepalive on the dialled sockets");
            await new Promise((res) => setTimeout(res, 20));
          }
          for (const p of ports) {
            assert.equal(
              sockOpt(p, IPPROTO_TCP, TCP_KEEPIDLE),
              keepAliveTimings(tcpKeepAliveMs).idleS,
            );
          }
        } finally {
          closeAll(dialBack, server);
        }
      });
    });
  },
});

function nativeSplice(name: string, fn: () => Promise<void>): void {
  Deno.test({ name: `native driver, splice path: ${name}`, ignore: nativeIgnore, fn });
}

nativeSplice(
  "64 MiB each way arrive intact (SHA-256), through pipes, counted exactly",
  async () => {
    const d = DRIVERS[1]!;
    const up = pattern(BULK, 0x2468ace0);
    const down = pattern(BULK, 0x13579bdf);
    let during = 0;
    await withPlane(d, "public", publicSnapshot(), async (r) => {
      const [client, dialBack] = await routedByNotice(r);
      try {
        const [, , gotUp, gotDown] = await within(
          Promise.all([
            send(client, up),
            send(dialBack, down),
            readAll(dialBack, BULK),
            readAll(client, BULK),
          ]),
          "64 MiB each way",
          60_000,
        );
        during = pipeFds(); // the free pipes stay in the pool until the worker rests
        assert.equal(await sha256(gotUp), await sha256(up));
        assert.equal(await sha256(gotDown), await sha256(down));
        const ended = await r.events.next("ended");
        assert.deepEqual(ended.reason, { kind: "done" });
        assert.equal(ended.up, HELLO.length + BULK);
        assert.equal(ended.down, BULK);
      } finally {
        closeAll(client, dialBack);
      }
    });
    assert.ok(during >= 2 && during <= 2 * 8, `pipe descriptors during the transfer: ${during}`);
    assert.equal(pipeFds(), 0, "the pool's pipes are closed with the data plane");
  },
);

nativeSplice("off (splicePipes 0): the same bytes, and no pipe at all", async () => {
  const d = DRIVERS[1]!;
  const up = pattern(16 << 20, 7);
  await withPlane(d, "public", publicSnapshot(), async (r) => {
    const [client, dialBack] = await routedByNotice(r);
    try {
      const [, got] = await within(
        Promise.all([send(client, up), readAll(dialBack, up.length)]),
        "16 MiB",
      );
      assert.equal(pipeFds(), 0, "no pipe when the splice path is off");
      assert.equal(await sha256(got), await sha256(up));
      await dialBack.closeWrite();
      const ended = await r.events.next("ended");
      assert.equal(ended.up, HELLO.length + up.length);
      assert.equal(ended.down, 0);
    } finally {
      closeAll(client, dialBack);
    }
  }, { splicePipes: 0 });
});

nativeSplice("a half-close while bytes sit in the pipe comes after them", async () => {
  const d = DRIVERS[1]!;
  const up = pattern(32 << 20, 99);
  await withPlane(d, "public", publicSnapshot(), async (r) => {
    const [client, dialBack] = await routedByNotice(r);
    try {
      const sent = send(client, up); // ends with the client's half-close
      // nobody reads the dial-back: the socket buffers fill, then a pipe holds the rest
      await untilPipeFds((n) => n === 2, "a pipe holds bytes for the stalled dial-back");
      const got = await within(readAll(dialBack, up.length), "read after the stall", 30_000);
      await sent;
      assert.equal(got.length, up.length);
      assert.equal(await sha256(got), await sha256(up));
      const answer = enc.encode("done");
      await writeAll(dialBack, answer);
      await dialBack.closeWrite();
      assert.deepEqual(await readToEnd(client), answer);
      const ended = await r.events.next("ended");
      assert.deepEqual(ended.reason, { kind: "done" });
      assert.equal(ended.up, HELLO.length + up.length);
      assert.equal(ended.down, answer.length);
    } finally {
      closeAll(client, dialBack);
    }
  });
  assert.equal(pipeFds(), 0, "the pool's pipes are closed with the data plane");
});

nativeSplice("a peer reset mid-splice ends the splice with the write's error", async () => {
  const d = DRIVERS[1]!;
  const up = pattern(64 << 20, 5);
  await withPlane(d, "public", publicSnapshot(), async (r) => {
    const [client, dialBack] = await routedByNotice(r);
    try {
      const sent = send(client, up).catch(() => {}); // the client sees the splice end
      await readExact(dialBack, 8 << 20);
      dialBack.close(); // unread bytes in its buffer: an RST
      const ended = await r.events.next("ended");
      assert.equal(ended.reason.kind, "error");
      assert.ok(ended.up >= HELLO.length + (8 << 20) && ended.up <= HELLO.length + up.length);
      await within(sent, "the client's writes end");
    } finally {
      closeAll(client, dialBack);
    }
    assert.ok(pipeFds() <= 2 * 8);
  });
  assert.equal(pipeFds(), 0, "the pool's pipes are closed with the data plane");
});

nativeSplice(
  "the pool is bounded: more bulk flows than pipes copy the rest, all intact",
  async () => {
    const d = DRIVERS[1]!;
    const flows = 4;
    const size = 24 << 20;
    await withPlane(d, "public", publicSnapshot(), async (r) => {
      const pairs: [Deno.TcpConn, Deno.TcpConn][] = [];
      try {
        for (let i = 0; i < flows; i++) pairs.push(await routedByNotice(r));
        const data = pairs.map((_, i) => pattern(size, 1000 + i));
        const failed: unknown[] = [];
        const sent = pairs.map(([c], i) => send(c, data[i]!).catch((e) => void failed.push(e)));
        // every dial-back stalled: pipes are held (one or both: a flow may stall before it
        // splices), and no third is made
        await untilPipeFds((n) => n > 0, "4 stalled flows with a pool of 2");
        const held = pipeFds();
        assert.ok(held <= 2 * 2, `pipe descriptors with 4 stalled flows: ${held}`);
        const got = await within(
          Promise.all(pairs.map(([, b]) => readAll(b, size))),
          "4 flows",
          60_000,
        );
        await Promise.all(sent);
        assert.deepEqual(failed, []);
        for (let i = 0; i < flows; i++) {
          assert.equal(await sha256(got[i]!), await sha256(data[i]!));
          await pairs[i]![1].closeWrite();
        }
        for (let i = 0; i < flows; i++) {
          const ended = await r.events.next("ended");
          assert.deepEqual(ended.reason, { kind: "done" });
          assert.equal(ended.up, HELLO.length + size);
        }
      } finally {
        for (const [a, b] of pairs) closeAll(a, b);
      }
    }, { splicePipes: 2 });
    assert.equal(pipeFds(), 0, "the pool's pipes are closed with the data plane");
  },
);
