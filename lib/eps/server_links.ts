/**
 * The link table of one EPS server (docs/architecture.md, "The picture", "Instances"): its peers'
 * links (one per peer, the one dialled by the name that sorts first kept), the attached instances
 * of its own proxy, and the serving of every stream that comes on them through the router.
 * @module
 */
import { LinkClosedError, RpcCode, RpcError } from "../errors.ts";
import { errorText, logger } from "../log.ts";
import type { NodeTlsConn } from "../net/node_tls_conn.ts";
import type { EpsSettings } from "../settings/eps.ts";
import { Link, untilSettledOrAborted } from "./link.ts";
import { DeadlineClock, type RpcRequest, serveStream } from "./rpc.ts";
import { ATTACH_METHOD, type ProxyInstance, Router } from "./router.ts";
import type { InstanceRow, LinkRow } from "./server_admin.ts";
import { isInstanceName } from "../settings/schema.ts";
import { codeOf } from "../admin/eps_calls.ts";
import type { Stream } from "./session.ts";

const log = logger("eps", "server");

export type PeerState = "up" | "connecting" | "down";

interface Peer {
  link: Link | undefined;
  /** Whether this EPS dials the peer (it has an address and this operator may call it). */
  dialled: boolean;
  state: PeerState;
  /** Why the last dial failed, for "unavailable" errors. */
  reason: string;
  changed: PromiseWithResolvers<void>;
}

/** A link of the own proxy: unnamed until its `_eps.attach` (docs/architecture.md, "Instances"). */
interface ProxyLink extends ProxyInstance {
  instance: string;
  readonly remote: string;
  /** When it attached (or linked, while unnamed). */
  since: number;
}

/** The link table of one EPS server; also what the router sees. */
export class Links {
  readonly #own: string;
  readonly #peers = new Map<string, Peer>();
  /** Links of the own proxy that have not attached (yet), oldest first; the newest is routable. */
  readonly #unnamed: ProxyLink[] = [];
  /** The attached instances of the own proxy, each with its newest link. */
  readonly #named = new Map<string, ProxyLink>();
  readonly #byLink = new Map<Link, ProxyLink>();
  readonly #tasks = new Set<Promise<void>>();
  /** Read for every new link and call; a reload replaces it. */
  settings: EpsSettings;
  /** Deadlines of the calls served here and of the calls forwarded. */
  readonly clock = new DeadlineClock();
  /** Counts each routed call (the admin endpoint's metrics), when set. */
  onRouted: ((method: string, code: string) => void) | undefined;
  #router!: Router;

  constructor(own: string, settings: EpsSettings) {
    this.#own = own;
    this.settings = settings;
  }

  set router(r: Router) {
    this.#router = r;
  }

  peer(name: string): Peer {
    let p = this.#peers.get(name);
    if (!p) {
      p = {
        link: undefined,
        dialled: false,
        state: "down",
        reason: "no link yet",
        changed: Promise.withResolvers(),
      };
      this.#peers.set(name, p);
    }
    return p;
  }

