/**
 * The native driver (docs/architecture.md, "The drivers"): the main thread's side. One module
 * worker (worker.ts) owns every data socket of the role: it binds the listeners, accepts,
 * connects, copies and closes, running the sans-IO core on its own thread in a loop blocking in
 * `epoll_wait`. Here there is no socket at all, only the way in and the way out:
 *
 * - commands go as JSON into a SharedArrayBuffer ring (ring.ts), in order, in pieces when one is
 *   larger than the ring; the worker is woken through an eventfd only while it sleeps;
 * - events come back as one postMessage per loop turn (delivered even while the worker blocks
 *   in FFI), handed to `onEvents` in order, never inside {@linkcode NativeDriver.send}.
 * @module
 */
import { lookup } from "node:dns/promises";
import type { HostPort } from "../../role.ts";
import type { DataEvent } from "../events.ts";
import type { DataPlane, DataPlaneOptions } from "../mod.ts";
import type { Command } from "../snapshot.ts";
import {
  EFD_CLOEXEC,
  EFD_NONBLOCK,
  encodeSockaddr,
  errnoMessage,
  Libc,
  nativeProblem,
} from "./libc.ts";
import {
  type ListenAt,
  newMailbox,
  RING_SAB_BYTES,
  type RingMessage,
  RingWriter,
  type WorkerInit,
  type WorkerMessage,
} from "./ring.ts";

export { nativeProblem };

/** The splice path's pipes at most, by default (two descriptors each: lib/proxy/budget.ts). */
export const SPLICE_PIPES = 8;
/**
 * The capacity asked for each pipe (F_SETPIPE_SZ; the default /proc/sys/fs/pipe-max-size). W3,
 * relay CPU per GB, 6 rounds each: 64 KiB 1.02 s, 256 KiB 0.96 s, 1 MiB 0.84 s (0.88, 0.73, 0.68
 * × HAProxy's in the same rounds). Where the kernel refuses it (a user over
 * pipe-user-pages-soft), a pipe keeps 64 KiB.
 */
export const SPLICE_PIPE_BYTES = 1024 * 1024;

/**
 * The splice path of `options`: `splicePipes`, else off when `TLS_PASS_SPLICE` is `off`, else
 * {@linkcode SPLICE_PIPES}.
 */
export function spliceOf(options: DataPlaneOptions): { pipes: number; pipeBytes: number } {
  const env = Deno.env.get("TLS_PASS_SPLICE");
  if (env !== undefined && env !== "" && env !== "on" && env !== "off") {
    throw new TypeError(
      `Cannot open the data plane: TLS_PASS_SPLICE is "${env}", expected "on" or "off"`,
    );
  }
  const pipes = options.splicePipes ?? (env === "off" ? 0 : SPLICE_PIPES);
  return { pipes, pipeBytes: SPLICE_PIPE_BYTES };
}

/** How long close() waits for the worker to close its sockets before it terminates it anyway. */
const EXIT_WAIT_MS = 5000;

/** The native driver of one data plane. */
export class NativeDriver implements DataPlane {
  readonly driver = "native" as const;
  addrs: { public?: HostPort; private?: HostPort } = {};
  readonly failed: Promise<never>;
  readonly #fail: (err: Error) => void;
  readonly #worker: Worker;
  readonly #ring: RingWriter;
  readonly #libc: Libc;
  readonly #wakeFd: number;
  readonly #one = new BigUint64Array([1n]);
  readonly #encoder = new TextEncoder();
  readonly #ready = Promise.withResolvers<void>();
  readonly #exited = Promise.withResolvers<void>();
  #drained: PromiseWithResolvers<void> | undefined;
  #closing: Promise<void> | undefined;
  /** The worker ended (exited or died): nothing is sent any more. */
  #gone = false;
  #released = false;

