/**
 * The public proxy's client machine (docs/architecture.md, "The core"): a client on the public port
 * (a PROXY header if configured → the ClientHello → admission → route → take an idle pooled
 * dial-back and wait for its first answer, or wait for a dial-back → replay → pipe; or refuse and
 * linger). The private port's machines are in private_port.ts.
 * @module
 */
import { ProtocolError } from "../../errors.ts";
import type { HostPort } from "../../role.ts";
import { ClientHelloReader } from "../../wire/client_hello.ts";
import type { ProxiedAddresses } from "../../wire/proxy_protocol.ts";
import { ProxyHeaderReader } from "../../wire/proxy_protocol_reader.ts";
import { matchDomain } from "../../wire/names.ts";
import { encodePoolHeader } from "../../wire/pool_header.ts";
import {
  ALERT_DECODE_ERROR,
  ALERT_INTERNAL_ERROR,
  ALERT_UNRECOGNIZED_NAME,
  tlsAlert,
} from "../../wire/tls_alert.ts";
import { TOKEN_BYTES, tokenText } from "../../wire/token.ts";
import type { Refusal } from "../events.ts";
import type { SockFailure, SockId } from "./io.ts";
import { bump, type Engine, hostPortText } from "./engine.ts";
import { Pipe } from "./pipe.ts";
import { Machine } from "./machine.ts";
import type { IdlePooled } from "./private_port.ts";
import { concatBytes, PooledTry } from "./public_pooled.ts";
import { admitName, pendingCap } from "./public_admit.ts";

/** A refused client may send this much more before it is closed (it reads its alert first). */
const LINGER_BYTES = 64 * 1024;

type ClientState = "hello" | "waiting" | "answering" | "lingering" | "done";

