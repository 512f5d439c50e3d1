/**
 * The error catalogue. Built-ins (`TypeError`, `RangeError`) are used for bad arguments to the
 * API; these classes carry a machine-readable `code` and keep the low-level error as `cause`.
 * @module
 */

/** Why a peer or connection was dropped; yamux maps some of these to GoAway codes. */
export type ProtocolErrorCode =
  | "protocol"
  | "frame-too-large"
  | "window-exceeded"
  | "too-many-streams"
  | "bad-client-hello"
  | "client-hello-too-large"
  | "bad-token"
  | "bad-message";

/** A peer sent bytes that break the protocol (yamux, JSON-RPC framing, TLS ClientHello, token). */
export class ProtocolError extends Error {
  override name = "ProtocolError";
  constructor(
    message: string,
    readonly code: ProtocolErrorCode = "protocol",
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

/** Settings that cannot be used; every problem is listed as `key.path: problem`. */
export class SettingsError extends Error {
  override name = "SettingsError";
  constructor(readonly file: string, readonly problems: readonly string[], options?: ErrorOptions) {
    super(`Cannot load settings "${file}":\n  ${problems.join("\n  ")}`, options);
  }
}

/**
 * JSON-RPC error codes used by tls-pass (docs/architecture.md, "The picture"), beside the
 * standard ones.
 */
export const RpcCode = {
  ParseError: -32700,
  InvalidRequest: -32600,
  MethodNotFound: -32601,
  InvalidParams: -32602,
  InternalError: -32603,
  UnknownOperator: -32001,
  NotPermitted: -32002,
  Unavailable: -32003,
  Timeout: -32004,
  Conflict: -32009,
  DomainNotAllowed: -32010,
} as const;
export type RpcCode = typeof RpcCode[keyof typeof RpcCode];

/** A JSON-RPC error, either received from a peer or to be sent to one. */
export class RpcError extends Error {
  override name = "RpcError";
  constructor(
    message: string,
    readonly code: number,
    readonly data?: unknown,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
  /** The JSON-RPC 2.0 error object. */
  toJSON(): { code: number; message: string; data?: unknown } {
    return this.data === undefined
      ? { code: this.code, message: this.message }
      : { code: this.code, message: this.message, data: this.data };
  }
}

/** A link or session closed while something still waited on it. */
export class LinkClosedError extends Error {
  override name = "LinkClosedError";
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
  }
}
