/**
 * The admin endpoint of a role (docs/architecture.md, "The admin endpoint"): `GET /metrics`
 * (Prometheus text format), `GET /status` (JSON), `GET /healthz`, `GET /readyz`, the status page
 * at `GET /`, and on a private proxy `POST /drain?domain=D` / `POST /undrain?domain=D`. It runs on
 * the control plane's thread and only reads what the control plane keeps; it never touches a data
 * socket.
 * @module
 */
import type { Registry } from "prom-client";
import { errorText, logger } from "../log.ts";
import { formatHostPort, type HostPort } from "../role.ts";
import { STATUS_PAGE } from "./page.ts";

/** What a role gives its admin endpoint. */
export interface AdminSource {
  readonly role: string;
  readonly registry: Registry;
  /** The `/status` document (see docs/architecture.md, "The admin endpoint"). */
  status(): Record<string, unknown>;
  /** Ready as the ready line means it; `problems` says what is missing. */
  ready(): { ready: boolean; problems: string[] };
  /** Private proxy: drains one announcement (resolves once it is withdrawn and its splices ended). */
  drain?(domain: string, wait: boolean): Promise<unknown>;
  undrain?(domain: string): Promise<unknown>;
}

/** A running admin endpoint. */
export interface AdminServer extends AsyncDisposable {
  readonly addr: HostPort;
  close(): Promise<void>;
}

const TEXT = { "content-type": "text/plain; charset=utf-8" };
const JSON_TYPE = { "content-type": "application/json; charset=utf-8" };

function text(status: number, body: string, headers: HeadersInit = {}): Response {
  return new Response(body + "\n", { status, headers: { ...TEXT, ...headers } });
}

function json(status: number, body: unknown): Response {
  return new Response(JSON.stringify(body) + "\n", { status, headers: JSON_TYPE });
}

/** Routes one admin request; exported for the unit test. */
export async function handleAdmin(req: Request, source: AdminSource): Promise<Response> {
  const url = new URL(req.url);
  const get = req.method === "GET" || req.method === "HEAD";
  const only = (method: string) =>
    text(405, `Method ${req.method} not allowed on ${url.pathname}: use ${method}`, {
      allow: method === "GET" ? "GET, HEAD" : method,
    });
  switch (url.pathname) {
    case "/":
      if (!get) return only("GET");
      return new Response(STATUS_PAGE, {
        headers: { "content-type": "text/html; charset=utf-8", "cache-control": "no-store" },
      });
    case "/metrics":
      if (!get) return only("GET");
      // prom-client writes NaN (an event-loop lag with no sample since the last scrape) as
      // "Nan"; the text format spells it "NaN"
      return new Response((await source.registry.metrics()).replace(/ Nan$/gm, " NaN"), {
        headers: { "content-type": source.registry.contentType },
      });
    case "/status":
      if (!get) return only("GET");
      return json(200, source.status());
    case "/healthz":
      if (!get) return only("GET");
      return text(200, "ok");
    case "/readyz": {
      if (!get) return only("GET");
      const r = source.ready();
      return r.ready ? text(200, "ready") : text(503, `not ready: ${r.problems.join("; ")}`);
    }
    case "/drain":
    case "/undrain": {
      if (req.method !== "POST") return only("POST");
      // a browser sends Origin with every cross-site POST: a page the operator visits must not
      // drain names (no CORS answer is ever given, so the CLI and curl are the clients)
      const origin = req.headers.get("origin");
      if (origin !== null && origin !== `${url.protocol}//${url.host}`) {
        return text(403, `Refused: a cross-site request (Origin ${origin})`);
      }
      const drain = url.pathname === "/drain";
      const act = drain ? source.drain : source.undrain;
      if (act === undefined) {
        return text(
          404,
          `${url.pathname} is only served by a private proxy (this is ${source.role})`,
        );
      }
      const domain = url.searchParams.get("domain");
      if (domain === null || domain === "") {
        return text(400, `Missing domain: use POST ${url.pathname}?domain=NAME`);
      }
      const wait = url.searchParams.get("wait") !== "false";
      try {
        const result = drain ? await source.drain!(domain, wait) : await source.undrain!(domain);
        return json(200, { ok: true, domain, result: result ?? null });
      } catch (err) {
        return json(409, { ok: false, domain, error: errorText(err) });
      }
    }
    default:
      return text(
        404,
        `No ${url.pathname} here: try /, /status, /metrics, /healthz, /readyz`,
      );
  }
}

/** Starts the admin endpoint on `listen`; it stops on `close()` or when `signal` aborts. */
export async function startAdmin(
  listen: HostPort,
  source: AdminSource,
  signal?: AbortSignal,
): Promise<AdminServer> {
  const log = logger(source.role, "admin");
  const stop = new AbortController();
  const bound = Promise.withResolvers<HostPort>();
  const options = {
    hostname: listen.hostname,
    port: listen.port,
    signal: stop.signal,
    onListen: (addr: Deno.NetAddr) => bound.resolve({ hostname: addr.hostname, port: addr.port }),
    onError: (err: unknown) => {
      log.warn("Admin request failed: {error}", { error: errorText(err) });
      return text(500, "internal error");
    },
  };
  let server: Deno.HttpServer;
  try {
    server = Deno.serve(options, (req) => handleAdmin(req, source));
  } catch (err) {
    // Deno.serve throws AddrInUse (and the like) at once: name the setting
    if (err instanceof Error) {
      err.message = `admin_listen ${formatHostPort(listen)}: ${err.message}`;
    }
    throw err;
  }
  const addr = await Promise.race([bound.promise, server.finished.then(() => null)]);
  if (addr === null) throw new Error(`Cannot listen on ${formatHostPort(listen)} (admin_listen)`);
  log.info("Admin endpoint on http://{addr}/ (metrics at /metrics)", {
    addr: formatHostPort(addr),
  });
  const onAbort = () => stop.abort();
  signal?.addEventListener("abort", onAbort, { once: true });
  const close = async () => {
    signal?.removeEventListener("abort", onAbort);
    stop.abort();
    await server.finished;
  };
  return { addr, close, [Symbol.asyncDispose]: close };
}
