/**
 * Runs one EPS server the way `tls-pass run eps --settings DIR` does, for the child-process
 * tests until cli.ts wires the eps role: loads the settings, starts the role, prints the ready
 * line on stdout, logs to stderr, stops on SIGTERM/SIGINT.
 * @module
 */
import { parseArgs } from "node:util";
import { configure, dispose, getStreamSink } from "@logtape/logtape";
import { startEps } from "../lib/eps/server.ts";
import { formatHostPort } from "../lib/role.ts";
import { loadEpsSettings } from "../lib/settings/eps.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: { settings: { type: "string", multiple: true } },
  strict: true,
});
await configure({
  sinks: { stderr: getStreamSink(Deno.stderr.writable) },
  loggers: [
    { category: ["tls-pass"], lowestLevel: "info", sinks: ["stderr"] },
    { category: ["logtape", "meta"], lowestLevel: "warning", sinks: ["stderr"] },
  ],
});
const stop = new AbortController();
for (const sig of ["SIGTERM", "SIGINT"] as const) Deno.addSignalListener(sig, () => stop.abort());
const settings = await loadEpsSettings(values.settings ?? []);
const eps = await startEps(settings, stop.signal);
const addrs = Object.fromEntries(
  Object.entries(eps.addrs).map(([k, v]) => [k, formatHostPort(v)]),
);
// deno-lint-ignore no-console
console.log(JSON.stringify({ event: "ready", role: "eps", pid: Deno.pid, addrs }));
await eps.finished;
await dispose();
Deno.exit(0);
