/**
 * The benchmark's internal HTTPS server and its certificates, the same as the shared harness's
 * backend.sh and certs.sh (../shared/bench/), rewritten here so that `deno task bench` works from
 * a fresh clone: nginx on 127.0.0.1:8888, TLS 1.2/1.3 with session resumption off (every new
 * connection is a full handshake), `/jsonrpc` → `{"message":"success"}`, `/blob` → 256 MiB.
 * HTTP/2 is on as well (ALPN `h2`, for W6's h2load); the other clients offer no ALPN (ab, wrk, the
 * Node clients) or are held to HTTP/1.1 (curl `--http1.1`), so W1–W5 stay HTTP/1.1 as in the shared
 * harness, whose backend has no HTTP/2.
 * @module
 */
import { join } from "node:path";
import { type Proc, run, spawn, stop, waitPort } from "./proc.ts";

export const SNI = "test.internal-server.local";
export const BACKEND_PORT = 8888;

/** Paths of the bench CA and the backend's certificate. */
export interface BenchCerts {
  dir: string;
  caCrt: string;
  serverKey: string;
  serverChain: string;
}

async function exists(p: string): Promise<boolean> {
  try {
    await Deno.stat(p);
    return true;
  } catch {
    return false;
  }
}

/**
 * Writes a throwaway root CA and an ECDSA P-256 server certificate for SNI (SANs: SNI,
 * localhost, 127.0.0.1, ::1) into `dir`, unless they exist already.
 */
