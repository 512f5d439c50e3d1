/**
 * Notices (docs/architecture.md, "The control plane"): when the data plane says a client waits
 * for a dial-back, the public proxy calls `<operator>.incomingConnection {domain, token,
 * endpoint}` through its EPS; when that call fails, no dial-back will come, so the data plane is
 * told at once (`noticeFailed`) and refuses the client with alert internal_error instead of
 * holding it until its dial-back deadline.
 * @module
 */
import { RpcError } from "../errors.ts";
import { errorText } from "../log.ts";
import type { EpsClient } from "../eps/client.ts";
import type { DataPlane } from "../dataplane/mod.ts";
import type { Counters } from "./counters.ts";
import type { NoticeRequest } from "./public_events.ts";

/** Sends the notices of one public proxy. */
export class Notifier {
  #endpoint = "";
  #plane: DataPlane | undefined;

  constructor(
    readonly eps: EpsClient,
    readonly timeoutMs: number,
    readonly signal: AbortSignal,
    readonly counters: Counters,
  ) {}

  /** The endpoint notices name, and the data plane to tell of failed ones. */
  start(endpoint: string, plane: DataPlane): void {
    this.#endpoint = endpoint;
    this.#plane = plane;
  }

  send(n: NoticeRequest): void {
    this.eps.call(
      `${n.operator}.incomingConnection`,
      { domain: n.domain, token: n.token, endpoint: this.#endpoint },
      { timeoutMs: this.timeoutMs, signal: this.signal },
    ).catch((err) => {
      // no dial-back will come: let the client go now, not at the dial-back deadline
      this.#plane?.send({ type: "noticeFailed", conn: n.conn });
      if (this.signal.aborted) return;
      const why = new RpcError(
        `Cannot notify "${n.operator}" of a connection for "${n.domain}": ${errorText(err)}`,
        err instanceof RpcError ? err.code : -32603,
      );
      this.counters.warn(
        "notice",
        "Closed clients: notice failed ({count} since last report), last {client}: {error}",
        { client: n.client, error: why.message },
      );
    });
  }
}
