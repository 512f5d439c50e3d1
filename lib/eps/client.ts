/**
 * The client a proxy uses to reach its own EPS server: one mTLS link carrying a yamux session,
 * calls out (`operator.method`) and calls in (`serve(method)`), reconnecting transparently.
 * This is the only module of lib/eps that lib/proxy imports.
 * @module
 */
import { LinkClosedError, RpcCode, RpcError, SettingsError } from "../errors.ts";
import { errorText, logger } from "../log.ts";
import type { NodeTlsConn } from "../net/node_tls_conn.ts";
import { formatHostPort } from "../role.ts";
import type { EpsClientSettings } from "../settings/eps_client.ts";
import { defaultInstanceName, isInstanceName } from "../settings/schema.ts";
import {
  commonNameOf,
  keepDialling,
  Link,
  type LinkTls,
  loadLinkTls,
  readLinkTlsSync,
  untilSettledOrAborted,
} from "./link.ts";
import { checkOwnCertificate } from "./own_certificate.ts";
import { callOnStream, DeadlineClock, serveStream } from "./rpc.ts";
import { ATTACH_METHOD, splitMethod } from "./router.ts";

export { type EpsClientSettings, parseEpsClientSettings } from "../settings/eps_client.ts";
import type { Stream } from "./session.ts";

export interface CallOptions {
  signal?: AbortSignal;
  timeoutMs?: number;
  /**
   * Deliver the call only to this instance of the called operator (`params._instance`,
   * docs/architecture.md, "Instances"); when it is not attached the call fails with -32003.
   */
  instance?: string;
}

export interface CallContext {
  /** The calling operator, as stamped by the EPS (`params._client.name`), never taken from the caller. */
  caller: string;
  /**
   * The calling operator's instance (`params._client.instance`), as stamped by the EPS; undefined
   * when the caller did not attach with a name (an older proxy) or came through an older EPS.
   */
  callerInstance: string | undefined;
  signal: AbortSignal;
}

/** Serves one incoming call; the return value is the JSON-RPC result, a thrown RpcError the error. */
export type Handler = (
  params: Record<string, unknown>,
  ctx: CallContext,
) => unknown | Promise<unknown>;

export interface EpsClient extends AsyncDisposable {
  /** Calls `operator.method`; throws RpcError (codes in errors.ts RpcCode) on failure or deadline. */
  call<T = unknown>(
    method: string,
    params: Record<string, unknown>,
    options?: CallOptions,
  ): Promise<T>;
  /** Registers the handler for calls to `<own operator>.<method>`. */
  serve(method: string, handler: Handler): void;
  /** This proxy's instance name, sent in `_eps.attach` (docs/architecture.md, "Instances"). */
  readonly instance: string;
  /** True while the link to the EPS is up (and the instance attached). */
  readonly attached: boolean;
  /** Resolves the first time the link is up. */
  readonly ready: Promise<void>;
  /** Runs `listener` on every attach, including re-attaches after a reconnect; returns an unsubscribe. */
  onAttach(listener: () => void): () => void;
  /**
   * A reload (docs/architecture.md, "Reload"): reads and checks the new certificate, key and CA
   * files now and uses them, and the new `address`, for the next link (a reconnect); the live
   * link stays up. Call deadlines and the message cap apply to calls from now on. Throws
   * SettingsError naming the key and file of every problem, or when the certificate names
   * another operator; then nothing changed.
   */
  reconfigure(settings: EpsClientSettings, prefix?: string): void;
  close(): Promise<void>;
}

/**
 * Reads and checks the link material of a proxy's `eps:` block now: every file readable PEM, the
 * key the certificate's, and the certificate the operator's own (CN and DNS SAN `operator`,
 * usable as a TLS client). `run` does it before binding anything, `tls-pass check` the same
 * (docs/settings.md, "`tls-pass check ROLE`"). Throws SettingsError naming the file and key.
 */
