/**
 * Captures real ClientHellos as test fixtures for lib/wire/client_hello_test.ts.
 *
 * For each client below: listen on 127.0.0.1 port 0, start the client against that port, read what
 * it sends first until the ClientHello is complete, save the records holding it to
 * lib/proxy/testdata/<name>.bin, close the connection (the client then fails, as expected) and
 * reap the client.
 *
 *     deno run -A tools/capture_client_hello.ts [name...]   # no names: all of them
 *
 * Needs curl, openssl, node and wget (GnuTLS) on PATH; Deno's own client is rustls.
 * @module
 */
import { readClientHello } from "../lib/wire/client_hello.ts";

const HOST = "test.internal-server.local";
const OUT = new URL("../lib/wire/testdata/", import.meta.url);

/** A client: the command line to run, given the port. */
type Client = (port: number) => string[];

const deno = (alpn: string[]): Client => (port) => [
  Deno.execPath(),
  "eval",
  `const c = await Deno.connect({ hostname: "127.0.0.1", port: ${port} });
   const t = await Deno.startTls(c, { hostname: "${HOST}", alpnProtocols: ${
    JSON.stringify(alpn)
  } });
   try { await t.handshake(); } catch { /* the capture server hangs up */ }
   try { t.close(); } catch { /* already closed */ }`,
];

const node = (alpn: string[]): Client => (port) => [
  "node",
  "-e",
  `const s = require("node:tls").connect({ host: "127.0.0.1", port: ${port},
     servername: "${HOST}"${alpn.length > 0 ? `, ALPNProtocols: ${JSON.stringify(alpn)}` : ""} });
   s.on("error", () => {}); s.on("close", () => process.exit(0));`,
];

const CLIENTS: Record<string, Client> = {
  "curl_tls13": (port) => [
    "curl",
    "-sS",
    "--resolve",
    `${HOST}:${port}:127.0.0.1`,
    `https://${HOST}:${port}/`,
  ],
  "curl_tls12": (port) => [
    "curl",
    "-sS",
    "--tlsv1.2",
    "--tls-max",
    "1.2",
    "--resolve",
    `${HOST}:${port}:127.0.0.1`,
    `https://${HOST}:${port}/`,
  ],
  "curl_http1_only": (port) => [
    "curl",
    "-sS",
    "--http1.1",
    "--resolve",
    `${HOST}:${port}:127.0.0.1`,
    `https://${HOST}:${port}/`,
  ],
  "openssl_tls13": (port) => [
    "openssl",
    "s_client",
    "-connect",
    `127.0.0.1:${port}`,
    "-servername",
    HOST,
  ],
  "openssl_tls12": (port) => [
    "openssl",
    "s_client",
    "-tls1_2",
    "-connect",
    `127.0.0.1:${port}`,
    "-servername",
    HOST,
  ],
  "openssl_no_sni": (port) => [
    "openssl",
    "s_client",
    "-connect",
    `127.0.0.1:${port}`,
    "-noservername",
  ],
  "deno_rustls": deno([]),
  "deno_rustls_alpn": deno(["h2", "http/1.1"]),
  node: node([]),
  "node_alpn": node(["h2", "http/1.1"]),
  // GnuTLS; wget has no --resolve, so this one goes to the IP and sends no SNI.
  "wget_gnutls_no_sni": (port) => [
    "wget",
    "-q",
    "-O",
    "/dev/null",
    "--tries=1",
    `https://127.0.0.1:${port}/`,
  ],
};

async function capture(name: string, client: Client): Promise<number> {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const [cmd, ...args] = client(listener.addr.port);
  const child = new Deno.Command(cmd!, { args, stdin: "null", stdout: "null", stderr: "null" })
    .spawn();
  try {
    const signal = AbortSignal.timeout(10_000);
    const onAbort = () => listener.close();
    signal.addEventListener("abort", onAbort, { once: true });
    using conn = await listener.accept();
    conn.setNoDelay(true);
    const { hello } = await readClientHello(conn);
    signal.removeEventListener("abort", onAbort);
    await Deno.writeFile(new URL(`${name}.bin`, OUT), hello.bytes);
    // deno-lint-ignore no-console
    console.log(
      `${name}: ${hello.bytes.length} bytes, sni=${hello.serverName}, alpn=${hello.alpn.join(",")}`,
    );
    return hello.bytes.length;
  } finally {
    // The connection closes as `conn` goes out of scope; give the client 5 s to notice.
    const timer = setTimeout(() => {
      try {
        child.kill("SIGKILL");
      } catch { /* exited */ }
    }, 5_000);
    await child.status;
    clearTimeout(timer);
  }
}

if (import.meta.main) {
  await Deno.mkdir(OUT, { recursive: true });
  const names = Deno.args.length > 0 ? Deno.args : Object.keys(CLIENTS);
  for (const name of names) {
    const client = CLIENTS[name];
    if (client === undefined) throw new TypeError(`Unknown client "${name}"`);
    await capture(name, client);
  }
}
