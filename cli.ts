/**
 * The tls-pass executable: every role, the demo, the certificate tool.
 *
 *   tls-pass run public|private|eps|internal-server [--settings PATH]... [--log-level L] [--log-format text|json]
 *   tls-pass demo [--keep]
 *   tls-pass certs [--out DIR] [--force]
 *   tls-pass check ROLE [--settings PATH]...
 *   tls-pass schema ROLE
 *   tls-pass status [--admin HOST:PORT] [--json]
 *   tls-pass drain|undrain DOMAIN [--admin HOST:PORT] [--no-wait]
 *   tls-pass version | --help | help [COMMAND]
 *
 * Called as `proxy`, `eps` or `internal-server` (the launchers in bin/ that `make` writes set
 * TLS_PASS_CALLED_AS; README, "The seed's commands"), it takes the seed's command lines instead:
 *
 *   proxy run public|private ...    = tls-pass run public|private ...
 *   eps server run ...              = tls-pass run eps ...
 *   internal-server ...             = tls-pass run internal-server ...
 *
 * Exit codes: 0 done, 1 fault (or an admin endpoint not reached), 2 usage or settings error, 3
 * `status` of a role that is up but not ready.
 * @module
 */
import { parseArgs } from "node:util";
import {
  configure,
  dispose,
  getJsonLinesFormatter,
  getStreamSink,
  getTextFormatter,
  type LogLevel,
} from "@logtape/logtape";
import { SettingsError } from "./lib/errors.ts";
import { formatHostPort, type Reloadable, type RoleHandle } from "./lib/role.ts";
import { logger } from "./lib/log.ts";
import { raiseFdLimit, relayedConnectionsFor } from "./lib/net/fd_limit.ts";
import { loadRoleSettings, ROLE_NAMES, type RoleName, roleSpec } from "./lib/roles.ts";
import { settingsSources } from "./lib/settings/loader.ts";
import denoJson from "./deno.json" with { type: "json" };

const VERSION = denoJson.version;

/** The admin endpoints of the dev settings (settings/dev/roles). */
const DEFAULT_ADMIN = { public: "127.0.0.1:9101", private: "127.0.0.1:9102" } as const;

const RUN_OPTIONS =
  `  --settings PATH   a settings file or folder (*.yml, *.yaml, *.json in name order); repeatable,
                    later files deep-merge into earlier ones. Without it: PROXY_SETTINGS (public,
                    private) or EPS_SETTINGS (eps), colon-separated; internal-server falls back to
                    settings/dev/roles/internal-server.
  --log-level L     trace, debug, info (default), warning, error, fatal
  --log-format F    text (default) or json (one JSON object per line)`;

const RUN_SIGNALS =
  `Logs go to stderr. SIGINT or SIGTERM stops it gracefully (exit 0). SIGHUP (kill -HUP PID)
re-reads the settings, directory and certificate files and applies a valid change without
dropping a connection; an invalid one is logged and the role keeps its old settings.`;

const RUN_FLAGS = "[--settings PATH]... [--log-level LEVEL] [--log-format text|json]";

