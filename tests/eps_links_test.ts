/**
 * EPS links under bad input: certificates the EPS must refuse, and yamux frames that break the
 * limits (each refusal is a warning naming the peer address and the reason).
 */
import assert from "node:assert/strict";
import { createPki } from "../lib/certs/pki.ts";
import { LinkClosedError } from "../lib/errors.ts";
import { ALPN, dialLink, type LinkTls, loadLinkTls } from "../lib/eps/link.ts";
import { encodeHeader, Flag, FrameType, GoAwayCode, HEADER_LENGTH } from "../lib/eps/frame.ts";
import { Session } from "../lib/eps/session.ts";
import { readExact, writeAll } from "../lib/net/io.ts";
import { connectNodeTls, type NodeTlsConn } from "../lib/net/node_tls_conn.ts";
import type { HostPort } from "../lib/role.ts";
import { Fixture, withTimeout } from "./_eps_cluster.ts";
import { captureLogs } from "./_logs.ts";

/** Collects the warnings of this process while `fn` runs. */
async function withWarnings<T>(fn: (warnings: () => string[]) => Promise<T>): Promise<T> {
  const logs = await captureLogs("warning");
  const records = logs.records;
  try {
    return await fn(() => records.map((r) => r.message.map(String).join("")));
  } finally {
    await logs.close();
  }
}

/** Waits (bounded) until a warning matches `re`. Logging is synchronous: poll the list. */
async function warningMatching(warnings: () => string[], re: RegExp): Promise<string> {
  const end = Date.now() + 5000;
  for (;;) {
    const w = warnings().find((m) => re.test(m));
    if (w) return w;
    if (Date.now() > end) {
      throw new Error(`no warning matching ${re}; got:\n${warnings().join("\n")}`);
    }
    await new Promise((r) => setTimeout(r, 20)); // polling a log list, not a sync point
  }
}

/** True when the connection ends (EOF or error) within 5 s, as a refused link does. */
async function endsSoon(conn: { read(b: Uint8Array): Promise<number | null> }): Promise<boolean> {
  const buf = new Uint8Array(1024);
  return await withTimeout(
    (async () => {
      try {
        while ((await conn.read(buf)) !== null) { /* discard */ }
      } catch { /* reset: also an end */ }
      return true;
    })(),
    5000,
    "the connection to end",
  );
}

async function fixture(
  pins?: Record<string, string[]>,
): Promise<{ fx: Fixture; eps: HostPort; close(): Promise<void> }> {
  const fx = await Fixture.create(["eps-a", "eps-b"]);
  await fx.writeDirectory({
    "eps-a": { ...(pins?.["eps-a"] ? { fingerprints: pins["eps-a"] } : {}) },
    "eps-b": { ...(pins?.["eps-b"] ? { fingerprints: pins["eps-b"] } : {}) },
  });
  const a = await fx.startEps("eps-a", { maxStreamsPerLink: 4, callTimeoutMs: 60_000 });
  return {
    fx,
    eps: a.addrs.links,
    close: async () => {
      await a.close();
      await fx[Symbol.asyncDispose]();
    },
  };
}

Deno.test("EPS refuses a link with a certificate from another CA", async () => {
  const f = await fixture();
  try {
    await withWarnings(async (warnings) => {
      const other = await createPki(["eps-b"]);
      const tls: LinkTls = {
        cert: other.leaves["eps-b"]!.certPem,
        key: other.leaves["eps-b"]!.keyPem,
        ca: [await Deno.readTextFile(f.fx.rootFile)],
        handshakeTimeoutMs: 5000,
      };
      const conn = await dialLink(f.eps, "eps-a", tls).catch(() => undefined);
      if (conn) {
        assert.ok(await endsSoon(conn));
        conn.close();
        await conn.closed;
      }
      const w = await warningMatching(warnings, /Refused \d+ links on/);
      assert.match(w, /127\.0\.0\.1:\d+/);
      assert.match(w, /unknown CA/);
    });
  } finally {
    await f.close();
  }
});

Deno.test("EPS refuses a link whose certificate does not match the directory's pins", async () => {
  const f = await fixture({ "eps-b": ["00".repeat(32)] });
  try {
    await withWarnings(async (warnings) => {
      const tls = await loadLinkTls(f.fx.cert("eps-b"), f.fx.key("eps-b"), [f.fx.rootFile]);
      const conn = await dialLink(f.eps, "eps-a", tls);
      assert.ok(await endsSoon(conn));
      conn.close();
      await conn.closed;
      const w = await warningMatching(warnings, /Refused \d+ links on/);
      assert.match(w, /127\.0\.0\.1:\d+/);
      assert.match(w, /fingerprint [0-9a-f]{64} matches none of the 1 pinned for "eps-b"/);
    });
  } finally {
    await f.close();
  }
});

Deno.test("EPS accepts a link whose certificate matches a pin", async () => {
  const f0 = await Fixture.create(["eps-a", "eps-b"]);
  const fp = f0.pki.leaves["eps-b"]!.fingerprint;
  await f0.writeDirectory({ "eps-a": {}, "eps-b": { fingerprints: ["11".repeat(32), fp] } });
  await using a = await f0.startEps("eps-a");
  try {
    const tls = await loadLinkTls(f0.cert("eps-b"), f0.key("eps-b"), [f0.rootFile]);
    const conn = await dialLink(a.addrs.links, "eps-a", tls);
    await using session = new Session(conn, { client: true, keepaliveIntervalMs: 0 });
    assert.ok((await withTimeout(session.ping(), 5000, "ping")) >= 0);
  } finally {
    await a.close();
    await f0[Symbol.asyncDispose]();
  }
});