  #changed(p: Peer): void {
    const c = p.changed;
    p.changed = Promise.withResolvers();
    c.resolve();
  }

  /** The instances calls to the own operator may go to: the named ones and the newest unnamed. */
  instances(): ProxyInstance[] {
    const newest = this.#unnamed.at(-1);
    return newest ? [...this.#named.values(), newest] : [...this.#named.values()];
  }

  /** The own proxy's instances for `/status`, by name. */
  instanceRows(): InstanceRow[] {
    return this.instances().map((i) => {
      const p = i as ProxyLink;
      return {
        instance: p.instance,
        remote: p.remote,
        inFlight: p.inFlight,
        serves: p.serves === undefined ? undefined : [...p.serves].sort(),
        since: p.since,
      };
    }).sort((a, b) => a.instance < b.instance ? -1 : a.instance > b.instance ? 1 : 0);
  }

  /**
   * `_eps.attach` on a link of the own proxy: names its instance and the methods it serves. The
   * instance's older link, if any, is closed (the newest link wins: an old one may be a dead
   * half-open connection). Answers `{ok: true}`; throws RpcError -32602 on bad params.
   */
  #attachInstance(link: Link, request: RpcRequest): { ok: true } {
    const p = this.#byLink.get(link);
    const { instance, serves } = request.params;
    const bad = (why: string) => {
      log.warn("Bad {method} from the proxy at {remote}: {why}", {
        method: ATTACH_METHOD,
        remote: link.remote,
        why,
      });
      return new RpcError(`Cannot attach: ${why}`, RpcCode.InvalidParams);
    };
    if (link.isClosed) {
      throw new RpcError("Cannot attach: the link is closed", RpcCode.Unavailable);
    }
    if (!p) {
      const why = `${ATTACH_METHOD} is for the proxy of "${this.#own}" only, not "${link.peer}"`;
      log.warn("Denied call from {from} to {target}: {why}", {
        from: link.peer,
        target: ATTACH_METHOD,
        why,
      });
      throw new RpcError(`Cannot attach: ${why}`, RpcCode.NotPermitted);
    }
    if (!isInstanceName(instance)) {
      throw bad(
        `instance must be 1–64 characters of A-Z a-z 0-9 . _ - (an instance name), got ${
          JSON.stringify(instance)
        }`,
      );
    }
    if (
      serves !== undefined && (!Array.isArray(serves) || serves.some((m) => typeof m !== "string"))
    ) {
      throw bad(`serves must be a list of method names, got ${JSON.stringify(serves)}`);
    }
    if (p.instance !== "" && p.instance !== instance) {
      throw bad(`this link is attached as instance "${p.instance}" already, not "${instance}"`);
    }
    p.serves = serves === undefined ? undefined : new Set(serves as string[]);
    if (p.instance === instance) return { ok: true }; // a new serve(): the methods changed
    const i = this.#unnamed.indexOf(p);
    if (i >= 0) this.#unnamed.splice(i, 1);
    p.instance = instance;
    p.since = Date.now();
    const old = this.#named.get(instance);
    this.#named.set(instance, p);
    if (old) {
      log.info(
        "Instance {instance} of {operator} attached again from {remote}: closing its older link ({old})",
        {
          instance,
          operator: this.#own,
          remote: p.remote,
          old: old.remote,
        },
      );
      this.#track(old.link.close());
    } else {
      log.info("Instance {instance} of {operator} attached from {remote} (serves {serves})", {
        instance,
        operator: this.#own,
        remote: p.remote,
        serves: p.serves === undefined ? "any method" : [...p.serves].sort().join(", "),
      });
    }
    return { ok: true };
  }

  #detach(p: ProxyLink): void {
    this.#byLink.delete(p.link);
    const i = this.#unnamed.indexOf(p);
    if (i >= 0) {
      this.#unnamed.splice(i, 1);
      log.info("Proxy of {operator} detached ({remote})", {
        operator: this.#own,
        remote: p.remote,
      });
      return;
    }
    if (this.#named.get(p.instance) !== p) return; // replaced by its newer link
    this.#named.delete(p.instance);
    log.info("Instance {instance} of {operator} detached ({remote})", {
      instance: p.instance,
      operator: this.#own,
      remote: p.remote,
    });
  }

  setState(name: string, state: PeerState, reason = ""): void {
    const p = this.peer(name);
    if (p.link && !p.link.isClosed) return;
    p.state = state;
    if (reason) p.reason = reason;
    this.#changed(p);
  }

  /** Resolves when the peer has no link (the dialler should dial). */
  async needed(name: string, signal: AbortSignal): Promise<void> {
    const p = this.peer(name);
    while (p.link && !p.link.isClosed && !signal.aborted) {
      await untilSettledOrAborted(p.changed.promise, signal);
    }
  }

  async linkTo(name: string, signal: AbortSignal): Promise<Link> {
    const p = this.peer(name);
    for (;;) {
      if (p.link && !p.link.isClosed) return p.link;
      if (!p.dialled && p.state !== "connecting") {
        throw new RpcError(
          `Cannot reach "${name}": no link (it has no address here and has not dialled in)`,
          RpcCode.Unavailable,
        );
      }
      if (p.state === "down") {
        throw new RpcError(
          `Cannot reach "${name}": link is down (${p.reason})`,
          RpcCode.Unavailable,
        );
      }
      if (signal.aborted) {
        throw new RpcError(
          `Cannot reach "${name}": the link did not come back before the deadline`,
          RpcCode.Timeout,
        );
      }
      await untilSettledOrAborted(p.changed.promise, signal);
    }
  }

  /** Takes a verified connection; returns the Link, or undefined when it was refused. */
  add(conn: NodeTlsConn, peer: string, outbound: boolean): Link {
    const dialler = outbound ? this.#own : peer;
    const link = new Link(conn, peer, dialler, outbound, {
      maxStreams: this.settings.maxStreamsPerLink,
      keepaliveIntervalMs: this.settings.keepaliveIntervalMs,
      onStream: (stream) => this.#serve(link, stream),
    });
    if (peer === this.#own) {
      // the own proxy: routable as the unnamed instance until its `_eps.attach` names it; several
      // instances may be attached at once (docs/architecture.md, "Instances")
      const p: ProxyLink = {
        instance: "",
        link,
        remote: link.remote,
        serves: undefined,
        inFlight: 0,
        since: Date.now(),
      };
      this.#unnamed.push(p);
      this.#byLink.set(link, p);
      log.info("Proxy of {operator} linked from {remote}", {
        operator: peer,
        remote: link.remote,
      });
      this.#track(link.closed.then(() => this.#detach(p)));
      return link;
    }
    const p = this.peer(peer);
    const old = p.link && !p.link.isClosed ? p.link : undefined;
    let keep = link;
    if (old) {
      // two links: keep the one dialled by the name that sorts first; same dialler = newer wins
      const first = this.#own < peer ? this.#own : peer;
      if (old.dialler !== link.dialler && old.dialler === first) keep = old;
    }
    const drop = keep === link ? old : link;
    if (drop) {
      log.debug("Closing duplicate link to {peer} ({remote}, dialled by {dialler})", {
        peer,
        remote: drop.remote,
        dialler: drop.dialler,
      });
      this.#track(drop.close());
    }
    if (keep === link) {
      p.link = link;
      p.state = "up";
      this.#changed(p);
      log.info("Link to {peer} up ({remote}, dialled by {dialler})", {
        peer,
        remote: link.remote,
        dialler,
      });
      this.#track(link.closed.then(() => {
        if (p.link !== link) return;
        p.link = undefined;
        p.state = p.dialled ? "connecting" : "down";
        p.reason = "link closed";
        this.#changed(p);
        log.info("Link to {peer} down ({remote})", { peer, remote: link.remote });
      }));
    }
    return link;
  }

  #serve(link: Link, stream: Stream): void {
    this.#track(serveStream(
      stream,
      (request, signal) => {
        if (request.method === ATTACH_METHOD) return this.#attachInstance(link, request);
        const instance = this.#byLink.get(link)?.instance;
        const routed = this.#router.route(link.peer, request, signal, instance);
        return this.onRouted ? this.#counted(request.method, routed) : routed;
      },
      {
        maxMessageBytes: this.settings.maxMessageBytes,
        timeoutMs: this.settings.callTimeoutMs,
        clock: this.clock,
        onProblem: (err) => {
          if (err instanceof LinkClosedError) {
            log.debug("Call from {peer} ended early: {reason}", {
              peer: link.peer,
              reason: errorText(err),
            });
          } else {
            log.warn("Bad call from {peer} ({remote}): {reason}", {
              peer: link.peer,
              remote: link.remote,
              reason: errorText(err),
            });
          }
        },
      },
    ));
  }

  async #counted(method: unknown, routed: Promise<unknown>): Promise<unknown> {
    const name = typeof method === "string" ? method.slice(method.lastIndexOf(".") + 1) : "?";
    try {
      const r = await routed;
      this.onRouted?.(name, "ok");
      return r;
    } catch (err) {
      this.onRouted?.(name, codeOf(err));
      throw err;
    }
  }

  /** The peers for `/status`. */
  peerRows(): LinkRow[] {
    return [...this.#peers].map(([peer, p]) => ({
      peer,
      state: p.link && !p.link.isClosed ? "up" : p.state,
      dialled: p.dialled,
      reason: p.link && !p.link.isClosed ? "" : p.reason,
    }));
  }

  #track(p: Promise<unknown>): void {
    const t = p.then(() => {}, (err) => {
      log.error("Unexpected failure in the link table: {error}", { error: errorText(err) });
    });
    this.#tasks.add(t);
    void t.finally(() => this.#tasks.delete(t));
  }

  /** Closes every link and waits for every task. */
  async close(): Promise<void> {
    const all = [
      ...[...this.#byLink.keys()],
      ...[...this.#peers.values()].flatMap((p) => p.link ?? []),
    ];
    for (const p of this.#peers.values()) this.#changed(p);
    await Promise.all(all.map((l) => l.close()));
    while (this.#tasks.size > 0) await Promise.all([...this.#tasks]);
  }
}
