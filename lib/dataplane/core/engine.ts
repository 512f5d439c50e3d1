/**
 * The sans-IO core of a proxy's data plane (docs/architecture.md, "The core"): every data
 * socket's logic, for both proxies, as data in and data out. A driver calls the input methods
 * (`accept`, `data`, `eof`, `failed`, `connected`, `moved`, `timeout`, `command`), then drains
 * {@linkcode Engine.outputs} into its sockets and {@linkcode Engine.events} to the control plane,
 * and arms one timer at {@linkcode Engine.nextTimeout}. No socket, no clock, no randomness: the
 * time comes with each input and random bytes from the `random` function the driver passes.
 *
 * The per-connection machines live in public_conns.ts, private_conns.ts and pipe.ts; this file
 * holds what they share: the socket table, the snapshot, the timers, the tables of tokens and
 * idle pooled dial-backs, and the stop.
 * @module
 */
import type { HostPort } from "../../role.ts";
import type {
  Admission,
  Command,
  Limits,
  PlaneRole,
  PrivateRoute,
  PublicRoute,
  Snapshot,
} from "../snapshot.ts";
import { emptySnapshot, NO_ADMISSION } from "../snapshot.ts";
import type { DataEvent, Refusal } from "../events.ts";
import { CidrSet, inCidr, parseAddress } from "../../wire/cidr.ts";
import { MAX_RATE_KEYS, RateTable } from "./admission.ts";
import type { Output, Port, SockFailure, SockId } from "./io.ts";
import { Timers } from "./timers.ts";
import type { TimerOwner } from "./timers.ts";
import { ClientConn } from "./public_conns.ts";
import { DialBackIn, IdlePooled } from "./private_port.ts";
import type { Grant } from "./machine.ts";
import { NoticeDialBack, PooledDialBack } from "./private_conns.ts";
import { Tickets } from "./tickets.ts";
import { connIdOf } from "../../wire/conn_id.ts";

/** What owns a socket: the machine that gets its inputs. */
export interface SockOwner extends TimerOwner {
  onData(sock: SockId, bytes: Uint8Array, now: number): void;
  onEof(sock: SockId, now: number): void;
  onFailed(sock: SockId, failure: SockFailure, now: number): void;
  onConnected(sock: SockId, now: number): void;
  onMoved(sock: SockId, n: number, now: number): void;
  /** The role stops: waits and idle connections end, splices go on. */
  onStop(now: number): void;
  /** Everything ends now. */
  onKill(now: number): void;
  /** The connection this socket serves (the `conn` of its events), once it has one. */
  readonly conn?: number | undefined;
}

/** Source of random bytes (tokens): the driver's, or a seeded one in tests. */
export type RandomBytes = (into: Uint8Array) => void;

/** The core of one proxy's data plane. */
export class Engine {
  /** What the driver must do next, in order. Drain it (set length 0) after each input. */
  readonly outputs: Output[] = [];
  /** Events for the control plane. Drain it after each input. */
  readonly events: DataEvent[] = [];
  readonly timers = new Timers();
  /** Every open socket and its owner. */
  readonly socks = new Map<SockId, SockOwner>();
  /**
   * Public: clients waiting for a dial-back, by token (base64). A re-dispatched client has one
   * token per notice it got (docs/architecture.md, "Re-dispatch"): count clients in `waiting`.
   */
  readonly pending = new Map<string, ClientConn>();
  /** The same clients by connection id (for the control plane's noticeFailed), one entry each. */
  readonly waiting = new Map<number, ClientConn>();
  readonly pendingPerOperator = new Map<string, number>();
  readonly pendingPerClient = new Map<string, number>();
  /** Public: pool tokens not yet redeemed. */
  readonly grants = new Map<string, Grant>();
  /** Public: pool tickets (docs/architecture.md, "Pool tickets"). */
  readonly tickets: Tickets = new Tickets(this);
  /** Public: idle pooled dial-backs per operator, newest last. */
  readonly idle = new Map<string, IdlePooled[]>();
  /** Public: clients waiting for a dial-back per routed name (`max_pending_per_name`). */
  readonly pendingPerName = new Map<string, number>();
  /** Public: open clients per address (`max_connections_per_client`), counted always. */
  readonly clientsPerHost = new Map<string, number>();
  /** Public: the per-address and per-name token buckets (docs/architecture.md, "Admission"). */
  readonly clientRates = new RateTable(MAX_RATE_KEYS);
  readonly nameRates = new RateTable(MAX_RATE_KEYS);
  snapshot: Snapshot = emptySnapshot();
  /** The snapshot's admission policy, its lists parsed. */
  admission: Admission = NO_ADMISSION;
  allow: CidrSet = new CidrSet([]);
  deny: CidrSet = new CidrSet([]);
  /** The balancers whose PROXY headers are believed (`proxy_protocol_from`); empty: any. */
  proxyFrom: CidrSet = new CidrSet([]);
  /** Public: the routes' own `allow` lists, parsed, by domain (only routes that have one). */
  routeAllow: ReadonlyMap<string, CidrSet> = new Map();
  publicRoutes: ReadonlyMap<string, PublicRoute> = new Map();
  privateRoutes: ReadonlyMap<string, PrivateRoute> = new Map();
  stopping = false;
  #drained = false;
  /** Accepted sockets and their port, for the two budgets. */
  #accepted = new Map<SockId, Port>();
  /** The public port's sockets' client addresses (for `clientsPerHost`). */
  #hostOf = new Map<SockId, string>();
  #clients = 0;
  #dialBacks = 0;
  #next = 1;