Deno.test("EPS refuses a link without a client certificate", async () => {
  const f = await fixture();
  try {
    await withWarnings(async (warnings) => {
      const conn = await Deno.connectTls({
        ...f.eps,
        caCerts: [await Deno.readTextFile(f.fx.rootFile)],
        alpnProtocols: [ALPN],
        unsafelyDisableHostnameVerification: true,
      });
      try {
        assert.ok(await endsSoon(conn));
      } finally {
        conn.close();
      }
      const w = await warningMatching(warnings, /Refused \d+ links on/);
      assert.match(w, /127\.0\.0\.1:\d+/);
      assert.match(w, /no certificate/);
    });
  } finally {
    await f.close();
  }
});

/** A verified link to EPS eps-a, spoken by hand (raw yamux frames). */
async function rawLink(f: { fx: Fixture; eps: HostPort }): Promise<NodeTlsConn> {
  const tls = await loadLinkTls(f.fx.cert("eps-b"), f.fx.key("eps-b"), [f.fx.rootFile]);
  return await dialLink(f.eps, "eps-a", tls);
}

function header(type: number, flags: number, streamId: number, length: number): Uint8Array {
  return encodeHeader({ type: type as FrameType, flags, streamId, length });
}

/** Reads frames until a GoAway; returns its code, then expects the connection to end. */
async function expectGoAway(conn: NodeTlsConn): Promise<number> {
  const h = new Uint8Array(HEADER_LENGTH);
  return await withTimeout(
    (async () => {
      for (;;) {
        assert.ok(await readExact(conn, h), "connection ended before a GoAway");
        const v = new DataView(h.buffer);
        const type = v.getUint8(1);
        const length = v.getUint32(8);
        if (type === FrameType.GoAway) {
          assert.ok(await endsSoon(conn), "link closed after the GoAway");
          return length;
        }
        if (type === FrameType.Data && length > 0) await readExact(conn, new Uint8Array(length));
      }
    })(),
    5000,
    "a GoAway",
  );
}

Deno.test("EPS answers an oversized frame with GoAway (protocol error) and closes the link", async () => {
  const f = await fixture();
  const conn = await rawLink(f);
  try {
    await withWarnings(async (warnings) => {
      // a Data frame announcing 16 MiB: refused on its header, before any payload
      await writeAll(conn, header(FrameType.Data, Flag.SYN, 1, 16 * 1024 * 1024));
      assert.equal(await expectGoAway(conn), GoAwayCode.ProtocolError);
      await warningMatching(warnings, /exceeds/);
    });
  } finally {
    conn.close();
    await conn.closed;
    await f.close();
  }
});

Deno.test("EPS answers a window overrun with GoAway (protocol error) and closes the link", async () => {
  const f = await fixture();
  const conn = await rawLink(f);
  try {
    // exactly one full window on a new stream, then one byte more in the same write: the
    // second header arrives with the first frame's tail, before any credit can be granted
    const window = 256 * 1024;
    const out = new Uint8Array(HEADER_LENGTH + window + HEADER_LENGTH + 1);
    out.set(header(FrameType.Data, Flag.SYN, 1, window), 0);
    out.set(header(FrameType.Data, 0, 1, 1), HEADER_LENGTH + window);
    await writeAll(conn, out);
    assert.equal(await expectGoAway(conn), GoAwayCode.ProtocolError);
  } finally {
    conn.close();
    await conn.closed;
    await f.close();
  }
});

Deno.test("EPS resets streams over max_streams_per_link and keeps the link", async () => {
  const f = await fixture(); // max_streams_per_link: 4
  const conn = await rawLink(f);
  await using session = new Session(conn, { client: true, keepaliveIntervalMs: 0 });
  const open = [];
  for (let i = 0; i < 4; i++) {
    const s = session.open();
    await s.write(new TextEncoder().encode("{")); // a call that has begun and waits
    open.push(s);
  }
  const fifth = session.open();
  await fifth.write(new TextEncoder().encode("{"));
  const err = await withTimeout(
    fifth.read(new Uint8Array(16)).then(() => undefined, (e) => e),
    5000,
    "the fifth stream to be reset",
  );
  assert.ok(err instanceof LinkClosedError, String(err));
  for (const s of open) s.reset();
  // the link is still up: a ping is answered
  assert.ok((await withTimeout(session.ping(), 5000, "ping")) >= 0);
  assert.equal(session.isClosed, false);
  await session.close();
  await f.close();
});

Deno.test("EPS dialler refuses a listener with the wrong certificate name", async () => {
  const f = await fixture();
  try {
    const tls = await loadLinkTls(f.fx.cert("eps-b"), f.fx.key("eps-b"), [f.fx.rootFile]);
    // eps-a's listener presents "eps-a"; a dialler expecting "eps-b" there must refuse it
    await assert.rejects(
      connectNodeTls(f.eps, {
        servername: "eps-b",
        cert: tls.cert,
        key: tls.key,
        ca: tls.ca,
        alpnProtocols: [ALPN],
      }),
    );
    await assert.rejects(dialLink(f.eps, "eps-b", tls));
  } finally {
    await f.close();
  }
});
