/**
 * A `node:tls` socket as a {@linkcode ByteConn}, with the verified peer certificate. EPS links use
 * it on both ends: `Deno.listenTls` cannot ask for client certificates, and `Deno.TlsConn` does not
 * show the peer certificate, which the dialling side needs to check the listener's name and pins.
 * @module
 */
import tls from "node:tls";
import { getFdLimit } from "./fd_limit.ts";
import { X509Certificate } from "node:crypto";
import type { Buffer } from "node:buffer";
import type { ByteConn } from "./conn.ts";
import type { HostPort } from "../role.ts";

/** The verified certificate the peer presented. */
export interface PeerIdentity {
  /** Subject common name (CN), "" when absent. */
  commonName: string;
  /** DNS names from the subject alternative names. */
  dnsNames: string[];
  /** SHA-256 of the leaf certificate's DER, lowercase hex without separators. */
  fingerprint: string;
}

/**
 * Default cap on bytes received but not yet read; above it the connection is closed with an
 * error. The socket is never paused: on Deno 2.9.6 a `node:tls` socket that is paused when the
 * peer's EOF arrives never emits "end" (nor "close"), even after resume(), so pausing would turn
 * backpressure into hung connections. On an EPS link the yamux windows bound what the peer may
 * send, so the cap is only a safety net there.
 */
export const DEFAULT_READ_BUFFER_BYTES = 32 * 1024 * 1024;

function badResource(what: string): Deno.errors.BadResource {
  return new Deno.errors.BadResource(`Cannot ${what}: connection is closed`);
}

/** Reads the verified peer certificate of a connected socket; undefined when there is none. */
export function peerIdentityOf(socket: tls.TLSSocket): PeerIdentity | undefined {
  const cert = socket.getPeerCertificate(false);
  if (!cert || !cert.raw || cert.raw.length === 0) return undefined;
  const x = new X509Certificate(cert.raw);
  const cn = typeof cert.subject?.CN === "string"
    ? cert.subject.CN
    : Array.isArray(cert.subject?.CN)
    ? String(cert.subject.CN[0] ?? "")
    : "";
  const dnsNames = (x.subjectAltName ?? cert.subjectaltname ?? "")
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s.startsWith("DNS:"))
    .map((s) => s.slice(4));
  return {
    commonName: cn,
    dnsNames,
    fingerprint: x.fingerprint256.replaceAll(":", "").toLowerCase(),
  };
}

/**
 * Adapts a connected (handshake done) `node:tls` socket. Reads come from a bounded buffer: more
 * than `maxBufferBytes` unread closes the connection with a RangeError (see
 * {@linkcode DEFAULT_READ_BUFFER_BYTES} for why the socket is not paused instead); a write
 * resolves once the socket accepted the bytes without going over its high-water mark, else when
 * it drained.
 */
export class NodeTlsConn implements ByteConn {
  readonly #socket: tls.TLSSocket;
  readonly #max: number;
  #chunks: Uint8Array[] = [];
  #head = 0; // offset into #chunks[0]
  #buffered = 0;
  #ended = false;
  #error: Error | undefined;
  #closed = false;
  #wake: (() => void) | undefined;
  #drainWaiters: Array<{ resolve: () => void; reject: (e: Error) => void }> = [];
  readonly #closedPromise: Promise<void>;
  readonly remoteAddr: Deno.NetAddr;
  readonly localAddr: Deno.NetAddr;
  /** The verified peer certificate, if the peer presented one. */
  readonly peerIdentity: PeerIdentity | undefined;
  /** The negotiated ALPN protocol, or null. */
  readonly alpnProtocol: string | null;

