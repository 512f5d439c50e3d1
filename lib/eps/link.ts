/**
 * Links: mutually authenticated TLS 1.3 connections (ALPN `tls-pass-eps/1`) between two EPS servers
 * or between a proxy and its own EPS, each carrying one yamux session (docs/architecture.md, "The
 * picture"). The peer's operator name is its certificate's subject CN, which must also be one of
 * its DNS SANs; when the directory pins fingerprints for that operator, the certificate must match
 * one.
 * @module
 */
import { X509Certificate } from "node:crypto";
import { readKeyPairSync, type TlsFile } from "../certs/key_pair.ts";
import { errorText, logger, RateLimitedLog } from "../log.ts";
import { formatHostPort, type HostPort } from "../role.ts";
import { remoteText } from "../net/conn.ts";
import { pause } from "../net/io.ts";
import { Backoff } from "../backoff.ts";

export { Backoff };

export { pause };
import {
  connectNodeTls,
  listenNodeTls,
  type NodeTlsConn,
  type NodeTlsListener,
} from "../net/node_tls_conn.ts";
import type { Directory } from "./directory.ts";
import { Session, type SessionOptions, type Stream } from "./session.ts";

/** The ALPN protocol of a link. */
export const ALPN = "tls-pass-eps/1";

const log = logger("eps", "link");

/** This side's TLS material for links. */
export interface LinkTls {
  /** Own certificate chain (leaf + intermediate) and PKCS#8 key, PEM. */
  cert: string;
  key: string;
  /** CA certificates that issue peers' certificates, PEM. */
  ca: string[];
  handshakeTimeoutMs: number;
}

/** Reads the certificate, key and CA files of a link. */
export async function loadLinkTls(
  certificateFile: string,
  keyFile: string,
  caCertificateFiles: readonly string[],
  handshakeTimeoutMs = 10_000,
): Promise<LinkTls> {
  const [cert, key, ...ca] = await Promise.all([
    Deno.readTextFile(certificateFile),
    Deno.readTextFile(keyFile),
    ...caCertificateFiles.map((f) => Deno.readTextFile(f)),
  ]);
  return { cert: cert!, key: key!, ca, handshakeTimeoutMs };
}

/** One key material file of a link and the settings key that names it. */
export type { TlsFile };

/**
 * Reads and checks the files of a link now, for a reload (docs/architecture.md, "Reload"): each
 * must be readable PEM, the key must be the certificate's. Throws SettingsError naming the key and
 * the file of every problem; synchronous so that the caller can swap the material at once.
 */
export function readLinkTlsSync(
  files: { cert: TlsFile; key: TlsFile; ca: readonly TlsFile[] },
  handshakeTimeoutMs = 10_000,
): LinkTls {
  return { ...readKeyPairSync(files.cert, files.key, files.ca), handshakeTimeoutMs };
}

/** The subject CN of the first certificate of a PEM chain (an operator's own name). */
export function commonNameOf(certPem: string): string {
  const x = new X509Certificate(certPem);
  const m = /(?:^|\n)CN=([^\n]*)/.exec(x.subject);
  if (!m || !m[1]) {
    throw new TypeError(`Cannot read operator name: certificate subject "${x.subject}" has no CN`);
  }
  return m[1];
}

/** A peer whose certificate or protocol is not acceptable. */
export class PeerRefusedError extends Error {
  override name = "PeerRefusedError";
}

/**
 * Checks a connected peer and returns its operator name. `expected`: the name the dialler wanted;
 * `directory`: where pins are looked up (undefined: no pins, e.g. a proxy's own client);
 * `known`: names accepted besides the directory's operators.
 */
export function verifyPeer(
  conn: NodeTlsConn,
  options: { expected?: string; directory?: Directory; known?: readonly string[] },
): string {
  const id = conn.peerIdentity;
  if (!id) throw new PeerRefusedError("no client certificate");
  if (conn.alpnProtocol !== ALPN) {
    throw new PeerRefusedError(`ALPN is ${JSON.stringify(conn.alpnProtocol)}, expected "${ALPN}"`);
  }
  const name = id.commonName;
  if (name === "") throw new PeerRefusedError("certificate has no subject CN");
  if (!id.dnsNames.includes(name)) {
    throw new PeerRefusedError(`certificate CN "${name}" is not one of its DNS SANs`);
  }
  if (options.expected !== undefined && name !== options.expected) {
    throw new PeerRefusedError(`certificate names "${name}", expected "${options.expected}"`);
  }
  if (options.directory) {
    const entry = options.directory.operators.get(name);
    if (!entry && !options.known?.includes(name)) {
      throw new PeerRefusedError(`operator "${name}" is not in the directory`);
    }
    if (entry && entry.fingerprints.length > 0 && !entry.fingerprints.includes(id.fingerprint)) {
      throw new PeerRefusedError(
        `certificate fingerprint ${id.fingerprint} matches none of the ${entry.fingerprints.length} pinned for "${name}"`,
      );
    }
  }
  return name;
}

