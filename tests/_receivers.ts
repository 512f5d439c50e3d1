/**
 * Real PROXY protocol peers for the tests in tests/: an nginx and a HAProxy, each a child process
 * in the foreground (`daemon off`, `-db`) with its own configuration in a temporary folder, on free
 * loopback ports; disposal stops it by PID (SIGTERM, then waits for its exit) and removes the
 * folder. Their logs are readable while they run (nginx's access log, HAProxy's stdout).
 * @module
 */
import { join } from "node:path";
import type { HostPort } from "../lib/role.ts";

export const NGINX = "/usr/sbin/nginx";
export const HAPROXY = "/usr/sbin/haproxy";

/** A loopback port free now (bound once and released: the receiver binds it next). */
export function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = l.addr.port;
  l.close();
  return port;
}

/** Waits until something accepts on `hostname:port` (for a receiver with no readiness signal). */
export async function listening(hostname: string, port: number, what: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      (await Deno.connect({ hostname, port })).close();
      return;
    } catch (err) {
      if (Date.now() > deadline) throw new Error(`${what} does not listen on ${port}: ${err}`);
      await new Promise((r) => setTimeout(r, 20)); // retrying a connect, bounded above
    }
  }
}

/** A receiver child process and its folder; disposal stops it by PID and removes the folder. */
export interface Receiver extends AsyncDisposable {
  /** The port it listens on (HAProxy: its first frontend's). */
  readonly port: number;
  /** What it logged so far (nginx's access log, HAProxy's stdout). */
  log(): Promise<string>;
}

interface Spawn {
  /** Its name in errors and in the temporary folder's name. */
  what: string;
  cmd: string;
  args: (dir: string) => string[];
  configName: string;
  config: (dir: string) => string;
  /** The log as of now, from its folder or its stdout so far. */
  logOf: (dir: string, stdout: () => string) => Promise<string>;
  /** Where it accepts once it is ready. */
  ready: number;
  port: number;
}

