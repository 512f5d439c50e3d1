/**
 * Where a role's data sockets come from (issue 6): the native libc path (native/), or Deno's own
 * sockets where that is not available or the settings ask for them (`sockets: deno`). Both give
 * {@linkcode ByteConn}s; `splice()` hands a pair of native ones to the data-plane worker.
 * @module
 */
import type { Logger } from "@logtape/logtape";
import type { ByteConn } from "./conn.ts";
import { nativeProblem } from "./native/libc.ts";
import { DataPlane } from "./native/data_plane.ts";
import { connectNative, listenNative, Reactor } from "./native/reactor.ts";

/** A listening socket of a {@linkcode Net}. */
export interface NetListener extends AsyncIterable<ByteConn> {
  readonly addr: Deno.NetAddr;
  accept(): Promise<ByteConn>;
  close(): void;
}

/** The data sockets of one role. */
export interface Net {
  /** "native" (libc sockets, data-plane worker) or "deno" (Deno.listen / Deno.connect). */
  readonly kind: NetKind;
  /** Why "native" was not used, when it was wanted and is not available. */
  readonly problem: string | undefined;
  /** `deferAccept`: hand a connection over once its first bytes came (native only; a hint). */
  listen(opts: { hostname: string; port: number; deferAccept?: boolean }): Promise<NetListener>;
  connect(opts: { hostname: string; port: number; signal?: AbortSignal }): Promise<ByteConn>;
  /** Releases the reactor and the worker; every socket of this Net must be closed first. */
  close(): Promise<void>;
}

export type NetKind = "native" | "deno";

function denoNet(problem: string | undefined): Net {
  return {
    kind: "deno",
    problem,
    listen: ({ hostname, port }) =>
      Promise.resolve(Deno.listen({ hostname, port, transport: "tcp" }) as unknown as NetListener),
    connect: (opts) => Deno.connect({ ...opts, transport: "tcp" }),
    close: () => Promise.resolve(),
  };
}

/** {@linkcode openNet}, with a warning on `log` when native sockets were wanted and are not there. */
export async function openRoleNet(kind: NetKind | "auto", log: Logger): Promise<Net> {
  const net = await openNet(kind);
  if (net.problem !== undefined) {
    log.warn("Native sockets are not available ({problem}): using Deno's", {
      problem: net.problem,
    });
  } else {
    log.info("Data sockets: {kind}", {
      kind: net.kind === "native" ? "native (libc, spliced in the data-plane worker)" : "Deno's",
    });
  }
  return net;
}

/** Opens the data sockets of a role: native where possible unless told otherwise. */
export async function openNet(kind: NetKind | "auto"): Promise<Net> {
  if (kind === "deno") return denoNet(undefined);
  const problem = nativeProblem();
  if (problem !== undefined) {
    if (kind === "native") throw new Error(`Cannot use sockets "native": ${problem}`);
    return denoNet(problem);
  }
  let reactor: Reactor;
  try {
    reactor = new Reactor(); // EMFILE and the like at start: Deno's sockets, as for other problems
  } catch (err) {
    if (kind === "native") throw err;
    return denoNet(err instanceof Error ? err.message : String(err));
  }
  try {
    reactor.dataPlane = await DataPlane.start(reactor);
  } catch (err) {
    await reactor.close();
    if (kind === "native") throw err;
    return denoNet(err instanceof Error ? err.message : String(err));
  }
  return {
    kind: "native",
    problem: undefined,
    listen: (opts) => listenNative(reactor, opts),
    connect: (opts) => connectNative(reactor, opts),
    async close() {
      await reactor.dataPlane?.close();
      await reactor.close();
    },
  };
}