const USAGE: Record<string, string> = {
  main: `tls-pass ${VERSION}: TLS-passthrough reverse tunnel

Usage:
  tls-pass run ROLE [--settings PATH]... [--log-level LEVEL] [--log-format text|json]
  tls-pass demo [--keep]
  tls-pass certs [--out DIR] [--force]
  tls-pass check ROLE [--settings PATH]...
  tls-pass schema ROLE
  tls-pass status [--admin HOST:PORT] [--json]
  tls-pass drain DOMAIN [--admin HOST:PORT] [--no-wait]
  tls-pass undrain DOMAIN [--admin HOST:PORT]
  tls-pass version
  tls-pass help [COMMAND]

Roles: public, private, eps, internal-server
Run "tls-pass help COMMAND" for the options of a command.`,
  run: `Usage: tls-pass run ROLE ${RUN_FLAGS}

Starts one role: public, private, eps or internal-server.
${RUN_OPTIONS}
When the role is ready it prints one JSON line on stdout:
  {"event":"ready","role":"public","addrs":{"public":"127.0.0.1:4433",...}}
${RUN_SIGNALS}
Also as the seed's commands: proxy run public|private, eps server run, internal-server.`,
  proxy: `Usage: proxy run public|private ${RUN_FLAGS}

Starts the public or the private proxy, as "tls-pass run public|private" does.
${RUN_OPTIONS}
When the proxy is ready it prints one JSON line on stdout:
  {"event":"ready","role":"public","addrs":{"public":"127.0.0.1:4433",...}}
${RUN_SIGNALS}
Example (from the repo root): PROXY_SETTINGS=settings/dev/roles/public-proxy-1 proxy run public`,
  eps: `Usage: eps server run ${RUN_FLAGS}

Starts an EPS server, as "tls-pass run eps" does.
${RUN_OPTIONS}
When the server is ready it prints one JSON line on stdout:
  {"event":"ready","role":"eps","addrs":{"links":"127.0.0.1:5556",...}}
${RUN_SIGNALS}
Example (from the repo root): EPS_SETTINGS=settings/dev/roles/public-proxy-eps-1 eps server run`,
  "internal-server": `Usage: internal-server ${RUN_FLAGS}

Starts the demo internal server, as "tls-pass run internal-server" does: any request to /jsonrpc
answers {"message":"success"}; POST /echo of a JSON object answers the object, keys sorted.
${RUN_OPTIONS}
When the server is ready it prints one JSON line on stdout:
  {"event":"ready","role":"internal-server","addrs":{"main":"127.0.0.1:8888",...}}
${RUN_SIGNALS}
Example (from the repo root): internal-server`,
  status: `Usage: tls-pass status [--admin HOST:PORT] [--json]

Prints the status of a running role (announcements, links, pools, live connections, limits hit,
refusals, the last reload) as tables, from the GET /status of its admin endpoint (admin_listen).
  --admin HOST:PORT  the role's admin_listen (default: $TLS_PASS_ADMIN, else ${DEFAULT_ADMIN.public},
                     the dev public proxy's)
  --json             print the /status document as it is
Exit 1 when the endpoint cannot be reached, 3 when the role is up but not ready.`,
  drain: `Usage: tls-pass drain DOMAIN [--admin HOST:PORT] [--no-wait]

Drains one announcement of a private proxy: the public proxies stop routing DOMAIN to it, its
pooled dial-backs and notices for it end, live splices finish (bounded by grace_ms), then it is
withdrawn. "tls-pass undrain DOMAIN" announces it again.
  --admin HOST:PORT  the private proxy's admin_listen (default: $TLS_PASS_ADMIN, else
                     ${DEFAULT_ADMIN.private}, the dev private proxy's)
  --no-wait          return once routing stopped, without waiting for the live splices`,
  undrain: `Usage: tls-pass undrain DOMAIN [--admin HOST:PORT]

Announces a drained DOMAIN of a private proxy again (see "tls-pass help drain").`,
  demo: `Usage: tls-pass demo [--keep]

Creates the dev certificates if missing (settings/dev/certs), starts all five roles from
settings/dev, sends one real HTTPS request through both proxies and prints the answer.
  --keep   stay up after the request, print the curl command to try, stop on Ctrl-C`,
  certs: `Usage: tls-pass certs [--out DIR] [--force]

Writes a dev PKI: root CA, intermediate CA, and a leaf certificate and key for public-proxy-1,
private-proxy-1 and internal-server, and the directory pins (settings/dev/directory/pins.yml).
  --out DIR   where to write (default settings/dev/certs); pins are written only for the default
  --force     overwrite existing files`,
  check: `Usage: tls-pass check ROLE [--settings PATH]...

Loads and validates the settings of ROLE as "run" would, then makes the checks "run" makes
before binding anything: the directory loads (public, eps) and the certificate names the
operator (CN and DNS SAN, key usages). Prints the merged settings as JSON (key material is shown
as file paths, never as contents). Binds nothing. Exit 2 on any problem.`,
  schema: `Usage: tls-pass schema ROLE

Prints the JSON Schema (draft-07) of the settings of ROLE, generated from the same declarations
the settings are checked with, for editors: put the line
  # yaml-language-server: $schema=PATH-OR-URL-OF-THE-SCHEMA
at the top of a settings file (docs/settings.md, "Editor support"). settings/schema/ROLE.json
holds the same text.`,
  version: `Usage: tls-pass version

Prints the version.`,
};