async function spawnReceiver(s: Spawn): Promise<Receiver> {
  const dir = await Deno.makeTempDir({ prefix: `tls-pass-${s.what}-` });
  await Deno.writeTextFile(join(dir, s.configName), s.config(dir));
  const child = new Deno.Command(s.cmd, {
    args: s.args(dir),
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let out = "";
  let err = "";
  const dec = () => new TextDecoderStream();
  const drain = async (stream: ReadableStream<Uint8Array>, add: (t: string) => void) => {
    for await (const t of stream.pipeThrough(dec())) add(t);
  };
  const reading = Promise.all([
    drain(child.stdout, (t) => out += t),
    drain(child.stderr, (t) => err += t),
  ]);
  const stop = async () => {
    try {
      child.kill("SIGTERM");
    } catch { /* already exited */ }
    await child.status;
    await reading;
    await Deno.remove(dir, { recursive: true });
  };
  try {
    const exited = child.status.then((st) => {
      throw new Error(`${s.what} exited with ${st.code}: ${err}`);
    });
    await Promise.race([listening("127.0.0.1", s.ready, s.what), exited]);
  } catch (e) {
    await stop();
    throw e;
  }
  return {
    port: s.port,
    log: () => s.logOf(dir, () => out),
    [Symbol.asyncDispose]: stop,
  };
}

/**
 * nginx terminating TLS with `cert`/`key` behind `proxy_protocol` on 127.0.0.1:`port` and
 * [::1]:`port`, answering "ok\n" to every request; each request's access log line is
 * `pp $proxy_protocol_addr $proxy_protocol_port $remote_addr $ssl_server_name`.
 */
export function startNginx(port: number, cert: string, key: string): Promise<Receiver> {
  return spawnReceiver({
    what: "nginx",
    cmd: NGINX,
    args: (dir) => ["-p", dir, "-c", join(dir, "nginx.conf"), "-e", join(dir, "error.log")],
    configName: "nginx.conf",
    config: (dir) => `
daemon off;
master_process off;
pid ${join(dir, "nginx.pid")};
error_log ${join(dir, "error.log")} info;
events { worker_connections 64; }
http {
  client_body_temp_path ${join(dir, "body")};
  proxy_temp_path ${join(dir, "proxy")};
  fastcgi_temp_path ${join(dir, "fastcgi")};
  uwsgi_temp_path ${join(dir, "uwsgi")};
  scgi_temp_path ${join(dir, "scgi")};
  log_format pp 'pp $proxy_protocol_addr $proxy_protocol_port $remote_addr $ssl_server_name';
  access_log ${join(dir, "access.log")} pp;
  server {
    listen 127.0.0.1:${port} ssl proxy_protocol;
    listen [::1]:${port} ssl proxy_protocol;
    ssl_certificate ${cert};
    ssl_certificate_key ${key};
    location / { return 200 "ok\\n"; }
  }
}
`,
    logOf: async (dir) => {
      try {
        return await Deno.readTextFile(join(dir, "access.log"));
      } catch (err) {
        if (err instanceof Deno.errors.NotFound) return "";
        throw err;
      }
    },
    ready: port,
    port,
  });
}

/** One HAProxy frontend (`mode tcp`) and the single server of its backend. */
export interface HaproxyFrontend {
  /** Its port on 127.0.0.1 (default: a free one). */
  port?: number;
  /** Options of its `bind` line, e.g. `accept-proxy`. */
  bind?: string;
  /** Its `log-format`: when given, one line per connection on HAProxy's stdout. */
  logFormat?: string;
  server: HostPort;
  /** Options of the `server` line, e.g. `send-proxy-v2`. */
  send?: string;
}

/** A running HAProxy: {@linkcode Receiver.port} is its first frontend's. */
export interface Haproxy extends Receiver {
  /** Each frontend's port, in the order given. */
  readonly ports: readonly number[];
}

/**
 * HAProxy in the foreground (`-db`) with `frontends`, plus one that only accepts and rejects
 * (silently): connecting to it tells that HAProxy listens, without a connection to any backend.
 */
export async function startHaproxy(frontends: readonly HaproxyFrontend[]): Promise<Haproxy> {
  const ready = freePort();
  const ports = frontends.map((f) => f.port ?? freePort());
  const parts = [
    "global\n  maxconn 100\n  log stdout format raw local0\n",
    "defaults\n  mode tcp\n  log global\n  option dontlognull\n" +
    "  timeout connect 5s\n  timeout client 10s\n  timeout server 10s\n",
    `frontend ready\n  bind 127.0.0.1:${ready}\n  no log\n  tcp-request connection reject\n`,
  ];
  for (const [i, f] of frontends.entries()) {
    parts.push(
      `frontend fe${i}\n  bind 127.0.0.1:${ports[i]}${f.bind ? ` ${f.bind}` : ""}\n` +
        (f.logFormat === undefined ? "  no log\n" : `  log-format "${f.logFormat}"\n`) +
        `  default_backend be${i}\n`,
      `backend be${i}\n  server s1 ${f.server.hostname}:${f.server.port}${
        f.send ? ` ${f.send}` : ""
      }\n`,
    );
  }
  const r = await spawnReceiver({
    what: "haproxy",
    cmd: HAPROXY,
    args: (dir) => ["-db", "-f", join(dir, "haproxy.cfg")],
    configName: "haproxy.cfg",
    config: () => parts.join("\n"),
    logOf: (_dir, out) => Promise.resolve(out()),
    ready,
    port: ports[0] ?? ready,
  });
  return Object.assign(r, { ports });
}

/** Re-reads `r`'s log until a line matches `re` (bounded); fails with the log. */
export async function pollLog(r: Receiver, re: RegExp, what: string): Promise<void> {
  const deadline = Date.now() + 5000;
  for (;;) {
    const text = await r.log();
    if (re.test(text)) return;
    if (Date.now() > deadline) throw new Error(`Timed out: ${what}; log:\n${text}`);
    await new Promise((res) => setTimeout(res, 20)); // the receiver writes after the response
  }
}
