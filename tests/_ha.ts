/**
 * A high-availability cluster for tests/ha_test.ts (docs/architecture.md, "Instances", "Public
 * replicas and the Redis store", "Private instances and public replicas: the private side"): a
 * real redis-server, the internal server and both EPS servers in process (tests/_cluster.ts), two
 * public replicas of `public-proxy-1` in process sharing Redis (`store: redis`, each with its own
 * public and private port and its own `instance`), and private instances of `private-proxy-1` as
 * child processes (`tls-pass run private`), so that a test can kill -9 one and start it again.
 * @module
 */
import { join } from "node:path";
import { stringify } from "yaml";
import { type Cluster, DOMAIN, LOOPBACK, SHORT, startCluster, within } from "./_cluster.ts";
import { spawnCli, type SpawnedCli } from "./_cli.ts";
import { startRedis, type TestRedis } from "./_redis.ts";
import { type PublicHandle, startPublic } from "../lib/proxy/public.ts";
import type { PublicSettings } from "../lib/settings/public.ts";
import { parseRedisUrl } from "../lib/settings/public.ts";
import { formatHostPort, type HostPort } from "../lib/role.ts";
import { httpsRequest } from "../lib/internal/https_request.ts";

/** The EPS calls' deadline in the HA cluster (SHORT's 1 s is tight on a loaded machine). */
export const HA_CALL_TIMEOUT_MS = 3000;

/**
 * Timeouts of the HA cluster: nothing here tests a deadline but the re-dispatch timer, so the
 * others are generous (SHORT's 300 ms hello deadline cut clients of a machine under load), with
 * room for re-dispatches before the dial-back deadline.
 */
export const HA_TIMEOUTS = {
  ...SHORT,
  helloTimeoutMs: 5000,
  tokenTimeoutMs: 5000,
  dialBackTimeoutMs: 5000,
  noticeTimeoutMs: 2000,
  redispatchAfterMs: 300,
  maxDispatches: 3,
} as const;

/** A private proxy instance in a child process. */
export class PrivateInstance implements AsyncDisposable {
  #cli: SpawnedCli | undefined;
  constructor(readonly name: string, readonly dir: string) {}

  static async start(ha: Ha, name: string, pool = true): Promise<PrivateInstance> {
    const dir = join(ha.cluster.dir, "roles", name);
    await Deno.mkdir(dir, { recursive: true });
    const c = ha.cluster;
    await Deno.writeTextFile(
      join(dir, "settings.yml"),
      stringify({
        operator: "private-proxy-1",
        instance: name,
        eps: {
          address: formatHostPort(c.epsPrivate.addrs.links),
          certificate_file: c.cert("private-proxy-1"),
          key_file: c.key("private-proxy-1"),
          ca_certificate_files: [c.rootFile],
          call_timeout_ms: HA_CALL_TIMEOUT_MS,
        },
        announce_to: ["public-proxy-1"],
        endpoints: { "public-proxy-1": ha.replicas.map((r) => formatHostPort(r.addrs.private)) },
        announcements: [{ domain: DOMAIN, internal: formatHostPort(c.internal.addrs.main) }],
        retry_ms: 50,
        dial_timeout_ms: 5000,
        connect_timeout_ms: 5000,
        grace_ms: SHORT.graceMs,
        pool: pool ? { enabled: true, min_idle: 2, max_idle: 32 } : { enabled: false },
        admin_listen: "127.0.0.1:0",
      }),
    );
    const p = new PrivateInstance(name, dir);
    await p.start();
    return p;
  }

  /** Starts (again) and waits for its ready line. */
  async start(): Promise<void> {
    this.#cli = await spawnCli(["run", "private", "--settings", this.dir]);
  }

  /** The admin endpoint (`admin_listen` port 0: from the ready line). */
  get admin(): string {
    return this.#cli!.ready.addrs.admin!;
  }

  /** The connections it carried for the test name (`tls_pass_name_connections_total`). */
  async connections(): Promise<number> {
    const text = await (await fetch(`http://${this.admin}/metrics`)).text();
    const m = new RegExp(`^tls_pass_name_connections_total\\{domain="${DOMAIN}"\\} (\\d+)`, "m")
      .exec(text);
    return m ? Number(m[1]) : 0;
  }

  /** kill -9: no withdrawal, no goodbye; its sockets close as the kernel reaps it. */
  async kill(): Promise<void> {
    await this.#cli?.stop("SIGKILL");
    this.#cli = undefined;
  }

