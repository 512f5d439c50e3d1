/**
 * The one transport seam of the EPS links (docs/architecture.md, "The two planes"). `Deno.Conn` and
 * `Deno.TlsConn` fit it as they are; `node_tls_conn.ts` adapts a `node:tls` socket, used where
 * client certificates must be verified.
 * @module
 */
/** A bidirectional byte stream with half-close. */
export interface ByteConn {
  /** Reads into `buf`; resolves to the count, or null at EOF. */
  read(buf: Uint8Array): Promise<number | null>;
  /** Writes some of `buf`; resolves to the count written. */
  write(buf: Uint8Array): Promise<number>;
  /**
   * Writes all of `buf` and keeps it (the caller never touches it again): no copy where the
   * connection would otherwise take one. Optional; resolves like a write that took every byte.
   */
  writeOwned?(buf: Uint8Array): Promise<void>;
  /** Sends EOF to the peer; reading goes on. */
  closeWrite(): Promise<void>;
  /** Closes both directions and releases the resource. Throws if already closed (Deno.Conn). */
  close(): void;
  readonly remoteAddr: Deno.Addr;
}

/** Closes a connection, ignoring "already closed". */
export function tryClose(conn: { close(): void }): void {
  try {
    conn.close();
  } catch {
    // already closed
  }
}

/** The remote address of a connection as `host:port` for logs; `unknown` when it cannot be read (absent: throws). */
export function remoteText(conn: ByteConn, unknown?: string): string {
  let a: Deno.Addr;
  try {
    a = conn.remoteAddr;
  } catch (err) {
    if (unknown === undefined) throw err;
    return unknown; // a closed connection may not know its peer any more
  }
  if (a.transport === "tcp" || a.transport === "udp") {
    return a.hostname.includes(":") ? `[${a.hostname}]:${a.port}` : `${a.hostname}:${a.port}`;
  }
  return a.transport;
}