const MAIN_USAGE_LINE =
  "Usage: tls-pass run|demo|certs|check|schema|status|drain|undrain|version|help [OPTIONS]";

/** The names this executable answers to (README, "The seed's commands"). */
const PROGRAMS = ["tls-pass", "proxy", "eps", "internal-server"] as const;
type Program = typeof PROGRAMS[number];

/**
 * The name the process was called by: a launcher in bin/ sets TLS_PASS_CALLED_AS (and it is
 * removed at once, so no child inherits it); without it, tls-pass.
 */
function calledAs(): Program {
  const name = Deno.env.get("TLS_PASS_CALLED_AS");
  Deno.env.delete("TLS_PASS_CALLED_AS");
  return (PROGRAMS as readonly string[]).includes(name ?? "") ? name as Program : "tls-pass";
}

/**
 * The tls-pass command line for a seed command line (`proxy run public …` → `run public …`),
 * or null when it asks for help. Throws a UsageError for anything the seed's command does not
 * take.
 */
function seedArgs(program: Exclude<Program, "tls-pass">, argv: string[]): string[] | null {
  // --help anywhere before a "--" asks for help, as it does for "tls-pass run"
  if (argv[0] === "help" || argv.some((a) => a === "--help" || a === "-h")) return null;
  const [first, second, ...rest] = argv;
  switch (program) {
    case "internal-server":
      return ["run", "internal-server", ...argv];
    case "proxy":
      if (first !== "run") {
        throw new UsageError(
          first === undefined ? "Missing COMMAND: expected run" : `Unknown command "${first}"`,
          program,
        );
      }
      if (second !== "public" && second !== "private") {
        throw new UsageError(
          second === undefined
            ? "Missing ROLE: expected public or private"
            : `Unknown role "${second}": expected public or private`,
          program,
        );
      }
      return ["run", second, ...rest];
    case "eps":
      if (first !== "server" || second !== "run") {
        throw new UsageError(
          first === undefined
            ? 'Missing COMMAND: expected "server run"'
            : `Unknown command "${argv.slice(0, 2).join(" ")}": expected "server run"`,
          program,
        );
      }
      return ["run", "eps", ...rest];
  }
}

class UsageError extends Error {
  override name = "UsageError";
  constructor(message: string, readonly command = "main") {
    super(message);
  }
}

const LOG_LEVELS = ["trace", "debug", "info", "warning", "error", "fatal"] as const;

function out(line: string): void {
  // deno-lint-ignore no-console
  console.log(line);
}

function err(line: string): void {
  // deno-lint-ignore no-console
  console.error(line);
}

type Options = Record<string, { type: "string" | "boolean"; multiple?: boolean; short?: string }>;
type Values = Record<string, string | boolean | (string | boolean)[] | undefined>;

function parse(
  command: string,
  args: string[],
  options: Options,
): { values: Values; positionals: string[] } {
  try {
    const { values, positionals } = parseArgs({
      args,
      options: { ...options, help: { type: "boolean", short: "h" } },
      allowPositionals: true,
      strict: true,
    });
    return { values: values as Values, positionals };
  } catch (e) {
    if (isParseArgsError(e)) throw new UsageError(e.message.split(". ")[0]!, command);
    throw e;
  }
}

function roleOf(name: string | undefined, command: string): RoleName {
  if (name === undefined) {
    throw new UsageError(`Missing ROLE: expected one of ${ROLE_NAMES.join(", ")}`, command);
  }
  if (!(ROLE_NAMES as readonly string[]).includes(name)) {
    throw new UsageError(
      `Unknown role "${name}": expected one of ${ROLE_NAMES.join(", ")}`,
      command,
    );
  }
  return name as RoleName;
}