export async function ensureCerts(dir: string): Promise<BenchCerts> {
  const certs = {
    dir,
    caCrt: join(dir, "ca.crt"),
    serverKey: join(dir, "server.key"),
    serverChain: join(dir, "server-chain.crt"),
  };
  if (await exists(certs.serverChain)) return certs;
  await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
  await Deno.writeTextFile(
    join(dir, "server.ext"),
    [
      "basicConstraints=critical,CA:FALSE",
      "keyUsage=critical,digitalSignature",
      "extendedKeyUsage=serverAuth",
      `subjectAltName=DNS:${SNI},DNS:localhost,IP:127.0.0.1,IP:::1`,
      "",
    ].join("\n"),
  );
  const steps: string[][] = [
    ["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca.key"],
    [
      "req",
      "-x509",
      "-new",
      "-key",
      "ca.key",
      "-sha256",
      "-days",
      "3650",
      "-subj",
      "/CN=tls-pass bench root CA",
      "-addext",
      "basicConstraints=critical,CA:TRUE",
      "-addext",
      "keyUsage=critical,keyCertSign,cRLSign",
      "-out",
      "ca.crt",
    ],
    ["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "server.key"],
    ["req", "-new", "-key", "server.key", "-subj", `/CN=${SNI}`, "-out", "server.csr"],
    [
      "x509",
      "-req",
      "-in",
      "server.csr",
      "-CA",
      "ca.crt",
      "-CAkey",
      "ca.key",
      "-CAcreateserial",
      "-sha256",
      "-days",
      "825",
      "-extfile",
      "server.ext",
      "-out",
      "server.crt",
    ],
  ];
  for (const args of steps) {
    const r = await run(["openssl", ...args], 30_000, { cwd: dir });
    if (r.code !== 0) {
      throw new Error(`Cannot create bench certificates: openssl ${args[0]}: ${r.stderr}`);
    }
  }
  const chain = (await Deno.readTextFile(join(dir, "server.crt"))) +
    (await Deno.readTextFile(join(dir, "ca.crt")));
  await Deno.writeTextFile(certs.serverChain + ".tmp", chain);
  await Deno.rename(certs.serverChain + ".tmp", certs.serverChain);
  for (const f of ["server.csr", "server.ext", "ca.srl"]) {
    await Deno.remove(join(dir, f)).catch(() => {});
  }
  await Deno.chmod(join(dir, "ca.key"), 0o600);
  await Deno.chmod(certs.serverKey, 0o600);
  return certs;
}

/** The running backend. */
export interface Backend {
  proc: Proc;
  pids(): number[];
  stop(): Promise<void>;
}

/** Writes `mib` MiB of random bytes to `file` once (reused while its size matches). */
async function ensureBlob(file: string, mib: number): Promise<void> {
  const want = mib * 1024 * 1024;
  try {
    if ((await Deno.stat(file)).size === want) return;
  } catch {
    // missing
  }
  const f = await Deno.open(file + ".tmp", { write: true, create: true, truncate: true });
  try {
    const chunk = new Uint8Array(1024 * 1024);
    for (let i = 0; i < mib; i++) {
      for (let off = 0; off < chunk.length; off += 65536) {
        crypto.getRandomValues(chunk.subarray(off, off + 65536));
      }
      for (let off = 0; off < chunk.length;) off += await f.write(chunk.subarray(off));
    }
  } finally {
    f.close();
  }
  await Deno.rename(file + ".tmp", file);
}

/**
 * How this nginx turns HTTP/2 on for a TLS listener: `http2 on;` from nginx 1.25.1, the `http2`
 * parameter of `listen` before (Debian 12 has 1.22, where `http2 on` is unknown).
 */
export function http2Directives(version: string): { listen: string; server: string } {
  const [major = 0, minor = 0, patch = 0] = version.split(".").map((x) => Number(x) || 0);
  const modern = major > 1 || (major === 1 && (minor > 25 || (minor === 25 && patch >= 1)));
  return modern ? { listen: "", server: "http2 on;" } : { listen: " http2", server: "" };
}

async function nginxVersion(): Promise<string> {
  const r = await run(["nginx", "-v"], 5000).catch(() => undefined);
  return /nginx\/(\d+\.\d+\.\d+)/.exec(`${r?.stdout ?? ""}${r?.stderr ?? ""}`)?.[1] ?? "0.0.0";
}

/** Starts nginx on 127.0.0.1:8888 with its config, logs and blob under `dir`. */
export async function startBackend(
  dir: string,
  certs: BenchCerts,
  options: { blobMib: number; workers?: string },
): Promise<Backend> {
  await Deno.mkdir(join(dir, "logs"), { recursive: true });
  await Deno.mkdir(join(dir, "tmp"), { recursive: true });
  await ensureBlob(join(dir, "blob"), options.blobMib);
  const h2 = http2Directives(await nginxVersion());
  const conf = `worker_processes ${options.workers ?? "auto"};
worker_rlimit_nofile 20000;
daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/logs/error.log warn;
events { worker_connections 10000; }
http {
  access_log off;
  client_body_temp_path ${dir}/tmp/body;
  proxy_temp_path ${dir}/tmp/proxy;
  fastcgi_temp_path ${dir}/tmp/fastcgi;
  uwsgi_temp_path ${dir}/tmp/uwsgi;
  scgi_temp_path ${dir}/tmp/scgi;
  keepalive_requests 1000000;
  keepalive_timeout 120s;
  client_header_timeout 120s;
  server {
    # nginx's default listen backlog is 511; W7 starts up to 2,000 connections within 100 ms
    # (the kernel caps this at net.core.somaxconn)
    # HTTP/2 (ALPN h2) for W6's h2load; clients that offer no ALPN get HTTP/1.1
    listen 127.0.0.1:${BACKEND_PORT} ssl${h2.listen} backlog=4096;
    ${h2.server}
    server_name ${SNI} localhost;
    ssl_certificate ${certs.serverChain};
    ssl_certificate_key ${certs.serverKey};
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache off;
    ssl_session_tickets off;
    location = /jsonrpc {
      default_type application/json;
      return 200 '{"message":"success"}';
    }
    location = /blob {
      default_type application/octet-stream;
      alias ${dir}/blob;
    }
    location / { return 404; }
  }
}
`;
  await Deno.writeTextFile(join(dir, "nginx.conf"), conf);
  const proc = spawn("backend nginx", ["nginx", "-p", dir, "-c", join(dir, "nginx.conf")], {
    stdoutFile: join(dir, "nginx.log"),
  });
  const backend: Backend = {
    proc,
    pids: () => (proc.exited ? [] : [proc.pid]),
    stop: () => stop(proc, 10_000),
  };
  if (!(await waitPort("127.0.0.1", BACKEND_PORT, 10_000))) {
    await backend.stop();
    const err = await Deno.readTextFile(join(dir, "logs/error.log")).catch(() => "");
    throw new Error(
      `Cannot start the backend: nothing listens on 127.0.0.1:${BACKEND_PORT}\n${err}`,
    );
  }
  return backend;
}
