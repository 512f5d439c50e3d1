/**
 * The private proxy's check of a notice (docs/architecture.md, "The control plane"): a notice is
 * accepted only from an operator in `announce_to`, only for an announced domain (exact, then
 * `*.parent`), and only for an endpoint the settings allow for that operator (one of its list,
 * one per public replica) — an address from the network is never dialled unchecked. The result is the data plane's `dialBack` command, with
 * the notice's connection id `conn` when it has one (docs/architecture.md, "Connection ids"), and
 * the client's `source` and `destination` addresses with the announcement's `proxy_protocol`
 * (docs/architecture.md, "The PROXY protocol").
 * @module
 */
import { RpcCode, RpcError } from "../errors.ts";
import { formatHostPort, type HostPort } from "../role.ts";
import type { Command } from "../dataplane/mod.ts";
import { address } from "../settings/check.ts";
import type { PrivateAnnouncement, PrivateSettings } from "../settings/private.ts";
import { matchName, normalizeHostName } from "../wire/names.ts";
import { decodeToken, TOKEN_BYTES } from "../wire/token.ts";
import { isConnId, MAX_CONN_ID_CHARS } from "../wire/conn_id.ts";
import { parseAddressText } from "../wire/pool_header.ts";

export interface NoticeContext {
  settings: PrivateSettings;
  byDomain: ReadonlyMap<string, PrivateAnnouncement>;
  /** The IP literal of an address (resolved on the control plane), or undefined. */
  resolve(a: HostPort): HostPort | undefined;
  /** Connections in flight or spliced now. */
  live(): number;
  /** The budget's connections at once. */
  maxConnections: number;
  stopping(): boolean;
}

/**
 * The entry of `allowed` (an operator's `endpoints`) that the address text `v` names exactly, or
 * undefined (not an address, or not listed).
 */
export function allowedEndpoint(v: unknown, allowed: readonly HostPort[]): HostPort | undefined {
  const problems: string[] = [];
  const endpoint = address(v, "endpoint", problems);
  if (problems.length > 0) return undefined;
  return allowed.find((a) => a.port === endpoint.port && a.hostname === endpoint.hostname);
}

/** The allowed endpoints as error text: `the allowed "a:1"` or `one of the allowed "a:1", "b:2"`. */
export function allowedText(allowed: readonly HostPort[]): string {
  const list = allowed.map((a) => `"${formatHostPort(a)}"`).join(", ");
  return allowed.length === 1 ? `the allowed ${list}` : `one of the allowed ${list}`;
}

/** Checks a notice; returns the `dialBack` command or throws the RpcError to answer. */
export function checkNotice(
  params: Record<string, unknown>,
  caller: string,
  c: NoticeContext,
): Extract<Command, { type: "dialBack" }> {
  const s = c.settings;
  const refuse = (why: string, code: number): never => {
    throw new RpcError(`Cannot accept notice from "${caller}": ${why}`, code);
  };
  if (c.stopping()) throw new RpcError("Cannot accept notice: stopping", RpcCode.Unavailable);
  if (!s.announceTo.includes(caller)) {
    refuse("not an operator this proxy announces to", RpcCode.NotPermitted);
  }
  const domain = typeof params.domain === "string" ? normalizeHostName(params.domain) : null;
  const announcement = domain === null ? undefined : matchName(domain, c.byDomain);
  if (domain === null || announcement === undefined) {
    refuse(`domain ${JSON.stringify(params.domain)} is not announced here`, RpcCode.InvalidParams);
  }
  const allowed = allowedEndpoint(params.endpoint, s.endpoints[caller] ?? []);
  if (allowed === undefined) {
    refuse(
      `endpoint ${JSON.stringify(params.endpoint)} is not ${
        allowedText(s.endpoints[caller] ?? [])
      }`,
      RpcCode.NotPermitted,
    );
  }
  if (decodeToken(params.token) === null) {
    refuse(`token must be ${TOKEN_BYTES} bytes of base64`, RpcCode.InvalidParams);
  }
  // absent from a public proxy without connection ids: the data plane names the connection
  if (params.conn !== undefined && !isConnId(params.conn)) {
    refuse(
      `conn ${
        JSON.stringify(params.conn)
      } must be 1 to ${MAX_CONN_ID_CHARS} characters of [0-9A-Za-z._:-]`,
      RpcCode.InvalidParams,
    );
  }
  // the client's address and the one it connected to (PROXY protocol): both or neither, absent
  // from a public proxy from before them
  const addr = (key: "source" | "destination"): HostPort | undefined => {
    const v = params[key];
    if (v === undefined) return undefined;
    const a = typeof v === "string" ? parseAddressText(v) : null;
    if (a === null) {
      refuse(
        `${key} ${JSON.stringify(v)} must be an IP address and port (ip:port or [ip6]:port)`,
        RpcCode.InvalidParams,
      );
    }
    return a!;
  };
  const source = addr("source");
  const destination = addr("destination");
  if ((source === undefined) !== (destination === undefined)) {
    refuse(
      `${source === undefined ? "destination" : "source"} without ${
        source === undefined ? "source" : "destination"
      }`,
      RpcCode.InvalidParams,
    );
  }
  if (c.live() >= c.maxConnections) {
    refuse(`${c.maxConnections} connections open`, RpcCode.Unavailable);
  }
  const to = c.resolve(allowed!);
  const internal = c.resolve(announcement!.internal);
  if (to === undefined || internal === undefined) {
    refuse(
      `cannot resolve ${
        to === undefined ? formatHostPort(allowed!) : formatHostPort(announcement!.internal)
      }`,
      RpcCode.Unavailable,
    );
  }
  return {
    type: "dialBack",
    ...(params.conn !== undefined ? { conn: params.conn as string } : {}),
    operator: caller,
    domain: domain!,
    endpoint: to!,
    token: params.token as string,
    internal: internal!,
    ...(announcement!.proxyProtocol !== undefined
      ? { proxyProtocol: announcement!.proxyProtocol }
      : {}),
    ...(source !== undefined ? { source, destination: destination! } : {}),
  };
}