async function setupLogging(level: string, format: string): Promise<void> {
  if (!(LOG_LEVELS as readonly string[]).includes(level)) {
    throw new UsageError(
      `Invalid --log-level "${level}": expected one of ${LOG_LEVELS.join(", ")}`,
      "run",
    );
  }
  if (format !== "text" && format !== "json") {
    throw new UsageError(`Invalid --log-format "${format}": expected "text" or "json"`, "run");
  }
  const formatter = format === "json"
    ? getJsonLinesFormatter()
    : getTextFormatter({ timestamp: "date-time-tz" });
  await configure({
    sinks: { stderr: getStreamSink(Deno.stderr.writable, { formatter }) },
    loggers: [
      { category: ["tls-pass"], lowestLevel: level as LogLevel, sinks: ["stderr"] },
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: ["stderr"] },
    ],
  });
}

async function load(role: RoleName, settingsFlags: string[]) {
  const spec = await roleSpec(role);
  const sources = settingsSources(settingsFlags, spec.envVar, spec.fallback);
  if (sources.length === 0) {
    throw new UsageError(
      `No settings for role "${role}": pass --settings PATH${
        spec.envVar ? ` or set ${spec.envVar}` : ""
      }`,
      "run",
    );
  }
  return { spec, sources, settings: await loadRoleSettings(spec, sources) };
}

/** A role handle that can reload (lib/role.ts Reloadable). */
function isReloadable(h: object): h is Reloadable<unknown> {
  return typeof (h as { reload?: unknown }).reload === "function";
}

/**
 * SIGHUP (docs/architecture.md, "Reload"): re-reads the settings from the same sources with the
 * same validation as at start and hands them to the role, one reload at a time (a SIGHUP during
 * a reload runs after it). Never ends the process. Returns the listener to remove.
 */
/**
 * `text` as literal log-template text: printed as a start prints it, not quoted as a property
 * (logtape's templates take `{name}` as a placeholder, `{{` as a brace).
 */
function literal(text: string): string {
  return text.replaceAll("{", "{{").replaceAll("}", "}}");
}

function onHangUp(
  role: RoleName,
  handle: Promise<RoleHandle | undefined>,
  reloadSettings: () => Promise<unknown>,
): () => void {
  const log = logger(role, "reload");
  let queue = Promise.resolve();
  return () => {
    queue = queue.then(async () => {
      const h = await handle.catch(() => undefined);
      if (h === undefined) return;
      if (!isReloadable(h)) {
        log.warn("SIGHUP: role {role} cannot reload; ignored", { role });
        return;
      }
      log.info("SIGHUP: reloading settings");
      const r = await h.reload(reloadSettings);
      if (r.ok) {
        if (r.applied.length === 0) log.info("Reloaded: nothing changed");
        else log.info(`Reloaded: ${literal(r.applied.join("; "))}`);
        return;
      }
      for (const p of r.problems) log.error(`Reload refused: ${literal(p)}`);
      log.error("Reload refused: keeping the old settings");
    }).catch((err) => {
      log.error("Reload failed: {error}; keeping the old settings", {
        error: err instanceof Error ? err.message : String(err),
      });
    });
  };
}