  /**
   * `idPrefix`: what this data plane's connection ids start with (docs/architecture.md,
   * "Connection ids"); the driver passes a random one per process, tests a fixed one.
   */
  constructor(
    readonly role: PlaneRole,
    readonly random: RandomBytes,
    readonly idPrefix = "",
  ) {}

  get limits(): Limits {
    return this.snapshot.limits;
  }

  /** A new id for a socket or a connection; never reused. */
  id(): number {
    return this.#next++;
  }

  /** The connection id of connection number `n`: the prefix and `n` in base 36. */
  connId(n: number): string {
    return connIdOf(this.idPrefix, n);
  }

  out(o: Output): void {
    this.outputs.push(o);
  }

  emit(e: DataEvent): void {
    this.events.push(e);
  }

  /** Gives `sock` to `owner` (its inputs go there from now on). */
  own(sock: SockId, owner: SockOwner): void {
    this.socks.set(sock, owner);
  }

  /** Closes `sock` and forgets it. `abort`: at once, dropping what is queued. */
  close(sock: SockId, abort: boolean): void {
    if (!this.socks.delete(sock)) return;
    const port = this.#accepted.get(sock);
    if (port !== undefined) {
      this.#accepted.delete(sock);
      if (port === "public") {
        this.#clients--;
        bump(this.clientsPerHost, this.#hostOf.get(sock)!, -1);
        this.#hostOf.delete(sock);
      } else this.#dialBacks--;
    }
    this.outputs.push({ op: "close", sock, abort });
  }

  /** Opens a socket connecting to `to` for `owner`. */
  connect(owner: SockOwner, to: HostPort): SockId {
    const sock = this.id();
    this.socks.set(sock, owner);
    this.outputs.push({ op: "connect", sock, to });
    return sock;
  }

  /** The earliest deadline (monotonic ms), or Infinity. */
  nextTimeout(): number {
    return this.timers.next();
  }

  // -- inputs ------------------------------------------------------------------------------

  /**
   * A connection was accepted on `port` from `remote`; `local` is its address on this side (the
   * destination a PROXY protocol header names), when the driver knows it. Returns its socket id,
   * or null when it is refused (the driver closes it at once).
   */
  accept(port: Port, remote: HostPort, now: number, local?: HostPort): SockId | null {
    if (this.stopping) return null;
    const open = port === "public" ? this.#clients : this.#dialBacks;
    const cap = port === "public" ? this.limits.maxConnections : this.limits.maxDialBacks;
    if (open >= cap) {
      this.emit({
        type: "refused",
        why: port === "public" ? "connections" : "dial-backs",
        client: hostPortText(remote),
        detail: `${open} open on the ${port} port, the limit is ${cap}`,
      });
      return null;
    }
    // with accept_proxy_protocol the peer is the balancer: the client is checked once its
    // header names it (admitProxied)
    if (port === "public" && this.limits.acceptProxyProtocol === true && this.proxyFrom.size > 0) {
      const addr = parseAddress(remote.hostname);
      if (addr === null || !this.proxyFrom.has(addr)) {
        this.emit({
          type: "refused",
          why: "denied",
          client: hostPortText(remote),
          detail: "not a PROXY protocol sender of proxy_protocol_from",
        });
        return null;
      }
    }
    if (port === "public" && this.limits.acceptProxyProtocol !== true) {
      const why = this.admit(remote.hostname, now);
      if (why !== undefined) {
        this.emit({ type: "refused", why: why[0], client: hostPortText(remote), detail: why[1] });
        return null;
      }
    }
    const sock = this.id();
    this.#accepted.set(sock, port);
    if (port === "public") {
      this.#clients++;
      this.#hostOf.set(sock, remote.hostname);
      bump(this.clientsPerHost, remote.hostname, 1);
    } else this.#dialBacks++;
    const owner = port === "public"
      ? new ClientConn(this, sock, remote, now, local)
      : new DialBackIn(this, sock, remote, now);
    this.socks.set(sock, owner);
    this.outputs.push({ op: "read", sock, on: true });
    return sock;
  }

  /**
   * The public port's checks of a new client before any byte is read (docs/architecture.md,
   * "Admission"): the deny and allow lists, then its address's open connections and rate.
   * `host`: its address (an IP literal). Returns the refusal and its detail, or undefined.
   */
  admit(host: string, now: number): [Refusal, string] | undefined {
    const a = this.admission;
    if (a === NO_ADMISSION) return undefined;
    if (this.deny.size > 0 || this.allow.size > 0) {
      const addr = parseAddress(host);
      if (addr === null) return ["denied", `"${host}" is not an IP address`];
      const hit = this.deny.cidrs.find((c) => inCidr(addr, c));
      if (hit !== undefined) return ["denied", `in deny ${hit.text}`];
      if (this.allow.size > 0 && !this.allow.has(addr)) return ["denied", "not in allow"];
    }
    const max = a.maxConnectionsPerClient;
    if (max > 0 && (this.clientsPerHost.get(host) ?? 0) >= max) {
      return ["client-connections", `${max} open from this address (max_connections_per_client)`];
    }
    if (a.clientRate > 0 && !this.clientRates.take(host, a.clientRate, a.clientBurst, now)) {
      return [
        "client-rate",
        `over ${a.clientRate}/s, burst ${a.clientBurst}, from this address (client_rate)`,
      ];
    }
    return undefined;
  }

  /**
   * A public client whose PROXY header named `host` (docs/architecture.md, "Admission"): the
   * admission checks for it, and its open-connection count moves from the balancer's address to
   * its own. Returns the refusal and its detail, or undefined.
   */
  admitProxied(sock: SockId, host: string, now: number): [Refusal, string] | undefined {
    const was = this.#hostOf.get(sock);
    if (was === undefined) return undefined;
    bump(this.clientsPerHost, was, -1);
    const why = this.admit(host, now);
    this.#hostOf.set(sock, host);
    bump(this.clientsPerHost, host, 1);
    return why;
  }

  /** Bytes read from `sock` (valid only during the call). */
  data(sock: SockId, bytes: Uint8Array, now: number): void {
    this.socks.get(sock)?.onData(sock, bytes, now);
    this.#settle();
  }

  /** `sock` reached EOF. */
  eof(sock: SockId, now: number): void {
    this.socks.get(sock)?.onEof(sock, now);
    this.#settle();
  }

  /** `sock` failed (read, write or connect). */
  failed(sock: SockId, failure: SockFailure, now: number): void {
    this.socks.get(sock)?.onFailed(sock, failure, now);
    this.#settle();
  }

  /** A connect asked for by a `connect` output completed. */
  connected(sock: SockId, now: number): void {
    this.socks.get(sock)?.onConnected(sock, now);
    this.#settle();
  }

  /** In a pipe, the driver moved `n` bytes read from `sock` to its peer. Cheap: no outputs. */
  moved(sock: SockId, n: number, now: number): void {
    this.socks.get(sock)?.onMoved(sock, n, now);
  }

  /** The time is `now`: fires every deadline at or before it. */
  timeout(now: number): void {
    this.timers.fire(now);
    this.#settle();
  }

  /** A command of the control plane. */
  command(cmd: Command, now: number): void {
    switch (cmd.type) {
      case "snapshot":
        this.setSnapshot(cmd.snapshot);
        break;
      case "grantPool":
        for (const token of cmd.tokens) {
          const g: Grant = {
            operator: cmd.operator,
            domains: cmd.domains.length === 0 ? null : new Set(cmd.domains),
            idleTimeoutMs: cmd.idleTimeoutMs,
            instance: cmd.instance,
            token,
            timerGen: 0,
            onTimeout: () => {
              if (this.grants.get(token) !== g) return;
              this.grants.delete(token);
              this.emit({
                type: "poolTokensExpired",
                operator: g.operator,
                count: 1,
                ...(g.instance !== undefined ? { instance: g.instance } : {}),
              });
            },
          };
          this.grants.set(token, g);
          this.timers.arm(g, now + this.limits.dialBackTimeoutMs); // as long as a client waits
        }
        break;
      case "grantTicket":
        if (!this.stopping) this.tickets.grant(cmd, now);
        break;
      case "noticeFailed":
        this.waiting.get(cmd.conn)?.noticeFailed(now, cmd.retry === true, cmd.attempt);
        break;
      case "dialBack":
        if (!this.stopping) new NoticeDialBack(this, cmd, now);
        break;
      case "openPooled":
        if (!this.stopping) {
          for (const token of cmd.tokens) new PooledDialBack(this, cmd, token, now);
        }
        break;
      case "close":
        this.closeConns(cmd.conns, cmd.idleOf ?? [], now);
        break;
      case "stop":
        this.stop(now);
        break;
      case "kill":
        this.stop(now);
        for (const owner of new Set(this.socks.values())) owner.onKill(now);
        for (const g of this.grants.values()) this.timers.disarm(g);
        this.grants.clear();
        this.tickets.clear();
        break;
    }
    this.#settle();
  }

  /** Replaces the snapshot whole; live connections keep what they resolved. */
  setSnapshot(s: Snapshot): void {
    // all off (or absent, or a clone of NO_ADMISSION from a worker's message): the fast path
    const given = s.limits.admission;
    const a = given === undefined ||
        (given.allow.length === 0 && given.deny.length === 0 &&
          given.maxConnectionsPerClient === 0 && given.clientRate === 0 &&
          given.maxPendingPerName === 0 && given.nameRate === 0)
      ? NO_ADMISSION
      : given;
    // parsed once per snapshot (the control plane validated every CIDR), reused when unchanged
    const lists = new Map<string, CidrSet>();
    for (const c of [this.allow, this.deny, this.proxyFrom, ...this.routeAllow.values()]) {
      lists.set(c.key, c);
    }
    const parsed = (texts: readonly string[]) => {
      const key = texts.join(",");
      let c = lists.get(key);
      if (c === undefined) lists.set(key, c = new CidrSet(texts));
      return c;
    };
    this.snapshot = s;
    this.admission = a;
    this.allow = parsed(a.allow);
    this.deny = parsed(a.deny);
    this.proxyFrom = parsed(s.limits.proxyProtocolFrom ?? []);
    const routeAllow = new Map<string, CidrSet>();
    for (const [domain, r] of s.publicRoutes) {
      if (r.allow !== undefined && r.allow.length > 0) routeAllow.set(domain, parsed(r.allow));
    }
    this.routeAllow = routeAllow;
    this.publicRoutes = new Map(s.publicRoutes);
    this.privateRoutes = new Map(s.privateRoutes);
  }

  /**
   * Ends the connections `conns` as a kill would (a drain past its grace), and the idle pooled
   * dial-backs of `idleOf`: an operator (all its replicas) or `operator@instance` (the ones
   * pooled at that public replica). A walk over the open sockets: an admin action, rare.
   */
  closeConns(conns: readonly number[], idleOf: readonly string[], now: number): void {
    const ids = new Set(conns);
    const ops = new Set(idleOf);
    for (const owner of new Set(this.socks.values())) {
      if (owner.conn !== undefined && ids.has(owner.conn)) owner.onKill(now);
      else if (
        owner instanceof PooledDialBack &&
        (ops.has(owner.cmd.operator) || ops.has(`${owner.cmd.operator}@${owner.cmd.instance}`))
      ) {
        owner.closeIdle(now);
      }
    }
  }

  /** No new connections; waiting clients, unclaimed dial-backs and idle pooled ones end. */
  stop(now: number): void {
    if (this.stopping) return;
    this.stopping = true;
    for (const owner of new Set(this.socks.values())) owner.onStop(now);
    // unredeemed pool tokens die with the stop: no dial-back is accepted any more
    for (const g of this.grants.values()) this.timers.disarm(g);
    this.grants.clear();
    this.tickets.clear();
  }

  /** Sockets open now. */
  get live(): number {
    return this.socks.size;
  }

  #settle(): void {
    if (this.stopping && !this.#drained && this.socks.size === 0) {
      this.#drained = true;
      this.emit({ type: "drained" });
    }
  }