/** Dials `name` at `address`, checks its certificate, and returns the verified connection. */
export async function dialLink(
  address: HostPort,
  name: string,
  tls: LinkTls,
  options: { directory?: Directory; signal?: AbortSignal; maxBufferBytes?: number } = {},
): Promise<NodeTlsConn> {
  const conn = await connectNodeTls(address, {
    servername: name,
    cert: tls.cert,
    key: tls.key,
    ca: tls.ca,
    alpnProtocols: [ALPN],
    handshakeTimeoutMs: tls.handshakeTimeoutMs,
    ...(options.signal ? { signal: options.signal } : {}),
    ...(options.maxBufferBytes ? { maxBufferBytes: options.maxBufferBytes } : {}),
  });
  try {
    verifyPeer(conn, {
      expected: name,
      ...(options.directory ? { directory: options.directory } : {}),
    });
  } catch (err) {
    conn.close();
    await conn.closed;
    throw err;
  }
  return conn;
}

/** A listener for links (see {@linkcode listenLinks}). */
export interface LinkListener {
  readonly addr: HostPort;
  close(): Promise<void>;
  finished: Promise<void>;
  /**
   * A reload (docs/architecture.md, "Reload"): new TLS material and directory (pins, operators)
   * for the links accepted from now on; links already up are not touched.
   */
  reconfigure(tls: LinkTls, directory: Directory): void;
}

/**
 * Listens for links. Each connection that passes {@linkcode verifyPeer} goes to `onLink` with its
 * operator name; refusals (TLS or identity) are logged as warnings with the address and reason.
 */
export async function listenLinks(
  address: HostPort,
  tls: LinkTls,
  options: {
    directory: Directory;
    known?: readonly string[];
    /** Accept only these operators (e.g. the own proxy on a loopback listener). */
    only?: readonly string[];
    what: string;
    onLink: (conn: NodeTlsConn, operator: string) => void;
  },
): Promise<LinkListener> {
  const refusals = new RateLimitedLog(log);
  const listener: NodeTlsListener = await listenNodeTls(address, {
    cert: tls.cert,
    key: tls.key,
    ca: tls.ca,
    alpnProtocols: [ALPN],
    handshakeTimeoutMs: tls.handshakeTimeoutMs,
    onTlsError: (err, remote) => {
      const reason = tlsRefusalReason(err);
      refusals.warn(
        `tls ${reason}`,
        "Refused {count} links on {listener}: {reason} (last from {remote}: {error})",
        { remote, listener: options.what, reason, error: err.message },
      );
    },
    onOverload: (remote) => {
      refusals.warn(
        "overload",
        "Closed {count} connections on {listener} at once: too many TLS handshakes at a time (last from {remote})",
        { listener: options.what, remote },
      );
    },
  });
  let directory = options.directory;
  const finished = (async () => {
    for await (const conn of listener) {
      let operator: string;
      try {
        operator = verifyPeer(conn, {
          directory,
          ...(options.known ? { known: options.known } : {}),
        });
        if (options.only && !options.only.includes(operator)) {
          throw new PeerRefusedError(
            `operator "${operator}" may not link here (only ${options.only.join(", ")})`,
          );
        }
      } catch (err) {
        const reason = err instanceof Error ? err.message : String(err);
        refusals.warn(
          `peer ${reason}`,
          "Refused {count} links on {listener}: {reason} (last from {remote})",
          { remote: remoteText(conn), listener: options.what, reason },
        );
        conn.close();
        continue;
      }
      options.onLink(conn, operator);
    }
  })();
  return {
    addr: listener.addr,
    close: async () => {
      await listener.close();
      refusals.close();
    },
    finished,
    reconfigure: (next, dir) => {
      listener.setSecureContext({ cert: next.cert, key: next.key, ca: next.ca });
      directory = dir;
    },
  };
}

/**
 * Why a TLS handshake on a link listener failed, in an operator's words: "unknown CA", "no
 * certificate", "ALPN" (not `tls-pass-eps/1`), "handshake timeout", "not TLS", or the runtime's
 * message when it is none of these.
 */
export function tlsRefusalReason(err: Error): string {
  const text = `${(err as { code?: unknown }).code ?? ""} ${err.message}`.toLowerCase();
  if (
    /unknown_ca|unknown ca|unable to (get|verify)|self[- ]signed|certificate_verify_failed|unable_to_verify|depth_zero/
      .test(text)
  ) {
    return "unknown CA";
  }
  if (
    /did_not_return_a_certificate|peer did not return|no certificate|certificate required|certificate_required/
      .test(text)
  ) {
    return "no certificate";
  }
  if (/alpn|no_application_protocol|application protocol/.test(text)) return "ALPN";
  if (/timed? ?out|timeout/.test(text)) return "handshake timeout";
  if (/wrong version|http request|unknown protocol|packet length|record layer/.test(text)) {
    return "not TLS";
  }
  if (/hang up|econnreset|socket closed|eof/.test(text)) return "closed during the handshake";
  return err.message;
}

