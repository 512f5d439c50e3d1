/**
 * The core's inputs and outputs (docs/architecture.md, "The core"): what a driver feeds it and
 * what it asks the driver to do. One discriminated union of outputs; inputs are the methods of
 * {@linkcode import("./engine.ts").Engine}. No socket, clock or randomness here.
 * @module
 */
import type { HostPort } from "../../role.ts";

/** A socket as the core names it. Ids are never reused within one engine. */
export type SockId = number;

/** Which listening port a socket was accepted on. */
export type Port = "public" | "private";

/** What went wrong on a socket, as the driver saw it. */
export interface SockFailure {
  readonly op: "read" | "write" | "connect";
  /** The errno name (ECONNRESET, ECONNREFUSED) or the runtime's error name. */
  readonly code: string;
}

/**
 * What the core asks of the driver, executed in order. Writes and shutdowns on one socket are
 * queued and flushed in order; `close` waits for the queue (unless `abort`).
 */
export type Output =
  /** Read from `sock` (and report data/EOF/errors) while `on`. */
  | { readonly op: "read"; readonly sock: SockId; readonly on: boolean }
  /** Queue `bytes` (owned by the driver from now on) for `sock`. */
  | { readonly op: "write"; readonly sock: SockId; readonly bytes: Uint8Array }
  /** Queue a half-close (FIN) after what is queued. */
  | { readonly op: "shutdown"; readonly sock: SockId }
  /** Close `sock` once its queue is flushed, or at once when `abort` (RST if input is unread). */
  | { readonly op: "close"; readonly sock: SockId; readonly abort: boolean }
  /** Open a new socket `sock` connecting to `to` (an IP literal); report connected or failed. */
  | { readonly op: "connect"; readonly sock: SockId; readonly to: HostPort }
  /**
   * From now on copy bytes between `a` and `b` both ways yourself (after what is queued), with
   * backpressure; report each chunk with `moved`, and EOF and failures as usual. The core answers
   * EOF with a shutdown of the peer and closes both when both directions are done.
   */
  | {
    readonly op: "pipe";
    readonly a: SockId;
    readonly b: SockId;
    /** TCP keepalive on both sockets after this much idleness (lib/dataplane/keepalive.ts); 0: off. */
    readonly keepAliveMs: number;
  };

/**
 * The listen backlog both drivers ask for on the public and private ports: a burst of new
 * connections waits in the kernel while the data-plane thread is busy (Linux caps it at
 * net.core.somaxconn, 4096 by default since 5.4).
 */
export const LISTEN_BACKLOG = 4096;
