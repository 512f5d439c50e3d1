import assert from "node:assert/strict";
import { RpcCode, RpcError } from "../errors.ts";
import { PRIVATE_DEFAULTS, type PrivateSettings } from "../settings/private.ts";
import { tokenText } from "../wire/token.ts";
import { checkNotice, type NoticeContext } from "./notices.ts";

const DOMAIN = "test.internal-server.local";
const ENDPOINT = { hostname: "127.0.0.1", port: 9999 };
const INTERNAL = { hostname: "127.0.0.1", port: 8888 };
const settings: PrivateSettings = {
  ...PRIVATE_DEFAULTS,
  operator: "private-proxy-1",
  eps: {
    address: { hostname: "127.0.0.1", port: 7776 },
    certificateFile: "a.crt",
    keyFile: "a.key",
    caCertificateFiles: [],
    callTimeoutMs: 5000,
    maxMessageBytes: 1024 * 1024,
  },
  announceTo: ["public-proxy-1"],
  endpoints: { "public-proxy-1": [ENDPOINT] },
  announcements: [{ domain: DOMAIN, internal: INTERNAL, expiresInMs: 3_600_000 }],
};
const context: NoticeContext = {
  settings,
  byDomain: new Map(settings.announcements.map((a) => [a.domain, a])),
  resolve: (a) => a,
  live: () => 0,
  maxConnections: 100,
  stopping: () => false,
};
const notice = (extra: Record<string, unknown>) => ({
  domain: DOMAIN,
  token: tokenText(new Uint8Array(32).fill(7)),
  endpoint: "127.0.0.1:9999",
  ...extra,
});

Deno.test("checkNotice() passes the notice's connection id on in the dialBack command", () => {
  const cmd = checkNotice(notice({ conn: "k3f9x-1a" }), "public-proxy-1", context);
  assert.equal(cmd.conn, "k3f9x-1a");
  assert.deepEqual([cmd.domain, cmd.endpoint, cmd.internal], [DOMAIN, ENDPOINT, INTERNAL]);
});

Deno.test("checkNotice() accepts a notice without an id (a public proxy from before ids)", () => {
  const cmd = checkNotice(notice({}), "public-proxy-1", context);
  assert.equal("conn" in cmd, false); // the data plane names the connection itself
});

for (const bad of ["", "a b", "x".repeat(65), 42, "conn\n2"]) {
  Deno.test(`checkNotice() refuses the connection id ${JSON.stringify(bad)}`, () => {
    assert.throws(
      () => checkNotice(notice({ conn: bad }), "public-proxy-1", context),
      (e) =>
        e instanceof RpcError && e.code === RpcCode.InvalidParams &&
        e.message.startsWith(`Cannot accept notice from "public-proxy-1": conn `) &&
        e.message.includes("must be 1 to 64 characters"),
    );
  });
}

Deno.test("checkNotice() passes the client's addresses and the announcement's proxy_protocol on", () => {
  const ctx: NoticeContext = {
    ...context,
    byDomain: new Map([[DOMAIN, { ...settings.announcements[0]!, proxyProtocol: "v2" }]]),
  };
  const cmd = checkNotice(
    notice({ source: "[::1]:51000", destination: "[::1]:8443" }),
    "public-proxy-1",
    ctx,
  );
  assert.deepEqual([cmd.proxyProtocol, cmd.source, cmd.destination], [
    "v2",
    { hostname: "::1", port: 51000 },
    { hostname: "::1", port: 8443 },
  ]);
  // a public proxy from before the addresses: none, and the header says so (v1 UNKNOWN, v2 LOCAL)
  const old = checkNotice(notice({}), "public-proxy-1", ctx);
  assert.equal("source" in old || "destination" in old, false);
  // an announcement without proxy_protocol: no header
  const plain = checkNotice(
    notice({ source: "127.0.0.2:1", destination: "127.0.0.1:2" }),
    "public-proxy-1",
    context,
  );
  assert.equal("proxyProtocol" in plain, false);
  assert.deepEqual(plain.source, { hostname: "127.0.0.2", port: 1 });
});

const badAddresses: [Record<string, unknown>, string][] = [
  [
    { source: "localhost:1", destination: "127.0.0.1:2" },
    `source "localhost:1" must be an IP address and port`,
  ],
  [{ source: "127.0.0.2:1", destination: 8443 }, "destination 8443 must be an IP address and port"],
  [
    { source: "::1:1", destination: "127.0.0.1:2" },
    `source "::1:1" must be an IP address and port`,
  ],
  [{ source: "127.0.0.2:70000", destination: "127.0.0.1:2" }, `source "127.0.0.2:70000"`],
  [{ source: "127.0.0.2:1" }, "source without destination"],
  [{ destination: "127.0.0.1:2" }, "destination without source"],
];
for (const [extra, message] of badAddresses) {
  Deno.test(`checkNotice() refuses ${JSON.stringify(extra)}, naming the peer`, () => {
    assert.throws(
      () => checkNotice(notice(extra), "public-proxy-1", context),
      (e) =>
        e instanceof RpcError && e.code === RpcCode.InvalidParams &&
        e.message.startsWith(`Cannot accept notice from "public-proxy-1": ${message}`),
    );
  });
}

Deno.test("checkNotice() dials the listed endpoint the notice names, and refuses one not listed", () => {
  const second = { hostname: "127.0.0.1", port: 9998 };
  const two: NoticeContext = {
    ...context,
    settings: { ...settings, endpoints: { "public-proxy-1": [ENDPOINT, second] } },
  };
  const cmd = checkNotice(notice({ endpoint: "127.0.0.1:9998" }), "public-proxy-1", two);
  assert.deepEqual(cmd.endpoint, second);
  assert.deepEqual(
    checkNotice(notice({}), "public-proxy-1", two).endpoint,
    ENDPOINT,
  );
  for (
    const [ctx, bad, allowed] of [
      [two, "127.0.0.1:9997", 'one of the allowed "127.0.0.1:9999", "127.0.0.1:9998"'],
      [two, "localhost:9998", 'one of the allowed "127.0.0.1:9999", "127.0.0.1:9998"'],
      [context, "127.0.0.1:9998", 'the allowed "127.0.0.1:9999"'],
      [context, "not an address", 'the allowed "127.0.0.1:9999"'],
    ] as const
  ) {
    assert.throws(
      () => checkNotice(notice({ endpoint: bad }), "public-proxy-1", ctx),
      (e) =>
        e instanceof RpcError && e.code === RpcCode.NotPermitted &&
        e.message ===
          `Cannot accept notice from "public-proxy-1": endpoint ${
            JSON.stringify(bad)
          } is not ${allowed}`,
      bad,
    );
  }
});
