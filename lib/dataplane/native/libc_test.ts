import assert from "node:assert/strict";
import {
  AF_INET,
  AF_INET6,
  decodeSockaddr,
  EFD_CLOEXEC,
  EFD_NONBLOCK,
  encodeSockaddr,
  EPOLL_CTL_ADD,
  EPOLL_DATA_OFFSET,
  EPOLL_EVENT_BYTES,
  EPOLLIN,
  errnoText,
  Libc,
  nativeProblem,
  SOCK_CLOEXEC,
  socketError,
} from "./libc.ts";

function roundTrip(ip: string, port: number): Deno.NetAddr {
  const sa = encodeSockaddr(ip, port);
  assert.ok(sa, `${ip} should encode`);
  return decodeSockaddr(sa);
}

Deno.test("encodeSockaddr() writes a sockaddr_in for IPv4 literals", () => {
  const sa = encodeSockaddr("192.0.2.33", 0x1234)!;
  assert.equal(sa.length, 16);
  const dv = new DataView(sa.buffer);
  assert.equal(dv.getUint16(0, true), AF_INET);
  assert.equal(dv.getUint16(2, false), 0x1234); // network byte order
  assert.deepEqual([...sa.subarray(4, 8)], [192, 0, 2, 33]);
  assert.deepEqual([...sa.subarray(8)], Array(8).fill(0));
});

Deno.test("encodeSockaddr() writes a sockaddr_in6 for IPv6 literals", () => {
  const sa = encodeSockaddr("2001:db8::1", 443)!;
  assert.equal(sa.length, 28);
  const dv = new DataView(sa.buffer);
  assert.equal(dv.getUint16(0, true), AF_INET6);
  assert.equal(dv.getUint16(2, false), 443);
  assert.equal(dv.getUint32(4), 0); // flowinfo
  assert.deepEqual([...sa.subarray(8, 24)], [
    0x20,
    0x01,
    0x0d,
    0xb8,
    ...Array(11).fill(0),
    1,
  ]);
  assert.equal(dv.getUint32(24), 0); // scope id
});

Deno.test("encodeSockaddr() and decodeSockaddr() round-trip IPv4", () => {
  for (const ip of ["127.0.0.1", "0.0.0.0", "255.255.255.255", "10.20.30.40"]) {
    for (const port of [0, 1, 443, 65535]) {
      assert.deepEqual(roundTrip(ip, port), { transport: "tcp", hostname: ip, port });
    }
  }
});

Deno.test("encodeSockaddr() and decodeSockaddr() round-trip IPv6 in canonical form", () => {
  const cases: [string, string][] = [
    ["::", "::"],
    ["::1", "::1"],
    ["[::1]", "::1"],
    ["fe80::1", "fe80::1"],
    ["FE80:0:0:0:0:0:0:1", "fe80::1"],
    ["fe80::abcd:1", "fe80::abcd:1"],
    ["2001:db8::8a2e:370:7334", "2001:db8::8a2e:370:7334"],
    ["1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8"],
    ["1:2:3:4:5:6:7::", "1:2:3:4:5:6:7:0"], // a single zero word is not compressed
    ["1:0:0:2:0:0:0:3", "1:0:0:2::3"], // the longest run of zeros
    ["1::", "1::"],
    ["::ffff:1.2.3.4", "::ffff:1.2.3.4"], // v4-mapped, as Deno writes it
    ["::ffff:127.0.0.1", "::ffff:127.0.0.1"],
    ["::FFFF:7f00:1", "::ffff:127.0.0.1"],
    ["64:ff9b::1.2.3.4", "64:ff9b::102:304"], // not v4-mapped: hex words
  ];
  for (const [ip, canonical] of cases) {
    assert.deepEqual(roundTrip(ip, 8443), { transport: "tcp", hostname: canonical, port: 8443 });
    // and the canonical form encodes to the same bytes
    assert.deepEqual(encodeSockaddr(canonical, 8443), encodeSockaddr(ip, 8443), ip);
  }
});

