import assert from "node:assert/strict";
import { openNet } from "./net.ts";
import { tryClose } from "./conn.ts";
import { readAll, writeAll } from "./io.ts";
import { within } from "./_testing.ts";
import { NativeConn, NativeListener } from "./native/reactor.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** A round trip through a listener and a connection of `net`, with half-close. */
async function roundTrip(net: Awaited<ReturnType<typeof openNet>>, hostname: string) {
  const listener = await net.listen({ hostname, port: 0 });
  try {
    assert.equal(listener.addr.hostname, hostname);
    const [client, server] = await within(
      Promise.all([net.connect({ hostname, port: listener.addr.port }), listener.accept()]),
    );
    try {
      await within(writeAll(client, enc.encode("ping")));
      await client.closeWrite();
      assert.equal(dec.decode(await within(readAll(server))), "ping");
      await within(writeAll(server, enc.encode("pong")));
      await server.closeWrite();
      assert.equal(dec.decode(await within(readAll(client))), "pong");
      return { client, server, listener };
    } finally {
      tryClose(client);
      tryClose(server);
    }
  } finally {
    listener.close();
  }
}

Deno.test("openNet('deno') gives Deno's own sockets", async () => {
  const net = await openNet("deno");
  try {
    assert.equal(net.kind, "deno");
    assert.equal(net.problem, undefined);
    for (const hostname of ["127.0.0.1", "::1"]) {
      const { client, listener } = await roundTrip(net, hostname);
      assert.ok(!(client instanceof NativeConn));
      assert.ok(!(listener instanceof NativeListener));
    }
  } finally {
    await within(net.close());
  }
});

Deno.test({
  name: "openNet('native') gives native sockets on Linux",
  ignore: Deno.build.os !== "linux",
  async fn() {
    const net = await openNet("native");
    try {
      assert.equal(net.kind, "native");
      assert.equal(net.problem, undefined);
      for (const hostname of ["127.0.0.1", "::1"]) {
        const { client, server, listener } = await roundTrip(net, hostname);
        assert.ok(client instanceof NativeConn);
        assert.ok(server instanceof NativeConn);
        assert.ok(listener instanceof NativeListener);
      }
    } finally {
      await within(net.close());
    }
    await within(net.close()); // closing twice is harmless
  },
});

Deno.test({
  name: "openNet('auto') picks native sockets on Linux",
  ignore: Deno.build.os !== "linux",
  async fn() {
    const net = await openNet("auto");
    try {
      assert.equal(net.kind, "native");
      assert.equal(net.problem, undefined);
    } finally {
      await within(net.close());
    }
  },
});