export function readEpsClientTls(
  settings: EpsClientSettings,
  operator: string,
  prefix = "eps",
): LinkTls {
  const k = (key: string) => `${prefix}.${key}`;
  const tls = readLinkTlsSync({
    cert: { key: k("certificate_file"), path: settings.certificateFile },
    key: { key: k("key_file"), path: settings.keyFile },
    ca: settings.caCertificateFiles.map((path, i) => ({
      key: `${k("ca_certificate_files")}[${i}]`,
      path,
    })),
  });
  checkOwnCertificate(tls.cert, {
    operator,
    key: k("certificate_file"),
    file: settings.certificateFile,
    usages: ["clientAuth"], // a proxy only dials its EPS
  });
  return tls;
}

/**
 * Connects to the own EPS server. Implemented with the link and session modules. `instance`
 * names this proxy among the instances of its operator (default: the host name); a name
 * outside the pattern throws RangeError.
 */
export function connectEps(
  settings: EpsClientSettings,
  signal?: AbortSignal,
  instance?: string,
): EpsClient {
  const name = instance ?? defaultInstanceName();
  if (!isInstanceName(name)) {
    throw new RangeError(
      `Cannot connect to the EPS: instance ${
        JSON.stringify(name)
      } is not an instance name (1–64 characters of A-Z a-z 0-9 . _ -)`,
    );
  }
  return new Client(settings, name, signal);
}

const log = logger("proxy", "eps-client");

/** The proxy's side of its link to the own EPS (see {@linkcode EpsClient}). */
class Client implements EpsClient {
  #settings: EpsClientSettings;
  /** The link material for the next dial; read once at start, again by `reconfigure`. */
  #tls: LinkTls | undefined;
  readonly #stop = new AbortController();
  readonly #handlers = new Map<string, Handler>();
  readonly #attachListeners = new Set<() => void>();
  readonly #tasks = new Set<Promise<void>>();
  readonly #ready = Promise.withResolvers<void>();
  readonly #clock = new DeadlineClock();
  readonly #loop: Promise<void>;
  #operator = "";
  readonly instance: string;
  /** The link up; calls go out on it once attached (`#state` "up"). */
  #link: Link | undefined;
  /** The `_eps.attach` calls of the live link, one after the other. */
  #attaching: Promise<void> = Promise.resolve();
  #state: "connecting" | "down" | "up" = "connecting";
  #reason = "not connected yet";
  #changed = Promise.withResolvers<void>();
  #nextId = 1;
  #closing: Promise<void> | undefined;

