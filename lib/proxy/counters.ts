/**
 * The control planes' rate-limited warnings: {@linkcode RateLimitedLog} of lib/log.ts.
 * @module
 */
export { RateLimitedLog as Counters } from "../log.ts";
