/**
 * Writes the settings of a complete tls-pass path for the benchmark into one folder: the
 * directory, the two EPS servers (operators `public-proxy-1` and `private-proxy-1`), the public
 * proxy and the private proxy, whose internal server is the bench backend. Used by run.ts and by
 * tls_pass_topology.sh:
 *
 *   deno run -A bench/make_settings.ts --out DIR --pki DIR [--public-port 4433]
 *     [--private-port 4434] [--public-eps-port 4435] [--private-eps-port 4436]
 *     [--internal 127.0.0.1:8888] [--domain test.internal-server.local] [--store-dir DIR]
 *     [--no-pool]   (the private proxy without pre-warmed dial-backs: every client by notice)
 *     [--names N]   (N announcements: n1.bench.local … and the domain last; the directory then
 *                    also allows ".bench.local")
 *     [--replicas N --redis-url redis://127.0.0.1:PORT]
 *                   (N public replicas of public-proxy-1 on the one public port, `reuse_port`,
 *                    `store: redis`, private ports --private-port, then 4437, 4438, …; and N
 *                    private instances of private-proxy-1, each listing every replica's port)
 *
 * Layout written (each role is one folder, pass it as `--settings`):
 *   DIR/directory/directory.yml
 *   DIR/roles/public-proxy-eps-1/settings.yml   DIR/roles/private-proxy-eps-1/settings.yml
 *   DIR/roles/public-proxy-1/settings.yml       DIR/roles/private-proxy-1/settings.yml
 *   with N replicas, also DIR/roles/public-proxy-1-r2/ … -rN/ and DIR/roles/private-proxy-1-r2/ …
 * Paths inside are absolute. The PKI folder is what `tls-pass certs --out DIR` writes.
 * @module
 */
import { parseArgs } from "node:util";
import { join, resolve } from "node:path";
import { stringify } from "yaml";

/** The role folders, by the role name used with `tls-pass run`. */
export const ROLE_DIRS = {
  publicEps: "roles/public-proxy-eps-1",
  privateEps: "roles/private-proxy-eps-1",
  public: "roles/public-proxy-1",
  private: "roles/private-proxy-1",
} as const;

export const PUBLIC_OPERATOR = "public-proxy-1";
export const PRIVATE_OPERATOR = "private-proxy-1";

/** Where the path listens and what it reaches. */
export interface PathPorts {
  host: string;
  publicPort: number;
  privatePort: number;
  publicEpsPort: number;
  privateEpsPort: number;
  /** The internal server, `host:port`. */
  internal: string;
  domain: string;
  /** The private ports of public replicas 2…N (default: 4437, 4438, … after the EPS ports). */
  replicaPrivatePorts?: number[];
}

/** Public replicas and private instances (issue 15): N of each, sharing one Redis. */
export interface Replicas {
  /** Public replicas of public-proxy-1, and as many private instances of private-proxy-1. */
  count: number;
  /** `redis://host:port`, the store every public replica shares (with count > 1). */
  redisUrl: string;
}

/** The private port of public replica `i` (0-based): replica 0 has `p.privatePort`. */
export function replicaPrivatePort(p: PathPorts, i: number): number {
  if (i === 0) return p.privatePort;
  const next = Math.max(p.publicPort, p.privatePort, p.publicEpsPort, p.privateEpsPort) + i;
  return p.replicaPrivatePorts?.[i - 1] ?? next;
}

/** The settings folder of public replica (`side` "public") or private instance `i` (0-based). */
export function replicaDir(side: "public" | "private", i: number): string {
  return i === 0 ? ROLE_DIRS[side] : `${ROLE_DIRS[side]}-r${i + 1}`;
}

/** The `instance` names with more than one replica: `pub-1`, `pub-2`, … and `priv-1`, …. */
export function instanceName(side: "public" | "private", i: number): string {
  return `${side === "public" ? "pub" : "priv"}-${i + 1}`;
}

export const DEFAULT_PORTS: PathPorts = {
  host: "127.0.0.1",
  publicPort: 4433,
  privatePort: 4434,
  publicEpsPort: 4435,
  privateEpsPort: 4436,
  internal: "127.0.0.1:8888",
  domain: "test.internal-server.local",
};

/** The suffix rule that allows `domain` and its siblings: `a.b.c` → `.b.c`. */
function suffixOf(domain: string): string {
  const i = domain.indexOf(".");
  return i < 0 ? domain : domain.slice(i);
}

/** The directory rule that allows the generated names of {@link announcementsOf}. */
export const NAMES_RULE = ".bench.local";

/**
 * The private proxy's announcements: `names` in all, every one to `p.internal`. With more than
 * one, `n1.bench.local` … `n<names-1>.bench.local` come first and `p.domain` last (the name the
 * bench requests is then the last of the pages the private proxy sends).
 */