  constructor(readonly options: DataPlaneOptions, libc: Libc, wakeFd: number) {
    this.#libc = libc;
    this.#wakeFd = wakeFd;
    const failed = Promise.withResolvers<never>();
    failed.promise.catch(() => {}); // a role that never looks at it is not an unhandled rejection
    this.failed = failed.promise;
    this.#fail = failed.reject;
    const sab = new SharedArrayBuffer(RING_SAB_BYTES);
    this.#ring = new RingWriter(sab, newMailbox(), () => this.#wake());
    this.#worker = new Worker(new URL("./worker.ts", import.meta.url), { type: "module" });
    this.#worker.onmessage = (e: MessageEvent<WorkerMessage>) => this.#onMessage(e.data);
    this.#worker.onerror = (e: ErrorEvent) => {
      e.preventDefault();
      this.#died(new Error(`The native data plane failed: ${e.message}`));
    };
    this.#worker.onmessageerror = () => {
      this.#died(new Error("The native data plane failed: a message could not be read"));
    };
  }

  /** Starts the worker; resolves once it has bound its listeners. */
  async start(listen: WorkerInit["listen"]): Promise<void> {
    const init: WorkerInit = {
      sab: this.#ring.sab,
      mailbox: this.#ring.mailbox,
      wakeFd: this.#wakeFd,
      role: this.options.role,
      ...(this.options.idPrefix !== undefined ? { idPrefix: this.options.idPrefix } : {}),
      snapshot: this.options.snapshot,
      ...(listen !== undefined ? { listen } : {}),
      timeOrigin: performance.timeOrigin,
      splice: spliceOf(this.options),
    };
    this.#worker.postMessage(init);
    try {
      await this.#ready.promise;
    } catch (err) {
      this.#gone = true;
      this.#release();
      throw err;
    }
  }

  #onMessage(m: WorkerMessage): void {
    switch (m.t) {
      case "events":
        for (const e of m.events) if (e.type === "drained") this.#drained?.resolve();
        this.options.onEvents(m.events as DataEvent[]);
        return;
      case "room":
        return this.#ring.flush();
      case "ready":
        this.addrs = m.addrs;
        return this.#ready.resolve();
      case "bindFailed":
        return this.#ready.reject(new Error(m.message));
      case "failed":
        return this.#died(new Error(`The native data plane failed: ${m.error}`));
      case "exited":
        this.#gone = true;
        this.#drained?.resolve();
        return this.#exited.resolve();
    }
  }

  #died(err: Error): void {
    this.#gone = true;
    this.#ready.reject(err);
    this.#fail(err);
    this.#drained?.resolve(); // a dead worker holds no socket (it closes them as it dies)
    this.#exited.resolve();
  }

  /** Writes the eventfd: the worker sleeps in epoll_wait and a frame was written. */
  #wake(): void {
    if (this.#released) return; // the eventfd is closed (its number may be reused)
    this.#libc.sym.write(this.#wakeFd, this.#one, 8n);
  }

  #put(msg: RingMessage): void {
    if (this.#gone) return;
    this.#ring.send(this.#encoder.encode(JSON.stringify(msg)));
  }

  send(cmd: Command): void {
    if (this.#closing !== undefined) return;
    this.#put(cmd);
  }

  stop(): Promise<void> {
    this.#drained ??= Promise.withResolvers<void>();
    if (this.#gone) this.#drained.resolve();
    else this.send({ type: "stop" });
    return this.#drained.promise;
  }

  close(): Promise<void> {
    return this.#closing ??= this.#close();
  }

  async #close(): Promise<void> {
    this.#put({ type: "kill" });
    this.#put({ type: "exit" });
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<void>((resolve) => timer = setTimeout(resolve, EXIT_WAIT_MS));
    try {
      await Promise.race([this.#exited.promise, late]);
    } finally {
      clearTimeout(timer);
    }
    this.#gone = true;
    this.#drained?.resolve();
    this.#release();
  }

  /** Terminates the worker and closes the eventfd (once the worker cannot read it any more). */
  #release(): void {
    if (this.#released) return;
    this.#released = true;
    this.#worker.terminate();
    this.#libc.sym.close(this.#wakeFd);
  }
}

/** `host:port`, IPv6 bracketed. */
function hostPortText(a: HostPort): string {
  return a.hostname.includes(":") ? `[${a.hostname}]:${a.port}` : `${a.hostname}:${a.port}`;
}

/**
 * Where to bind `a`: its IP literal, or the first address its name resolves to; `key` (the
 * setting) and the address name it in errors.
 */
async function listenAt(a: HostPort, key: string | undefined): Promise<ListenAt> {
  const what = key === undefined ? hostPortText(a) : `${key} ${hostPortText(a)}`;
  let ip = a.hostname.startsWith("[") && a.hostname.endsWith("]")
    ? a.hostname.slice(1, -1)
    : a.hostname;
  if (encodeSockaddr(ip, 0) === null) {
    try {
      ip = (await lookup(ip)).address;
    } catch (err) {
      throw new Error(
        `Cannot listen on ${what}: ${err instanceof Error ? err.message : String(err)}`,
      );
    }
  }
  return { ip, port: a.port, what };
}

/** Starts the native driver: its worker binds the listeners (public proxy) and serves. */
export async function startNative(options: DataPlaneOptions): Promise<DataPlane> {
  const problem = nativeProblem();
  if (problem !== undefined) throw new Error(`Cannot use the native driver: ${problem}`);
  const listen = options.listen === undefined ? undefined : {
    public: {
      ...await listenAt(options.listen.public, options.listen.keys?.public),
      ...(options.listen.reusePort ? { reusePort: true } : {}),
    },
    // never on the private port: each replica has its own
    private: await listenAt(options.listen.private, options.listen.keys?.private),
  };
  const libc = Libc.get();
  const wakeFd = libc.sym.eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wakeFd < 0) throw new Error(`Cannot create an eventfd: ${errnoMessage(libc.errno())}`);
  const d = new NativeDriver(options, libc, wakeFd);
  await d.start(listen);
  return d;
}