/** Resolves when `p` settles or `signal` aborts, whichever is first; never rejects. */
export function untilSettledOrAborted(p: Promise<unknown>, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      signal.removeEventListener("abort", done);
      resolve();
    };
    if (signal.aborted) return resolve();
    signal.addEventListener("abort", done, { once: true });
    p.then(done, done);
  });
}

/** One live link: a verified connection and its yamux session. */
export class Link {
  readonly session: Session;
  readonly remote: string;
  /** Resolves once the session has ended and the connection is closed. */
  readonly closed: Promise<void>;
  #closing: Promise<void> | undefined;

  constructor(
    readonly conn: NodeTlsConn,
    /** The peer's operator name. */
    readonly peer: string,
    /** The operator that dialled this link. */
    readonly dialler: string,
    /** True when this side dialled. */
    readonly outbound: boolean,
    options: Omit<SessionOptions, "client" | "name">,
  ) {
    this.remote = remoteText(conn);
    this.session = new Session(conn, { ...options, client: outbound, name: peer });
    this.closed = this.session.closed.then(async (err) => {
      if (err) {
        log.warn("Link to {peer} at {remote} failed: {reason}", {
          peer,
          remote: this.remote,
          reason: errorText(err),
        });
      }
      try {
        conn.close();
      } catch {
        // the session closed it already
      }
      await conn.closed;
    });
  }

  /** Opens a stream for one call. */
  open(): Stream {
    return this.session.open();
  }

  /** Opens a stream for one call, waiting for a free one until `signal` aborts. */
  openWhenFree(signal: AbortSignal): Promise<Stream> {
    return this.session.openWhenFree(signal);
  }

  get isClosed(): boolean {
    return this.session.isClosed;
  }

  /** Closes the session (GoAway) and the connection; resolves when both are closed. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      await this.session.close().catch(() => {});
      await this.closed;
    })();
    return this.#closing;
  }
}

/**
 * Keeps a link to one peer up: dials while `wanted()` says no link exists, with backoff, logging
 * "waiting for <peer> at <addr>" while it is down; hands each verified connection to `onConn`,
 * which returns the Link (or undefined when it refused it) to wait on before dialling again.
 */
export async function keepDialling(
  peer: string,
  address: HostPort | (() => HostPort),
  tls: LinkTls | (() => LinkTls),
  options: {
    directory?: Directory;
    signal: AbortSignal;
    /** Resolves when a link to the peer is needed (none is up); rejects never. */
    needed: () => Promise<void>;
    onConn: (conn: NodeTlsConn) => Link | undefined;
    /** A dial failed: the peer is down for now. */
    onDown?: (reason: string) => void;
    what?: string;
  },
): Promise<void> {
  const backoff = new Backoff();
  const what = options.what ?? peer;
  let warned = false;
  while (!options.signal.aborted) {
    await options.needed();
    if (options.signal.aborted) break;
    // read at each dial: a reload changes them for the next link (docs/architecture.md, "Reload")
    const target = typeof address === "function" ? address() : address;
    const addr = formatHostPort(target);
    let conn: NodeTlsConn;
    try {
      conn = await dialLink(target, peer, typeof tls === "function" ? tls() : tls, {
        ...(options.directory ? { directory: options.directory } : {}),
        signal: options.signal,
      });
    } catch (err) {
      if (options.signal.aborted) break;
      const delay = backoff.next();
      const reason = errorText(err);
      options.onDown?.(reason);
      if (err instanceof PeerRefusedError) {
        log.warn("Refused link to {peer} at {addr}: {reason}", { peer: what, addr, reason });
      } else if (!warned || backoff.attempts % 10 === 0) {
        log.info("waiting for {peer} at {addr} ({reason}); retrying in {delay} ms", {
          peer: what,
          addr,
          reason,
          delay,
        });
      } else {
        log.debug("waiting for {peer} at {addr} ({reason}); retrying in {delay} ms", {
          peer: what,
          addr,
          reason,
          delay,
        });
      }
      warned = true;
      await pause(delay, options.signal);
      continue;
    }
    warned = false;
    backoff.reset();
    const link = options.onConn(conn);
    if (link) await untilSettledOrAborted(link.closed, options.signal);
    // a link that ended at once is no reason to hammer the peer
    if (!options.signal.aborted) await pause(backoff.next(), options.signal);
  }
}
