/**
 * A minimal HTTPS/1.1 client over Deno TLS that connects to one address while sending another
 * name as SNI (like curl's --resolve). Used by the demo and by tests.
 * @module
 */
import type { HostPort } from "../role.ts";
import { readAll, writeAll } from "../net/io.ts";

export interface HttpsRequest {
  connect: HostPort;
  serverName: string;
  caCerts: string[];
  method: string;
  path: string;
  body?: string;
  signal?: AbortSignal;
}

export interface HttpsResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/** Sends one request with `Connection: close` and reads the whole answer. */
export async function httpsRequest(req: HttpsRequest): Promise<HttpsResponse> {
  const tcp = await Deno.connect({ ...req.connect, transport: "tcp" });
  let conn: Deno.Conn = tcp;
  const onAbort = () => conn.close();
  req.signal?.addEventListener("abort", onAbort, { once: true });
  try {
    conn = await Deno.startTls(tcp, { hostname: req.serverName, caCerts: req.caCerts });
    const body = req.body ?? "";
    const head = [
      `${req.method} ${req.path} HTTP/1.1`,
      `Host: ${req.serverName}`,
      "Connection: close",
      "Accept: */*",
      ...(req.body !== undefined
        ? [
          "Content-Type: application/json",
          `Content-Length: ${new TextEncoder().encode(body).length}`,
        ]
        : []),
      "",
      "",
    ].join("\r\n");
    await writeAll(conn, new TextEncoder().encode(head + body));
    const raw = new TextDecoder().decode(await readAll(conn, 8 * 1024 * 1024));
    return parseResponse(raw);
  } catch (err) {
    req.signal?.throwIfAborted();
    throw err;
  } finally {
    req.signal?.removeEventListener("abort", onAbort);
    try {
      conn.close();
    } catch { /* closed */ }
  }
}

function parseResponse(raw: string): HttpsResponse {
  const end = raw.indexOf("\r\n\r\n");
  if (end < 0) {
    throw new Error(
      `Cannot parse HTTP response: no header end in ${JSON.stringify(raw.slice(0, 80))}`,
    );
  }
  const [statusLine, ...lines] = raw.slice(0, end).split("\r\n");
  const status = Number(statusLine?.split(" ")[1]);
  const headers: Record<string, string> = {};
  for (const l of lines) {
    const i = l.indexOf(":");
    if (i > 0) headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
  }
  let body = raw.slice(end + 4);
  if (headers["transfer-encoding"]?.includes("chunked")) body = unchunk(body);
  return { status, headers, body };
}

function unchunk(s: string): string {
  let out = "";
  let i = 0;
  while (i < s.length) {
    const nl = s.indexOf("\r\n", i);
    const size = parseInt(s.slice(i, nl), 16);
    if (!size) break;
    out += s.slice(nl + 2, nl + 2 + size);
    i = nl + 2 + size + 2;
  }
  return out;
}
