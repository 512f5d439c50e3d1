/**
 * The EPS role: listens for links (peer EPS servers and the own proxy), dials the peers it may
 * call, keeps one link per peer, and routes calls between them
 * (docs/architecture.md, "The picture").
 * @module
 */
import { LinkClosedError, RpcCode, RpcError, SettingsError } from "../errors.ts";
import { errorText, logger } from "../log.ts";
import { formatHostPort, type HostPort, makeHandle, type RoleHandle } from "../role.ts";
import type { NodeTlsConn } from "../net/node_tls_conn.ts";
import type { EpsSettings } from "../settings/eps.ts";
import { calleesOf, type Directory, loadDirectory } from "./directory.ts";
import {
  commonNameOf,
  keepDialling,
  Link,
  type LinkTls,
  listenLinks,
  loadLinkTls,
  untilSettledOrAborted,
} from "./link.ts";
import { DeadlineClock, serveStream } from "./rpc.ts";
import { Router } from "./router.ts";
import type { Stream } from "./session.ts";

const log = logger("eps", "server");

type PeerState = "up" | "connecting" | "down";

interface Peer {
  link: Link | undefined;
  /** Whether this EPS dials the peer (it has an address and this operator may call it). */
  dialled: boolean;
  state: PeerState;
  /** Why the last dial failed, for "unavailable" errors. */
  reason: string;
  changed: PromiseWithResolvers<void>;
}

/** The link table of one EPS server; also what the router sees. */
class Links {
  readonly #own: string;
  readonly #peers = new Map<string, Peer>();
  readonly #proxy: Link[] = [];
  readonly #tasks = new Set<Promise<void>>();
  readonly #settings: EpsSettings;
  /** Deadlines of the calls served here and of the calls forwarded. */
  readonly clock = new DeadlineClock();
  #router!: Router;

  constructor(own: string, settings: EpsSettings) {
    this.#own = own;
    this.#settings = settings;
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

  proxy(): Link | undefined {
    return this.#proxy.at(-1);
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
      maxStreams: this.#settings.maxStreamsPerLink,
      keepaliveIntervalMs: this.#settings.keepaliveIntervalMs,
      onStream: (stream) => this.#serve(link, stream),
    });
    if (peer === this.#own) {
      // the own proxy: the newest link wins (an old one may be a dead half-open connection)
      const old = this.#proxy.splice(0);
      this.#proxy.push(link);
      for (const l of old) this.#track(l.close());
      log.info("Proxy of {operator} attached from {remote}", {
        operator: peer,
        remote: link.remote,
      });
      this.#track(link.closed.then(() => {
        const i = this.#proxy.indexOf(link);
        if (i >= 0) {
          this.#proxy.splice(i, 1);
          log.info("Proxy of {operator} detached ({remote})", {
            operator: peer,
            remote: link.remote,
          });
        }
      }));
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
      (request, signal) => this.#router.route(link.peer, request, signal),
      {
        maxMessageBytes: this.#settings.maxMessageBytes,
        timeoutMs: this.#settings.callTimeoutMs,
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

  #track(p: Promise<unknown>): void {
    const t = p.then(() => {}, (err) => {
      log.error("Unexpected failure in the link table: {error}", { error: errorText(err) });
    });
    this.#tasks.add(t);
    void t.finally(() => this.#tasks.delete(t));
  }

  /** Closes every link and waits for every task. */
  async close(): Promise<void> {
    const all = [...this.#proxy, ...[...this.#peers.values()].flatMap((p) => p.link ?? [])];
    for (const p of this.#peers.values()) this.#changed(p);
    await Promise.all(all.map((l) => l.close()));
    while (this.#tasks.size > 0) await Promise.all([...this.#tasks]);
  }
}

function abortPromise(signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) resolve();
    else signal.addEventListener("abort", () => resolve(), { once: true });
  });
}