export function announcementsOf(
  p: PathPorts,
  names = 1,
): { domain: string; internal: string }[] {
  const out: { domain: string; internal: string }[] = [];
  for (let i = 1; i < names; i++) out.push({ domain: `n${i}${NAMES_RULE}`, internal: p.internal });
  out.push({ domain: p.domain, internal: p.internal });
  return out;
}

/** SHA-256 of the DER of the first certificate in a PEM text, lowercase hex (a directory pin). */
export async function fingerprintOfPem(pem: string): Promise<string> {
  const m = /-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\s]+)-----END CERTIFICATE-----/.exec(pem);
  if (!m) throw new TypeError("Cannot compute fingerprint: no PEM certificate found");
  const der = Uint8Array.from(atob(m[1]!.replace(/\s+/g, "")), (c) => c.charCodeAt(0));
  const hash = new Uint8Array(await crypto.subtle.digest("SHA-256", der));
  return Array.from(hash, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * The settings documents, by file path relative to the output folder. `pins` maps an operator to
 * its leaf certificate's fingerprint (optional: without it the directory pins nothing).
 */
export function settingsDocuments(
  out: string,
  pki: string,
  p: PathPorts,
  storeDir: string,
  pins: Record<string, string> = {},
  pool = true,
  names = 1,
  replicas?: Replicas,
): Record<string, unknown> {
  const pin = (op: string) => (pins[op] ? { fingerprints: [pins[op]] } : {});
  const cert = (name: string) => join(pki, `${name}.crt`);
  const key = (name: string) => join(pki, `${name}.key`);
  const ca = [join(pki, "root.crt")];
  const directoryDir = join(out, "directory");
  const at = (port: number) => `${p.host}:${port}`;
  const eps = (operator: string, port: number) => ({
    address: at(port),
    certificate_file: cert(operator),
    key_file: key(operator),
    ca_certificate_files: ca,
  });
  const n = replicas?.count ?? 1;
  if (!(Number.isInteger(n) && n >= 1)) throw new TypeError(`Cannot write ${n} replicas`);
  if (n > 1 && !replicas?.redisUrl) throw new TypeError("Cannot write replicas without redis_url");
  const privatePorts = Array.from({ length: n }, (_, i) => at(replicaPrivatePort(p, i)));
  const docs: Record<string, unknown> = {
    "directory/directory.yml": {
      ca_certificate_files: ca,
      operators: {
        [PUBLIC_OPERATOR]: {
          address: at(p.publicEpsPort),
          ...pin(PUBLIC_OPERATOR),
          permissions: [
            { method: "announceConnections", from: [PRIVATE_OPERATOR] },
            { method: "withdrawConnections", from: [PRIVATE_OPERATOR] },
            { method: "getAnnouncements", from: [PRIVATE_OPERATOR] },
            { method: "openPool", from: [PRIVATE_OPERATOR] },
          ],
          proxy: { private_endpoint: at(p.privatePort) },
        },
        [PRIVATE_OPERATOR]: {
          address: at(p.privateEpsPort),
          ...pin(PRIVATE_OPERATOR),
          permissions: [{ method: "incomingConnection", from: [PUBLIC_OPERATOR] }],
          proxy: {
            allowed_domains: names > 1 ? [suffixOf(p.domain), NAMES_RULE] : [suffixOf(p.domain)],
          },
        },
      },
    },
    [`${ROLE_DIRS.publicEps}/settings.yml`]: {
      operator: PUBLIC_OPERATOR,
      listen: at(p.publicEpsPort),
      certificate_file: cert(PUBLIC_OPERATOR),
      key_file: key(PUBLIC_OPERATOR),
      directory_dir: directoryDir,
    },
    [`${ROLE_DIRS.privateEps}/settings.yml`]: {
      operator: PRIVATE_OPERATOR,
      listen: at(p.privateEpsPort),
      certificate_file: cert(PRIVATE_OPERATOR),
      key_file: key(PRIVATE_OPERATOR),
      directory_dir: directoryDir,
    },
  };
  for (let i = 0; i < n; i++) {
    // one replica: the file store, as before issue 15; several: Redis, one public port
    const store = n === 1
      ? { store: "file", store_path: join(storeDir, "announcements.jsonl") }
      : { store: "redis", redis_url: replicas!.redisUrl };
    docs[`${replicaDir("public", i)}/settings.yml`] = {
      operator: PUBLIC_OPERATOR,
      ...(n > 1 ? { instance: instanceName("public", i) } : {}),
      public_listen: at(p.publicPort),
      // the kernel spreads new clients over the replicas listening on the one public port
      ...(n > 1 ? { reuse_port: true } : {}),
      private_listen: privatePorts[i],
      private_endpoint: privatePorts[i],
      eps: eps(PUBLIC_OPERATOR, p.publicEpsPort),
      directory_dir: directoryDir,
      ...store,
      // Every bench client connects from 127.0.0.1: W4 keeps 100 handshakes in flight and W7
      // starts 2,000 within 100 ms. This is the default (4096, as max_pending and
      // max_pending_per_operator), written out so that the bench does not depend on it.
      max_pending_per_client: 4096,
    };
    docs[`${replicaDir("private", i)}/settings.yml`] = {
      operator: PRIVATE_OPERATOR,
      ...(n > 1 ? { instance: instanceName("private", i) } : {}),
      eps: eps(PRIVATE_OPERATOR, p.privateEpsPort),
      announce_to: [PUBLIC_OPERATOR],
      // one replica: one address, as before; several: every replica's private port
      endpoints: { [PUBLIC_OPERATOR]: n === 1 ? privatePorts[0] : privatePorts },
      announcements: announcementsOf(p, names),
      ...(pool ? {} : { pool: { enabled: false } }),
    };
  }
  return docs;
}

/** The role folders written: the four of one path, and every replica's and instance's. */
export type SettingsDirs = Record<keyof typeof ROLE_DIRS, string> & {
  /** Every public replica's folder, `public` first. */
  publics: string[];
  /** Every private instance's folder, `private` first. */
  privates: string[];
};

/**
 * Writes every settings file under `out` (absolute paths inside); returns the role folders.
 * With `replicas` (count > 1), that many public replicas and private instances (see the module
 * doc).
 */
export async function makeSettings(
  out: string,
  pki: string,
  ports: PathPorts = DEFAULT_PORTS,
  storeDir: string = join(out, "store"),
  pool = true,
  names = 1,
  replicas?: Replicas,
): Promise<SettingsDirs> {
  const absOut = resolve(out);
  const pins: Record<string, string> = {};
  for (const op of [PUBLIC_OPERATOR, PRIVATE_OPERATOR]) {
    pins[op] = await fingerprintOfPem(await Deno.readTextFile(join(resolve(pki), `${op}.crt`)));
  }
  const docs = settingsDocuments(
    absOut,
    resolve(pki),
    ports,
    resolve(storeDir),
    pins,
    pool,
    names,
    replicas,
  );
  await Deno.mkdir(resolve(storeDir), { recursive: true });
  for (const [rel, doc] of Object.entries(docs)) {
    const file = join(absOut, rel);
    await Deno.mkdir(join(file, ".."), { recursive: true });
    await Deno.writeTextFile(file, `# written by bench/make_settings.ts\n${stringify(doc)}`);
  }
  return {
    publicEps: join(absOut, ROLE_DIRS.publicEps),
    privateEps: join(absOut, ROLE_DIRS.privateEps),
    public: join(absOut, ROLE_DIRS.public),
    private: join(absOut, ROLE_DIRS.private),
    publics: Array.from(
      { length: replicas?.count ?? 1 },
      (_, i) => join(absOut, replicaDir("public", i)),
    ),
    privates: Array.from(
      { length: replicas?.count ?? 1 },
      (_, i) => join(absOut, replicaDir("private", i)),
    ),
  };
}

if (import.meta.main) {
  const { values: a } = parseArgs({
    args: Deno.args,
    strict: true,
    options: {
      out: { type: "string" },
      pki: { type: "string" },
      host: { type: "string", default: DEFAULT_PORTS.host },
      "public-port": { type: "string", default: String(DEFAULT_PORTS.publicPort) },
      "private-port": { type: "string", default: String(DEFAULT_PORTS.privatePort) },
      "public-eps-port": { type: "string", default: String(DEFAULT_PORTS.publicEpsPort) },
      "private-eps-port": { type: "string", default: String(DEFAULT_PORTS.privateEpsPort) },
      internal: { type: "string", default: DEFAULT_PORTS.internal },
      domain: { type: "string", default: DEFAULT_PORTS.domain },
      "store-dir": { type: "string" },
      "no-pool": { type: "boolean", default: false },
      names: { type: "string", default: "1" },
      replicas: { type: "string", default: "1" },
      "redis-url": { type: "string" },
    },
  });
  const count = Number(a.replicas);
  if (
    !a.out || !a.pki || !(Number.isInteger(count) && count >= 1) || (count > 1 && !a["redis-url"])
  ) {
    // deno-lint-ignore no-console
    console.error("usage: make_settings.ts --out DIR --pki DIR [--public-port N] ... (see file)");
    Deno.exit(2);
  }
  const dirs = await makeSettings(
    a.out,
    a.pki,
    {
      host: a.host,
      publicPort: Number(a["public-port"]),
      privatePort: Number(a["private-port"]),
      publicEpsPort: Number(a["public-eps-port"]),
      privateEpsPort: Number(a["private-eps-port"]),
      internal: a.internal,
      domain: a.domain,
    },
    a["store-dir"] ?? join(a.out, "store"),
    !a["no-pool"],
    Number(a.names),
    count > 1 ? { count, redisUrl: a["redis-url"]! } : undefined,
  );
  // deno-lint-ignore no-console
  console.log(JSON.stringify(dirs));
}
