/**
 * The libc socket and epoll calls of the native driver (docs/architecture.md, "The drivers"),
 * through Deno's FFI.
 *
 * Why FFI: Deno's own sockets cost about 20 µs of CPU per completed read or write (a promise, an
 * op, a wake-up of the event loop), which is what kept a Deno relay at about 0.7 × HAProxy on
 * small keep-alive requests, and a pending read pins a buffer and 2 KiB of heap per idle socket.
 * A synchronous FFI call costs about 0.2 µs, so an epoll loop written against libc is as cheap
 * per event as HAProxy's, and needs no buffer per idle connection. Linux only (the constants
 * below are the asm-generic ones x86_64 and aarch64 share); {@linkcode nativeProblem} says why it
 * cannot be used elsewhere, and the callers then keep Deno's sockets.
 *
 * One {@linkcode Libc} per thread: `dlopen` is cheap, and `errno` is thread-local.
 * @module
 */
import { ipv4Bytes, ipv6Bytes } from "../../wire/ip.ts";

const SYMBOLS = {
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  bind: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  listen: { parameters: ["i32", "i32"], result: "i32" },
  accept4: { parameters: ["i32", "buffer", "buffer", "i32"], result: "i32" },
  connect: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  sendmsg: { parameters: ["i32", "buffer", "i32"], result: "i32" },
  // ssize_t results are read as i32: a 64-bit result would come back as a BigInt (an allocation
  // per call). Both ABIs return it in one register whose low half is the value for counts below
  // 2 GiB and -1; the callers never pass more than 1 MiB.
  recv: { parameters: ["i32", "buffer", "usize", "i32"], result: "i32" },
  send: { parameters: ["i32", "buffer", "usize", "i32"], result: "i32" },
  read: { parameters: ["i32", "buffer", "usize"], result: "i32" },
  write: { parameters: ["i32", "buffer", "usize"], result: "i32" },
  shutdown: { parameters: ["i32", "i32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
  getsockopt: { parameters: ["i32", "i32", "i32", "buffer", "buffer"], result: "i32" },
  getsockname: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  getpeername: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  epollCreate1: { name: "epoll_create1", parameters: ["i32"], result: "i32" },
  epollCtl: { name: "epoll_ctl", parameters: ["i32", "i32", "i32", "buffer"], result: "i32" },
  epollWait: { name: "epoll_wait", parameters: ["i32", "buffer", "i32", "i32"], result: "i32" },
  /** The same call on Deno's blocking thread pool: for the main thread, which must not block. */
  epollWaitAsync: {
    name: "epoll_wait",
    parameters: ["i32", "buffer", "i32", "i32"],
    result: "i32",
    nonblocking: true,
  },
  eventfd: { parameters: ["u32", "i32"], result: "i32" },
  /** Moves bytes between a descriptor and a pipe in the kernel (the bulk path of socks.ts). */
  splice: {
    parameters: ["i32", "pointer", "i32", "pointer", "usize", "u32"],
    result: "i32",
  },
  pipe2: { parameters: ["buffer", "i32"], result: "i32" },
  /** Only the `int` form (F_SETPIPE_SZ): the variadic argument goes in a register either way. */
  fcntl: { parameters: ["i32", "i32", "i32"], result: "i32" },
  errnoLocation: { name: "__errno_location", parameters: [], result: "pointer" },
  /** glibc's: gives the free memory of every malloc arena back to the kernel (null elsewhere). */
  mallocTrim: { name: "malloc_trim", parameters: ["usize"], result: "i32", optional: true },
} as const;

/**
 * The symbols with the types the callers use. A `usize` length must be passed as a BigInt: V8's
 * fast calls take it as one, and a number makes optimized code deoptimize ("not a BigInt") and
 * take the slow call path. Hot paths pass constant BigInts, or use `sendmsg` with the length in
 * a reused iovec.
 */
export interface LibcSymbols {
  socket(domain: number, type: number, protocol: number): number;
  bind(fd: number, addr: Uint8Array, len: number): number;
  listen(fd: number, backlog: number): number;
  accept4(fd: number, addr: Uint8Array, len: Uint32Array, flags: number): number;
  connect(fd: number, addr: Uint8Array, len: number): number;
  recv(fd: number, buf: Uint8Array, len: bigint, flags: number): number;
  send(fd: number, buf: Uint8Array, len: bigint, flags: number): number;
  read(fd: number, buf: BufferSource, len: bigint): number;
  write(fd: number, buf: BufferSource, len: bigint): number;
  sendmsg(fd: number, msghdr: Uint8Array, flags: number): number;
  shutdown(fd: number, how: number): number;
  close(fd: number): number;
  setsockopt(fd: number, level: number, name: number, value: BufferSource, len: number): number;
  getsockopt(
    fd: number,
    level: number,
    name: number,
    value: BufferSource,
    len: Uint32Array,
  ): number;
  getsockname(fd: number, addr: Uint8Array, len: Uint32Array): number;
  getpeername(fd: number, addr: Uint8Array, len: Uint32Array): number;
  epollCreate1(flags: number): number;
  epollCtl(ep: number, op: number, fd: number, event: Uint8Array): number;
  epollWait(ep: number, events: Uint8Array, max: number, timeoutMs: number): number;
  epollWaitAsync(ep: number, events: Uint8Array, max: number, timeoutMs: number): Promise<number>;
  eventfd(initval: number, flags: number): number;
  splice(
    fdIn: number,
    offIn: null,
    fdOut: number,
    offOut: null,
    len: bigint,
    flags: number,
  ): number;
  pipe2(fds: Int32Array, flags: number): number;
  fcntl(fd: number, cmd: number, arg: number): number;
  errnoLocation(): Deno.PointerValue;
  /** null where libc has no `malloc_trim` (not glibc). */
  mallocTrim: ((pad: bigint) => number) | null;
}

export const AF_INET = 2;
export const AF_INET6 = 10;
export const SOCK_STREAM = 1;
export const SOCK_NONBLOCK = 0o4000;
export const SOCK_CLOEXEC = 0o2000000;
export const SOL_SOCKET = 1;
export const SO_REUSEADDR = 2;
/** The same on x86_64 and aarch64 Linux (asm-generic/socket.h). */
export const SO_REUSEPORT = 15;
export const SO_ERROR = 4;
export const SO_KEEPALIVE = 9;
export const IPPROTO_TCP = 6;
export const TCP_NODELAY = 1;
export const TCP_DEFER_ACCEPT = 9;
export const TCP_KEEPIDLE = 4;
export const TCP_KEEPINTVL = 5;
export const TCP_KEEPCNT = 6;
export const TCP_USER_TIMEOUT = 18;
export const MSG_DONTWAIT = 0x40;
export const MSG_NOSIGNAL = 0x4000;
export const SHUT_WR = 1;
export const EPOLL_CTL_ADD = 1;
export const EPOLL_CTL_DEL = 2;
export const EPOLL_CTL_MOD = 3;
export const EPOLLIN = 0x1;
export const EPOLLOUT = 0x4;
export const EPOLLERR = 0x8;
export const EPOLLHUP = 0x10;
export const EFD_NONBLOCK = 0o4000;
export const EFD_CLOEXEC = 0o2000000;
export const O_NONBLOCK = 0o4000;
export const O_CLOEXEC = 0o2000000;
export const F_SETPIPE_SZ = 1031;
export const SPLICE_F_MOVE = 1;
export const SPLICE_F_NONBLOCK = 2;
/** Size of `struct epoll_event`: packed on x86_64, 8-byte aligned elsewhere. */
export const EPOLL_EVENT_BYTES = Deno.build.arch === "x86_64" ? 12 : 16;
/**
 * Offset of `epoll_event.data` (where the fd is kept): 4 when packed (x86_64), else 8. The kernel
 * writes back only `events` and `data`, so reading the fd at 4 on aarch64 gives garbage.
 */
export const EPOLL_DATA_OFFSET = EPOLL_EVENT_BYTES - 8;

export const EINTR = 4;
export const EAGAIN = 11;
export const EPIPE = 32;
export const ECONNABORTED = 103;
export const ECONNRESET = 104;
export const EINPROGRESS = 115;

/** Names and short descriptions of the errnos a socket call may set (asm-generic numbers). */
const ERRNOS: Record<number, readonly [string, string]> = {
  1: ["EPERM", "operation not permitted"],
  4: ["EINTR", "interrupted"],
  9: ["EBADF", "bad file descriptor"],
  11: ["EAGAIN", "try again"],
  12: ["ENOMEM", "out of memory"],
  13: ["EACCES", "permission denied"],
  22: ["EINVAL", "invalid argument"],
  23: ["ENFILE", "too many open files in the system"],
  24: ["EMFILE", "too many open files"],
  28: ["ENOSPC", "no space left"],
  32: ["EPIPE", "broken pipe"],
  71: ["EPROTO", "protocol error"],
  88: ["ENOTSOCK", "not a socket"],
  92: ["ENOPROTOOPT", "protocol not available"],
  97: ["EAFNOSUPPORT", "address family not supported"],
  98: ["EADDRINUSE", "address in use"],
  99: ["EADDRNOTAVAIL", "address not available"],
  100: ["ENETDOWN", "network is down"],
  101: ["ENETUNREACH", "network unreachable"],
  103: ["ECONNABORTED", "connection aborted"],
  104: ["ECONNRESET", "connection reset"],
  105: ["ENOBUFS", "no buffer space"],
  106: ["EISCONN", "already connected"],
  107: ["ENOTCONN", "not connected"],
  110: ["ETIMEDOUT", "timed out"],
  111: ["ECONNREFUSED", "connection refused"],
  112: ["EHOSTDOWN", "host is down"],
  113: ["EHOSTUNREACH", "host unreachable"],
  114: ["EALREADY", "already in progress"],
  115: ["EINPROGRESS", "in progress"],
};

/** The errno's name (`ECONNRESET`), or `errno 123` for one not in the table. */
export function errnoName(errno: number): string {
  return ERRNOS[errno]?.[0] ?? `errno ${errno}`;
}

/** `EADDRINUSE (address in use)` for error messages; `errno 123` for an unknown one. */
export function errnoMessage(errno: number): string {
  const e = ERRNOS[errno];
  return e === undefined ? `errno ${errno}` : `${e[0]} (${e[1]})`;
}

/** The libc of the calling thread, with its `errno`. */
export class Libc {
  readonly sym: LibcSymbols;
  readonly #errno: Deno.UnsafePointerView;
  private constructor(lib: Deno.DynamicLibrary<typeof SYMBOLS>) {
    this.sym = lib.symbols as unknown as LibcSymbols;
    const p = lib.symbols.errnoLocation();
    if (p === null) throw new Error("Cannot use libc: __errno_location() returned NULL");
    this.#errno = new Deno.UnsafePointerView(p);
  }
  /** `errno` of this thread: read it right after the call that failed. */
  errno(): number {
    return this.#errno.getInt32();
  }
  static #mine: Libc | undefined;
  /** This thread's libc (opened on first use); throws where {@linkcode nativeProblem} says. */
  static get(): Libc {
    if (Libc.#mine) return Libc.#mine;
    const problem = nativeProblem();
    if (problem !== undefined) throw new Error(`Cannot use native sockets: ${problem}`);
    return (Libc.#mine = new Libc(Deno.dlopen("libc.so.6", SYMBOLS)));
  }
}

let probed: { problem: string | undefined } | undefined;

/** Why native sockets cannot be used in this process, or undefined when they can. */
export function nativeProblem(): string | undefined {
  if (probed) return probed.problem;
  let problem: string | undefined;
  if (Deno.build.os !== "linux") problem = `${Deno.build.os} is not Linux`;
  else if (Deno.build.arch !== "x86_64" && Deno.build.arch !== "aarch64") {
    problem = `${Deno.build.arch} is not x86_64 or aarch64`;
  } else {
    try {
      Deno.dlopen("libc.so.6", { getpid: { parameters: [], result: "i32" } }).close();
    } catch (err) {
      problem = `cannot open libc.so.6 (${err instanceof Error ? err.message : String(err)})`;
    }
  }
  probed = { problem };
  return problem;
}

/** `ECONNRESET (104)` for logs. */
export function errnoText(errno: number): string {
  return `${ERRNOS[errno]?.[0] ?? "errno"} (${errno})`;
}

/** The Deno error class a socket call's errno maps to, so callers can keep their `instanceof`s. */
export function socketError(errno: number, what: string): Error {
  const message = `${what}: ${errnoText(errno)}`;
  switch (errno) {
    case 98:
      return new Deno.errors.AddrInUse(message);
    case 99:
      return new Deno.errors.AddrNotAvailable(message);
    case 104:
      return new Deno.errors.ConnectionReset(message);
    case 103:
      return new Deno.errors.ConnectionAborted(message);
    case 111:
      return new Deno.errors.ConnectionRefused(message);
    case 32:
      return new Deno.errors.BrokenPipe(message);
    case 107:
      return new Deno.errors.NotConnected(message);
    case 110:
      return new Deno.errors.TimedOut(message);
    case 13:
    case 1:
      return new Deno.errors.PermissionDenied(message);
    default:
      return new Error(message);
  }
}

/** Encodes an IP literal and port as a `sockaddr_in` or `sockaddr_in6`; null if not a literal. */
export function encodeSockaddr(ip: string, port: number): Uint8Array | null {
  if (!Number.isInteger(port) || port < 0 || port > 65_535) {
    throw new RangeError(`Cannot use port ${port}: expected an integer from 0 to 65535`);
  }
  const v4 = ipv4Bytes(ip);
  if (v4) {
    const sa = new Uint8Array(16);
    const dv = new DataView(sa.buffer);
    dv.setUint16(0, AF_INET, true);
    dv.setUint16(2, port, false);
    sa.set(v4, 4);
    return sa;
  }
  const v6 = ipv6Bytes(ip.startsWith("[") && ip.endsWith("]") ? ip.slice(1, -1) : ip);
  if (v6) {
    const sa = new Uint8Array(28);
    const dv = new DataView(sa.buffer);
    dv.setUint16(0, AF_INET6, true);
    dv.setUint16(2, port, false);
    sa.set(v6, 8);
    return sa;
  }
  return null;
}

/** "0" to "255": a dotted address is four lookups, not four number-to-string conversions. */
const BYTE_TEXT: readonly string[] = Array.from({ length: 256 }, (_, i) => String(i));

/** The dotted text of the 4 bytes at `sa[at]`. */
function dotted(sa: Uint8Array, at: number): string {
  const t = BYTE_TEXT;
  return `${t[sa[at]!]}.${t[sa[at + 1]!]}.${t[sa[at + 2]!]}.${t[sa[at + 3]!]}`;
}

/** Decodes a `sockaddr_in`/`sockaddr_in6` into a Deno.NetAddr (once per accepted connection). */
export function decodeSockaddr(sa: Uint8Array): Deno.NetAddr {
  const family = sa[0]! | (sa[1]! << 8);
  const port = (sa[2]! << 8) | sa[3]!;
  if (family === AF_INET) return { transport: "tcp", hostname: dotted(sa, 4), port };
  if (family === AF_INET6) {
    const dv = new DataView(sa.buffer, sa.byteOffset, sa.byteLength);
    if (sa.subarray(8, 18).every((b) => b === 0) && dv.getUint16(18, false) === 0xffff) {
      // v4-mapped, written as Deno.Conn (Rust's Ipv6Addr) writes it: `::ffff:127.0.0.1`
      return { transport: "tcp", hostname: `::ffff:${dotted(sa, 20)}`, port };
    }
    const words: string[] = [];
    for (let i = 0; i < 8; i++) words.push(dv.getUint16(8 + 2 * i, false).toString(16));
    return { transport: "tcp", hostname: compressIpv6(words), port };
  }
  return { transport: "tcp", hostname: "unknown", port: 0 };
}

function compressIpv6(words: string[]): string {
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8;) {
    if (words[i] !== "0") {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && words[j] === "0") j++;
    if (j - i > bestLen) [best, bestLen] = [i, j - i];
    i = j;
  }
  if (best < 0) return words.join(":");
  return `${words.slice(0, best).join(":")}::${words.slice(best + bestLen).join(":")}`;
}
