/**
 * What both proxies' control planes do at a stop (docs/architecture.md, "The control plane"):
 * wait for the stop signal (or a dead data plane), then let the data plane drain — listeners
 * close, waits end, live splices get `grace_ms` — and close it.
 * @module
 */
import type { DataPlane } from "../dataplane/mod.ts";

/** Resolves when `signal` aborts; rejects when the data plane fails first. */
export function untilStopped(signal: AbortSignal, plane: DataPlane): Promise<void> {
  const stopped = new Promise<void>((resolve) => {
    if (signal.aborted) resolve();
    else signal.addEventListener("abort", () => resolve(), { once: true });
  });
  return Promise.race([stopped, plane.failed]);
}

/** Stops the data plane, waits up to `graceMs` for its splices to end, then closes it. */
export async function drainAndClose(plane: DataPlane, graceMs: number): Promise<void> {
  let grace: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([
    plane.stop(),
    new Promise<void>((r) => grace = setTimeout(r, graceMs)),
  ]).catch(() => {});
  clearTimeout(grace);
  await plane.close();
}
