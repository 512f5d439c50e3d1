/**
 * The native driver's worker (docs/architecture.md, "The drivers"): one thread that owns every
 * data socket of a role and runs the sans-IO core over them. Its loop blocks in `epoll_wait`
 * (synchronous FFI: no promise, no op, no thread hop per event); each wake-up applies the
 * commands the main thread wrote into the ring (before the socket events of the same wake-up),
 * feeds the socket events to the core, fires the core's deadlines, carries out what the core
 * asks for, and posts the events (gathered over turns, loop.ts).
 *
 * Inputs are never fed to the core while its outputs are being carried out: a failure found
 * then (a write, a connect, an epoll_ctl) is kept and fed after them.
 * @module
 */
import type { HostPort } from "../../role.ts";
import type { WorkerInit, WorkerMessage } from "./ring.ts";
import { Loop } from "./loop.ts";

/** The worker's global scope (the project's lib types are the main thread's). */
const scope = self as unknown as {
  onmessage: ((e: MessageEvent<WorkerInit>) => void) | null;
  postMessage(message: WorkerMessage): void;
};

function main(init: WorkerInit): void {
  let loop: Loop | undefined;
  let addrs: { public?: HostPort; private?: HostPort };
  try {
    loop = new Loop(init, (m) => scope.postMessage(m));
    addrs = loop.listen(init.listen);
  } catch (err) {
    loop?.close();
    scope.postMessage({
      t: "bindFailed",
      message: err instanceof Error ? err.message : String(err),
    });
    return;
  }
  scope.postMessage({ t: "ready", addrs });
  let error: unknown;
  try {
    loop.run();
  } catch (err) {
    error = err;
  }
  // stopped, or failed (a bug): either way nothing stays open behind the main thread's back
  loop.close();
  loop.flushEvents();
  if (error === undefined) return scope.postMessage({ t: "exited" });
  const text = error instanceof Error ? error.stack ?? error.message : String(error);
  scope.postMessage({ t: "failed", error: text });
}

scope.onmessage = (e: MessageEvent<WorkerInit>) => {
  scope.onmessage = null;
  main(e.data);
};
