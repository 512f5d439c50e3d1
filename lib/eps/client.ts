/**
 * The client a proxy uses to reach its own EPS server: one mTLS link carrying a yamux session,
 * calls out (`operator.method`) and calls in (`serve(method)`), reconnecting transparently.
 * This is the only module of lib/eps that lib/proxy imports.
 * @module
 */
import type { HostPort } from "../role.ts";
import * as check from "../settings/check.ts";
import { checkReadable } from "../settings/loader.ts";

export interface EpsClientSettings {
  /** The EPS server's link address. */
  address: HostPort;
  /** This operator's certificate (leaf + intermediate) and key: the proxy attaches as its operator. */
  certificateFile: string;
  keyFile: string;
  /** CAs that issued the EPS server's certificate. */
  caCertificateFiles: string[];
  /** Default deadline of an outgoing call. */
  callTimeoutMs: number;
  maxMessageBytes: number;
}

export interface CallOptions {
  signal?: AbortSignal;
  timeoutMs?: number;
}

export interface CallContext {
  /** The calling operator, as stamped by the EPS (`params._client.name`), never taken from the caller. */
  caller: string;
  signal: AbortSignal;
}

/** Serves one incoming call; the return value is the JSON-RPC result, a thrown RpcError the error. */
export type Handler = (
  params: Record<string, unknown>,
  ctx: CallContext,
) => unknown | Promise<unknown>;

export interface EpsClient extends AsyncDisposable {
  /** Calls `operator.method`; throws RpcError (codes in errors.ts RpcCode) on failure or deadline. */
  call<T = unknown>(
    method: string,
    params: Record<string, unknown>,
    options?: CallOptions,
  ): Promise<T>;
  /** Registers the handler for calls to `<own operator>.<method>`. */
  serve(method: string, handler: Handler): void;
  /** True while the link to the EPS is up. */
  readonly attached: boolean;
  /** Resolves the first time the link is up. */
  readonly ready: Promise<void>;
  /** Runs `listener` on every attach, including re-attaches after a reconnect; returns an unsubscribe. */
  onAttach(listener: () => void): () => void;
  close(): Promise<void>;
}

const KEYS = [
  "address",
  "certificate_file",
  "key_file",
  "ca_certificate_files",
  "call_timeout_ms",
  "max_message_bytes",
] as const;

/** Parses the `eps:` block of a proxy's settings. */
export function parseEpsClientSettings(
  v: unknown,
  prefix: string,
  problems: check.Problems,
): EpsClientSettings {
  const m = check.mapping(v, prefix, problems);
  check.onlyKeys(m, KEYS, prefix, problems);
  const k = (key: string) => check.join(prefix, key);
  const req = (key: string) => check.required(m[key], k(key), problems);
  const s: EpsClientSettings = {
    address: req("address")
      ? check.address(m.address, k("address"), problems)
      : { hostname: "", port: 0 },
    certificateFile: req("certificate_file")
      ? check.string(m.certificate_file, k("certificate_file"), problems)
      : "",
    keyFile: req("key_file") ? check.string(m.key_file, k("key_file"), problems) : "",
    caCertificateFiles: req("ca_certificate_files")
      ? check.list(m.ca_certificate_files, k("ca_certificate_files"), problems, check.string)
      : [],
    callTimeoutMs: check.durationMs(m.call_timeout_ms ?? 5000, k("call_timeout_ms"), problems),
    maxMessageBytes: check.bytes(
      m.max_message_bytes ?? 1024 * 1024,
      k("max_message_bytes"),
      problems,
      1024,
    ),
  };
  checkReadable(s.certificateFile, k("certificate_file"), problems);
  checkReadable(s.keyFile, k("key_file"), problems);
  s.caCertificateFiles.forEach((f, i) =>
    checkReadable(f, `${k("ca_certificate_files")}[${i}]`, problems)
  );
  return s;
}

/** Connects to the own EPS server. Implemented with the link and session modules. */
export function connectEps(_settings: EpsClientSettings, _signal?: AbortSignal): EpsClient {
  throw new Error("Cannot connect to EPS: not built yet");
}