  constructor(socket: tls.TLSSocket, options: { maxBufferBytes?: number } = {}) {
    this.#socket = socket;
    this.#max = options.maxBufferBytes ?? DEFAULT_READ_BUFFER_BYTES;
    this.remoteAddr = {
      transport: "tcp",
      hostname: socket.remoteAddress ?? "",
      port: socket.remotePort ?? 0,
    };
    this.localAddr = {
      transport: "tcp",
      hostname: socket.localAddress ?? "",
      port: socket.localPort ?? 0,
    };
    this.peerIdentity = peerIdentityOf(socket);
    this.alpnProtocol = typeof socket.alpnProtocol === "string" ? socket.alpnProtocol : null;
    this.#closedPromise = new Promise((resolve) => {
      if (socket.destroyed && socket.closed) resolve();
      else socket.once("close", () => resolve());
    });
    socket.on("data", (chunk: Buffer) => {
      if (this.#error) return;
      this.#chunks.push(chunk);
      this.#buffered += chunk.length;
      if (this.#buffered > this.#max) {
        this.#error = new RangeError(
          `Cannot buffer more than ${this.#max} unread bytes from ${this.remoteAddr.hostname}:${this.remoteAddr.port}: the reader is too slow`,
        );
        socket.destroy();
      }
      this.#notify();
    });
    socket.on("end", () => {
      this.#ended = true;
      this.#notify();
    });
    socket.on("error", (err: Error) => {
      this.#error ??= err;
      this.#notify();
      this.#failDrain(err);
    });
    socket.on("close", () => {
      this.#ended = true;
      this.#notify();
      this.#failDrain(this.#error ?? badResource("write"));
    });
    socket.on("drain", () => {
      const waiters = this.#drainWaiters;
      this.#drainWaiters = [];
      for (const w of waiters) w.resolve();
    });
  }

  /** Resolves once the underlying socket is closed. */
  get closed(): Promise<void> {
    return this.#closedPromise;
  }

  #notify(): void {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }

  #failDrain(err: Error): void {
    const waiters = this.#drainWaiters;
    this.#drainWaiters = [];
    for (const w of waiters) w.reject(err);
  }

  async read(buf: Uint8Array): Promise<number | null> {
    if (buf.length === 0) return 0;
    while (this.#buffered === 0) {
      if (this.#closed) throw badResource("read");
      if (this.#error) throw this.#error;
      if (this.#ended) return null;
      await new Promise<void>((resolve) => (this.#wake = resolve));
    }
    let n = 0;
    while (n < buf.length && this.#chunks.length > 0) {
      const chunk = this.#chunks[0]!;
      const take = Math.min(buf.length - n, chunk.length - this.#head);
      buf.set(chunk.subarray(this.#head, this.#head + take), n);
      n += take;
      this.#head += take;
      if (this.#head === chunk.length) {
        this.#chunks.shift();
        this.#head = 0;
      }
    }
    this.#buffered -= n;
    return n;
  }

  async write(buf: Uint8Array): Promise<number> {
    if (buf.length === 0) {
      this.#checkWritable();
      return 0;
    }
    // node keeps a reference until the bytes are flushed; the caller may reuse `buf` at once
    await this.writeOwned(buf.slice());
    return buf.length;
  }

  /** Writes all of `buf` without copying it: node holds it until flushed (see ByteConn). */
  writeOwned(buf: Uint8Array): Promise<void> {
    this.#checkWritable();
    if (buf.length === 0 || this.#socket.write(buf)) return Promise.resolve();
    return new Promise<void>((resolve, reject) => this.#drainWaiters.push({ resolve, reject }));
  }

  #checkWritable(): void {
    if (this.#closed) throw badResource("write");
    if (this.#error) throw this.#error;
    if (this.#socket.writableEnded || this.#socket.destroyed) {
      throw new Deno.errors.BrokenPipe("Cannot write: connection is closed for writing");
    }
  }

  closeWrite(): Promise<void> {
    if (this.#closed) return Promise.reject(badResource("close for writing"));
    if (this.#socket.writableEnded) return Promise.resolve();
    return new Promise<void>((resolve) => {
      this.#socket.end(() => resolve());
    });
  }

  close(): void {
    if (this.#closed) throw badResource("close");
    this.#closed = true;
    this.#chunks = [];
    this.#buffered = 0;
    this.#socket.destroy();
    this.#notify();
    this.#failDrain(badResource("write"));
  }
}

/** Options for {@linkcode listenNodeTls} and {@linkcode connectNodeTls}. */
export interface NodeTlsOptions {
  /** Own certificate chain (leaf + intermediates) and PKCS#8 key, PEM. */
  cert: string;
  key: string;
  /** CA certificates (PEM) that must have issued the peer's certificate. */
  ca: string[];
  alpnProtocols: string[];
  /** Deadline for the TLS handshake. */
  handshakeTimeoutMs?: number;
  maxBufferBytes?: number;
}

/** A node:tls server that yields verified connections. */
export interface NodeTlsListener extends AsyncIterable<NodeTlsConn>, AsyncDisposable {
  readonly addr: HostPort;
  /** Waits for the next verified connection; null once closed. */
  accept(): Promise<NodeTlsConn | null>;
  /**
   * New certificate, key and CAs for the handshakes from now on; connections already up keep
   * theirs (a reload, docs/architecture.md "Reload").
   */
  setSecureContext(material: { cert: string; key: string; ca: string[] }): void;
  /**
   * Stops listening and closes connections not accepted yet; resolves once every connection
   * handed out by `accept()` is closed too (their owner closes them).
   */
  close(): Promise<void>;
}

/** A quarter of the soft open-file limit, 8 to 256 (256 where the limit cannot be read). */
function defaultMaxHandshakes(): number {
  try {
    return Math.max(8, Math.min(256, Math.floor(getFdLimit().soft / 4)));
  } catch {
    return 256;
  }
}

/**
 * Listens for mutual TLS 1.3 (client certificate required and verified against `ca`). Handshake
 * failures go to `onTlsError` with the peer address; they never surface from `accept()`.
 */
export async function listenNodeTls(
  addr: HostPort,
  options: NodeTlsOptions & {
    onTlsError?: (err: Error, remote: string) => void;
    /** Connections handed over but not yet accepted; more are closed at once. */
    backlog?: number;
    /**
     * TCP connections in their TLS handshake at once; more are closed as soon as they arrive
     * (default: a quarter of the open-file limit, 8 to 256). This keeps a flood of connections
     * from ever reaching the descriptor limit, which matters more than usual here: after one
     * failed accept (EMFILE) Deno 2.9's node:net server stops accepting for good, silently.
     */
    maxHandshakes?: number;
    /** A connection closed at once because `maxHandshakes` were in their handshake. */
    onOverload?: (remote: string) => void;
  },
): Promise<NodeTlsListener> {
  const queue: NodeTlsConn[] = [];
  const handshaking = new Map<string, { destroy(): void }>();
  const backlog = options.backlog ?? 128;
  const maxHandshakes = options.maxHandshakes ?? defaultMaxHandshakes();
  let waiter: ((c: NodeTlsConn | null) => void) | undefined;
  let closed = false;
  const server = tls.createServer({
    allowHalfOpen: true,
    cert: options.cert,
    key: options.key,
    ca: options.ca,
    requestCert: true,
    // checked in "secureConnection" instead, where the reason is known (node's own refusal of a
    // client certificate from a foreign CA reaches "tlsClientError" as "socket hang up")
    rejectUnauthorized: false,
    minVersion: "TLSv1.3",
    ALPNProtocols: options.alpnProtocols,
    handshakeTimeout: options.handshakeTimeoutMs ?? 10_000,
  });
  server.on("connection", (raw) => {
    const key = `${raw.remoteAddress}:${raw.remotePort}`;
    if (handshaking.size >= maxHandshakes) {
      raw.destroy();
      options.onOverload?.(key);
      return;
    }
    raw.setNoDelay(true);
    handshaking.set(key, raw);
    raw.once("close", () => handshaking.delete(key));
  });
  server.on("secureConnection", (socket: tls.TLSSocket) => {
    const remote = `${socket.remoteAddress}:${socket.remotePort}`;
    handshaking.delete(remote);
    if (closed) {
      socket.destroy();
      return;
    }
    if (!socket.authorized) {
      // nothing of this peer is read: it is refused with the verifier's reason
      const cert = socket.getPeerCertificate();
      const why = cert === null || Object.keys(cert ?? {}).length === 0
        ? "PEER_DID_NOT_RETURN_A_CERTIFICATE: no client certificate"
        : `${
          String(socket.authorizationError ?? "unauthorized")
        }: client certificate not issued by a trusted CA`;
      socket.destroy();
      options.onTlsError?.(new Error(why), remote);
      return;
    }
    const conn = new NodeTlsConn(
      socket,
      options.maxBufferBytes ? { maxBufferBytes: options.maxBufferBytes } : {},
    );
    if (waiter) {
      const w = waiter;
      waiter = undefined;
      w(conn);
    } else if (queue.length < backlog) {
      queue.push(conn);
    } else {
      conn.close();
    }
  });
  server.on("tlsClientError", (err: Error, socket: tls.TLSSocket) => {
    // before the handshake completes only the wrapped TCP socket knows the peer address
    const parent =
      (socket as unknown as { _parent?: { remoteAddress?: string; remotePort?: number } })
        ._parent;
    const remote = `${parent?.remoteAddress ?? socket.remoteAddress}:${
      parent?.remotePort ?? socket.remotePort
    }`;
    // the raw socket's "close" does not always come once TLS took it over: free its slot here
    handshaking.delete(remote);
    options.onTlsError?.(err, remote);
    socket.destroy();
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(addr.port, addr.hostname, () => {
      server.off("error", reject);
      resolve();
    });
  });
  server.on("error", () => {});
  const bound = server.address();
  const hostPort: HostPort = typeof bound === "object" && bound
    ? { hostname: bound.address, port: bound.port }
    : { hostname: addr.hostname, port: addr.port };
  let closing: Promise<void> | undefined;
  const listener: NodeTlsListener = {
    addr: hostPort,
    setSecureContext(material): void {
      server.setSecureContext({ ...material, minVersion: "TLSv1.3" });
    },
    accept(): Promise<NodeTlsConn | null> {
      const next = queue.shift();
      if (next) return Promise.resolve(next);
      if (closed) return Promise.resolve(null);
      return new Promise((resolve) => (waiter = resolve));
    },
    close(): Promise<void> {
      closing ??= (async () => {
        closed = true;
        const w = waiter;
        waiter = undefined;
        w?.(null);
        for (const c of queue.splice(0)) c.close();
        const done = new Promise<void>((resolve) => server.close(() => resolve()));
        // sockets still inside their handshake are not handed out yet: nobody else closes them
        for (const raw of handshaking.values()) raw.destroy();
        handshaking.clear();
        await done;
      })();
      return closing;
    },
    async *[Symbol.asyncIterator](): AsyncIterator<NodeTlsConn> {
      for (let c; (c = await listener.accept()) !== null;) yield c;
    },
    [Symbol.asyncDispose](): Promise<void> {
      return listener.close();
    },
  };
  return listener;
}

/**
 * Dials mutual TLS 1.3 and checks the listener's certificate against `ca` and `servername` (the
 * peer's expected DNS name). Rejects on a handshake failure, the deadline, or `signal`.
 */
export function connectNodeTls(
  addr: HostPort,
  options: NodeTlsOptions & { servername: string; signal?: AbortSignal },
): Promise<NodeTlsConn> {
  return new Promise<NodeTlsConn>((resolve, reject) => {
    const signal = options.signal;
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const socket = tls.connect({
      host: addr.hostname,
      port: addr.port,
      servername: options.servername,
      cert: options.cert,
      key: options.key,
      ca: options.ca,
      minVersion: "TLSv1.3",
      ALPNProtocols: options.alpnProtocols,
    });
    socket.allowHalfOpen = true; // not in ConnectionOptions' type; EOF from the peer must not end ours
    socket.setNoDelay(true);
    const timer = setTimeout(
      () =>
        fail(
          new Deno.errors.TimedOut(
            `Cannot connect to "${options.servername}" at ${addr.hostname}:${addr.port}: TLS handshake took longer than ${
              options.handshakeTimeoutMs ?? 10_000
            } ms`,
          ),
        ),
      options.handshakeTimeoutMs ?? 10_000,
    );
    const onAbort = () => fail(signal?.reason ?? new DOMException("Aborted", "AbortError"));
    signal?.addEventListener("abort", onAbort, { once: true });
    function cleanup() {
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
      socket.off("error", fail);
      socket.off("secureConnect", ok);
      socket.off("close", onClose);
    }
    function fail(err: unknown) {
      cleanup();
      socket.destroy();
      reject(err);
    }
    function onClose() {
      fail(
        new Deno.errors.ConnectionReset(
          `Cannot connect to "${options.servername}" at ${addr.hostname}:${addr.port}: connection closed during the TLS handshake`,
        ),
      );
    }
    function ok() {
      cleanup();
      resolve(
        new NodeTlsConn(
          socket,
          options.maxBufferBytes ? { maxBufferBytes: options.maxBufferBytes } : {},
        ),
      );
    }
    socket.once("secureConnect", ok);
    socket.once("error", fail);
    socket.once("close", onClose);
  });
}
