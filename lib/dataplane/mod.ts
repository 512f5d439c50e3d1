/**
 * The data plane (docs/architecture.md, "The two planes"): what a control plane gets from
 * {@linkcode openDataPlane}. It owns every data socket of one proxy and runs the sans-IO core
 * (core/) through one of two drivers: `native` (libc over FFI, one worker thread blocking in
 * epoll_wait; Linux x86_64 and aarch64) or `portable` (Deno.listen / Deno.connect on this
 * thread). The control plane never imports a driver: only this module.
 * @module
 */
import type { HostPort } from "../role.ts";
import type { DataEvent } from "./events.ts";
import type { Command, PlaneRole, Snapshot } from "./snapshot.ts";
import { connIdPrefix } from "../wire/conn_id.ts";

export type {
  Admission,
  Command,
  Limits,
  PlaneRole,
  PrivateRoute,
  PublicRoute,
  Snapshot,
} from "./snapshot.ts";
export { DEFAULT_LIMITS, emptySnapshot, NO_ADMISSION } from "./snapshot.ts";
export type { DataEvent, EndReason, Phases, Refusal, SideName, Via } from "./events.ts";
export { reapedBy, reasonText } from "./events.ts";

/** Which driver: what the settings key `sockets` and `TLS_PASS_SOCKETS` choose. */
export type DriverChoice = "auto" | "native" | "deno";

/** The driver a data plane runs on. */
export type DriverKind = "native" | "portable";

export interface DataPlaneOptions {
  readonly role: PlaneRole;
  /**
   * Public proxy: the public and the private port (port 0: any). `reusePort`: SO_REUSEPORT on
   * the public port, so that several replicas share it (docs/architecture.md, "Private
   * instances and public replicas: the private side"); `keys`: the settings that name the
   * ports, for errors.
   */
  readonly listen?: {
    readonly public: HostPort;
    readonly private: HostPort;
    readonly reusePort?: boolean;
    readonly keys?: { readonly public: string; readonly private: string };
  };
  /**
   * What the connection ids of this data plane start with (docs/architecture.md, "Connection
   * ids"); {@linkcode openDataPlane} makes a random one when it is absent.
   */
  readonly idPrefix?: string;
  /** The first snapshot (applied before any socket is accepted). */
  readonly snapshot: Snapshot;
  /**
   * Native driver: the kernel pipes its splice path of bulk directions may hold at once (0: off,
   * every byte is copied); default 8 (`SPLICE_PIPES` of native/driver.ts), or 0 when `TLS_PASS_SPLICE=off`
   * (docs/architecture.md, "The drivers"). The portable driver always copies.
   */
  readonly splicePipes?: number;
  /** Receives the events in order, in batches, never inside a call of {@linkcode DataPlane.send}. */
  onEvents(events: readonly DataEvent[]): void;
}

/** A running data plane. */
export interface DataPlane {
  readonly driver: DriverKind;
  /** The bound ports (public proxy). */
  readonly addrs: { readonly public?: HostPort; readonly private?: HostPort };
  /** Applies a command between two turns of the data plane's loop, in the order sent. */
  send(cmd: Command): void;
  /**
   * Stops listening; waiting clients and idle pooled dial-backs end, splices go on. Resolves once
   * the data plane holds no socket.
   */
  stop(): Promise<void>;
  /** Ends every connection now and releases the driver (its thread, its sockets). Idempotent. */
  close(): Promise<void>;
  /** Rejects when the driver itself fails (its worker died): the role cannot serve any more. */
  readonly failed: Promise<never>;
}

/**
 * Opens the data plane on the driver `choice` asks for; the environment variable
 * `TLS_PASS_SOCKETS` (`native` or `deno`) overrides the choice (so a whole test suite can run on
 * either). `auto`: native where it can run, else portable, with `onFallback` told why.
 */
export async function openDataPlane(
  choice: DriverChoice,
  options: DataPlaneOptions,
  onFallback: (problem: string) => void = () => {},
): Promise<DataPlane> {
  if (options.idPrefix === undefined) options = { ...options, idPrefix: connIdPrefix() };
  const forced = Deno.env.get("TLS_PASS_SOCKETS");
  if (forced !== undefined && forced !== "") {
    if (forced !== "native" && forced !== "deno") {
      throw new TypeError(
        `Cannot open the data plane: TLS_PASS_SOCKETS is "${forced}", expected "native" or "deno"`,
      );
    }
    choice = forced;
  }
  const { startPortable } = await import("./portable/driver.ts");
  if (choice === "deno") return startPortable(options);
  let native: typeof import("./native/driver.ts") | undefined;
  let problem: string | undefined;
  try {
    native = await import("./native/driver.ts");
    problem = native.nativeProblem();
  } catch (err) {
    problem = `cannot load the native driver: ${err instanceof Error ? err.message : String(err)}`;
  }
  if (problem !== undefined) {
    if (choice === "native") throw new Error(`Cannot use sockets "native": ${problem}`);
    onFallback(problem);
    return startPortable(options);
  }
  return native!.startNative(options);
}