async function cmdRun(args: string[]): Promise<number> {
  const { values, positionals } = parse("run", args, {
    settings: { type: "string", multiple: true },
    "log-level": { type: "string" },
    "log-format": { type: "string" },
  });
  if (values.help) return help("run");
  if (positionals.length > 1) {
    throw new UsageError(`Unexpected argument "${positionals[1]}"`, "run");
  }
  const role = roleOf(positionals[0], "run");
  await setupLogging(String(values["log-level"] ?? "info"), String(values["log-format"] ?? "text"));
  // before the settings are read: a SIGHUP during start-up must not end the process either
  const started = Promise.withResolvers<RoleHandle | undefined>();
  let reloadSettings: () => Promise<unknown> = () => Promise.reject(new Error("not started"));
  const onHup = onHangUp(role, started.promise, () => reloadSettings());
  Deno.addSignalListener("SIGHUP", onHup);
  const shutdown = new AbortController();
  const onSignal = () => shutdown.abort();
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  try {
    const { spec, sources, settings } = await load(
      role,
      (values.settings as string[] | undefined) ?? [],
    );
    reloadSettings = () => loadRoleSettings(spec, sources);
    logFdLimit(role);
    const handle = await spec.start(settings, shutdown.signal).catch((err) => {
      started.resolve(undefined);
      throw err;
    });
    started.resolve(handle);
    try {
      await Promise.race([handle.ready ?? Promise.resolve(), handle.finished]);
    } catch (e) {
      if (!shutdown.signal.aborted) throw e; // stopped before it was ready: not a fault
    }
    if (!shutdown.signal.aborted) {
      const addrs = Object.fromEntries(
        Object.entries(handle.addrs).map(([k, a]) => [k, formatHostPort(a)]),
      );
      out(JSON.stringify({ event: "ready", role, pid: Deno.pid, addrs }));
    }
    await handle.finished;
    return 0;
  } finally {
    started.resolve(undefined);
    Deno.removeSignalListener("SIGINT", onSignal);
    Deno.removeSignalListener("SIGTERM", onSignal);
    // SIGHUP stays handled (ignored) until the exit: it must never end the process
  }
}

/** Raises the open-file limit (two descriptors per relayed connection) and says what it got. */
function logFdLimit(role: string): void {
  const log = logger(role);
  const { before, after, problem } = raiseFdLimit();
  if (problem !== undefined) {
    const soft = after?.soft;
    log.warn(
      "Cannot raise the open-file limit: {problem}; it stays {limit}, enough for about {connections} relayed connections",
      {
        problem,
        limit: soft ?? "unknown",
        connections: soft === undefined ? "an unknown number of" : relayedConnectionsFor(soft),
      },
    );
  } else if (after !== null && before !== null) {
    log.info(
      "Open-file limit {before} → {limit} (hard {hard}), enough for about {connections} relayed connections",
      {
        before: before.soft,
        limit: after.soft,
        hard: after.hard,
        connections: relayedConnectionsFor(after.soft),
      },
    );
  }
}

async function cmdCheck(args: string[]): Promise<number> {
  const { values, positionals } = parse("check", args, {
    settings: { type: "string", multiple: true },
  });
  if (values.help) return help("check");
  if (positionals.length > 1) {
    throw new UsageError(`Unexpected argument "${positionals[1]}"`, "check");
  }
  const role = roleOf(positionals[0], "check");
  const { spec, settings } = await load(role, (values.settings as string[] | undefined) ?? []);
  // the same checks "run" makes before binding: the directory, the certificate's operator name
  for (const warning of (await spec.preflight?.(settings)) ?? []) {
    err(`tls-pass: warning: ${warning}`);
  }
  out(JSON.stringify(settings, null, 2));
  return 0;
}

async function cmdSchema(args: string[]): Promise<number> {
  const { values, positionals } = parse("schema", args, {});
  if (values.help) return help("schema");
  if (positionals.length > 1) {
    throw new UsageError(`Unexpected argument "${positionals[1]}"`, "schema");
  }
  const role = roleOf(positionals[0], "schema");
  const { roleSchemaText } = await import("./lib/settings/reference.ts");
  await Deno.stdout.write(new TextEncoder().encode(roleSchemaText(role)));
  return 0;
}

async function cmdCerts(args: string[]): Promise<number> {
  const { values, positionals } = parse("certs", args, {
    out: { type: "string" },
    force: { type: "boolean" },
  });
  if (values.help) return help("certs");
  if (positionals.length > 0) {
    throw new UsageError(`Unexpected argument "${positionals[0]}"`, "certs");
  }
  const { runCerts } = await import("./lib/certs/command.ts");
  const written = await runCerts({
    out: values.out as string | undefined,
    force: values.force === true,
  });
  for (const path of written) out(path);
  return 0;
}