  constructor(settings: EpsClientSettings, instance: string, signal?: AbortSignal) {
    this.#settings = settings;
    this.instance = instance;
    this.#ready.promise.catch(() => {}); // rejected only by close(); nobody has to await it
    if (signal) {
      if (signal.aborted) this.#stop.abort();
      else signal.addEventListener("abort", () => void this.close(), { once: true });
    }
    this.#loop = this.#run().catch((err) => {
      log.error("EPS client stopped: {error}", { error: errorText(err) });
      this.#setState("down", errorText(err));
      this.#ready.reject(err);
    });
  }

  get attached(): boolean {
    return this.#state === "up";
  }

  get ready(): Promise<void> {
    return this.#ready.promise;
  }

  onAttach(listener: () => void): () => void {
    this.#attachListeners.add(listener);
    return () => this.#attachListeners.delete(listener);
  }

  serve(method: string, handler: Handler): void {
    const added = !this.#handlers.has(method);
    this.#handlers.set(method, handler);
    // the EPS routes by the methods each instance serves: tell it (after any attach under way)
    const link = this.#link;
    if (added && link && !link.isClosed) void this.#sendAttach(link);
  }

  #setState(state: "connecting" | "down" | "up", reason = ""): void {
    this.#state = state;
    if (reason) this.#reason = reason;
    const c = this.#changed;
    this.#changed = Promise.withResolvers();
    c.resolve();
  }

  reconfigure(settings: EpsClientSettings, prefix = "eps"): void {
    const k = (key: string) => `${prefix}.${key}`;
    const tls = readLinkTlsSync({
      cert: { key: k("certificate_file"), path: settings.certificateFile },
      key: { key: k("key_file"), path: settings.keyFile },
      ca: settings.caCertificateFiles.map((path, i) => ({
        key: `${k("ca_certificate_files")}[${i}]`,
        path,
      })),
    });
    const name = commonNameOf(tls.cert);
    if (this.#operator !== "" && name !== this.#operator) {
      throw new SettingsError(settings.certificateFile, [
        `${
          k("certificate_file")
        }: "${settings.certificateFile}" names "${name}", the running proxy is "${this.#operator}": changing the operator needs a restart`,
      ]);
    }
    this.#settings = settings;
    this.#tls = tls;
  }

  async #run(): Promise<void> {
    const s = this.#settings;
    const first = await loadLinkTls(s.certificateFile, s.keyFile, s.caCertificateFiles);
    this.#tls ??= first; // a reconfigure during the first read wins
    this.#operator = commonNameOf(first.cert);
    // read at every dial: a reconfigure takes effect at the next link
    await keepDialling(this.#operator, () => this.#settings.address, () => this.#tls ?? first, {
      signal: this.#stop.signal,
      what: "EPS",
      needed: async () => {
        while (this.#link && !this.#link.isClosed && !this.#stop.signal.aborted) {
          await untilSettledOrAborted(this.#link.closed, this.#stop.signal);
        }
        if (this.#state !== "down") this.#setState("connecting");
      },
      onDown: (reason) => this.#setState("down", reason),
      onConn: (conn) => this.#attach(conn),
    });
  }

  #attach(conn: NodeTlsConn): Link {
    const own = this.#operator;
    const link = new Link(conn, own, own, true, {
      onStream: (stream) => this.#serveStream(stream),
    });
    this.#link = link;
    this.#attaching = Promise.resolve();
    this.#setState("connecting"); // calls wait for the attach rather than fail as "down"
    this.#track(
      this.#sendAttach(link).then((ok) => {
        if (!ok || link.isClosed || this.#link !== link) return;
        this.#setState("up");
        log.info("Attached to EPS of {operator} at {remote} as instance {instance}", {
          operator: own,
          remote: link.remote,
          instance: this.instance,
        });
        this.#ready.resolve();
        for (const l of [...this.#attachListeners]) {
          try {
            l();
          } catch (err) {
            log.error("onAttach listener failed: {error}", { error: errorText(err) });
          }
        }
      }),
    );
    this.#track(link.closed.then(() => {
      if (this.#link !== link) return;
      this.#link = undefined;
      this.#setState("connecting", "link closed");
      if (!this.#stop.signal.aborted) {
        log.info("Link to EPS at {remote} down; reconnecting", { remote: link.remote });
      }
    }));
    return link;
  }

  /**
   * Sends `_eps.attach` {instance, serves} on `link`, after the ones before it; resolves to
   * whether the link may be used. An EPS that does not know the method (older) is fine; any
   * other failure closes the link (the dialler reconnects).
   */
  #sendAttach(link: Link): Promise<boolean> {
    const next = this.#attaching.then(async () => {
      if (link.isClosed) return false;
      const params = { instance: this.instance, serves: [...this.#handlers.keys()].sort() };
      const timeoutMs = this.#settings.callTimeoutMs;
      try {
        using limit = this.#clock.deadline(timeoutMs, this.#stop.signal);
        const stream = await link.openWhenFree(limit.signal);
        await callOnStream(
          stream,
          { jsonrpc: "2.0", id: this.#nextId++, method: ATTACH_METHOD, params },
          { maxMessageBytes: this.#settings.maxMessageBytes, timeoutMs, signal: limit.signal },
        );
        return true;
      } catch (err) {
        if (
          err instanceof RpcError &&
          (err.code === RpcCode.MethodNotFound || err.code === RpcCode.UnknownOperator)
        ) {
          log.debug("EPS at {remote} does not know {method}: attached unnamed", {
            remote: link.remote,
            method: ATTACH_METHOD,
          });
          return true;
        }
        if (!link.isClosed && !this.#stop.signal.aborted) {
          log.warn(
            "Cannot attach to EPS at {remote} as instance {instance}: {error}; reconnecting",
            {
              remote: link.remote,
              instance: this.instance,
              error: errorText(err),
            },
          );
          await link.close();
        }
        return false;
      }
    });
    this.#attaching = next.then(() => {});
    return next;
  }

  #serveStream(stream: Stream): void {
    const own = this.#operator;
    this.#track(serveStream(stream, async (request, signal) => {
      const parts = splitMethod(request.method);
      const handler = parts && parts.operator === own
        ? this.#handlers.get(parts.method)
        : undefined;
      if (!handler) {
        throw new RpcError(`Method "${request.method}" is not served here`, RpcCode.MethodNotFound);
      }
      const client = request.params._client;
      const stamped = typeof client === "object" && client !== null
        ? client as { name?: unknown; instance?: unknown }
        : {};
      const caller = typeof stamped.name === "string" ? stamped.name : "";
      const callerInstance = isInstanceName(stamped.instance) ? stamped.instance : undefined;
      return await handler(request.params, { caller, callerInstance, signal });
    }, {
      maxMessageBytes: this.#settings.maxMessageBytes,
      timeoutMs: this.#settings.callTimeoutMs,
      signal: this.#stop.signal,
      clock: this.#clock,
      onProblem: (err) => {
        if (err instanceof LinkClosedError) return;
        log.warn("Call from EPS failed: {reason}", { reason: errorText(err) });
      },
    }));
  }

  async #linkFor(method: string, signal: AbortSignal, timeoutMs: number): Promise<Link> {
    for (;;) {
      if (this.#stop.signal.aborted) {
        throw new RpcError(
          `Cannot call "${method}": the EPS client is closed`,
          RpcCode.Unavailable,
        );
      }
      const link = this.#link;
      if (link && !link.isClosed && this.#state === "up") return link;
      if (this.#state === "down") {
        throw new RpcError(
          `Cannot call "${method}": EPS at ${
            formatHostPort(this.#settings.address)
          } is unavailable (${this.#reason})`,
          RpcCode.Unavailable,
        );
      }
      if (signal.aborted) {
        throw new RpcError(
          `Cannot call "${method}": not attached to the EPS within ${timeoutMs} ms`,
          RpcCode.Timeout,
        );
      }
      await untilSettledOrAborted(this.#changed.promise, signal);
    }
  }

  async call<T = unknown>(
    method: string,
    params: Record<string, unknown>,
    options: CallOptions = {},
  ): Promise<T> {
    const timeoutMs = options.timeoutMs ?? this.#settings.callTimeoutMs;
    if (options.instance !== undefined) {
      if (!isInstanceName(options.instance)) {
        throw new RpcError(
          `Cannot call "${method}": instance ${
            JSON.stringify(options.instance)
          } is not an instance name (1–64 characters of A-Z a-z 0-9 . _ -)`,
          RpcCode.InvalidParams,
        );
      }
      params = { ...params, _instance: options.instance };
    }
    using limit = this.#clock.deadline(timeoutMs, options.signal);
    const signal = limit.signal;
    const link = await this.#linkFor(method, signal, timeoutMs);
    let stream: Stream;
    try {
      stream = await link.openWhenFree(signal); // a burst waits for streams, not refused
    } catch (err) {
      throw new RpcError(
        `Cannot call "${method}": cannot open a stream to the EPS (${errorText(err)})`,
        RpcCode.Unavailable,
      );
    }
    if (options.instance !== undefined) params = { ...params, _instance: options.instance };
    return await callOnStream(stream, { jsonrpc: "2.0", id: this.#nextId++, method, params }, {
      maxMessageBytes: this.#settings.maxMessageBytes,
      timeoutMs,
      signal,
    }) as T;
  }

  #track(p: Promise<unknown>): void {
    const t = p.then(() => {}, (err) => {
      log.error("EPS client task failed: {error}", { error: errorText(err) });
    });
    this.#tasks.add(t);
    void t.finally(() => this.#tasks.delete(t));
  }

  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#stop.abort();
      this.#ready.reject(new LinkClosedError("Cannot attach to EPS: the client was closed"));
      this.#setState("down", "closed");
      await this.#link?.close();
      await this.#loop;
      while (this.#tasks.size > 0) await Promise.all([...this.#tasks]);
    })();
    return this.#closing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
