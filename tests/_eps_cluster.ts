/**
 * Test helpers for the EPS network: a temporary PKI and directory, EPS servers and proxy clients
 * in this process, on loopback port 0.
 * @module
 */
import { join } from "node:path";
import { stringify } from "yaml";
import { createPki, type Pki, writePki } from "../lib/certs/pki.ts";
import {
  connectEps,
  type EpsClient,
  type EpsClientSettings,
  type Handler,
} from "../lib/eps/client.ts";
import { startEps } from "../lib/eps/server.ts";
import type { HostPort, RoleHandle } from "../lib/role.ts";
import { EPS_DEFAULTS, type EpsSettings } from "../lib/settings/eps.ts";

export const LOOPBACK: HostPort = { hostname: "127.0.0.1", port: 0 };

export interface OperatorSpec {
  address?: HostPort;
  fingerprints?: string[];
  permissions?: { method: string; from: string[] }[];
  proxy?: { "allowed_domains"?: string[]; "private_endpoint"?: string };
}

/** A temporary folder with a PKI (certs/) and a directory (directory/). */
export class Fixture implements AsyncDisposable {
  private constructor(readonly dir: string, readonly pki: Pki) {}

  static async create(names: string[]): Promise<Fixture> {
    const dir = await Deno.makeTempDir({ prefix: "tls-pass-eps-" });
    const pki = await createPki(names);
    await writePki(pki, join(dir, "certs"));
    await Deno.mkdir(join(dir, "directory"));
    return new Fixture(dir, pki);
  }

  get directoryDir(): string {
    return join(this.dir, "directory");
  }
  get rootFile(): string {
    return join(this.dir, "certs", "root.crt");
  }
  cert(name: string): string {
    return join(this.dir, "certs", `${name}.crt`);
  }
  key(name: string): string {
    return join(this.dir, "certs", `${name}.key`);
  }

  /** Writes directory/operators.yml. */
  async writeDirectory(operators: Record<string, OperatorSpec>): Promise<void> {
    const ops: Record<string, unknown> = {};
    for (const [name, o] of Object.entries(operators)) {
      const e: Record<string, unknown> = {};
      if (o.address) e.address = `${o.address.hostname}:${o.address.port}`;
      if (o.fingerprints) e.fingerprints = o.fingerprints;
      if (o.permissions) e.permissions = o.permissions;
      if (o.proxy) e.proxy = o.proxy;
      ops[name] = e;
    }
    await Deno.writeTextFile(
      join(this.directoryDir, "operators.yml"),
      stringify({ ca_certificate_files: [this.rootFile], operators: ops }),
    );
  }

  epsSettings(operator: string, more: Partial<EpsSettings> = {}): EpsSettings {
    return {
      operator,
      listen: LOOPBACK,
      certificateFile: this.cert(operator),
      keyFile: this.key(operator),
      directoryDir: this.directoryDir,
      ...EPS_DEFAULTS,
      keepaliveIntervalMs: 60_000,
      ...more,
    };
  }

  startEps(
    operator: string,
    more: Partial<EpsSettings> = {},
  ): Promise<RoleHandle<"links" | "proxy">> {
    return startEps(this.epsSettings(operator, more));
  }

  clientSettings(
    operator: string,
    address: HostPort,
    more: Partial<EpsClientSettings> = {},
  ): EpsClientSettings {
    return {
      address,
      certificateFile: this.cert(operator),
      keyFile: this.key(operator),
      caCertificateFiles: [this.rootFile],
      callTimeoutMs: 5000,
      maxMessageBytes: 1024 * 1024,
      ...more,
    };
  }

  /**
   * A proxy client attached to `address`; resolves once attached (bounded by 10 s). `as.instance`
   * names it (else the default name); `as.serve` handlers are registered before it attaches, so
   * that its `_eps.attach` names their methods.
   */
  async attach(
    operator: string,
    address: HostPort,
    more: Partial<EpsClientSettings> = {},
    as: { instance?: string; serve?: Record<string, Handler> } = {},
  ): Promise<EpsClient> {
    const c = connectEps(this.clientSettings(operator, address, more), undefined, as.instance);
    for (const [method, handler] of Object.entries(as.serve ?? {})) c.serve(method, handler);
    try {
      await withTimeout(c.ready, 10_000, `attach of ${operator}`);
    } catch (err) {
      await c.close();
      throw err;
    }
    return c;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await Deno.remove(this.dir, { recursive: true });
  }
}

/** Rejects when `p` does not settle within `ms`. */
export async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`Timed out after ${ms} ms: ${what}`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Retries `fn` until it resolves (each try bounded by the remaining time), for links coming up. */
export async function eventually<T>(fn: () => Promise<T>, ms: number, what: string): Promise<T> {
  const end = Date.now() + ms;
  let last: unknown;
  while (Date.now() < end) {
    try {
      return await fn();
    } catch (err) {
      last = err;
      await new Promise((r) => setTimeout(r, 50)); // poll interval between attempts, not a sync point
    }
  }
  throw new Error(`Timed out after ${ms} ms: ${what}; last error: ${String(last)}`);
}