async function cmdDemo(args: string[]): Promise<number> {
  const { values, positionals } = parse("demo", args, {
    keep: { type: "boolean" },
    "log-level": { type: "string" },
  });
  if (values.help) return help("demo");
  if (positionals.length > 0) {
    throw new UsageError(`Unexpected argument "${positionals[0]}"`, "demo");
  }
  await setupLogging(String(values["log-level"] ?? "warning"), "text");
  const { runDemo } = await import("./lib/demo.ts");
  return await runDemo({ keep: values.keep === true, print: out });
}

/** The admin endpoint a command talks to: --admin, else $TLS_PASS_ADMIN, else the dev default. */
function adminUrl(flag: unknown, fallback: string, command: string): string {
  const addr = typeof flag === "string" ? flag : Deno.env.get("TLS_PASS_ADMIN") || fallback;
  if (!/^(\[[0-9a-fA-F:.]+\]|[^:[\]]+):\d{1,5}$/.test(addr)) {
    throw new UsageError(`Invalid --admin "${addr}": expected HOST:PORT`, command);
  }
  return `http://${addr}`;
}

/** Fetches from an admin endpoint, with a deadline and a clear error. */
async function adminFetch(url: string, init: RequestInit = {}, timeoutMs = 10_000) {
  try {
    return await fetch(url, { ...init, signal: AbortSignal.timeout(timeoutMs) });
  } catch (e) {
    const why = e instanceof DOMException && e.name === "TimeoutError"
      ? `no answer within ${timeoutMs / 1000} s`
      : (e instanceof Error ? e.message : String(e));
    throw new AdminError(`Cannot reach the admin endpoint ${new URL(url).host}: ${why}`);
  }
}

class AdminError extends Error {
  override name = "AdminError";
}

/** An admin endpoint's JSON answer; anything else is an AdminError naming the URL. */
function parseAnswer(body: string, url: string): Record<string, unknown> {
  try {
    const v = JSON.parse(body);
    if (typeof v === "object" && v !== null) return v;
  } catch { /* below */ }
  throw new AdminError(
    `${url} did not answer JSON (is it a tls-pass admin endpoint?): ${
      JSON.stringify(body.slice(0, 80))
    }`,
  );
}

async function cmdStatus(args: string[]): Promise<number> {
  const { values, positionals } = parse("status", args, {
    admin: { type: "string" },
    json: { type: "boolean" },
  });
  if (values.help) return help("status");
  if (positionals.length > 0) {
    throw new UsageError(`Unexpected argument "${positionals[0]}"`, "status");
  }
  const base = adminUrl(values.admin, DEFAULT_ADMIN.public, "status");
  const res = await adminFetch(`${base}/status`);
  const body = await res.text();
  if (!res.ok) throw new AdminError(`GET ${base}/status answered ${res.status}: ${body.trim()}`);
  const doc = parseAnswer(body, `${base}/status`);
  if (values.json) out(JSON.stringify(doc, null, 2));
  else {
    const { renderStatus } = await import("./lib/admin/status.ts");
    // the endpoint's own document (lib/admin/status.ts StatusDocument)
    out(renderStatus(doc as unknown as Parameters<typeof renderStatus>[0]));
  }
  return doc.ready ? 0 : 3;
}

async function cmdDrain(command: "drain" | "undrain", args: string[]): Promise<number> {
  const { values, positionals } = parse(command, args, {
    admin: { type: "string" },
    ...(command === "drain" ? { "no-wait": { type: "boolean" as const } } : {}),
  });
  if (values.help) return help(command);
  if (positionals.length !== 1) {
    throw new UsageError(
      positionals.length === 0 ? "Missing DOMAIN" : `Unexpected argument "${positionals[1]}"`,
      command,
    );
  }
  const domain = positionals[0]!;
  const base = adminUrl(values.admin, DEFAULT_ADMIN.private, command);
  const query = new URLSearchParams({ domain });
  if (values["no-wait"]) query.set("wait", "false");
  // a drain waits for live splices up to grace_ms: give it time
  const res = await adminFetch(`${base}/${command}?${query}`, { method: "POST" }, 3_600_000);
  const body = await res.text();
  if (!res.ok) {
    let why = body.trim();
    try {
      why = JSON.parse(body).error ?? why;
    } catch { /* a text answer */ }
    throw new AdminError(`Cannot ${command} ${domain}: ${why}`);
  }
  const r = (parseAnswer(body, `${base}/${command}`) as { result?: unknown }).result;
  out(
    `${command === "drain" ? "Drained" : "Undrained"} ${domain}${
      r ? `: ${JSON.stringify(r)}` : ""
    }`,
  );
  return 0;
}

