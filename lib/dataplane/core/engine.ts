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
  Command,
  Limits,
  PlaneRole,
  PrivateRoute,
  PublicRoute,
  Snapshot,
} from "../snapshot.ts";
import { emptySnapshot } from "../snapshot.ts";
import type { DataEvent } from "../events.ts";
import type { Output, Port, SockFailure, SockId } from "./io.ts";
import { Timers } from "./timers.ts";
import type { TimerOwner } from "./timers.ts";
import { ClientConn, DialBackIn, type Grant, IdlePooled } from "./public_conns.ts";
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
  /** Public: clients waiting for a dial-back, by token (base64). */
  readonly pending = new Map<string, ClientConn>();
  /** The same clients by connection id (for the control plane's noticeFailed). */
  readonly waiting = new Map<number, ClientConn>();
  readonly pendingPerOperator = new Map<string, number>();
  readonly pendingPerClient = new Map<string, number>();
  /** Public: pool tokens not yet redeemed. */
  readonly grants = new Map<string, Grant>();
  /** Public: pool tickets (docs/architecture.md, "Pool tickets"). */
  readonly tickets: Tickets = new Tickets(this);
  /** Public: idle pooled dial-backs per operator, newest last. */
  readonly idle = new Map<string, IdlePooled[]>();
  snapshot: Snapshot = emptySnapshot();
  publicRoutes: ReadonlyMap<string, PublicRoute> = new Map();
  privateRoutes: ReadonlyMap<string, PrivateRoute> = new Map();
  stopping = false;
  #drained = false;
  /** Accepted sockets and their port, for the two budgets. */
  #accepted = new Map<SockId, Port>();
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
      if (port === "public") this.#clients--;
      else this.#dialBacks--;
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
    const sock = this.id();
    this.#accepted.set(sock, port);
    if (port === "public") this.#clients++;
    else this.#dialBacks++;
    const owner = port === "public"
      ? new ClientConn(this, sock, remote, now, local)
      : new DialBackIn(this, sock, remote, now);
    this.socks.set(sock, owner);
    this.outputs.push({ op: "read", sock, on: true });
    return sock;
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
            token,
            timerGen: 0,
            onTimeout: () => {
              if (this.grants.get(token) !== g) return;
              this.grants.delete(token);
              this.emit({ type: "poolTokensExpired", operator: g.operator, count: 1 });
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
        this.waiting.get(cmd.conn)?.noticeFailed(now);
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
    this.snapshot = s;
    this.publicRoutes = new Map(s.publicRoutes);
    this.privateRoutes = new Map(s.privateRoutes);
  }

  /**
   * Ends the connections `conns` as a kill would (a drain past its grace), and the idle pooled
   * dial-backs of the operators `idleOf`. A walk over the open sockets: an admin action, rare.
   */
  closeConns(conns: readonly number[], idleOf: readonly string[], now: number): void {
    const ids = new Set(conns);
    const ops = new Set(idleOf);
    for (const owner of new Set(this.socks.values())) {
      if (owner.conn !== undefined && ids.has(owner.conn)) owner.onKill(now);
      else if (owner instanceof PooledDialBack && ops.has(owner.cmd.operator)) {
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

  /** Takes the newest idle pooled dial-back of `operator` opened for `domain`, or undefined. */
  takeIdle(operator: string, domain: string): IdlePooled | undefined {
    const list = this.idle.get(operator);
    if (list === undefined) return undefined;
    for (let i = list.length - 1; i >= 0; i--) {
      const e = list[i]!;
      if (e.domains !== null && !e.domains.has(domain)) continue;
      this.removeIdle(e);
      return e;
    }
    return undefined;
  }

  /** Public: idle pooled dial-backs of every operator (within `Limits.maxPooled`). */
  idleTotal = 0;

  addIdle(e: IdlePooled): void {
    this.idleTotal++;
    let list = this.idle.get(e.operator);
    if (list === undefined) this.idle.set(e.operator, list = []);
    list.push(e);
  }

  removeIdle(e: IdlePooled): void {
    const list = this.idle.get(e.operator);
    const i = list?.indexOf(e) ?? -1;
    if (i < 0) return;
    this.idleTotal--;
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