/** Checks that the own certificate names the own operator. */
function checkOwnCertificate(settings: EpsSettings, tls: LinkTls): void {
  let cn: string;
  try {
    cn = commonNameOf(tls.cert);
  } catch (err) {
    throw new SettingsError(settings.certificateFile, [
      `certificate_file: cannot read the certificate: ${errorText(err)}`,
    ]);
  }
  if (cn !== settings.operator) {
    throw new SettingsError(settings.certificateFile, [
      `certificate_file: certificate CN is "${cn}", expected the operator "${settings.operator}"`,
    ]);
  }
}

/**
 * Starts an EPS server. Resolves once its listeners are bound (`links`, `proxy`); peers are
 * dialled in the background and calls to a peer not linked yet wait for it up to their deadline.
 */
export async function startEps(
  settings: EpsSettings,
  signal?: AbortSignal,
): Promise<RoleHandle<"links" | "proxy">> {
  signal?.throwIfAborted();
  const own = settings.operator;
  const directory: Directory = await loadDirectory([settings.directoryDir]);
  if (!directory.operators.has(own)) {
    log.warn("Operator {operator} is not in the directory: no peer may call it", { operator: own });
  }
  const tls = await loadLinkTls(
    settings.certificateFile,
    settings.keyFile,
    directory.caCertificateFiles,
    settings.handshakeTimeoutMs,
  );
  checkOwnCertificate(settings, tls);

  const stop = new AbortController();
  const links = new Links(own, settings);
  links.router = new Router({
    operator: own,
    directory,
    links: {
      proxy: () => links.proxy(),
      linkTo: (peer, s) => links.linkTo(peer, s),
    },
    callTimeoutMs: settings.callTimeoutMs,
    maxMessageBytes: settings.maxMessageBytes,
    clock: links.clock,
  });

  const listeners: { addr: HostPort; close(): Promise<void>; finished: Promise<void> }[] = [];
  const addrs: Partial<Record<"links" | "proxy", HostPort>> = {};
  try {
    if (settings.listen) {
      const l = await listenLinks(settings.listen, tls, {
        directory,
        known: [own],
        what: "links",
        onLink: (conn, peer) => void links.add(conn, peer, false),
      });
      listeners.push(l);
      addrs.links = l.addr;
      log.info("EPS {operator} listening for links on {addr}", {
        operator: own,
        addr: formatHostPort(l.addr),
      });
    }
    if (settings.proxyListen) {
      const l = await listenLinks(settings.proxyListen, tls, {
        directory,
        known: [own],
        only: [own],
        what: "proxy",
        onLink: (conn, peer) => void links.add(conn, peer, false),
      });
      listeners.push(l);
      addrs.proxy = l.addr;
      log.info("EPS {operator} listening for its proxy on {addr}", {
        operator: own,
        addr: formatHostPort(l.addr),
      });
    }
  } catch (err) {
    await Promise.all(listeners.map((l) => l.close()));
    throw err;
  }

  const dialling: Promise<void>[] = [];
  for (const peer of calleesOf(directory, own)) {
    const entry = directory.operators.get(peer)!;
    if (!entry.address) continue;
    const p = links.peer(peer);
    p.dialled = true;
    p.state = "connecting";
    const address = entry.address;
    dialling.push(keepDialling(peer, address, tls, {
      directory,
      signal: stop.signal,
      needed: async () => {
        await links.needed(peer, stop.signal);
        // after a failed dial the peer stays "down" (calls fail fast) until a link is up again
        if (links.peer(peer).state !== "down") links.setState(peer, "connecting");
      },
      onConn: (conn) => links.add(conn, peer, true),
      onDown: (reason) => links.setState(peer, "down", reason),
    }));
  }

  const finished = (async () => {
    await abortPromise(stop.signal);
    const closing = listeners.map((l) => l.close());
    await Promise.all(dialling);
    await links.close();
    await Promise.all(closing);
    await Promise.all(listeners.map((l) => l.finished));
    log.info("EPS {operator} stopped", { operator: own });
  })();
  return makeHandle(
    addrs as Record<"links" | "proxy", HostPort>,
    finished,
    () => stop.abort(),
    signal,
  );
}