function help(command = "main"): number {
  out(USAGE[command] ?? USAGE.main!);
  return 0;
}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case "run":
      return await cmdRun(rest);
    case "check":
      return await cmdCheck(rest);
    case "schema":
      return await cmdSchema(rest);
    case "certs":
      return await cmdCerts(rest);
    case "status":
      return await cmdStatus(rest);
    case "drain":
    case "undrain":
      return await cmdDrain(command, rest);
    case "demo":
      return await cmdDemo(rest);
    case "version":
    case "--version":
    case "-V":
      if (rest.length > 0) throw new UsageError(`Unexpected argument "${rest[0]}"`, "version");
      out(`tls-pass ${VERSION}`);
      return 0;
    case "help":
      if (rest.length > 1) throw new UsageError(`Unexpected argument "${rest[1]}"`);
      if (rest[0] !== undefined && !(rest[0] in USAGE)) {
        throw new UsageError(`Unknown command "${rest[0]}"`);
      }
      return help(rest[0]);
    case "--help":
    case "-h":
      return help();
    case undefined:
      throw new UsageError("Missing COMMAND");
    default:
      throw new UsageError(`Unknown command "${command}"`);
  }
}

/** A listener could not bind: Deno's AddrInUse, or node's EADDRINUSE (the node:tls/http listeners). */
function isAddrInUse(e: unknown): boolean {
  if (e instanceof Deno.errors.AddrInUse) return true;
  return e instanceof Error && "code" in e && e.code === "EADDRINUSE";
}

function isParseArgsError(e: unknown): e is Error & { code: string } {
  if (!(e instanceof Error) || !("code" in e)) return false;
  return typeof e.code === "string" && e.code.startsWith("ERR_PARSE_ARGS_");
}

/** Runs the command line of `program` (tls-pass, or one of the seed's commands). */
async function mainAs(program: Program, argv: string[]): Promise<number> {
  if (program === "tls-pass") return await main(argv);
  if (argv.length === 1 && ["version", "--version", "-V"].includes(argv[0]!)) {
    out(`${program} (tls-pass ${VERSION})`);
    return 0;
  }
  const args = seedArgs(program, argv);
  if (args === null) return help(program);
  return await main(args);
}

if (import.meta.main) {
  let code: number;
  const program = calledAs();
  try {
    code = await mainAs(program, Deno.args);
  } catch (e) {
    if (e instanceof UsageError || isParseArgsError(e)) {
      err(`${program}: ${e.message}`);
      // under a seed name every usage error is about that one command line
      const command = program !== "tls-pass"
        ? program
        : e instanceof UsageError
        ? e.command
        : "main";
      err(command === "main" ? MAIN_USAGE_LINE : USAGE[command]!.split("\n")[0]!);
      err(`Run "${program} --help" for more.`);
      code = 2;
    } else if (e instanceof AdminError) {
      err(`tls-pass: ${e.message}`);
      code = 1;
    } else if (e instanceof SettingsError) {
      err(e.message);
      code = 2;
    } else if (e instanceof Deno.errors.AlreadyExists) {
      err(`tls-pass: ${e.message}`);
      code = 1;
    } else if (isAddrInUse(e)) {
      err(`${program}: Cannot listen: ${e instanceof Error ? e.message : String(e)}`);
      code = 1;
    } else {
      err(`${program}: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
      code = 1;
    }
  }
  await dispose();
  Deno.exit(code);
}
