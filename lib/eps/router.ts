/**
 * Routing of `operator.method` calls on an EPS server (docs/architecture.md, "The picture"). A call
 * from peer P (the operator whose certificate authenticated the link it came on; the own proxy
 * counts as the own operator) to `X.method`:
 * - X is this operator: delivered to the local proxy with `params._client = {name: P}`;
 * - X is another operator: only from the own proxy (no transit), only if the directory lets this
 *   operator call X.method; forwarded over the link to X with `_client` = this operator.
 * Deny by default; every denial is logged with who, what and why.
 * @module
 */
import { RpcCode, RpcError } from "../errors.ts";
import { logger } from "../log.ts";
import { type Directory, mayCall } from "./directory.ts";
import type { Link } from "./link.ts";
import { callOnStream, type DeadlineClock, type RpcRequest } from "./rpc.ts";

const log = logger("eps", "router");

/** What the router needs from the server's link table. */
export interface RouterLinks {
  /** The link of the attached own proxy, if any. */
  proxy(): Link | undefined;
  /**
   * The link to a peer operator: at once if up, after a reconnect if one is under way (up to
   * `signal`); throws RpcError -32003 when the peer is known to be down.
   */
  linkTo(peer: string, signal: AbortSignal): Promise<Link>;
}

export interface RouterOptions {
  operator: string;
  directory: Directory;
  links: RouterLinks;
  /** Deadline of a call, as the EPS enforces it. */
  callTimeoutMs: number;
  maxMessageBytes: number;
  /** Keeps the deadlines of forwarded calls. */
  clock: DeadlineClock;
}

/** Splits `operator.method` at the last dot (operator names may contain dots, methods never). */
export function splitMethod(full: string): { operator: string; method: string } | undefined {
  const dot = full.lastIndexOf(".");
  if (dot <= 0 || dot === full.length - 1) return undefined;
  return { operator: full.slice(0, dot), method: full.slice(dot + 1) };
}

/**
 * The deadline of a forwarded call: a little shorter than the caller's, so that the EPS answers
 * "timeout" itself before the caller gives up and resets the stream.
 */
export function forwardTimeoutMs(callTimeoutMs: number): number {
  return Math.max(1, Math.round(Math.max(callTimeoutMs * 0.9, callTimeoutMs - 250)));
}

export class Router {
  #o: RouterOptions;
  #nextId = 1;

  constructor(options: RouterOptions) {
    this.#o = options;
  }

  /** A reload (docs/architecture.md, "Reload"): calls routed from now on use these. */
  update(changes: Pick<RouterOptions, "directory" | "callTimeoutMs" | "maxMessageBytes">): void {
    this.#o = { ...this.#o, ...changes };
  }

  #deny(from: string, target: string, code: number, why: string): RpcError {
    log.warn("Denied call from {from} to {target}: {why}", { from, target, why });
    return new RpcError(`Cannot call "${target}": ${why}`, code);
  }

  /** Routes one call from `from`; resolves to the result or throws RpcError. */
  async route(from: string, request: RpcRequest, signal: AbortSignal): Promise<unknown> {
    const own = this.#o.operator;
    const target = request.method;
    const parts = splitMethod(target);
    if (!parts) {
      throw this.#deny(
        from,
        target,
        RpcCode.MethodNotFound,
        `method must be "<operator>.<method>"`,
      );
    }
    const { operator, method } = parts;
    if (operator !== own && !this.#o.directory.operators.has(operator)) {
      throw this.#deny(
        from,
        target,
        RpcCode.UnknownOperator,
        `operator "${operator}" is not in the directory`,
      );
    }
    // the caller's identity comes from its certificate, never from what it wrote
    const params = { ...request.params, _client: { name: from } };
    let link: Link;
    if (operator === own) {
      if (from !== own && !mayCall(this.#o.directory, from, own, method)) {
        throw this.#deny(
          from,
          target,
          RpcCode.NotPermitted,
          `the directory does not let "${from}" call it`,
        );
      }
      const proxy = this.#o.links.proxy();
      if (!proxy) {
        throw this.#deny(from, target, RpcCode.Unavailable, `no proxy of "${own}" is attached`);
      }
      link = proxy;
    } else {
      if (from !== own) {
        throw this.#deny(
          from,
          target,
          RpcCode.NotPermitted,
          `"${from}" may call only "${own}" here, not forward through it`,
        );
      }
      if (!mayCall(this.#o.directory, own, operator, method)) {
        throw this.#deny(
          from,
          target,
          RpcCode.NotPermitted,
          `the directory does not let "${own}" call it`,
        );
      }
      try {
        link = await this.#o.links.linkTo(operator, signal);
      } catch (err) {
        if (err instanceof RpcError) {
          log.warn("Cannot route call from {from} to {target}: {why}", {
            from,
            target,
            why: err.message,
          });
        }
        throw err;
      }
    }
    const timeoutMs = forwardTimeoutMs(this.#o.callTimeoutMs);
    using limit = this.#o.clock.deadline(timeoutMs, signal);
    let stream;
    try {
      stream = await link.openWhenFree(limit.signal); // a burst waits for streams, not refused
    } catch (err) {
      throw new RpcError(
        `Cannot call "${target}": cannot open a stream to "${link.peer}" (${
          err instanceof Error ? err.message : String(err)
        })`,
        RpcCode.Unavailable,
      );
    }
    return await callOnStream(
      stream,
      { jsonrpc: "2.0", id: this.#nextId++, method: target, params },
      {
        maxMessageBytes: this.#o.maxMessageBytes,
        timeoutMs,
        signal: limit.signal,
      },
    );
  }
}
