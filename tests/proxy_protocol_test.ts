// The PROXY protocol to the internal server (docs/architecture.md, "The PROXY protocol") read by
// real receivers behind the tunnel: nginx (`listen … ssl proxy_protocol`, v1 and v2) logs the
// address it was given, for a client bound to 127.0.0.2 and one on ::1; HAProxy (`accept-proxy`)
// logs the v2 header's AUTHORITY TLV, the client's SNI. Both are child processes with their own
// configuration in a temporary folder, on free loopback ports, stopped by PID.
import assert from "node:assert/strict";
import { join } from "node:path";
import net from "node:net";
import tls from "node:tls";
import { type Cluster, DOMAIN, POOL_OFF, startCluster, within } from "./_cluster.ts";
import type { ProxyProtocolVersion } from "../lib/wire/proxy_protocol.ts";
import type { HostPort } from "../lib/role.ts";

const NGINX = "/usr/sbin/nginx";
const HAPROXY = "/usr/sbin/haproxy";

/** A loopback port free now (the receivers bind it themselves). */
function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** Waits until something accepts on `hostname:port` (a receiver that has no readiness signal). */
async function listening(hostname: string, port: number, what: string): Promise<void> {
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
interface Receiver extends AsyncDisposable {
  readonly port: number;
  /** What it logged so far (the access log, or HAProxy's stdout). */
  log(): Promise<string>;
}

async function spawnReceiver(
  what: string,
  cmd: string,
  args: (dir: string) => string[],
  config: (dir: string) => string,
  configName: string,
  logOf: (dir: string, out: () => string) => Promise<string>,
  port: number,
): Promise<Receiver> {
  const dir = await Deno.makeTempDir({ prefix: `tls-pass-${what}-` });
  await Deno.writeTextFile(join(dir, configName), config(dir));
  const child = new Deno.Command(cmd, { args: args(dir), stdout: "piped", stderr: "piped" })
    .spawn();
  let out = "";
  let err = "";
  const dec = new TextDecoder();
  const drain = async (s: ReadableStream<Uint8Array>, add: (t: string) => void) => {
    for await (const b of s) add(dec.decode(b, { stream: true }));
  };
  const reading = Promise.all([
    drain(child.stdout, (t) => out += t),
    drain(child.stderr, (t) => err += t),
  ]);
  const stop = async () => {
    try {
      child.kill("SIGTERM");
    } catch { /* exited */ }
    await child.status;
    await reading;
    await Deno.remove(dir, { recursive: true });
  };
  try {
    const exited = child.status.then((s) => {
      throw new Error(`${what} exited with ${s.code}: ${err}`);
    });
    await Promise.race([listening("127.0.0.1", port, what), exited]);
  } catch (e) {
    await stop();
    throw e;
  }
  return {
    port,
    log: () => logOf(dir, () => out),
    [Symbol.asyncDispose]: stop,
  };
}

/** nginx terminating TLS with `cert`/`key` behind `proxy_protocol` on 127.0.0.1 and [::1]. */
function startNginx(port: number, cert: string, key: string): Promise<Receiver> {
  return spawnReceiver(
    "nginx",
    NGINX,
    (dir) => ["-p", dir, "-c", join(dir, "nginx.conf"), "-e", join(dir, "error.log")],
    (dir) => `
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
    "nginx.conf",
    async (dir) => {
      try {
        return await Deno.readTextFile(join(dir, "access.log"));
      } catch (err) {
        if (err instanceof Deno.errors.NotFound) return "";
        throw err;
      }
    },
    port,
  );
}

/**
 * HAProxy reading a PROXY header (`accept-proxy`) and logging its AUTHORITY TLV and source to
 * stdout, then passing the TLS bytes on to `backend`.
 */
function startHaproxy(port: number, backend: HostPort): Promise<Receiver> {
  return spawnReceiver(
    "haproxy",
    HAPROXY,
    (dir) => ["-db", "-f", join(dir, "haproxy.cfg")],
    () => `
global
  log stdout format raw local0
defaults
  mode tcp
  log global
  option dontlognull
  timeout connect 5s
  timeout client 10s
  timeout server 10s
frontend fe
  bind 127.0.0.1:${port} accept-proxy
  log-format "pp authority=%[fc_pp_authority] src=%ci:%cp"
  default_backend be
backend be
  server internal ${backend.hostname}:${backend.port}
`,
    "haproxy.cfg",
    (_dir, out) => Promise.resolve(out()),
    port,
  );
}

/**
 * One HTTPS request through `c`'s public port from a socket bound to `from`, trusting `root`;
 * returns the client socket's own port (what the receiver must log) and the response.
 */
async function requestFrom(
  connect: HostPort,
  from: string,
  root: string,
): Promise<{ port: number; response: string }> {
  const ca = await Deno.readTextFile(root);
  return await within(
    new Promise((resolve, reject) => {
      // bound to `from` first: the source address the receiver must log
      const tcp = net.connect({ host: connect.hostname, port: connect.port, localAddress: from });
      const s = tls.connect({
        socket: tcp,
        servername: DOMAIN,
        ca,
        ALPNProtocols: ["http/1.1"],
      });
      let port = 0;
      let response = "";
      s.on("secureConnect", () => {
        port = tcp.localPort!;
        s.write(`GET / HTTP/1.1\r\nHost: ${DOMAIN}\r\nConnection: close\r\n\r\n`);
      });
      s.on("data", (b: Uint8Array) => response += new TextDecoder().decode(b));
      s.on("end", () => {
        s.destroy();
        resolve({ port, response });
      });
      s.on("error", reject);
    }),
    10_000,
    `request from ${from}`,
  );
}

/** A cluster whose announcement points at `internal` with `proxyProtocol`. */
function clusterTo(
  internal: HostPort,
  proxyProtocol: ProxyProtocolVersion,
  publicHost: string,
  pool: boolean,
): Promise<Cluster> {
  return startCluster({
    startPrivate: false,
    public: { publicListen: { hostname: publicHost, port: 0 } },
    private: {
      ...(pool ? {} : POOL_OFF),
      announcements: [{ domain: DOMAIN, internal, expiresInMs: 3_600_000, proxyProtocol }],
    },
  });
}

for (const [version, pool] of [["v1", false], ["v2", true]] as const) {
  Deno.test(`nginx behind the tunnel logs the real IPv4 and IPv6 client from PROXY ${version}`, async () => {
    const port = freePort();
    const internal = { hostname: "127.0.0.1", port };
    await using c4 = await clusterTo(internal, version, "127.0.0.1", pool);
    await using c6 = await clusterTo(internal, version, "::1", pool);
    await using nginx = await startNginx(
      port,
      c4.cert("internal-server"),
      c4.key("internal-server"),
    );
    await c4.startPrivate();
    await c6.startPrivate();
    for (const [c, from] of [[c4, "127.0.0.2"], [c6, "::1"]] as const) {
      const { port: clientPort, response } = await requestFrom(
        c.pub.addrs.public,
        from,
        c4.rootFile,
      );
      assert.match(response, /^HTTP\/1\.1 200 /);
      assert.match(response, /ok\n$/);
      const line = new RegExp(
        `^pp ${from.replaceAll(".", "\\.")} ${clientPort} 127\\.0\\.0\\.1 ${
          DOMAIN.replaceAll(".", "\\.")
        }$`,
        "m",
      );
      await pollLog(nginx, line, `nginx's access log line for ${from}:${clientPort}`);
    }
  });
}

