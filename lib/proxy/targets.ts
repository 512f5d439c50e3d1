/**
 * Addresses the private proxy's data plane dials (docs/architecture.md, "The drivers"): the data
 * plane connects IP literals only, so host names in the settings (internal servers, the public
 * proxies' private ports) are resolved here, on the control plane, with the system resolver
 * (`/etc/hosts` included), and the results go into the snapshot and the commands.
 * @module
 */
import { lookup } from "node:dns/promises";
import type { HostPort } from "../role.ts";

/** True when `host` is an IPv4 or IPv6 literal. */
export function isIpLiteral(host: string): boolean {
  return /^\d{1,3}(\.\d{1,3}){3}$/.test(host) || host.includes(":");
}

/** Resolves host names to IP literals, keeping the last good answer when a lookup fails. */
export class Resolver {
  #cache = new Map<string, string>();

  /** The IP literal for `a` now (resolved earlier), or undefined before the first answer. */
  get(a: HostPort): HostPort | undefined {
    if (isIpLiteral(a.hostname)) return a;
    const ip = this.#cache.get(a.hostname);
    return ip === undefined ? undefined : { hostname: ip, port: a.port };
  }

  /** Resolves every host name of `addrs`; returns the problems (`name: error`). */
  async refresh(addrs: readonly HostPort[]): Promise<string[]> {
    const names = [...new Set(addrs.map((a) => a.hostname).filter((h) => !isIpLiteral(h)))];
    const problems: string[] = [];
    await Promise.all(names.map(async (name) => {
      try {
        const r = await lookup(name);
        this.#cache.set(name, r.address);
      } catch (err) {
        problems.push(`${name}: ${err instanceof Error ? err.message : String(err)}`);
      }
    }));
    return problems;
  }
}
