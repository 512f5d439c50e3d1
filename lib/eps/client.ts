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
import { splitMethod } from "./router.ts";

export { type EpsClientSettings, parseEpsClientSettings } from "../settings/eps_client.ts";
import type { Stream } from "./session.ts";

export interface CallOptions {
  signal?: AbortSignal;
  timeoutMs?: number;
  /**
   * Deliver only to this instance of the operator (`params._instance`, docs/architecture.md,
   * "Several private instances"); the EPS answers -32003 when it is not attached.
   */
  instance?: string;
}

export interface CallContext {
  /** The calling operator, as stamped by the EPS (`params._client.name`), never taken from the caller. */
  caller: string;
  /** The calling instance, as stamped by the EPS (`params._client.instance`), when it names one. */
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
  /** True while the link to the EPS is up. */
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

/** Connects to the own EPS server. Implemented with the link and session modules. */
export function connectEps(settings: EpsClientSettings, signal?: AbortSignal): EpsClient {
  return new Client(settings, signal);
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
  #link: Link | undefined;
  #state: "connecting" | "down" | "up" = "connecting";
  #reason = "not connected yet";
  #changed = Promise.withResolvers<void>();
  #nextId = 1;
  #closing: Promise<void> | undefined;

  constructor(settings: EpsClientSettings, signal?: AbortSignal) {
    this.#settings = settings;
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
    this.#handlers.set(method, handler);
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
    this.#setState("up");
    log.info("Attached to EPS of {operator} at {remote}", { operator: own, remote: link.remote });
    this.#ready.resolve();
    for (const l of [...this.#attachListeners]) {
      try {
        l();
      } catch (err) {
        log.error("onAttach listener failed: {error}", { error: errorText(err) });
      }
    }
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
      const caller = typeof client === "object" && client !== null &&
          typeof (client as { name?: unknown }).name === "string"
        ? (client as { name: string }).name
        : "";
      const inst = typeof client === "object" && client !== null
        ? (client as { instance?: unknown }).instance
        : undefined;
      const callerInstance = typeof inst === "string" ? inst : undefined;
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
      if (link && !link.isClosed) return link;
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
