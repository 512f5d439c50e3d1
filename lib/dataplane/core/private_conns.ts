/**
 * The private proxy's machines (docs/architecture.md, "The core"): a dial-back for a notice
 * (connect the public proxy's private port and the internal server at once, present the token,
 * pipe) and a pooled dial-back (connect, present the token, wait idle for a pool header, look the
 * name up in the snapshot, connect the internal server, write the ClientHello, pipe).
 * @module
 */
import { ProtocolError } from "../../errors.ts";
import type { HostPort } from "../../role.ts";
import { matchName } from "../../wire/names.ts";
import { decodePoolHeader, MAX_POOL_HEADER_BYTES } from "../../wire/pool_header.ts";
import { decodeToken } from "../../wire/token.ts";
import {
  encodeProxyHeader,
  proxiedAddresses,
  type ProxyProtocolVersion,
} from "../../wire/proxy_protocol.ts";
import type { Command } from "../snapshot.ts";
import type { EndReason } from "../events.ts";
import type { SockFailure, SockId } from "./io.ts";
import { type Engine, hostPortText, type SockOwner } from "./engine.ts";
import { Pipe } from "./pipe.ts";

/** How much later than the public side the private side gives up an idle pooled dial-back. */
export const IDLE_SLACK_MS = 2000;

type DialBackCommand = Extract<Command, { type: "dialBack" }>;
type OpenPooledCommand = Extract<Command, { type: "openPooled" }>;

/**
 * The PROXY protocol header for an internal server (docs/architecture.md, "The PROXY protocol"):
 * the client's address and the one it connected to, the SNI in v2; UNKNOWN (v1) or LOCAL (v2)
 * when the public proxy sent no addresses.
 */
function proxyHeader(
  version: ProxyProtocolVersion,
  source: HostPort | undefined,
  destination: HostPort | undefined,
  sni: string,
): Uint8Array {
  const a = source !== undefined && destination !== undefined
    ? proxiedAddresses(source, destination)
    : null;
  return encodeProxyHeader(version, a, sni);
}

/** The client's address as the private side's events show it, or "" when not known. */
function clientText(source: HostPort | undefined): string {
  return source === undefined ? "" : hostPortText(source);
}

function failure(side: "dial-back" | "internal", f: SockFailure): EndReason {
  return { kind: "error", side, op: f.op, code: f.code };
}

/** A dial-back for a notice: both connects at once, the token, then the pipe. */
export class NoticeDialBack implements SockOwner {
  timerGen = 0;
  readonly id: number;
  /** The notice's connection id, or one of this data plane's (docs/architecture.md, "Connection ids"). */
  readonly connId: string;
  readonly dialBack: SockId;
  readonly internal: SockId;
  #dialedAt = 0;
  #connectedAt = 0;
  #dialDeadline: number;
  #connectDeadline: number;
  #done = false;
  readonly #accepted: number;

  get conn(): number {
    return this.id;
  }

