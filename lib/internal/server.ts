/**
 * The demo internal server (`tls-pass run internal-server`, `internal-server`), the backend the
 * private proxy forwards to, answering as the original project's did:
 *
 * - any request to `/jsonrpc` (any method, any body) → 200 `{"message":"success"}` (GNU parallel
 *   turns the seed's `--data "{}"` into `--data 1`: that is a success too), and so is a request
 *   to any path but `/echo` (`GET /` of a health check);
 * - `POST /echo` of a JSON object → the object back (compact, keys sorted); anything else to
 *   `/echo` → 400;
 * - a body over `max_body_bytes` → 413, whatever the path.
 *
 * Every answer is JSON.
 *
 * Built on `node:http`/`node:https` rather than `Deno.serve`: `Deno.serve`'s shutdown waits for
 * a client that stalls inside its request body and has no way to cut it off (measured on Deno
 * 2.9.6), while `closeAllConnections()` ends every connection at once.
 * @module
 */
import http from "node:http";
import https from "node:https";
import { readKeyPairSync } from "../certs/key_pair.ts";
import type { AddressInfo } from "node:net";
import { errorText, logger } from "../log.ts";
import { makeHandle, type Reloadable, type RoleHandle } from "../role.ts";
import { InternalServerAdmin } from "./server_admin.ts";
import { openAdmin } from "../admin/role_admin.ts";
import type { InternalServerSettings } from "../settings/internal_server.ts";
import { checkRestartOnly, diffSettings, Reloader, withReload } from "../settings/diff.ts";

const log = logger("internal-server", "http");

const JSON_TYPE = "application/json; charset=utf-8";
/** A request must arrive whole (head and body) within this time. */
const REQUEST_TIMEOUT_MS = 30_000;
const HEADERS_TIMEOUT_MS = 10_000;

/** Sorts object keys recursively, so the echo is canonical; arrays keep their order. */
export function sortKeys(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(sortKeys);
  if (typeof v === "object" && v !== null) {
    // fromEntries defines own properties, so a "__proto__" key stays a key
    return Object.fromEntries(
      Object.keys(v).sort().map((k) => [k, sortKeys((v as Record<string, unknown>)[k])]),
    );
  }
  return v;
}

interface Answer {
  status: number;
  body: unknown;
  headers?: Record<string, string>;
  /** Close the connection after the answer (the rest of the request body is not read). */
  close?: boolean;
}

const SUCCESS: Answer = { status: 200, body: { message: "success" } };
const FAILED: Answer = { status: 500, body: { message: "internal server error" } };
const TOO_LARGE: Answer = { status: 413, body: { message: "payload too large" }, close: true };
const NOT_AN_OBJECT: Answer = {
  status: 400,
  body: { message: "bad request: POST a JSON object to /echo" },
};

/** Reads the body up to `max` bytes; null as soon as it is larger (the rest is left unread). */
function readBody(req: http.IncomingMessage, max: number): Promise<Uint8Array | null> {
  return new Promise((resolve, reject) => {
    const chunks: Uint8Array[] = [];
    let total = 0;
    const done = (v: Uint8Array | null) => {
      req.off("data", onData).off("end", onEnd).off("error", onError).off("close", onClose);
      resolve(v);
    };
    const onData = (chunk: Uint8Array) => {
      total += chunk.byteLength;
      if (total > max) {
        req.pause();
        done(null);
      } else {
        chunks.push(chunk);
      }
    };
    const onEnd = () => {
      const out = new Uint8Array(total);
      let off = 0;
      for (const c of chunks) {
        out.set(c, off);
        off += c.byteLength;
      }
      done(out);
    };
    const onError = (err: unknown) => {
      req.off("data", onData).off("end", onEnd).off("close", onClose);
      reject(err);
    };
    const onClose = () => {
      if (!req.complete) onError(new Error("Cannot read request body: connection closed"));
    };
    req.on("data", onData).on("end", onEnd).on("error", onError).on("close", onClose);
  });
}

/** The body (read whole, up to `max` bytes), or null when it is over `max`. */
async function bodyOf(req: http.IncomingMessage, max: number): Promise<Uint8Array | null> {
  const declared = req.headers["content-length"];
  if (declared !== undefined && Number(declared) > max) return null;
  return await readBody(req, max);
}

/**
 * `/jsonrpc` (and every path but `/echo`): success whatever the method and body, once the body is
 * read (413 over `max`).
 */
async function jsonrpc(req: http.IncomingMessage, max: number): Promise<Answer> {
  return (await bodyOf(req, max)) === null ? TOO_LARGE : SUCCESS;
}

/** `/echo`: a POSTed JSON object back, keys sorted; any other request is a 400. */
async function echo(req: http.IncomingMessage, max: number): Promise<Answer> {
  const body = await bodyOf(req, max);
  if (body === null) return TOO_LARGE;
  if (req.method !== "POST") return NOT_AN_OBJECT;
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(body));
  } catch {
    return NOT_AN_OBJECT;
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) return NOT_AN_OBJECT;
  return { status: 200, body: sortKeys(value) };
}

function route(req: http.IncomingMessage, max: number): Promise<Answer> {
  return pathOf(req) === "/echo" ? echo(req, max) : jsonrpc(req, max);
}

function pathOf(req: http.IncomingMessage): string {
  return (req.url ?? "/").split("?")[0]!;
}

function send(req: http.IncomingMessage, res: http.ServerResponse, a: Answer): void {
  const text = JSON.stringify(a.body);
  const headers: Record<string, string | number> = {
    ...a.headers,
    "content-type": JSON_TYPE,
    "content-length": new TextEncoder().encode(text).byteLength,
  };
  if (a.close) headers.connection = "close";
  res.writeHead(a.status, headers);
  res.end(req.method === "HEAD" ? undefined : text);
  if (a.close) res.on("finish", () => req.socket.destroySoon());
}

