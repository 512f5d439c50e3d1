/**
 * A TLS test backend for end-to-end tests, reached through the tunnel like the internal server.
 * After the TLS handshake the client sends one command line:
 *   `download N\n`  → N deterministic bytes (see `blobBytes`), then close
 *   `echo\n`        → every byte back until the client half-closes, then `total N\n`, then close
 *   `ping\n`        → answers each following line `x` with `pong x`, until EOF
 * @module
 */
import { readAll, writeAll } from "../lib/net/io.ts";

/** Deterministic bytes: a xorshift32 stream seeded by `offset`'s block. */
export function blobBytes(into: Uint8Array, offset: number): void {
  let x = (offset / into.length + 1) * 2654435761 >>> 0 || 1;
  const v = new DataView(into.buffer, into.byteOffset, into.byteLength);
  let i = 0;
  for (; i + 4 <= into.length; i += 4) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    v.setUint32(i, x);
  }
  for (; i < into.length; i++) into[i] = i & 0xff;
}

export const BLOB_CHUNK = 64 * 1024;

export interface TestBackend extends AsyncDisposable {
  port: number;
}

export function startTestBackend(cert: string, key: string): TestBackend {
  const listener = Deno.listenTls({ hostname: "127.0.0.1", port: 0, cert, key });
  const live = new Set<Promise<void>>();
  const conns = new Set<Deno.Conn>();
  const loop = (async () => {
    for await (const conn of listener) {
      conns.add(conn);
      const p = serve(conn).catch(() => {}).finally(() => {
        conns.delete(conn);
        try {
          conn.close();
        } catch { /* closed */ }
        live.delete(p);
      });
      live.add(p);
    }
  })();
  return {
    port: (listener.addr as Deno.NetAddr).port,
    async [Symbol.asyncDispose]() {
      listener.close();
      await loop.catch(() => {});
      for (const c of conns) {
        try {
          c.close();
        } catch { /* closed */ }
      }
      await Promise.all(live);
    },
  };
}

async function readLine(conn: Deno.Conn, rest: { buf: Uint8Array }): Promise<string | null> {
  const dec = new TextDecoder();
  while (true) {
    const nl = rest.buf.indexOf(10);
    if (nl >= 0) {
      const line = dec.decode(rest.buf.subarray(0, nl));
      rest.buf = rest.buf.slice(nl + 1);
      return line;
    }
    const chunk = new Uint8Array(4096);
    const n = await conn.read(chunk);
    if (n === null) return null;
    const merged = new Uint8Array(rest.buf.length + n);
    merged.set(rest.buf);
    merged.set(chunk.subarray(0, n), rest.buf.length);
    rest.buf = merged;
  }
}

async function serve(conn: Deno.Conn): Promise<void> {
  const rest = { buf: new Uint8Array(0) };
  const cmd = await readLine(conn, rest);
  const enc = new TextEncoder();
  if (cmd?.startsWith("download ")) {
    const total = Number(cmd.slice(9));
    const chunk = new Uint8Array(BLOB_CHUNK);
    for (let off = 0; off < total; off += BLOB_CHUNK) {
      blobBytes(chunk, off);
      await writeAll(conn, chunk.subarray(0, Math.min(BLOB_CHUNK, total - off)));
    }
  } else if (cmd === "echo") {
    let total = rest.buf.length;
    if (rest.buf.length > 0) await writeAll(conn, rest.buf);
    const data = await readAll(conn, 256 * 1024 * 1024);
    total += data.length;
    await writeAll(conn, data);
    await writeAll(conn, enc.encode(`total ${total}\n`));
  } else if (cmd === "ping") {
    for (let line; (line = await readLine(conn, rest)) !== null;) {
      await writeAll(conn, enc.encode(`pong ${line}\n`));
    }
  }
}