  constructor(readonly engine: Engine, readonly cmd: DialBackCommand, now: number) {
    this.id = engine.id();
    this.connId = cmd.conn ?? engine.connId(this.id);
    this.#accepted = now;
    const token = decodeToken(cmd.token);
    // the control plane checked it; a bad one here is a bug there, refused like a failed connect
    this.dialBack = engine.connect(this, cmd.endpoint);
    this.internal = engine.connect(this, cmd.internal);
    this.#dialDeadline = now + engine.limits.dialTimeoutMs;
    this.#connectDeadline = now + engine.limits.connectTimeoutMs;
    this.#token = token;
    engine.timers.arm(this, Math.min(this.#dialDeadline, this.#connectDeadline));
  }

  #token: Uint8Array | null;

  onConnected(sock: SockId, now: number): void {
    if (sock === this.dialBack) {
      this.#dialedAt = now;
      if (this.#token === null) {
        return this.#fail("dial-back", {
          kind: "error",
          side: "dial-back",
          op: "write",
          code: "bad token",
        });
      }
      this.engine.out({ op: "write", sock, bytes: this.#token });
    } else {
      this.#connectedAt = now;
      // the header goes first: the ClientHello comes through the pipe, after what is queued
      const c = this.cmd;
      if (c.proxyProtocol !== undefined) {
        const bytes = proxyHeader(c.proxyProtocol, c.source, c.destination, c.domain);
        this.engine.out({ op: "write", sock, bytes });
      }
    }
    if (this.#dialedAt > 0 && this.#connectedAt > 0) {
      this.engine.timers.disarm(this);
      new Pipe(this.engine, this.dialBack, this.internal, ["dial-back", "internal"], {
        conn: this.id,
        connId: this.connId,
        via: "notice",
        operator: this.cmd.operator,
        domain: this.cmd.domain,
        client: clientText(this.cmd.source),
        phases: {
          accepted: this.#accepted,
          hello: 0,
          dialBack: this.#dialedAt,
          internal: this.#connectedAt,
        },
      }, now);
      this.#done = true;
    } else {
      this.engine.timers.arm(this, this.#dialedAt > 0 ? this.#connectDeadline : this.#dialDeadline);
    }
  }

  #fail(side: "dial-back" | "internal", reason: EndReason): void {
    if (this.#done) return;
    this.#done = true;
    this.engine.timers.disarm(this);
    this.engine.close(this.dialBack, true);
    this.engine.close(this.internal, true);
    this.engine.emit({
      type: "connectFailed",
      conn: this.id,
      connId: this.connId,
      via: "notice",
      side,
      operator: this.cmd.operator,
      domain: this.cmd.domain,
      target: hostPortText(side === "dial-back" ? this.cmd.endpoint : this.cmd.internal),
      reason,
    });
  }

  onFailed(sock: SockId, f: SockFailure): void {
    const side = sock === this.dialBack ? "dial-back" : "internal";
    this.#fail(side, failure(side, f));
  }

  onEof(sock: SockId): void {
    const side = sock === this.dialBack ? "dial-back" : "internal";
    this.#fail(side, { kind: "error", side, op: "read", code: "EOF" });
  }

  onData(): void {} // nothing is read before the pipe
  onMoved(): void {}

  onTimeout(now: number): void {
    const side = this.#dialedAt === 0 && now >= this.#dialDeadline ? "dial-back" : "internal";
    this.#fail(side, { kind: "timeout", phase: "connect", side });
  }

  onStop(): void {} // a connect under way finishes (or fails) on its own

  onKill(): void {
    this.#fail("dial-back", { kind: "stopped" });
  }
}

type PooledState = "dialing" | "idle" | "connecting" | "done";

/** A pooled dial-back of the private proxy, from its connect to its client's pipe. */
export class PooledDialBack implements SockOwner {
  timerGen = 0;
  readonly id: number;
  readonly sock: SockId;
  state: PooledState = "dialing";
  #internal: SockId = 0;
  #header: Uint8Array | null = null;
  #rest: Uint8Array | null = null;
  #domain = "";
  /** The pool header's connection id, or one of this data plane's (a peer without ids). */
  #connId = "";
  #target: HostPort | undefined;
  /** The PROXY protocol header for the internal server (the route's), or null. */
  #proxyHeader: Uint8Array | null = null;
  #source: HostPort | undefined;
  /** EOF from the dial-back while the internal server connects. */
  #eof = false;
  #accepted: number;
  #dialedAt = 0;

  /** Its connection id once a client came on it (before that it serves no connection). */
  get conn(): number | undefined {
    return this.state === "connecting" ? this.id : undefined;
  }

  constructor(
    readonly engine: Engine,
    readonly cmd: OpenPooledCommand,
    readonly token: string,
    now: number,
  ) {
    this.id = engine.id();
    this.#accepted = now;
    this.sock = engine.connect(this, cmd.endpoint);
    engine.timers.arm(this, now + engine.limits.dialTimeoutMs);
  }

  onConnected(sock: SockId, now: number): void {
    const e = this.engine;
    if (sock === this.sock) {
      const token = decodeToken(this.token);
      if (token === null) return this.#drop("failed", "bad token");
      this.#dialedAt = now;
      this.state = "idle";
      e.out({ op: "write", sock, bytes: token });
      e.out({ op: "read", sock, on: true });
      e.timers.arm(this, now + this.cmd.idleTimeoutMs + IDLE_SLACK_MS);
      e.emit({ type: "poolIdle", operator: this.cmd.operator, ...this.#instance(), at: now });
      return;
    }
    // the internal server: the ClientHello (and whatever came with it) first, then the pipe
    this.state = "done";
    e.timers.disarm(this);
    const rest = this.#rest!;
    this.#rest = null;
    if (this.#proxyHeader !== null) e.out({ op: "write", sock, bytes: this.#proxyHeader });
    this.#proxyHeader = null;
    if (rest.length > 0) e.out({ op: "write", sock, bytes: rest });
    const pipe = new Pipe(
      e,
      this.sock,
      sock,
      ["dial-back", "internal"],
      {
        conn: this.id,
        connId: this.#connId,
        via: "pool",
        operator: this.cmd.operator,
        domain: this.#domain,
        client: clientText(this.#source),
        phases: { accepted: this.#accepted, hello: 0, dialBack: this.#dialedAt, internal: now },
      },
      now,
      rest.length,
    );
    if (this.#eof) pipe.onEof(this.sock, now);
  }

  onData(_sock: SockId, bytes: Uint8Array, now: number): void {
    if (this.state === "connecting") {
      this.#rest = append(this.#rest, bytes); // more of the hello: written before the pipe
      // a client cannot make this grow without bound while the internal server connects
      if (this.#rest.length > this.engine.limits.maxClientHelloBytes) {
        this.engine.out({ op: "read", sock: this.sock, on: false });
      }
      return;
    }
    if (this.state !== "idle") return;
    const buf = this.#header = append(this.#header, bytes);
    let h;
    try {
      h = decodePoolHeader(buf);
    } catch (err) {
      if (!(err instanceof ProtocolError)) throw err;
      return this.#refuse(err.message);
    }
    if (h === null) {
      if (buf.length > MAX_POOL_HEADER_BYTES) this.#refuse("pool header too long");
      return;
    }
    this.#header = null;
    // the connection starts now: the time it sat idle in the pool is not its set-up
    this.#accepted = now;
    this.#domain = h.name;
    this.#connId = h.conn ?? this.engine.connId(this.id);
    const route = matchName(h.name, this.engine.privateRoutes);
    if (route === undefined) return this.#refuse(`${JSON.stringify(h.name)} is not announced here`);
    const e = this.engine;
    e.emit({
      type: "poolUsed",
      conn: this.id,
      connId: this.#connId,
      operator: this.cmd.operator,
      ...this.#instance(),
      domain: h.name,
    });
    this.state = "connecting";
    this.#rest = buf.slice(h.length);
    this.#target = route.internal;
    this.#source = h.source;
    if (route.proxyProtocol !== undefined) {
      this.#proxyHeader = proxyHeader(route.proxyProtocol, h.source, h.destination, h.name);
    }
    this.#internal = e.connect(this, route.internal);
    e.timers.arm(this, now + e.limits.connectTimeoutMs);
  }

  /** The public replica it is pooled at, for its events (absent: an unbound pool's). */
  #instance(): { instance?: string } {
    return this.cmd.instance !== undefined ? { instance: this.cmd.instance } : {};
  }

  #refuse(detail: string): void {
    this.state = "done";
    this.engine.timers.disarm(this);
    this.engine.close(this.sock, true);
    this.engine.emit({
      type: "refused",
      why: "unknown-pooled-name",
      ...(this.#connId !== "" ? { conn: this.id, connId: this.#connId } : {}),
      client: this.cmd.operator,
      operator: this.cmd.operator,
      ...this.#instance(),
      domain: this.#domain,
      detail,
    });
  }

  #drop(
    why: "eof" | "error" | "timeout" | "stopping" | "failed",
    detail?: string,
    now?: number,
  ): void {
    const idleMs = now !== undefined && this.state === "idle" ? now - this.#dialedAt : undefined;
    this.state = "done";
    this.engine.timers.disarm(this);
    this.engine.close(this.sock, true);
    this.engine.emit({
      type: "poolDropped",
      operator: this.cmd.operator,
      ...this.#instance(),
      why,
      ...(detail !== undefined ? { detail } : {}),
      ...(idleMs !== undefined ? { idleMs } : {}),
    });
  }

  #connectFailed(reason: EndReason, side: "dial-back" | "internal" = "internal"): void {
    this.state = "done";
    this.engine.timers.disarm(this);
    this.engine.close(this.sock, true);
    this.engine.close(this.#internal, true);
    this.engine.emit({
      type: "connectFailed",
      conn: this.id,
      connId: this.#connId,
      via: "pool",
      side,
      operator: this.cmd.operator,
      domain: this.#domain,
      target: hostPortText(side === "internal" ? this.#target! : this.cmd.endpoint),
      reason,
    });
  }

  onFailed(sock: SockId, f: SockFailure, now: number): void {
    if (this.state === "dialing") return this.#drop("failed", `${f.op} failed: ${f.code}`);
    if (this.state === "idle") return this.#drop("error", f.code, now);
    if (this.state !== "connecting") return;
    if (sock === this.#internal) return this.#connectFailed(failure("internal", f));
    this.#connectFailed(failure("dial-back", f), "dial-back");
  }

  onEof(sock: SockId, now: number): void {
    if (this.state === "idle") return this.#drop("eof", undefined, now);
    // the client half-closed right after its hello: pass the EOF on once the pipe is up
    if (this.state === "connecting" && sock === this.sock) this.#eof = true;
  }

  onTimeout(): void {
    if (this.state === "dialing") return this.#drop("failed", "connect timed out");
    if (this.state === "idle") {
      return this.#drop("timeout", `idle for ${this.cmd.idleTimeoutMs + IDLE_SLACK_MS} ms`);
    }
    if (this.state === "connecting") {
      this.#connectFailed({ kind: "timeout", phase: "connect", side: "internal" });
    }
  }

  onMoved(): void {}

  onStop(): void {
    if (this.state === "dialing" || this.state === "idle") this.#drop("stopping");
  }

  /** Closes it if it waits idle for a client (its operator's pool stopped: a drain). */
  closeIdle(now: number): void {
    if (this.state === "idle") this.#drop("stopping", undefined, now);
  }

  onKill(): void {
    if (this.state === "connecting") return this.#connectFailed({ kind: "stopped" });
    if (this.state !== "done") this.#drop("stopping");
  }
}

function append(a: Uint8Array | null, b: Uint8Array): Uint8Array {
  if (a === null || a.length === 0) return b.slice();
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}
