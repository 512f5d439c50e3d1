/**
 * Counts the EPS calls a proxy makes, by method and result code (docs/architecture.md,
 * "Metrics"): a wrapper around the proxy's EPS client, so the client itself stays unaware.
 * @module
 */
import type { EpsClient } from "../eps/client.ts";
import { RpcError } from "../errors.ts";

/** Totals keyed `method\tcode` (`code` is "ok" or the JSON-RPC error code). */
export class CallCounts {
  readonly totals = new Map<string, number>();

  count(method: string, code: string): void {
    const key = `${method}\t${code}`;
    this.totals.set(key, (this.totals.get(key) ?? 0) + 1);
  }

  *rows(): Iterable<readonly [Record<string, string>, number]> {
    for (const [key, v] of this.totals) {
      const [method, code] = key.split("\t") as [string, string];
      yield [{ method, code }, v] as const;
    }
  }
}

/** The code label of a failed call. */
export function codeOf(err: unknown): string {
  return err instanceof RpcError ? String(err.code) : "error";
}

/** Wraps `client` so that each `call` is counted under its bare method name (`announceConnections`). */
export function countCalls(client: EpsClient, counts: CallCounts): EpsClient {
  const bare = (method: string) => method.slice(method.lastIndexOf(".") + 1);
  return new Proxy(client, {
    get(target, prop) {
      if (prop === "call") {
        return async (method: string, params: Record<string, unknown>, options?: object) => {
          try {
            const r = await target.call(method, params, options);
            counts.count(bare(method), "ok");
            return r;
          } catch (err) {
            counts.count(bare(method), codeOf(err));
            throw err;
          }
        };
      }
      const v = Reflect.get(target, prop);
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
}
