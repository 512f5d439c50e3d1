/**
 * Routing of `operator.method` calls on an EPS server (docs/architecture.md, "The picture"). A call
 * from peer P (the operator whose certificate authenticated the link it came on; the own proxy
 * counts as the own operator) to `X.method`:
 * - X is this operator: delivered to one instance of the local proxy (the one serving the method
 *   with the fewest calls in flight, ties in turn; or the one `params._instance` names, removed
 *   from the params) with `params._client = {name: P, instance?}`;
 * - X is another operator: only from the own proxy (no transit), only if the directory lets this
 *   operator call X.method; forwarded over the link to X with `_client` = this operator and the
 *   calling instance.
 * `_client.instance` is the own proxy's link's instance, or for a call from a peer the instance
 * the peer stamped (docs/architecture.md, "Instances").
 * Deny by default; every denial is logged with who, what and why.
 * @module
 */
import { RpcCode, RpcError } from "../errors.ts";
import { logger } from "../log.ts";
import { isInstanceName } from "../settings/schema.ts";
import { type Directory, mayCall } from "./directory.ts";
import type { Link } from "./link.ts";
import { callOnStream, type DeadlineClock, type RpcRequest } from "./rpc.ts";

const log = logger("eps", "router");

/** One instance of the own proxy attached to this EPS (docs/architecture.md, "Instances"). */
export interface ProxyInstance {
  /** Its name from `_eps.attach`; "" for the newest link that has not attached yet. */
  readonly instance: string;
  /** Its newest link. */
  readonly link: Link;
  /** The methods it serves (from `_eps.attach`); undefined: not said, taken to be every one. */
  serves: ReadonlySet<string> | undefined;
  /** Calls routed to it and not answered yet; the router counts them. */
  inFlight: number;
}

/**
 * The method a proxy calls on its own EPS at every link up to name its instance and the methods
 * it serves; answered by the EPS itself, never routed (docs/architecture.md, "Instances").
 */
export const ATTACH_METHOD = "_eps.attach";

/** What the router needs from the server's link table. */
export interface RouterLinks {
  /** The attached instances of the own proxy, each with its newest link. */
  instances(): readonly ProxyInstance[];
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

/** The instance a peer stamped on `_client`, when it is one (docs/architecture.md, "Instances"). */
function stampedInstance(client: unknown): string | undefined {
  if (typeof client !== "object" || client === null) return undefined;
  const instance = (client as { instance?: unknown }).instance;
  return isInstanceName(instance) ? instance : undefined;
}

/** No stream could be opened on the chosen link: the call reached nobody. */
class NoStreamError extends RpcError {
  override name = "NoStreamError";
}

/** How many instances a call to the own proxy tries when links close under it. */
const MAX_DELIVERIES = 3;

export class Router {
  #o: RouterOptions;
  #nextId = 1;
  /** Turns among instances with equally few calls in flight. */
  #turn = 0;

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

  /**
   * Picks the instance of the own proxy for `method`: the one `wanted` names, else among those
   * serving it the one with the fewest calls in flight (ties in turn). Throws RpcError.
   */
  #pick(from: string, target: string, method: string, wanted: string | undefined): ProxyInstance {
    const own = this.#o.operator;
    const all = this.#o.links.instances().filter((i) => !i.link.isClosed);
    if (wanted !== undefined) {
      const one = all.find((i) => i.instance === wanted);
      if (!one) {
        throw this.#deny(
          from,
          target,
          RpcCode.Unavailable,
          `instance "${wanted}" of "${own}" is not attached`,
        );
      }
      return one; // it answers -32601 itself when it does not serve the method
    }
    if (all.length === 0) {
      throw this.#deny(from, target, RpcCode.Unavailable, `no proxy of "${own}" is attached`);
    }
    // the instances that said they serve it; when none did (a serve() whose _eps.attach is on its
    // way), every instance, and the one picked answers -32601 if it does not serve it either
    const serving = all.filter((i) => i.serves === undefined || i.serves.has(method));
    const candidates = serving.length > 0 ? serving : all;
    const fewest = Math.min(...candidates.map((i) => i.inFlight));
    const ties = candidates.filter((i) => i.inFlight === fewest)
      .sort((a, b) => a.instance < b.instance ? -1 : a.instance > b.instance ? 1 : 0);
    return ties[this.#turn++ % ties.length]!;
  }

  /**
   * Routes one call from `from`; resolves to the result or throws RpcError. `instance` is the
   * calling own proxy's instance (its link's `_eps.attach`), for a call from the own proxy.
   */
  async route(
    from: string,
    request: RpcRequest,
    signal: AbortSignal,
    instance?: string,
  ): Promise<unknown> {
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
    // the caller's identity comes from its certificate, never from what it wrote; its instance
    // from its own link's attach, or from the peer EPS that stamped it (authenticated)
    const callerInstance = from === own ? instance || undefined : stampedInstance(
      request.params._client,
    );
    const params: Record<string, unknown> = {
      ...request.params,
      _client: callerInstance === undefined
        ? { name: from }
        : { name: from, instance: callerInstance },
    };
    if (operator === own) {
      if (from !== own && !mayCall(this.#o.directory, from, own, method)) {
        throw this.#deny(
          from,
          target,
          RpcCode.NotPermitted,
          `the directory does not let "${from}" call it`,
        );
      }
      const wanted = params._instance;
      if (wanted !== undefined && !isInstanceName(wanted)) {
        throw this.#deny(
          from,
          target,
          RpcCode.InvalidParams,
          `_instance must be an instance name (1–64 characters of A-Z a-z 0-9 . _ -), got ${
            JSON.stringify(wanted)
          }`,
        );
      }
      delete params._instance; // delivered here: the proxy sees who called, not where it aimed
      return await this.#deliver(from, target, method, wanted, params, signal);
    }
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
    let link: Link;
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
    const timeoutMs = forwardTimeoutMs(this.#o.callTimeoutMs);
    using limit = this.#o.clock.deadline(timeoutMs, signal);
    return await this.#send(link, target, params, limit.signal, timeoutMs);
  }

  /**
   * Delivers a call to an instance of the own proxy, counting it in flight there. When the
   * chosen instance's link closed before the call could be sent (nothing reached it), another
   * instance takes it, unless the call named its instance.
   */
  async #deliver(
    from: string,
    target: string,
    method: string,
    wanted: string | undefined,
    params: Record<string, unknown>,
    signal: AbortSignal,
  ): Promise<unknown> {
    const timeoutMs = forwardTimeoutMs(this.#o.callTimeoutMs);
    using limit = this.#o.clock.deadline(timeoutMs, signal);
    for (let tries = 1;; tries++) {
      const chosen = this.#pick(from, target, method, wanted);
      chosen.inFlight++;
      try {
        return await this.#send(chosen.link, target, params, limit.signal, timeoutMs);
      } catch (err) {
        if (
          !(err instanceof NoStreamError) || !chosen.link.isClosed || wanted !== undefined ||
          tries >= MAX_DELIVERIES
        ) throw err;
        log.debug("Instance {instance} of {operator} went away before {target} reached it", {
          instance: chosen.instance || "(unnamed)",
          operator: this.#o.operator,
          target,
        });
      } finally {
        chosen.inFlight--;
      }
    }
  }

  async #send(
    link: Link,
    target: string,
    params: Record<string, unknown>,
    signal: AbortSignal,
    timeoutMs: number,
  ): Promise<unknown> {
    let stream;
    try {
      stream = await link.openWhenFree(signal); // a burst waits for streams, not refused
    } catch (err) {
      throw new NoStreamError(
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
        signal,
      },
    );
  }
}
