/**
 * TLS alert records (RFC 8446 §6): what the public proxy answers a client it refuses before any
 * byte reached a backend. Pure.
 * @module
 */

/** Record content type of alerts. */
const CONTENT_TYPE_ALERT = 21;

/** Alert level fatal. */
export const ALERT_LEVEL_FATAL = 2;
/** Alert description handshake_failure. */
export const ALERT_HANDSHAKE_FAILURE = 40;
/** Alert description access_denied. */
export const ALERT_ACCESS_DENIED = 49;
/** Alert description decode_error: the ClientHello could not be parsed. */
export const ALERT_DECODE_ERROR = 50;
/** Alert description internal_error. */
export const ALERT_INTERNAL_ERROR = 80;
/** Alert description unrecognized_name: no SNI, or no route for it. */
export const ALERT_UNRECOGNIZED_NAME = 112;

/** Builds a fatal TLS alert record with the given description (e.g. {@linkcode ALERT_UNRECOGNIZED_NAME}). */
export function tlsAlert(description: number): Uint8Array {
  if (!Number.isInteger(description) || description < 0 || description > 255) {
    throw new RangeError(
      `Cannot build TLS alert: description must be an integer from 0 to 255, got ${description}`,
    );
  }
  return Uint8Array.of(CONTENT_TYPE_ALERT, 3, 3, 0, 2, ALERT_LEVEL_FATAL, description);
}
