/**
 * A child process for driver_native_test.ts: a native public data plane in a process whose
 * descriptor limit is then lowered to a few above its lowest free descriptor, so that accepts fail with
 * EMFILE. Prints its ports, then each event, as JSON lines; closes the data plane at the line
 * `close` on stdin.
 * @module
 */
import { emptySnapshot } from "../../snapshot.ts";
import { startNative } from "../driver.ts";

const LOOPBACK = { hostname: "127.0.0.1", port: 0 };
const out = (v: unknown) =>
  Deno.stdout.writeSync(new TextEncoder().encode(JSON.stringify(v) + "\n"));
const plane = await startNative({
  role: "public",
  snapshot: emptySnapshot(),
  listen: { public: LOOPBACK, private: LOOPBACK },
  onEvents: (events) => events.forEach(out),
});
const libc = Deno.dlopen("libc.so.6", {
  setrlimit: { parameters: ["i32", "buffer"], result: "i32" },
});
// new descriptors take the lowest free number, which must stay below the limit
const open = new Set([...Deno.readDirSync("/proc/self/fd")].map((e) => Number(e.name)));
let free = 0;
while (open.has(free)) free++;
const RLIMIT_NOFILE = 7;
const limit = new BigUint64Array([BigInt(free + 3), BigInt(free + 3)]);
if (libc.symbols.setrlimit(RLIMIT_NOFILE, limit) !== 0) throw new Error("setrlimit failed");
out({ type: "ports", addrs: plane.addrs });
const buf = new Uint8Array(64);
while ((await Deno.stdin.read(buf)) !== null) {
  if (new TextDecoder().decode(buf).startsWith("close")) break;
}
await plane.close();
libc.close();
