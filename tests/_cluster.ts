/**
 * An in-process cluster for the data-path tests: a temporary PKI and directory, the internal
 * server, the EPS servers of public-proxy-1 and private-proxy-1 (and optionally private-proxy-2),
 * the public proxy and the private proxy, all on loopback port 0. Disposal stops everything in
 * reverse order and removes the folder.
 * @module
 */
import { join } from "node:path";
import { stringify } from "yaml";
import { createPki, type Pki, writePki } from "../lib/certs/pki.ts";
import { connectEps, type EpsClient, type EpsClientSettings } from "../lib/eps/client.ts";
import { startEps } from "../lib/eps/server.ts";
import { startInternalServer } from "../lib/internal/server.ts";
import { httpsRequest, type HttpsResponse } from "../lib/internal/https_request.ts";
import { type PublicHandle, startPublic } from "../lib/proxy/public.ts";
import { type PrivateHandle, startPrivate } from "../lib/proxy/private.ts";
import { formatHostPort, type HostPort, type RoleHandle } from "../lib/role.ts";
import { EPS_DEFAULTS, type EpsSettings } from "../lib/settings/eps.ts";
import { PUBLIC_DEFAULTS, type PublicSettings } from "../lib/settings/public.ts";
import { PRIVATE_DEFAULTS, type PrivateSettings } from "../lib/settings/private.ts";
import { within } from "../lib/net/_testing.ts";
import { spawnCli, type SpawnedCli } from "./_cli.ts";

export { within };

export const LOOPBACK: HostPort = { hostname: "127.0.0.1", port: 0 };
export const DOMAIN = "test.internal-server.local";
export const NAMES = ["public-proxy-1", "private-proxy-1", "private-proxy-2", "internal-server"];

/**
 * Short timeouts, so that a test holding a connection for a little over a second outlives every
 * one of them (the original cut every connection at its 5 s hello deadline).
 */
export const SHORT = {
  helloTimeoutMs: 300,
  dialBackTimeoutMs: 600,
  tokenTimeoutMs: 300,
  noticeTimeoutMs: 600,
  callTimeoutMs: 1000,
  dialTimeoutMs: 500,
  connectTimeoutMs: 500,
  graceMs: 200,
} as const;
/** Longer than every timeout in {@linkcode SHORT}. */
export const HOLD_MS = 1500;

/** Private proxy settings without the dial-back pool (the notice path only). */
export const POOL_OFF: Partial<PrivateSettings> = {
  pool: { ...PRIVATE_DEFAULTS.pool, enabled: false },
};

export interface ClusterOptions {
  public?: Partial<PublicSettings>;
  private?: Partial<PrivateSettings>;
  /** Start the EPS of private-proxy-2 too (a second private operator). */
  secondPrivate?: boolean;
  /** Start the private proxy (default true). */
  startPrivate?: boolean;
  /**
   * Start the public proxy (default true). Without it `pub` stays unset, and so must the private
   * proxy: a test runs both itself (e.g. as child processes).
   */
  startPublic?: boolean;
  /** Deadline of EPS calls (the EPS servers' and the proxies' clients'); default SHORT's. */
  callTimeoutMs?: number;
  /** Leave `openPool` out of the directory (a directory from before the dial-back pool). */
  noOpenPool?: boolean;
  /**
   * Run this operator's EPS server as a child process (`tls-pass run eps`: `deno run -A cli.ts`,
   * or `$TLS_PASS_BIN`), so that a test can kill -9 it and start it again ({@linkcode EpsChild}).
   */
  epsProcess?: "public-proxy-1" | "private-proxy-1";
}

/** An EPS server in a child process, on a fixed port once started (see ClusterOptions.epsProcess). */
export class EpsChild implements RoleHandle<"links" | "proxy"> {
  #cli: SpawnedCli;
  addrs: Readonly<Record<"links" | "proxy", HostPort>>;

  private constructor(readonly settingsDir: string, cli: SpawnedCli) {
    this.#cli = cli;
    this.addrs = EpsChild.#addrs(cli);
  }

