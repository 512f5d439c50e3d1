/**
 * V8 flags the shipped executable is built with (`deno task compile` embeds them) and that
 * `deno task bench` gives the roles by default, so the benchmark measures what ships.
 *
 * `--max-semi-space-size=4` (MiB) caps V8's young generation, which otherwise grows during a burst
 * of handshakes and never shrinks: measured with W4 (2,000 held connections, four relay
 * processes, same-run quick bench), 71.9 → 51.8 KiB per held connection, with W2 keep-alive
 * 0.64 → 0.68 × HAProxy (no loss). A cap of 1 MiB cost 69–78 ms p99 pauses in W2.
 * @module
 */
export const SHIPPED_V8_FLAGS = "--max-semi-space-size=4";