  // -- the public proxy's tables -----------------------------------------------------------

  /**
   * Takes an idle pooled dial-back of `operator` opened for `domain`, or undefined
   * (docs/architecture.md, "Several private instances"): among the instances with one, that of
   * the fewest live splices (ties: the newest dial-back). With one instance: the newest.
   * `avoid`: an instance weighed only when no other has one (its pooled dial-back just closed
   * unanswered: the rest of its pool may be closing too).
   */
  takeIdle(operator: string, domain: string, avoid?: string): IdlePooled | undefined {
    const list = this.idle.get(operator);
    if (list === undefined) return undefined;
    const several = (this.#idleInstances.get(operator)?.size ?? 0) > 1;
    let best: IdlePooled | undefined;
    let bestLoad = Infinity;
    const seen = several ? new Set<string | undefined>() : undefined;
    for (let i = list.length - 1; i >= 0; i--) {
      const e = list[i]!;
      if (e.domains !== null && !e.domains.has(domain)) continue;
      if (seen === undefined) {
        best = e;
        break;
      }
      if (seen.has(e.instance)) continue; // an older one of an instance already weighed
      seen.add(e.instance);
      const load = this.splicesOf(operator, e.instance) +
        (avoid !== undefined && e.instance === avoid ? 1e9 : 0);
      if (load < bestLoad) {
        best = e;
        bestLoad = load;
        if (load === 0) break; // nothing is less loaded; newer ones won the ties
      }
    }
    if (best !== undefined) this.removeIdle(best);
    return best;
  }

  /** Public: live splices of pooled dial-backs per (operator, instance). */
  readonly #splices = new Map<string, number>();
  /** Public: idle pooled dial-backs per operator and instance ("" when unknown). */
  readonly #idleInstances = new Map<string, Map<string, number>>();

  /** Live splices of `operator`'s `instance` on pooled dial-backs. */
  splicesOf(operator: string, instance: string | undefined): number {
    return this.#splices.get(`${operator}\n${instance ?? ""}`) ?? 0;
  }

  /** A splice of `operator`'s `instance` started (1) or ended (-1). */
  spliced(operator: string, instance: string, by: 1 | -1): void {
    bump(this.#splices, `${operator}\n${instance}`, by);
  }

  /** Idle pooled dial-backs of `operator` per instance ("" when unknown), for tests. */
  idleInstances(operator: string): ReadonlyMap<string, number> {
    return this.#idleInstances.get(operator) ?? new Map();
  }

  /** Public: idle pooled dial-backs of every operator (within `Limits.maxPooled`). */
  idleTotal = 0;

  addIdle(e: IdlePooled): void {
    this.idleTotal++;
    let per = this.#idleInstances.get(e.operator);
    if (per === undefined) this.#idleInstances.set(e.operator, per = new Map());
    bump(per, e.instance ?? "", 1);
    let list = this.idle.get(e.operator);
    if (list === undefined) this.idle.set(e.operator, list = []);
    list.push(e);
  }

  removeIdle(e: IdlePooled): void {
    const list = this.idle.get(e.operator);
    const i = list?.indexOf(e) ?? -1;
    if (i < 0) return;
    this.idleTotal--;
    const per = this.#idleInstances.get(e.operator)!;
    bump(per, e.instance ?? "", -1);
    if (per.size === 0) this.#idleInstances.delete(e.operator);
    list!.splice(i, 1);
    if (list!.length === 0) this.idle.delete(e.operator);
  }
}

/** `host:port`, IPv6 bracketed. */
export function hostPortText(a: HostPort): string {
  return a.hostname.includes(":") ? `[${a.hostname}]:${a.port}` : `${a.hostname}:${a.port}`;
}

/** Adds `by` to a count in `m`, deleting it at 0. */
export function bump(m: Map<string, number>, key: string, by: number): void {
  const n = (m.get(key) ?? 0) + by;
  if (n <= 0) m.delete(key);
  else m.set(key, n);
}