Deno.test("encodeSockaddr() refuses what is not an IP literal", () => {
  for (
    const s of [
      "",
      "localhost",
      "example.com",
      "1.2.3",
      "1.2.3.4.5",
      "256.1.1.1",
      "1.2.3.-4",
      " 1.2.3.4",
      ":",
      ":::",
      "1::2::3",
      "12345::",
      "::g",
      "fe80::1%eth0",
      "1:2:3:4:5:6:7",
      "1:2:3:4:5:6:7:8:9",
      "1:2:3:4::5:6:7:8",
      "::ffff:1.2.3.256",
      "::1.2.3",
      "[::1",
    ]
  ) {
    assert.equal(encodeSockaddr(s, 80), null, JSON.stringify(s));
  }
});

Deno.test("decodeSockaddr() reads an unknown family as 'unknown'", () => {
  assert.deepEqual(decodeSockaddr(new Uint8Array(16)), {
    transport: "tcp",
    hostname: "unknown",
    port: 0,
  });
});

Deno.test("socketError() maps errnos to Deno.errors classes", () => {
  const cases: [number, new (...args: never[]) => Error][] = [
    [98, Deno.errors.AddrInUse],
    [99, Deno.errors.AddrNotAvailable],
    [104, Deno.errors.ConnectionReset],
    [103, Deno.errors.ConnectionAborted],
    [111, Deno.errors.ConnectionRefused],
    [32, Deno.errors.BrokenPipe],
    [107, Deno.errors.NotConnected],
    [110, Deno.errors.TimedOut],
    [13, Deno.errors.PermissionDenied],
    [1, Deno.errors.PermissionDenied],
  ];
  for (const [errno, cls] of cases) {
    const err = socketError(errno, "Cannot frob 127.0.0.1:1");
    assert.ok(err instanceof cls, `${errno} -> ${err.constructor.name}`);
    assert.equal(err.message, `Cannot frob 127.0.0.1:1: ${errnoText(errno)}`);
  }
  const other = socketError(24, "Cannot accept");
  assert.equal(other.constructor, Error);
  assert.equal(other.message, "Cannot accept: EMFILE (24)");
});

Deno.test("errnoText() names known errnos and numbers the others", () => {
  assert.equal(errnoText(104), "ECONNRESET (104)");
  assert.equal(errnoText(111), "ECONNREFUSED (111)");
  assert.equal(errnoText(4242), "errno (4242)");
});

Deno.test({
  name: "nativeProblem() finds nothing missing on Linux x86_64/aarch64",
  ignore: Deno.build.os !== "linux",
  fn() {
    assert.equal(nativeProblem(), undefined);
  },
});

Deno.test({
  name: "EPOLL_DATA_OFFSET is where the kernel returns epoll_event.data (x86_64 packed, else 8)",
  ignore: nativeProblem() !== undefined,
  fn() {
    // struct epoll_event { u32 events; u64 data; } is packed on x86_64 only: elsewhere data sits
    // at offset 8 and the kernel never writes bytes 4..7 back (reading fd there gives garbage)
    assert.equal(EPOLL_DATA_OFFSET + 8, EPOLL_EVENT_BYTES);
    const libc = Libc.get();
    const s = libc.sym;
    const ep = s.epollCreate1(SOCK_CLOEXEC);
    const efd = s.eventfd(1, EFD_NONBLOCK | EFD_CLOEXEC);
    try {
      const ev = new Uint8Array(EPOLL_EVENT_BYTES);
      const dv = new DataView(ev.buffer);
      dv.setUint32(0, EPOLLIN, true);
      dv.setInt32(EPOLL_DATA_OFFSET, efd, true);
      assert.equal(s.epollCtl(ep, EPOLL_CTL_ADD, efd, ev), 0);
      const out = new Uint8Array(4 * EPOLL_EVENT_BYTES).fill(0xee);
      assert.equal(s.epollWait(ep, out, 4, 0), 1);
      const odv = new DataView(out.buffer);
      assert.equal(odv.getUint32(0, true) & EPOLLIN, EPOLLIN);
      assert.equal(odv.getInt32(EPOLL_DATA_OFFSET, true), efd);
    } finally {
      s.close(efd);
      s.close(ep);
    }
  },
});
