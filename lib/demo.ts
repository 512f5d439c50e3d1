/**
 * `tls-pass demo`: the seed's five terminals in one process. Creates the dev certificates if
 * missing, starts internal server, both EPS servers and both proxies from settings/dev, sends one
 * real HTTPS request through the public proxy and prints the answer.
 * @module
 */
import { ensureDevCerts } from "./certs/command.ts";
import { logger } from "./log.ts";
import { formatHostPort, type HostPort, type RoleHandle } from "./role.ts";
import { loadRoleSettings, type RoleName, roleSpec } from "./roles.ts";
import { httpsRequest } from "./internal/https_request.ts";

const log = logger("demo");

/** The dev roles in start order, with their settings folders. */
export const DEV_ROLES: readonly { role: RoleName; settings: string; title: string }[] = [
  {
    role: "internal-server",
    settings: "settings/dev/roles/internal-server",
    title: "internal server",
  },
  {
    role: "eps",
    settings: "settings/dev/roles/public-proxy-eps-1",
    title: "EPS of public-proxy-1",
  },
  {
    role: "eps",
    settings: "settings/dev/roles/private-proxy-eps-1",
    title: "EPS of private-proxy-1",
  },
  { role: "public", settings: "settings/dev/roles/public-proxy-1", title: "public proxy" },
  { role: "private", settings: "settings/dev/roles/private-proxy-1", title: "private proxy" },
];

export const DEMO_DOMAIN = "test.internal-server.local";
export const DEMO_CURL =
  "curl --cacert settings/dev/certs/root.crt --resolve test.internal-server.local:4433:127.0.0.1 https://test.internal-server.local:4433/jsonrpc";
/** The echo (POST /echo) and the seed's stress line, printed by `--keep` beside the curl. */
export const DEMO_TRY: readonly string[] = [
  DEMO_CURL,
  `${DEMO_CURL.replace("/jsonrpc", "/echo")} --data '{"b":1,"a":2}'`,
  `seq 1 2000 | parallel -j 25 ${DEMO_CURL} --data "{}"`,
];

export interface DemoOptions {
  keep: boolean;
  print: (line: string) => void;
}

/** Runs the demo; resolves to the exit code (0 when the answer was `{"message":"success"}`). */
export async function runDemo(options: DemoOptions): Promise<number> {
  const { print } = options;
  if (await ensureDevCerts()) print("demo: wrote dev certificates to settings/dev/certs");
  const stop = new AbortController();
  const handles: RoleHandle[] = [];
  const onSignal = () => stop.abort();
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  try {
    for (const r of DEV_ROLES) {
      const spec = await roleSpec(r.role);
      const settings = await loadRoleSettings(spec, [r.settings]);
      // no shared signal: on Ctrl-C the roles stop one by one in reverse order (finally below), so
      // the private proxy can still withdraw its announcements through both EPS servers
      const handle = await spec.start(settings);
      handles.push(handle);
      if (handle.ready) await raceAbort(handle.ready, AbortSignal.timeout(20_000));
      const { admin, ...ports } = handle.addrs as Record<string, HostPort>;
      const addrs = Object.values(ports).map(formatHostPort).join(", ");
      const status = admin ? ` (status page http://${formatHostPort(admin)}/)` : "";
      print(`demo: started ${r.title}${addrs ? ` on ${addrs}` : ""}${status}`);
    }
    const rootCa = await Deno.readTextFile("settings/dev/certs/root.crt");
    print(
      `demo: GET https://${DEMO_DOMAIN}:4433/jsonrpc via 127.0.0.1:4433 (public proxy → private proxy → internal server)`,
    );
    const res = await httpsRequest({
      connect: { hostname: "127.0.0.1", port: 4433 },
      serverName: DEMO_DOMAIN,
      caCerts: [rootCa],
      method: "GET",
      path: "/jsonrpc",
      signal: AbortSignal.timeout(15_000),
    });
    print(`demo: HTTP ${res.status}`);
    print(res.body);
    const ok = res.status === 200 && res.body.trim() === '{"message":"success"}';
    if (options.keep && !stop.signal.aborted) {
      print(`demo: all roles are up; try:\n  ${DEMO_TRY.join("\n  ")}\ndemo: press Ctrl-C to stop`);
      await new Promise<void>((resolve) =>
        stop.signal.addEventListener("abort", () => resolve(), { once: true })
      );
    }
    return ok ? 0 : 1;
  } catch (err) {
    log.error("Demo failed: {error}", { error: err instanceof Error ? err.message : String(err) });
    throw err;
  } finally {
    Deno.removeSignalListener("SIGINT", onSignal);
    Deno.removeSignalListener("SIGTERM", onSignal);
    for (const h of handles.reverse()) await h.close().catch(() => {});
  }
}

function raceAbort<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const onAbort = () =>
      reject(new Error("Cannot start demo: a role did not become ready in 20 s"));
    signal.addEventListener("abort", onAbort, { once: true });
    p.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}
