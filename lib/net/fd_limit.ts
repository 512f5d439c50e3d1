/**
 * The open-file limit (RLIMIT_NOFILE) of this process (issue 6: 10,000 held connections).
 *
 * A relayed connection costs the public proxy two file descriptors (the client and its
 * dial-back) and the private proxy two (the dial-back and the internal server), and the
 * usual soft limit is 1,024. {@linkcode raiseFdLimit} lifts the soft limit to the hard one
 * and, for root, the hard limit too (up to `/proc/sys/fs/nr_open`), through libc's
 * `getrlimit`/`setrlimit` over FFI (`Deno.dlopen`, allowed by `-A` and in a compiled binary).
 * It never throws and never lowers a limit: what it could not do is returned as `problem`.
 * @module
 */

/** The soft and hard open-file limits. */
export interface FdLimit {
  soft: number;
  hard: number;
}

/** What {@linkcode raiseFdLimit} found and did. */
export interface FdLimitReport {
  /** The limits before, or null when they cannot be read (not Linux, FFI denied). */
  before: FdLimit | null;
  /** The limits after (equal to `before` when nothing changed), or null as `before`. */
  after: FdLimit | null;
  /** Why the soft limit is below `target` (not Linux, FFI denied, EPERM), or undefined. */
  problem?: string;
}

/** The hard limit root asks for when `/proc/sys/fs/nr_open` allows it. */
export const TARGET_FD_LIMIT = 1_048_576;
/** Descriptors a role keeps for itself (listeners, EPS link, store, stdio) in the estimate. */
const RESERVED_FDS = 64;

/** RLIMIT_NOFILE on Linux (all architectures Deno runs on). */
const RLIMIT_NOFILE = 7;
/** RLIM_INFINITY as a u64. */
const RLIM_INFINITY = 0xffff_ffff_ffff_ffffn;

const SYMBOLS = {
  getrlimit: { parameters: ["i32", "buffer"], result: "i32" },
  setrlimit: { parameters: ["i32", "buffer"], result: "i32" },
  __errno_location: { parameters: [], result: "pointer" },
} as const;

type Libc = Deno.DynamicLibrary<typeof SYMBOLS>;

function openLibc(): Libc {
  if (Deno.build.os !== "linux") {
    throw new Error(`Cannot reach setrlimit: ${Deno.build.os} is not Linux`);
  }
  return Deno.dlopen("libc.so.6", SYMBOLS);
}

function toNumber(v: bigint): number {
  return v >= BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(v);
}

function errnoOf(libc: Libc): number {
  const p = libc.symbols.__errno_location();
  return p === null ? 0 : new Deno.UnsafePointerView(p).getInt32();
}

function get(libc: Libc): FdLimit {
  const buf = new BigUint64Array(2);
  if (libc.symbols.getrlimit(RLIMIT_NOFILE, buf) !== 0) {
    throw new Error(`getrlimit(RLIMIT_NOFILE) failed with errno ${errnoOf(libc)}`);
  }
  return { soft: toNumber(buf[0]!), hard: toNumber(buf[1]!) };
}

function set(libc: Libc, soft: number, hard: number): void {
  const buf = new BigUint64Array([
    soft === Number.MAX_SAFE_INTEGER ? RLIM_INFINITY : BigInt(soft),
    hard === Number.MAX_SAFE_INTEGER ? RLIM_INFINITY : BigInt(hard),
  ]);
  if (libc.symbols.setrlimit(RLIMIT_NOFILE, buf) !== 0) {
    const errno = errnoOf(libc);
    throw new Error(
      `setrlimit(RLIMIT_NOFILE, ${soft}/${hard}) failed with errno ${errno}${
        errno === 1 ? " (EPERM)" : ""
      }`,
    );
  }
}

/** The current open-file limits; throws when they cannot be read (not Linux, FFI denied). */
export function getFdLimit(): FdLimit {
  const libc = openLibc();
  try {
    return get(libc);
  } finally {
    libc.close();
  }
}

function nrOpen(): number | undefined {
  try {
    const n = Number(Deno.readTextFileSync("/proc/sys/fs/nr_open").trim());
    return Number.isInteger(n) && n > 0 ? n : undefined;
  } catch {
    return undefined;
  }
}

function isRoot(): boolean {
  try {
    return Deno.uid() === 0;
  } catch {
    return false;
  }
}

/**
 * Raises the soft open-file limit to the hard one; as root, first the hard one to `target`
 * (bounded by `/proc/sys/fs/nr_open`). Never lowers a limit, never throws.
 */
export function raiseFdLimit(target: number = TARGET_FD_LIMIT): FdLimitReport {
  let libc: Libc;
  try {
    libc = openLibc();
  } catch (err) {
    return { before: null, after: null, problem: err instanceof Error ? err.message : String(err) };
  }
  try {
    const before = get(libc);
    const problems: string[] = [];
    if (before.hard < target && isRoot()) {
      const wanted = Math.min(target, nrOpen() ?? target);
      if (wanted > before.hard) {
        try {
          set(libc, wanted, wanted);
        } catch (err) {
          problems.push(err instanceof Error ? err.message : String(err));
        }
      }
    }
    const now = get(libc);
    if (now.soft < now.hard) {
      try {
        set(libc, now.hard, now.hard);
      } catch (err) {
        problems.push(err instanceof Error ? err.message : String(err));
      }
    }
    const after = get(libc);
    return problems.length > 0
      ? { before, after, problem: problems.join("; ") }
      : { before, after };
  } catch (err) {
    return { before: null, after: null, problem: err instanceof Error ? err.message : String(err) };
  } finally {
    libc.close();
  }
}

/** How many relayed connections a proxy can hold with `soft` descriptors (two per connection). */
export function relayedConnectionsFor(soft: number): number {
  return Math.max(0, Math.floor((soft - RESERVED_FDS) / 2));
}