  static #addrs(cli: SpawnedCli): Record<"links" | "proxy", HostPort> {
    const parse = (v: string | undefined): HostPort => {
      const i = (v ?? "").lastIndexOf(":");
      return { hostname: v!.slice(0, i).replace(/^\[|\]$/g, ""), port: Number(v!.slice(i + 1)) };
    };
    const links = parse(cli.ready.addrs.links);
    return { links, proxy: cli.ready.addrs.proxy ? parse(cli.ready.addrs.proxy) : links };
  }

  static async start(dir: string, settings: EpsSettings): Promise<EpsChild> {
    await Deno.mkdir(dir, { recursive: true });
    await EpsChild.#write(dir, settings, settings.listen ?? LOOPBACK);
    return new EpsChild(dir, await spawnCli(["run", "eps", "--settings", dir]));
  }

  static async #write(dir: string, s: EpsSettings, listen: HostPort): Promise<void> {
    await Deno.writeTextFile(
      join(dir, "settings.yml"),
      stringify({
        operator: s.operator,
        listen: formatHostPort(listen),
        certificate_file: s.certificateFile,
        key_file: s.keyFile,
        directory_dir: s.directoryDir,
        call_timeout_ms: s.callTimeoutMs,
        keepalive_interval_ms: 1000,
      }),
    );
  }

  get pid(): number {
    return this.#cli.child.pid;
  }

  get finished(): Promise<void> {
    return this.#cli.child.status.then(() => {});
  }

  /** kill -9: no goodbye to any peer. */
  async kill(): Promise<void> {
    await this.#cli.stop("SIGKILL");
  }

  /** Starts it again on the same port (after kill()). */
  async restart(settings: EpsSettings): Promise<void> {
    await EpsChild.#write(this.settingsDir, settings, this.addrs.links);
    this.#cli = await spawnCli(["run", "eps", "--settings", this.settingsDir]);
    this.addrs = EpsChild.#addrs(this.#cli);
  }

  async close(): Promise<void> {
    await this.#cli.stop("SIGTERM");
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

export class Cluster implements AsyncDisposable {
  internal!: RoleHandle<"main">;
  epsPublic!: RoleHandle<"links" | "proxy"> | EpsChild;
  epsPrivate!: RoleHandle<"links" | "proxy"> | EpsChild;
  epsPrivate2: RoleHandle<"links" | "proxy"> | undefined;
  pub!: PublicHandle;
  priv: PrivateHandle | undefined;
  #clients: EpsClient[] = [];

  private constructor(readonly dir: string, readonly pki: Pki, readonly options: ClusterOptions) {}

  static async start(options: ClusterOptions = {}): Promise<Cluster> {
    const dir = await Deno.makeTempDir({ prefix: "tls-pass-cluster-" });
    let c: Cluster | undefined;
    try {
      const pki = await createPki(NAMES);
      await writePki(pki, join(dir, "certs"));
      await Deno.mkdir(join(dir, "directory"));
      c = new Cluster(dir, pki, options);
      await c.#writeDirectory();
      c.internal = await startInternalServer({
        listen: LOOPBACK,
        tls: true,
        certificateFile: c.cert("internal-server"),
        keyFile: c.key("internal-server"),
        maxBodyBytes: 1024 * 1024,
      });
      c.epsPublic = await c.#startEps("public-proxy-1");
      // now the public EPS has a port: peers dial it from the directory
      await c.#writeDirectory(c.epsPublic.addrs.links);
      c.epsPrivate = await c.#startEps("private-proxy-1");
      if (options.secondPrivate) c.epsPrivate2 = await startEps(c.epsSettings("private-proxy-2"));
      if (options.startPublic ?? true) {
        c.pub = await startPublic(c.publicSettings());
        if (options.startPrivate ?? true) await c.startPrivate();
      }
      return c;
    } catch (err) {
      if (c) await c[Symbol.asyncDispose]();
      else await Deno.remove(dir, { recursive: true });
      throw err;
    }
  }

  #startEps(operator: "public-proxy-1" | "private-proxy-1") {
    const s = this.epsSettings(operator);
    return this.options.epsProcess === operator
      ? EpsChild.start(join(this.dir, "roles", operator), s)
      : startEps(s);
  }

  /** The EPS that runs as a child process (ClusterOptions.epsProcess). */
  epsChild(): EpsChild {
    const e = this.options.epsProcess === "public-proxy-1" ? this.epsPublic : this.epsPrivate;
    if (!(e instanceof EpsChild)) throw new Error("epsChild: no EPS runs as a child process");
    return e;
  }

  cert(name: string): string {
    return join(this.dir, "certs", `${name}.crt`);
  }
  key(name: string): string {
    return join(this.dir, "certs", `${name}.key`);
  }
  get rootFile(): string {
    return join(this.dir, "certs", "root.crt");
  }
  get storePath(): string {
    return join(this.dir, "state", "announcements.jsonl");
  }

  async #writeDirectory(publicEps?: HostPort): Promise<void> {
    const perms = (method: string[], from: string[]) => method.map((m) => ({ method: m, from }));
    const directory = {
      "ca_certificate_files": [this.rootFile],
      operators: {
        "public-proxy-1": {
          ...(publicEps ? { address: formatHostPort(publicEps) } : {}),
          fingerprints: [this.pki.leaves["public-proxy-1"]!.fingerprint],
          permissions: perms(
            [
              "announceConnections",
              "withdrawConnections",
              "getAnnouncements",
              ...(this.options.noOpenPool ? [] : ["openPool"]),
            ],
            ["private-proxy-1", "private-proxy-2"],
          ),
        },
        "private-proxy-1": {
          permissions: perms(["incomingConnection"], ["public-proxy-1"]),
          proxy: { "allowed_domains": [".internal-server.local"] },
        },
        "private-proxy-2": {
          permissions: perms(["incomingConnection"], ["public-proxy-1"]),
          proxy: { "allowed_domains": [".internal-server.local", "two.example.com"] },
        },
      },
    };
    await Deno.writeTextFile(join(this.dir, "directory", "operators.yml"), stringify(directory));
  }

  epsSettings(operator: string): EpsSettings {
    return {
      operator,
      listen: LOOPBACK,
      certificateFile: this.cert(operator),
      keyFile: this.key(operator),
      directoryDir: join(this.dir, "directory"),
      ...EPS_DEFAULTS,
      callTimeoutMs: this.options.callTimeoutMs ?? SHORT.callTimeoutMs,
      keepaliveIntervalMs: 60_000,
    };
  }

  epsClientSettings(operator: string, address: HostPort): EpsClientSettings {
    return {
      address,
      certificateFile: this.cert(operator),
      keyFile: this.key(operator),
      caCertificateFiles: [this.rootFile],
      callTimeoutMs: this.options.callTimeoutMs ?? SHORT.callTimeoutMs,
      maxMessageBytes: 1024 * 1024,
    };
  }

  publicSettings(): PublicSettings {
    return {
      ...PUBLIC_DEFAULTS,
      ...SHORT,
      operator: "public-proxy-1",
      publicListen: LOOPBACK,
      privateListen: LOOPBACK,
      eps: this.epsClientSettings("public-proxy-1", this.epsPublic.addrs.links),
      directoryDir: join(this.dir, "directory"),
      store: { kind: "file", path: this.storePath },
      ...this.options.public,
    };
  }

  privateSettings(): PrivateSettings {
    return {
      ...PRIVATE_DEFAULTS,
      ...SHORT,
      retryMs: 50,
      operator: "private-proxy-1",
      eps: this.epsClientSettings("private-proxy-1", this.epsPrivate.addrs.links),
      announceTo: ["public-proxy-1"],
      endpoints: { "public-proxy-1": [this.pub.addrs.private] },
      announcements: [{
        domain: DOMAIN,
        internal: this.internal.addrs.main,
        expiresInMs: 3_600_000,
      }],
      ...this.options.private,
    };
  }

  /** Starts the private proxy and waits until its announcement is acknowledged. */
  async startPrivate(): Promise<PrivateHandle> {
    const priv = await startPrivate(this.privateSettings());
    this.priv = priv;
    await within(priv.ready, 10_000, "first announcement of the private proxy");
    return priv;
  }

  async stopPrivate(): Promise<void> {
    await this.priv?.close();
    this.priv = undefined;
  }

  /** Stops the public proxy and starts it again on the same ports. */
  async restartPublic(): Promise<PublicHandle> {
    const addrs = this.pub.addrs;
    await this.pub.close();
    this.pub = await startPublic({
      ...this.publicSettings(),
      publicListen: addrs.public,
      privateListen: addrs.private,
    });
    return this.pub;
  }

  /**
   * An EPS client attached as `operator` (e.g. private-proxy-2 to make raw calls), as `instance`
   * when given (docs/architecture.md, "Instances"; else the default name).
   */
  async attach(
    operator: string,
    eps: RoleHandle<"links" | "proxy">,
    instance?: string,
  ): Promise<EpsClient> {
    const c = connectEps(this.epsClientSettings(operator, eps.addrs.links), undefined, instance);
    this.#clients.push(c);
    await within(c.ready, 10_000, `attach of ${operator}`);
    return c;
  }

  /** One HTTPS request through the public port with SNI `serverName`, trusting only the root. */
  async request(
    path: string,
    body?: string,
    serverName = DOMAIN,
    signal: AbortSignal = AbortSignal.timeout(10_000),
  ): Promise<HttpsResponse> {
    return await httpsRequest({
      connect: this.pub.addrs.public,
      serverName,
      caCerts: [await Deno.readTextFile(this.rootFile)],
      method: body === undefined ? "GET" : "POST",
      path,
      ...(body === undefined ? {} : { body }),
      signal,
    });
  }

  /** A TLS connection through the public port (handshake done), for keep-alive and half-close tests. */
  async connectTls(serverName = DOMAIN): Promise<Deno.TlsConn> {
    const tcp = await Deno.connect({ ...this.pub.addrs.public, transport: "tcp" });
    try {
      return await within(
        Deno.startTls(tcp, {
          hostname: serverName,
          caCerts: [await Deno.readTextFile(this.rootFile)],
        }),
        10_000,
        "TLS handshake through the proxies",
      );
    } catch (err) {
      try {
        tcp.close();
      } catch { /* closed */ }
      throw err;
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    const errors: unknown[] = [];
    const stop = async (h: { close(): Promise<void> } | undefined) => {
      try {
        await h?.close();
      } catch (err) {
        errors.push(err);
      }
    };
    for (const c of this.#clients.reverse()) await stop(c);
    await stop(this.priv);
    await stop(this.pub);
    await stop(this.epsPrivate2);
    await stop(this.epsPrivate);
    await stop(this.epsPublic);
    await stop(this.internal);
    await Deno.remove(this.dir, { recursive: true });
    if (errors.length > 0) throw new AggregateError(errors, "Cannot stop the cluster cleanly");
  }
}

/**
 * A raw EPS client attached as a private operator that answers notices "ok" and keeps their
 * params, but never dials back: for tokens, expiry and pending caps.
 */
export class NoticeInbox implements AsyncDisposable {
  #queue: Record<string, unknown>[] = [];
  #waiters: ((p: Record<string, unknown>) => void)[] = [];
  private constructor(readonly client: EpsClient) {}

  static async attach(
    c: Cluster,
    operator = "private-proxy-1",
    instance?: string,
  ): Promise<NoticeInbox> {
    const eps = operator === "private-proxy-2" ? c.epsPrivate2! : c.epsPrivate;
    const client = await c.attach(operator, eps, instance);
    const inbox = new NoticeInbox(client);
    client.serve("incomingConnection", (params) => {
      const w = inbox.#waiters.shift();
      if (w) w(params);
      else inbox.#queue.push(params);
      return { ok: true };
    });
    return inbox;
  }

  /** Announces `domains` to public-proxy-1 as this operator. */
  announce(domains: string[] = [DOMAIN]): Promise<unknown> {
    return this.client.call("public-proxy-1.announceConnections", {
      connections: domains.map((domain) => ({ domain })),
    });
  }

  /** The next notice's params. */
  next(ms = 5000): Promise<Record<string, unknown>> {
    const p = this.#queue.shift();
    if (p) return Promise.resolve(p);
    return within(new Promise((resolve) => this.#waiters.push(resolve)), ms, "a notice");
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.client.close();
  }
}

/** A ClientHello record sequence for `serverName` (none when null), padded by `padding` bytes. */
export function clientHello(serverName: string | null, padding = 0): Uint8Array {
  const u16 = (v: number) => [(v >> 8) & 0xff, v & 0xff];
  const ext: number[] = [];
  if (serverName !== null) {
    const name = [...new TextEncoder().encode(serverName)];
    const entry = [0, ...u16(name.length), ...name];
    ext.push(...u16(0), ...u16(entry.length + 2), ...u16(entry.length), ...entry);
  }
  if (padding > 0) ext.push(...u16(21), ...u16(padding), ...new Array<number>(padding).fill(0));
  const random = [...crypto.getRandomValues(new Uint8Array(32))];
  const body = [
    3,
    3,
    ...random,
    0, // legacy version, random, empty session id
    ...u16(2),
    0x13,
    0x01, // one cipher suite
    1,
    0, // null compression
    ...u16(ext.length),
    ...ext,
  ];
  const hs = [1, (body.length >> 16) & 0xff, ...u16(body.length & 0xffff), ...body];
  const out: number[] = [];
  for (let off = 0; off < hs.length; off += 16_384) {
    const chunk = hs.slice(off, off + 16_384);
    out.push(22, 3, 1, ...u16(chunk.length), ...chunk);
  }
  return Uint8Array.from(out);
}

/** Reads until EOF (a reset counts as the end too), bounded by `ms`. */
export async function readToEnd(
  conn: Deno.Conn,
  ms = 5000,
): Promise<{ bytes: Uint8Array; reset: boolean }> {
  const chunks: number[] = [];
  const buf = new Uint8Array(4096);
  const run = async () => {
    try {
      for (let n; (n = await conn.read(buf)) !== null;) chunks.push(...buf.subarray(0, n));
      return false;
    } catch (err) {
      if (err instanceof Deno.errors.ConnectionReset || err instanceof Deno.errors.BrokenPipe) {
        return true;
      }
      throw err;
    }
  };
  const reset = await within(run(), ms, "the end of the connection");
  return { bytes: Uint8Array.from(chunks), reset };
}

/** Starts a cluster (see {@linkcode Cluster}); use with `await using`. */
export function startCluster(options: ClusterOptions = {}): Promise<Cluster> {
  return Cluster.start(options);
}

/**
 * Waits until `cond()` holds, polling a counter every 10 ms, bounded by `ms`. For counters the
 * main thread updates after the data-plane worker served a client (native sockets).
 */
export async function until(cond: () => boolean, what: string, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`Timed out after ${ms} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 10)); // polling a counter, bounded above
  }
}