/** A client on the public port. */
export class ClientConn extends Machine {
  readonly id: number;
  /** Its id across both proxies (docs/architecture.md, "Connection ids"). */
  readonly connId: string;
  /**
   * The client's address: the peer's, or with `accept_proxy_protocol` the source its PROXY
   * header names, set before anything reads it (docs/architecture.md, "PROXY protocol from a
   * load balancer").
   */
  client: string;
  /** The client's IP literal (what the admission checks match); set with `client`. */
  address: string;
  /** The PROXY header's addresses (client and the balancer's destination), when it had them. */
  proxied: ProxiedAddresses | undefined;
  /**
   * Its address and the one it connected to (the PROXY protocol's, written to the internal
   * server), when the driver knew them; a load balancer's PROXY header replaces them.
   */
  #addresses: { readonly source: HostPort; readonly destination: HostPort } | undefined;
  /** The ALPN protocols of its ClientHello, once read (docs/architecture.md, "ALPN"). */
  #alpn: readonly string[] | undefined;
  state: ClientState = "hello";
  /** Set while a PROXY protocol header is still to be read (before the ClientHello). */
  #proxyHeader: ProxyHeaderReader | undefined;
  #reader: ClientHelloReader;
  #got = 0;
  #lingered = 0;
  #replay: Uint8Array | undefined;
  #sni = "";
  #operator = "";
  #domain = "";
  /**
   * Its tokens by attempt - 1, one per notice (docs/architecture.md, "Re-dispatch"); each claims
   * it; undefined once that notice failed.
   */
  #tokens: (string | undefined)[] = [];
  /** Notices it got: the `attempt` of its last `needDialBack`. */
  #attempt = 0;
  /** Via pool: the dial-back taken, until it answers. */
  #trial: PooledTry | undefined;
  /** Pooled dial-backs it took that closed before answering (each spends a dispatch). */
  #unanswered = 0;
  /** When its dial-back deadline passes (from the hello: a re-dispatch does not move it). */
  #deadline = 0;
  /** The re-dispatch timer: a second deadline beside the machine's own. */
  readonly #redispatch = {
    timerGen: 0,
    onTimeout: (now: number) => this.#dispatch(now, "timer"),
  };
  readonly #accepted: number;
  #hello = 0;

  constructor(engine: Engine, sock: SockId, remote: HostPort, now: number, local?: HostPort) {
    super(engine, sock);
    this.id = engine.id();
    this.connId = engine.connId(this.id);
    this.client = hostPortText(remote);
    this.address = remote.hostname;
    this.#addresses = local === undefined ? undefined : { source: remote, destination: local };
    this.#accepted = now;
    this.#reader = new ClientHelloReader(engine.limits.maxClientHelloBytes);
    if (engine.limits.acceptProxyProtocol === true) this.#proxyHeader = new ProxyHeaderReader();
    // one deadline for the PROXY header and the ClientHello after it
    engine.timers.arm(this, now + engine.limits.helloTimeoutMs);
  }

  /** The host part of the client's address (what the per-client pending cap counts). */
  get host(): string {
    return this.client.slice(0, this.client.lastIndexOf(":"));
  }

  onData(_sock: SockId, bytes: Uint8Array, now: number): void {
    // the client's reads are off while answering, but a driver may have had these in hand
    if (this.state === "answering") return this.#trial!.forward(bytes);
    if (this.state === "lingering") {
      this.#lingered += bytes.length;
      if (this.#lingered > LINGER_BYTES) this.#end(false);
      return;
    }
    if (this.state !== "hello") return;
    this.#got += bytes.length;
    if (this.#proxyHeader !== undefined) {
      const rest = this.#readProxyHeader(bytes, now);
      if (rest === undefined) return;
      this.#got = rest.length; // from here it counts the ClientHello's bytes only
      if (rest.length === 0) return;
      bytes = rest;
    }
    let result;
    try {
      result = this.#reader.push(bytes);
    } catch (err) {
      if (!(err instanceof ProtocolError)) throw err;
      return this.#refuse("bad-hello", ALERT_DECODE_ERROR, now, err.message);
    }
    if (!result.done) return;
    this.#hello = now;
    const extra = this.#reader.extra;
    const hello = result.hello.bytes;
    this.#sni = result.hello.serverName ?? "";
    this.#alpn = result.hello.alpn;
    this.#reader = undefined!; // a held connection keeps nothing of its hello
    this.#route(hello, extra, now);
  }

  /**
   * Feeds the PROXY header reader; returns the bytes after a complete header (the ClientHello's
   * start), or undefined while it waits or once the connection is refused or closed.
   */
  #readProxyHeader(bytes: Uint8Array, now: number): Uint8Array | undefined {
    let res;
    try {
      res = this.#proxyHeader!.push(bytes);
    } catch (err) {
      if (!(err instanceof ProtocolError)) throw err;
      return this.#refusePlain("bad-proxy-header", err.message);
    }
    if (!res.done) return undefined;
    this.#proxyHeader = undefined;
    const h = res.header;
    if (h.command === "local") {
      // a balancer's health check: it learnt the port accepts; nothing to serve
      this.#refusePlain(
        "health-check",
        h.version === 2 ? "PROXY v2 LOCAL" : "PROXY v1 UNKNOWN",
        false,
      );
      return undefined;
    }
    if (h.addresses !== undefined) {
      this.proxied = h.addresses;
      this.client = hostPortText({
        hostname: h.addresses.source.address,
        port: h.addresses.source.port,
      });
      this.address = h.addresses.source.address;
      // the balancer's header names the client and the address it connected to: these go on
      // to the internal server's PROXY header
      this.#addresses = {
        source: { hostname: h.addresses.source.address, port: h.addresses.source.port },
        destination: {
          hostname: h.addresses.destination.address,
          port: h.addresses.destination.port,
        },
      };
    }
    // the admission checks were not made at accept (that was the balancer): make them now
    const why = this.engine.admitProxied(this.sock, this.address, now);
    if (why !== undefined) {
      this.#refusePlain(why[0], why[1], false);
      return undefined;
    }
    return res.rest;
  }

  /** Refuses before the ClientHello with no alert (a balancer speaks no TLS): a plain close. */
  #refusePlain(why: Refusal, detail: string, abort = true): undefined {
    this.#proxyHeader = undefined;
    this.#reader = undefined!;
    this.#refused(why, detail);
    this.#end(abort);
    return undefined;
  }

  /** Its `refused` event, plain: with its ALPN list (once read) when `alpn`. */
  #refused(why: Refusal, detail: string | undefined, alpn = false): void {
    this.engine.emit({
      type: "refused",
      why,
      conn: this.id,
      connId: this.connId,
      client: this.client,
      ...(alpn && this.#alpn !== undefined ? { alpn: this.#alpn } : {}),
      ...(detail !== undefined ? { detail } : {}),
    });
  }

  #route(hello: Uint8Array, extra: Uint8Array, now: number): void {
    const e = this.engine;
    const routes = e.publicRoutes;
    const domain = this.#sni === "" ? undefined : matchDomain(this.#sni, (d) => routes.has(d));
    if (domain === undefined) {
      return this.#refuse(
        "unknown-name",
        ALERT_UNRECOGNIZED_NAME,
        now,
        this.#sni === "" ? "no SNI" : `no announcement for "${this.#sni}"`,
      );
    }
    this.#operator = routes.get(domain)!.operator;
    this.#domain = domain;
    const denied = admitName(e, domain, this.address, now);
    if (denied !== undefined) return this.#refuse(denied[0], denied[1], now, denied[2]);
    const pooled = e.takeIdle(this.#operator, domain);
    if (pooled !== undefined) return this.#try(pooled, concatBytes(hello, extra), now);
    this.#wait(concatBytes(hello, extra), now);
  }

  /** No idle pooled dial-back: within the pending caps, a token and a notice, then `waiting`. */
  #wait(replay: Uint8Array, now: number): void {
    const e = this.engine;
    const domain = this.#domain;
    const cap = pendingCap(e, this.#operator, domain, this.host); // `unanswered` checked it too
    if (cap === "name-pending") {
      const n = e.admission.maxPendingPerName;
      return this.#refuse(cap, ALERT_INTERNAL_ERROR, now, `${n} wait (max_pending_per_name)`);
    }
    if (cap !== undefined) return this.#refuse(cap, undefined, now);
    bump(e.pendingPerOperator, this.#operator, 1);
    bump(e.pendingPerClient, this.host, 1);
    bump(e.pendingPerName, domain, 1);
    e.waiting.set(this.id, this);
    this.#replay = replay;
    this.state = "waiting";
    e.out({ op: "read", sock: this.sock, on: false });
    // from the hello; a client back from a pooled dial-back that closed keeps the one it had
    if (this.#deadline === 0) this.#deadline = now + e.limits.dialBackTimeoutMs;
    e.timers.arm(this, this.#deadline);
    this.#notice(now, this.#unanswered > 0 ? "pooled" : undefined);
  }

  /** Refused `dial-back-closed` (alert 80): its pooled dial-back closed and it cannot go on. */
  #closed(now: number, detail: string): void {
    this.#refuse("dial-back-closed", ALERT_INTERNAL_ERROR, now, detail);
  }

  /** Dispatches spent: notices and pooled dial-backs that closed unanswered. */
  get #dispatches(): number {
    return this.#attempt + this.#unanswered;
  }
  /** Takes `pooled` for this client; the pipe waits for its first answer (public_pooled.ts). */
  #try(pooled: IdlePooled, replay: Uint8Array, now: number): void {
    const e = this.engine;
    const header = encodePoolHeader(this.#sni, this.connId, this.#addresses);
    const bytes = concatBytes(header, replay);
    this.#trial = new PooledTry(e, pooled, this, this.#operator, header.length, bytes, now);
    this.state = "answering";
    e.timers.disarm(this);
    e.out({ op: "read", sock: this.sock, on: false });
  }

  /** Its pooled dial-back answered (`answer`), or is given up on: the pipe. */
  answered(answer: Uint8Array | undefined, now: number): Pipe {
    const t = this.#trial!;
    this.#trial = undefined;
    t.done();
    return this.#pipe(
      t.sock,
      t.written,
      t.header,
      now,
      "pool",
      answer?.slice(),
      t.instance,
      this.#attempt > 0 ? this.#attempt : undefined,
      t.taken,
    );
  }

  /**
   * Its pooled dial-back closed before its first byte: nothing reached the client, which goes to
   * another dial-back with its hello while dispatches remain, or is refused (`dial-back-closed`).
   */
  unanswered(why: "eof" | "error", detail: string | undefined, now: number): void {
    const t = this.#trial!;
    this.#trial = undefined;
    const e = this.engine;
    this.#unanswered++;
    // stopping, or past the hello's deadline: nothing may serve it any more
    const late = e.stopping || (this.#deadline > 0 && now >= this.#deadline);
    let retry = !late && this.#dispatches < (e.limits.maxDispatches ?? 1);
    // another instance's idle one first (the rest of that pool may be closing too), else a
    // notice, unless a pending cap refuses it: then no retry is made, and the event says so
    const pooled = retry ? e.takeIdle(this.#operator, this.#domain, t.instance) : undefined;
    const cap = retry && pooled === undefined
      ? pendingCap(e, this.#operator, this.#domain, this.host)
      : undefined;
    if (cap !== undefined) retry = false;
    e.emit({
      type: "poolDropped",
      operator: this.#operator,
      why,
      ...(detail !== undefined ? { detail } : {}),
      ...(t.instance !== undefined ? { instance: t.instance } : {}),
      conn: this.id,
      connId: this.connId,
      client: this.client,
      domain: this.#sni,
      retry,
    });
    if (!retry) {
      if (cap !== undefined) return this.#closed(now, `then ${cap}`);
      if (late && !e.stopping) return this.#refuse("expired", ALERT_INTERNAL_ERROR, now);
      const of = t.instance !== undefined ? ` of instance ${t.instance}` : "";
      const what = `${why}${detail !== undefined ? ` ${detail}` : ""}`;
      const text = `the pooled dial-back${of} closed before answering (${what})`;
      return this.#closed(now, e.stopping ? `${text}; stopping` : text);
    }
    const replay = t.written.subarray(t.header);
    if (pooled !== undefined) return this.#try(pooled, replay, now);
    this.#wait(replay, now);
  }

  /** A new token and its `needDialBack` (attempt + 1); arms the re-dispatch timer if one remains. */
  #notice(now: number, why: "timer" | "failed" | "pooled" | undefined): void {
    const e = this.engine;
    const raw = new Uint8Array(TOKEN_BYTES);
    let token: string;
    do {
      e.random(raw);
      token = tokenText(raw);
    } while (e.pending.has(token));
    this.#tokens.push(token);
    e.pending.set(token, this);
    this.#attempt++;
    const after = e.limits.redispatchAfterMs ?? 0;
    if (
      after > 0 && this.#dispatches < (e.limits.maxDispatches ?? 1) && now + after < this.#deadline
    ) {
      e.timers.arm(this.#redispatch, now + after);
    } else e.timers.disarm(this.#redispatch);
    const instances = e.publicRoutes.get(this.#domain)?.instances;
    e.emit({
      type: "needDialBack",
      conn: this.id,
      connId: this.connId,
      operator: this.#operator,
      domain: this.#sni,
      token,
      client: this.client,
      ...(this.#addresses !== undefined
        ? { local: hostPortText(this.#addresses.destination) }
        : {}),
      attempt: this.#attempt,
      ...(why !== undefined ? { why } : {}),
      ...(instances !== undefined && instances.length > 0 ? { instances } : {}),
    });
  }

  /**
   * Re-dispatch (docs/architecture.md, "Re-dispatch"): the hello is still buffered, nothing was
   * forwarded, so the client cannot tell. An idle pooled dial-back that came meanwhile serves it
   * at once; else a new notice. Earlier tokens stay valid: whichever dial-back comes first wins.
   */
  #dispatch(now: number, why: "timer" | "failed"): void {
    if (this.state !== "waiting") return;
    const e = this.engine;
    const pooled = e.takeIdle(this.#operator, this.#domain);
    if (pooled !== undefined) {
      this.#unpend();
      const replay = this.#replay!;
      this.#replay = undefined;
      return this.#try(pooled, replay, now);
    }
    this.#notice(now, why);
  }

  #unpend(): void {
    const e = this.engine;
    if (e.waiting.get(this.id) !== this) return;
    // every token of its notices: a late dial-back for an earlier one gets bad-token
    for (const t of this.#tokens) {
      if (t !== undefined && e.pending.get(t) === this) e.pending.delete(t);
    }
    this.#tokens.fill(undefined); // by attempt still: a client may wait again (unanswered)
    e.timers.disarm(this.#redispatch);
    e.waiting.delete(this.id);
    bump(e.pendingPerOperator, this.#operator, -1);
    bump(e.pendingPerClient, this.host, -1);
    bump(e.pendingPerName, this.#domain, -1);
  }

  /** Its dial-back came (token claimed): replay the hello to it, then pipe. */
  claimed(dialBack: SockId, early: Uint8Array, now: number, token: string): void {
    const attempt = this.#tokens.indexOf(token) + 1;
    this.#unpend();
    const replay = this.#replay!;
    this.#replay = undefined;
    this.#pipe(dialBack, replay, 0, now, "notice", early, undefined, attempt);
  }

  /**
   * The notice of `attempt` (absent: the last) failed. `retry`: the control plane has another
   * instance to try — re-dispatch while attempts remain; else refuse the client now.
   */
  noticeFailed(now: number, retry: boolean, attempt = this.#attempt): void {
    if (this.state !== "waiting") return;
    const e = this.engine;
    // no dial-back will come for that notice's token
    const failed = this.#tokens[attempt - 1];
    if (failed !== undefined && e.pending.get(failed) === this) e.pending.delete(failed);
    this.#tokens[attempt - 1] = undefined;
    // an older notice failed while a newer one is in flight: that one may still serve
    if (attempt < this.#attempt) return;
    if (retry && this.#dispatches < (e.limits.maxDispatches ?? 1)) {
      return this.#dispatch(now, "failed");
    }
    // an earlier notice that did not fail may still bring its dial-back, until the deadline
    if (this.#tokens.some((t) => t !== undefined)) return;
    this.#unpend();
    this.#refuse("notice-failed", ALERT_INTERNAL_ERROR, now);
  }

  /**
   * Pipes to `dialBack` after `replay` (a pool header of `header` bytes, the hello): written to it
   * here, or already (`taken`: the time a pooled dial-back was taken and the replay written).
   */
  #pipe(
    dialBack: SockId,
    replay: Uint8Array,
    header: number,
    now: number,
    via: "pool" | "notice",
    early?: Uint8Array,
    instance?: string,
    attempt?: number,
    taken?: number,
  ): Pipe {
    const e = this.engine;
    this.state = "done";
    e.timers.disarm(this);
    if (taken === undefined) e.out({ op: "write", sock: dialBack, bytes: replay });
    // bytes that came with the token go to the client before the pipe, and count as down
    if (early !== undefined && early.length > 0) {
      e.out({ op: "write", sock: this.sock, bytes: early });
    }
    const pipe = new Pipe(
      e,
      this.sock,
      dialBack,
      ["client", "dial-back"],
      {
        conn: this.id,
        connId: this.connId,
        via,
        operator: this.#operator,
        domain: this.#sni,
        client: this.client,
        alpn: this.#alpn ?? [],
        phases: {
          accepted: this.#accepted,
          hello: this.#hello,
          dialBack: taken ?? now,
          internal: 0,
        },
        ...(instance !== undefined ? { instance } : {}),
        ...(attempt !== undefined ? { attempt } : {}),
      },
      now,
      replay.length - header,
    );
    pipe.down += early?.length ?? 0;
    return pipe;
  }

  /** Refuses the client: a TLS alert and a linger (`alert` given), or a plain close. */
  #refuse(why: Refusal, alert: number | undefined, now: number, detail?: string): void {
    const e = this.engine;
    e.emit({
      type: "refused",
      why,
      conn: this.id,
      connId: this.connId,
      client: this.client,
      ...(this.#sni !== "" ? { domain: this.#sni } : {}),
      ...(this.#operator !== "" ? { operator: this.#operator } : {}),
      ...(this.#alpn !== undefined ? { alpn: this.#alpn } : {}),
      ...(detail !== undefined ? { detail } : {}),
      ...(why === "dial-back-closed" && this.#attempt > 0 ? { attempt: this.#attempt } : {}),
    });
    this.#reader = undefined!;
    this.#replay = undefined;
    if (alert === undefined) return this.#end(true);
    // closing with unread input sends a reset, which can discard the alert at the client
    this.state = "lingering";
    e.out({ op: "write", sock: this.sock, bytes: tlsAlert(alert) });
    e.out({ op: "shutdown", sock: this.sock });
    e.out({ op: "read", sock: this.sock, on: true });
    e.timers.arm(this, now + e.limits.lingerMs);
  }

  #end(abort: boolean): void {
    this.state = "done";
    this.engine.timers.disarm(this);
    this.engine.close(this.sock, abort);
  }

  onEof(sock: SockId, now: number): void {
    // the client's half-close while answering: the pipe carries it
    if (this.state === "answering") return this.answered(undefined, now).onEof(sock, now);
    if (this.state === "lingering") return this.#end(false);
    if (this.state !== "hello") return;
    if (this.#proxyHeader !== undefined) {
      return void this.#refusePlain(
        "bad-proxy-header",
        this.#got === 0
          ? "EOF before a PROXY protocol header"
          : `Cannot read PROXY protocol header: connection ended after ${this.#got} bytes`,
        false,
      );
    }
    if (this.#got === 0) {
      this.#refused("bad-hello", "EOF"); // a connection that sent nothing (a port probe): no alert
      return this.#end(false);
    }
    this.#refuse(
      "bad-hello",
      ALERT_DECODE_ERROR,
      now,
      `Cannot read ClientHello: connection ended after ${this.#got} bytes`,
    );
  }

  onFailed(sock: SockId, failure: SockFailure, now: number): void {
    // the client failed while answering: the pipe ends it
    if (this.state === "answering") {
      return this.answered(undefined, now).onFailed(sock, failure, now);
    }
    if (this.state === "hello") {
      const why = this.#proxyHeader !== undefined ? "bad-proxy-header" : "bad-hello";
      this.#refused(why, `${failure.op} failed: ${failure.code}`);
    }
    this.#unpend();
    if (this.state === "waiting") this.#refused("expired", failure.code, true);
    this.#end(true);
  }

  onTimeout(now: number): void {
    switch (this.state) {
      case "hello":
        return this.#refuse(
          "hello-timeout",
          undefined,
          now,
          this.#proxyHeader !== undefined ? "no complete PROXY protocol header" : undefined,
        );
      case "waiting":
        this.#unpend();
        return this.#refuse("expired", ALERT_INTERNAL_ERROR, now);
      case "lingering":
        return this.#end(false);
    }
  }

  onStop(now: number): void {
    if (this.state === "hello") return this.#end(true);
    if (this.state === "waiting") {
      this.#unpend();
      this.#refuse("expired", ALERT_INTERNAL_ERROR, now, "stopping");
    }
  }

  override onKill(now: number): void {
    // a taken pooled dial-back is a splice: it ends with the kill
    if (this.state === "answering") return this.answered(undefined, now).onKill(now);
    this.#unpend();
    this.#end(true);
  }
}