/** The keys of the internal server that a reload cannot change (docs/architecture.md, "Reload"). */
export const INTERNAL_SERVER_RESTART_ONLY = ["listen", "tls", "admin_listen"];

/** A running internal server; `reload` re-reads its settings and certificate (SIGHUP). */
export type InternalServerHandle = RoleHandle<"main"> & Reloadable<InternalServerSettings>;

/** The certificate and key of the settings, read and checked now (a reload). */
function readKeyPair(s: InternalServerSettings): { cert: string; key: string } {
  const { cert, key } = readKeyPairSync(
    { key: "certificate_file", path: s.certificateFile ?? "" },
    { key: "key_file", path: s.keyFile ?? "" },
  );
  return { cert, key };
}

/**
 * Starts the internal server: HTTPS when `settings.tls`, else plain HTTP. The handle's one
 * address is `addrs.main`. Fails at once when the port is taken or the key material is unusable.
 */
export async function startInternalServer(
  settings: InternalServerSettings,
  signal?: AbortSignal,
): Promise<InternalServerHandle> {
  signal?.throwIfAborted();
  let max = settings.maxBodyBytes;
  let current = settings;
  let keyPair: { cert: string; key: string } | undefined;
  const admin = settings.adminListen ? new InternalServerAdmin() : undefined;

  const onRequest = (req: http.IncomingMessage, res: http.ServerResponse) => {
    const client = `${req.socket.remoteAddress}:${req.socket.remotePort}`;
    const path = pathOf(req);
    route(req, max).then(
      (a) => {
        log.debug("{method} {path} from {client}: {status}", {
          method: req.method,
          path,
          client,
          status: a.status,
        });
        admin?.count(a.status);
        send(req, res, a);
      },
      (err: unknown) => {
        log.debug("{method} {path} from {client} failed: {error}", {
          method: req.method,
          path,
          client,
          error: errorText(err),
        });
        if (!res.headersSent && res.writable) send(req, res, { ...FAILED, close: true });
        else req.socket.destroy();
      },
    );
  };

  let server: http.Server;
  if (settings.tls) {
    if (!settings.certificateFile || !settings.keyFile) {
      throw new TypeError(
        "Cannot start internal server: tls is on but certificate_file or key_file is missing",
      );
    }
    keyPair = {
      cert: await Deno.readTextFile(settings.certificateFile),
      key: await Deno.readTextFile(settings.keyFile),
    };
    server = https.createServer({ ...keyPair, ALPNProtocols: ["http/1.1"] }, onRequest);
  } else {
    server = http.createServer(onRequest);
  }
  server.requestTimeout = REQUEST_TIMEOUT_MS;
  server.headersTimeout = HEADERS_TIMEOUT_MS;
  // `Expect: 100-continue` (curl sends it for bodies over 1 MiB): a body declared over the limit
  // gets its 413 before the client sends it. Answering after a "100 Continue" meant closing with
  // the body still arriving, and the reset could reach curl before the 413 ("Send failure").
  server.on("checkContinue", (req: http.IncomingMessage, res: http.ServerResponse) => {
    const declared = req.headers["content-length"];
    if (declared !== undefined && Number(declared) > max) {
      log.debug("{method} {path} from {client}: 413 before its body (Expect: 100-continue)", {
        method: req.method,
        path: pathOf(req),
        client: `${req.socket.remoteAddress}:${req.socket.remotePort}`,
      });
      send(req, res, TOO_LARGE);
      return;
    }
    res.writeContinue();
    onRequest(req, res);
  });

  const closed = new Promise<void>((resolve) => server.once("close", () => resolve()));
  await new Promise<void>((resolve, reject) => {
    const onError = (err: Error) => reject(err);
    server.once("error", onError);
    server.listen(settings.listen.port, settings.listen.hostname, () => {
      server.off("error", onError);
      resolve();
    });
  });
  server.on("error", (err) => {
    log.warning("Internal server error: {error}", { error: errorText(err) });
  });
  const info = server.address() as AddressInfo;
  const addr = { hostname: info.address, port: info.port };
  const scheme = settings.tls ? "https" : "http";
  log.info("Internal server listening on {scheme}://{hostname}:{port}", { scheme, ...addr });

  const adminServer = admin
    ? await openAdmin(settings.adminListen, admin.source()).catch((err) => {
      server.close();
      throw err;
    })
    : undefined;
  if (admin) admin.addr = addr;
  const finished = closed.then(async () => {
    await adminServer?.close();
    log.info("Internal server stopped");
  });
  // everything here is synchronous: checked, then swapped in one turn
  const reloader = new Reloader<InternalServerSettings>((next) => {
    const applied = checkRestartOnly(
      diffSettings(current, next, { restartOnly: INTERNAL_SERVER_RESTART_ONLY }),
    );
    if (next.tls) {
      const pair = readKeyPair(next);
      if (pair.cert !== keyPair?.cert || pair.key !== keyPair?.key) {
        // new handshakes get it; connections up keep theirs
        (server as https.Server).setSecureContext(pair);
        keyPair = pair;
        applied.push("certificate: new connections get the new one");
      }
    }
    max = next.maxBodyBytes;
    current = next;
    return Promise.resolve(applied);
  });
  if (admin) admin.reloads = reloader;
  const addrs = adminServer ? { main: addr, admin: adminServer.addr } : { main: addr };
  const handle = makeHandle(addrs as { main: typeof addr }, finished, () => {
    server.close(); // stops accepting; idle keep-alive connections close too
    server.closeAllConnections(); // including a client stalled inside its request
  }, signal);
  return withReload(handle, reloader);
}