  /** SIGTERM: withdraws its announcements, then stops. */
  async stop(): Promise<void> {
    await this.#cli?.stop("SIGTERM");
    this.#cli = undefined;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }
}

export class Ha implements AsyncDisposable {
  replicas: PublicHandle[] = [];
  instances: PrivateInstance[] = [];
  /** Why each failed request failed (status 0), for the assertions' messages. */
  readonly errors: string[] = [];
  #root = "";
  private constructor(readonly cluster: Cluster, readonly redis: TestRedis) {}

  /** Redis, the cluster's EPS servers and internal server, and `replicas` public replicas. */
  static async start(replicas = 2): Promise<Ha> {
    const redis = await startRedis();
    let cluster: Cluster | undefined;
    try {
      cluster = await startCluster({ startPublic: false, callTimeoutMs: HA_CALL_TIMEOUT_MS });
      const ha = new Ha(cluster, redis);
      ha.#root = await Deno.readTextFile(cluster.rootFile);
      for (let i = 0; i < replicas; i++) ha.replicas.push(await startPublic(ha.publicSettings(i)));
      return ha;
    } catch (err) {
      await cluster?.[Symbol.asyncDispose]();
      await redis[Symbol.asyncDispose]();
      throw err;
    }
  }

  publicSettings(i: number): PublicSettings {
    return {
      ...this.cluster.publicSettings(),
      ...HA_TIMEOUTS,
      instance: `pub-${"ab"[i] ?? i}`,
      publicListen: LOOPBACK,
      privateListen: LOOPBACK,
      adminListen: LOOPBACK,
      store: {
        kind: "redis",
        url: parseRedisUrl(this.redis.url, "redis_url", []),
        prefix: "tls-pass:ha-test:",
      },
    } as PublicSettings;
  }

  /** Starts private instances `names` (child processes) and waits until every replica routes. */
  async startInstances(names: string[], pool = true): Promise<PrivateInstance[]> {
    const started = [];
    for (const name of names) {
      const p = await PrivateInstance.start(this, name, pool);
      this.instances.push(p);
      started.push(p);
    }
    await this.routedBy(names);
    return started;
  }

  /** Waits until every replica routes the test name to all of `instances`. */
  async routedBy(instances: string[], ms = 10_000): Promise<void> {
    const want = [...instances].sort().join(",");
    await within(
      (async () => {
        for (;;) {
          const ok = this.replicas.every((r) =>
            r.announcements.match(DOMAIN)?.instances.join(",") === want
          );
          if (ok) return;
          await this.changed();
        }
      })(),
      ms,
      `every replica routing ${DOMAIN} to ${want}`,
    );
  }

  /** Resolves at the next change of any replica's table (or after 100 ms: expiries sweep). */
  changed(): Promise<void> {
    return new Promise((resolve) => {
      const offs: (() => void)[] = [];
      const done = () => {
        clearTimeout(t);
        for (const off of offs) off();
        resolve();
      };
      const t = setTimeout(done, 100);
      for (const r of this.replicas) offs.push(r.announcements.onChange(done));
    });
  }

  /** Replica `i`'s Prometheus series `name` (summed over its labels); 0 when absent. */
  async metric(i: number, name: string): Promise<number> {
    const admin = (this.replicas[i]!.addrs as { admin?: HostPort }).admin!;
    const text = await (await fetch(`http://${formatHostPort(admin)}/metrics`)).text();
    let n = 0;
    for (const m of text.matchAll(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, "gm"))) {
      n += Number(m[1]);
    }
    return n;
  }

  /** One HTTPS POST to /jsonrpc through replica `i`'s public port; the status (0: failed). */
  async request(i: number, signal = AbortSignal.timeout(10_000)): Promise<number> {
    try {
      const r = await httpsRequest({
        connect: this.replicas[i]!.addrs.public as HostPort,
        serverName: DOMAIN,
        caCerts: [this.#root],
        method: "POST",
        path: "/jsonrpc",
        body: "{}",
        signal,
      });
      return r.status;
    } catch (err) {
      this.errors.push(err instanceof Error ? err.message : String(err));
      return 0;
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    for (const p of this.instances) await p.stop().catch(() => {});
    for (const r of this.replicas) await r.close().catch(() => {});
    await this.cluster[Symbol.asyncDispose]();
    await this.redis[Symbol.asyncDispose]();
  }
}
