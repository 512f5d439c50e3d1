/**
 * V8 flags the shipped executable is built with (`deno task compile` embeds them) and that
 * `deno task bench` gives the roles by default, so the benchmark measures what ships.
 *
 * `--max-semi-space-size=2` (MiB) caps V8's young generation, which otherwise grows during a burst
 * of handshakes and never shrinks: measured with W4 (2,000 held connections, four relay
 * processes, same-run quick bench), 71.9 → 51.8 KiB per held connection at a cap of 4 MiB, with
 * W2 keep-alive 0.64 → 0.68 × HAProxy (no loss). A cap of 1 MiB then cost 69–78 ms p99 pauses in
 * W2, when the main thread still relayed the bytes. Since the data-plane worker relays them (and,
 * for pooled clients, sets them up), a main-thread pause no longer stalls a connection: with 2 MiB
 * W4 gave 25.6 and 25.8 KiB against 29.0 with 4 MiB (alternating quick runs), and W2 p99 2.2 ms
 * against 2.6.
 *
 * `--expose-gc` lets the native driver's worker run a full collection once it has been quiet for
 * a second after a burst (lib/dataplane/native/worker.ts, docs/architecture.md "Memory"): its loop
 * never returns to the event loop, so V8's memory reducer never runs there. Without the flag the
 * worker only trims malloc's arenas.
 * @module
 */
export const SHIPPED_V8_FLAGS = "--max-semi-space-size=2,--expose-gc";