Deno.test("HAProxy behind the tunnel reads the SNI from the PROXY v2 AUTHORITY TLV", async () => {
  const port = freePort();
  await using c = await clusterTo({ hostname: "127.0.0.1", port }, "v2", "127.0.0.1", false);
  await using haproxy = await startHaproxy(port, c.internal.addrs.main);
  await c.startPrivate();
  const { port: clientPort, response } = await requestFrom(
    c.pub.addrs.public,
    "127.0.0.2",
    c.rootFile,
  );
  assert.match(response, /^HTTP\/1\.1 200 /);
  await pollLog(
    haproxy,
    new RegExp(
      `^pp authority=${DOMAIN.replaceAll(".", "\\.")} src=127\\.0\\.0\\.2:${clientPort}$`,
      "m",
    ),
    "HAProxy's log line with the AUTHORITY TLV",
  );
});

/** Re-reads `r`'s log until a line matches `re` (bounded); fails with the log. */
async function pollLog(r: Receiver, re: RegExp, what: string): Promise<void> {
  const deadline = Date.now() + 5000;
  for (;;) {
    const text = await r.log();
    if (re.test(text)) return;
    if (Date.now() > deadline) throw new Error(`Timed out: ${what}; log:\n${text}`);
    await new Promise((res) => setTimeout(res, 20)); // the receiver writes after the response
  }
}
