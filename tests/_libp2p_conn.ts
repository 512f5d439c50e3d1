/**
 * Test helper: a Deno TCP connection as a libp2p `MultiaddrConnection`, so the npm
 * `@chainsafe/libp2p-yamux` muxer can run over a real socket without a libp2p node.
 * @module
 */
import { AbstractMultiaddrConnection, ipPortToMultiaddr } from "@libp2p/utils";
import { tryClose } from "../lib/net/conn.ts";
import { writeAll } from "../lib/net/io.ts";

type Init = ConstructorParameters<typeof AbstractMultiaddrConnection>[0];
type Logger = Init["log"];
type SendResult = ReturnType<AbstractMultiaddrConnection["sendData"]>;
type ByteList = Parameters<AbstractMultiaddrConnection["sendData"]>[0];

/** A logger that drops everything (libp2p logs through `debug` otherwise). */
function silentLogger(): Logger {
  const log = (() => {}) as unknown as Logger;
  log.error = () => {};
  log.trace = () => {};
  log.enabled = false;
  log.newScope = () => log;
  return log;
}

/** Bytes queued for the socket above which the muxer is told to wait for "drain". */
const HIGH_WATER = 256 * 1024;

/** A `Deno.Conn` as a libp2p MultiaddrConnection: reads push `onData`, writes are serialised. */
export class DenoMaConn extends AbstractMultiaddrConnection {
  readonly #conn: Deno.Conn;
  #queue: Uint8Array[] = [];
  #queued = 0;
  #flushing: Promise<void> | undefined;
  /** Settles when the read loop has ended (EOF, error or close). */
  readonly reading: Promise<void>;

  constructor(conn: Deno.Conn, direction: "inbound" | "outbound") {
    const addr = conn.remoteAddr as Deno.NetAddr;
    super({
      remoteAddr: ipPortToMultiaddr(addr.hostname, addr.port),
      direction,
      log: silentLogger(),
    });
    this.#conn = conn;
    this.reading = this.#read();
  }

  async #read(): Promise<void> {
    const buf = new Uint8Array(64 * 1024);
    try {
      for (let n; (n = await this.#conn.read(buf)) !== null;) {
        if (this.status !== "open") return;
        this.onData(buf.slice(0, n));
      }
      if (this.status === "open") this.onTransportClosed();
    } catch (err) {
      if (this.status === "open") this.abort(err instanceof Error ? err : new Error(String(err)));
    }
  }

  override sendData(data: ByteList): SendResult {
    const bytes = data.subarray(); // one contiguous copy
    this.#queue.push(bytes);
    this.#queued += bytes.length;
    this.#flushing ??= this.#flush();
    return { sentBytes: data.byteLength, canSendMore: this.#queued < HIGH_WATER };
  }

  async #flush(): Promise<void> {
    try {
      for (let b; (b = this.#queue.shift()) !== undefined;) {
        await writeAll(this.#conn, b);
        this.#queued -= b.length;
      }
    } catch (err) {
      this.#queue = [];
      this.#queued = 0;
      if (this.status === "open") this.abort(err instanceof Error ? err : new Error(String(err)));
    } finally {
      this.#flushing = undefined;
    }
    this.safeDispatchEvent("drain");
  }

  override sendReset(): void {
    tryClose(this.#conn);
  }

  override async sendClose(): Promise<void> {
    await this.#flushing;
    tryClose(this.#conn);
    await this.reading;
  }

  override sendPause(): void {}
  override sendResume(): void {}

  /** Closes the socket at once (idempotent) and waits for the read loop. */
  async destroy(): Promise<void> {
    tryClose(this.#conn);
    await this.#flushing;
    await this.reading;
    if (this.status === "open") this.onTransportClosed();
  }
}
