/**
 * End to end, the seed's way: five separate CLI processes (`deno run -A cli.ts` or
 * `$TLS_PASS_BIN`) on the dev ports, configured with PROXY_SETTINGS / EPS_SETTINGS, real curl.
 * Also the multi-process failure scenarios (kill -9, restart) and the demo command.
 * Uses the fixed dev ports 4433, 9999, 5556, 7776 and 8888, and the dev admin endpoints 9101 to
 * 9105: nothing else in the suite may but tests/seed_commands_test.ts, and the two hold the dev
 * ports' lock (tests/_dev_ports.ts) so they run one after the other.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { REPO_ROOT, runCli, spawnCli, type SpawnedCli } from "./_cli.ts";
import { BLOB_CHUNK, blobBytes, startTestBackend } from "./_backend.ts";
import { readAll, writeAll } from "../lib/net/io.ts";
import { type Family, parsePrometheus, sampleValue } from "./_prometheus.ts";
import { lockDevPorts } from "./_dev_ports.ts";

/**
 * The seed's stress line, verbatim: GNU parallel replaces `{}` with the sequence number, so each
 * curl posts `1`, `2`, …, and the internal server answers any request to /jsonrpc with success.
 */
const SEED_STRESS =
  `seq 1 2000 | parallel -j 25 curl --cacert settings/dev/certs/root.crt --resolve test.internal-server.local:4433:127.0.0.1 https://test.internal-server.local:4433/jsonrpc --data "{}"`;
const SUCCESS = '{"message":"success"}';

/** The dev settings' admin endpoints (settings/dev/roles/*: admin_listen). */
const ADMIN = {
  public: 9101,
  private: 9102,
  "eps-public": 9103,
  "eps-private": 9104,
  internal: 9105,
} as const;

/** A role's /metrics, checked strictly (every line, HELP and TYPE, cumulative buckets). */
async function metricsOf(port: number): Promise<Map<string, Family>> {
  const r = await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(5000) });
  assert.equal(r.status, 200);
  return parsePrometheus(await r.text());
}

/**
 * Polls a role's /metrics until `name{labels}` (or the sum of all its samples) reaches
 * `atLeast`: splices end a little after curl exits.
 */
async function metricAtLeast(
  port: number,
  name: string,
  labels: Record<string, string> | "sum",
  atLeast: number,
): Promise<number> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const f = await metricsOf(port);
    const v = labels === "sum"
      ? (f.get(name)?.samples ?? []).reduce((n, x) => n + x.value, 0)
      : sampleValue(f, name, labels) ?? 0;
    if (v >= atLeast) return v;
    if (Date.now() > deadline) {
      throw new Error(`:${port} ${name}${JSON.stringify(labels)} is ${v}, want ≥ ${atLeast}`);
    }
    await new Promise((r) => setTimeout(r, 50)); // polling a counter, bounded above
  }
}

const ROOT_CRT = join(REPO_ROOT, "settings/dev/certs/root.crt");
const ECHO_URL = "https://test.internal-server.local:4433/echo";
const SEED_CURL = [
  "--cacert",
  "settings/dev/certs/root.crt",
  "--resolve",
  "test.internal-server.local:4433:127.0.0.1",
  "https://test.internal-server.local:4433/jsonrpc",
];

async function curl(args: string[]): Promise<{ code: number; out: string; err: string }> {
  const r = await new Deno.Command("curl", {
    args: ["--silent", "--show-error", "--max-time", "15", ...args],
    cwd: REPO_ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: r.code, out: dec.decode(r.stdout), err: dec.decode(r.stderr) };
}

async function ensureDevCerts(): Promise<void> {
  try {
    await Deno.stat(ROOT_CRT);
    await Deno.stat(join(REPO_ROOT, "settings/dev/directory/pins.yml"));
  } catch {
    const r = await runCli(["certs", "--force"]);
    assert.equal(r.code, 0, r.stderr);
  }
}

type RoleKey = "public" | "private" | "eps-public" | "eps-private" | "internal";

function roleArgs(
  key: RoleKey,
  backendPort: number,
): { args: string[]; env: Record<string, string> } {
  switch (key) {
    case "public":
      return {
        args: ["run", "public"],
        env: { PROXY_SETTINGS: "settings/dev/roles/public-proxy-1" },
      };
    case "private":
      return {
        args: ["run", "private"],
        env: {
          PROXY_SETTINGS: "settings/dev/roles/private-proxy-1:tests/e2e/private-extra.yml",
          TLS_PASS_E2E_BACKEND_PORT: String(backendPort),
        },
      };
    case "eps-public":
      return {
        args: ["run", "eps"],
        env: { EPS_SETTINGS: "settings/dev/roles/public-proxy-eps-1" },
      };
    case "eps-private":
      return {
        args: ["run", "eps"],
        env: { EPS_SETTINGS: "settings/dev/roles/private-proxy-eps-1" },
      };
    case "internal":
      return { args: ["run", "internal-server"], env: {} };
  }
}

class Cluster {
  roles = new Map<RoleKey, SpawnedCli>();
  constructor(readonly backendPort: number) {}

  /** Starts the given roles at once (any order works) and waits for every ready line. */
  async start(keys: RoleKey[]): Promise<void> {
    const started = await Promise.allSettled(keys.map((k) => {
      const { args, env } = roleArgs(k, this.backendPort);
      return spawnCli(args, { env, timeoutMs: 60_000 });
    }));
    started.forEach((s, i) => {
      if (s.status === "fulfilled") this.roles.set(keys[i]!, s.value);
    });
    const failed = started.find((s) => s.status === "rejected");
    if (failed) throw (failed as PromiseRejectedResult).reason;
  }

  async stop(key: RoleKey, signal: Deno.Signal = "SIGTERM"): Promise<Deno.CommandStatus> {
    const role = this.roles.get(key);
    assert.ok(role, `role ${key} is running`);
    this.roles.delete(key);
    return await role.stop(signal);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await Promise.all([...this.roles.values()].map((r) => r.stop("SIGTERM")));
    this.roles.clear();
  }
}

/** A TLS connection through the public proxy with the given SNI. */
async function tunnel(serverName: string): Promise<Deno.TlsConn> {
  const tcp = await Deno.connect({ hostname: "127.0.0.1", port: 4433 });
  return await Deno.startTls(tcp, {
    hostname: serverName,
    caCerts: [await Deno.readTextFile(ROOT_CRT)],
  });
}

Deno.test("e2e: the seed's five processes, curl, stress, long and large transfers, restarts, demo", async (t) => {
  await using _ports = await lockDevPorts();
  await ensureDevCerts();
  await using backend = startTestBackend(
    await Deno.readTextFile(join(REPO_ROOT, "settings/dev/certs/internal-server.crt")),
    await Deno.readTextFile(join(REPO_ROOT, "settings/dev/certs/internal-server.key")),
  );
  {
    await using cluster = new Cluster(backend.port);
    // the seed starts both proxies before their EPS servers, then the internal server
    await cluster.start(["public", "private", "eps-public", "eps-private", "internal"]);

    await t.step("the seed's curl check answers success", async () => {
      const r = await curl(SEED_CURL);
      assert.equal(r.code, 0, r.err);
      assert.equal(r.out, '{"message":"success"}');
    });

    await t.step("POST /echo returns the object, keys sorted", async () => {
      const r = await curl([...SEED_CURL.slice(0, -1), ECHO_URL, "--data", '{"b":1,"a":2}']);
      assert.equal(r.out, '{"a":2,"b":1}', r.err);
    });

    // held for 30 s with traffic both ways, while the other steps run
    const held = (async () => {
      await using conn = await tunnel("blob.internal-server.local");
      await writeAll(conn, new TextEncoder().encode("ping\n"));
      const buf = new Uint8Array(64);
      const started = Date.now();
      let i = 0;
      while (Date.now() - started < 30_000) {
        await writeAll(conn, new TextEncoder().encode(`${i}\n`));
        const n = await conn.read(buf);
        assert.equal(new TextDecoder().decode(buf.subarray(0, n ?? 0)), `pong ${i}\n`);
        i++;
        await new Promise((r) => setTimeout(r, 500)); // the workload's pace, not a synchronisation
      }
      return i;
    })();

    await t.step("the seed's stress line: 2,000 curls, 25 in parallel, zero failures", async () => {
      const started = performance.now();
      const r = await new Deno.Command("bash", {
        args: ["-c", SEED_STRESS],
        cwd: REPO_ROOT,
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
        signal: AbortSignal.timeout(300_000),
      }).output();
      const seconds = (performance.now() - started) / 1000;
      const out = new TextDecoder().decode(r.stdout);
      // parallel's exit code is the number of curls that failed (curl's progress goes to stderr)
      assert.equal(r.code, 0, new TextDecoder().decode(r.stderr).slice(-3000));
      // no newline after an answer: answers share lines, so count them
      assert.equal(out.split(SUCCESS).length - 1, 2000, `got:\n${out.slice(0, 2000)}`);
      assert.equal(out.replaceAll(SUCCESS, "").trim(), "", "nothing but answers");
      // deno-lint-ignore no-console
      console.log(
        `e2e stress: 2000 requests in ${seconds.toFixed(1)} s = ${
          (2000 / seconds).toFixed(0)
        } requests/s, 0 failures`,
      );
    });

    await t.step("every role's /metrics counts the stress (strict exposition format)", async () => {
      const domain = { domain: "test.internal-server.local" };
      await metricAtLeast(ADMIN.public, "tls_pass_name_connections_total", domain, 2002);
      await metricAtLeast(ADMIN.private, "tls_pass_name_connections_total", domain, 2002);
      // every splice ended, whatever the reason (a curl may reset its connection: client-error)
      await metricAtLeast(ADMIN.public, "tls_pass_connections_ended_total", "sum", 2002);
      await metricAtLeast(ADMIN.internal, "tls_pass_http_requests_total", { code: "200" }, 2002);
      await metricAtLeast(ADMIN["eps-public"], "tls_pass_links_up", { peer: "proxy" }, 1);
      await metricAtLeast(
        ADMIN["eps-private"],
        "tls_pass_eps_calls_total",
        { method: "announceConnections", code: "ok" },
        1,
      );
      const pub = await metricsOf(ADMIN.public);
      const setups = (sampleValue(pub, "tls_pass_setup_seconds_count", { via: "pool" }) ?? 0) +
        (sampleValue(pub, "tls_pass_setup_seconds_count", { via: "notice" }) ?? 0);
      assert.ok(setups >= 2002, `set-up histogram counts ${setups}`);
      assert.equal(
        sampleValue(pub, "tls_pass_connections_refused_total", { reason: "expired" }),
        undefined,
      );
      const status = await runCli(["status", "--admin", `127.0.0.1:${ADMIN.private}`]);
      assert.equal(status.code, 0, status.stderr);
      assert.match(status.stdout, /test\.internal-server\.local +127\.0\.0\.1:8888 +announced/);
    });

    await t.step("a 64 MiB download arrives intact (SHA-256)", async () => {
      const total = 64 * 1024 * 1024;
      const expected = new Uint8Array(total);
      for (let off = 0; off < total; off += BLOB_CHUNK) {
        blobBytes(expected.subarray(off, off + BLOB_CHUNK), off);
      }
      await using conn = await tunnel("blob.internal-server.local");
      await writeAll(conn, new TextEncoder().encode(`download ${total}\n`));
      const got = await readAll(conn, total + 1);
      assert.equal(got.length, total);
      const hex = async (b: Uint8Array<ArrayBuffer>) =>
        Array.from(new Uint8Array(await crypto.subtle.digest("SHA-256", b))).map((x) =>
          x.toString(16).padStart(2, "0")
        ).join("");
      assert.equal(await hex(new Uint8Array(got)), await hex(expected));
    });

    await t.step("a half-closed upload still gets its reply", async () => {
      await using conn = await tunnel("blob.internal-server.local");
      const body = new Uint8Array(300_000).fill(7);
      await writeAll(conn, new TextEncoder().encode("echo\n"));
      await writeAll(conn, body);
      await conn.closeWrite();
      const got = await readAll(conn, 1 << 20);
      assert.equal(got.length, body.length + `total ${body.length}\n`.length);
      assert.equal(new TextDecoder().decode(got.subarray(body.length)), `total ${body.length}\n`);
    });

    await t.step(
      "a connection held 30 s with traffic both ways survives every timeout",
      async () => {
        const rounds = await held;
        assert.ok(rounds >= 10, `only ${rounds} round trips`);
      },
    );

    await t.step(
      "kill -9 of the private proxy: clients fail fast, a restart re-announces",
      async () => {
        await cluster.stop("private", "SIGKILL");
        const started = performance.now();
        const r = await curl(SEED_CURL);
        assert.notEqual(r.code, 0, "no private proxy: the request must fail");
        assert.ok(
          performance.now() - started < 5000,
          `failed after ${performance.now() - started} ms, not fast`,
        );
        await cluster.start(["private"]);
        const again = await curl(SEED_CURL);
        assert.equal(again.out, '{"message":"success"}', again.err);
      },
    );

    await t.step(
      "a restarted public proxy gets its announcements back from its store",
      async () => {
        await cluster.stop("public");
        await cluster.start(["public"]);
        const r = await curl(SEED_CURL);
        assert.equal(r.out, '{"message":"success"}', r.err);
      },
    );

    await t.step(
      "kill -9 of one EPS server: a client is served from the pool or fails fast, and the EPS comes back by itself",
      async () => {
        await cluster.stop("eps-private", "SIGKILL");
        const started = performance.now();
        const r = await curl(SEED_CURL);
        // an idle pooled dial-back serves it without the EPS (pool tickets); without one the
        // notice cannot go out and the client is refused at once, never left hanging
        if (r.code === 0) assert.equal(r.out, '{"message":"success"}', r.err);
        assert.ok(performance.now() - started < 5000, "answered or refused within 5 s");
        await cluster.start(["eps-private"]);
        // the private proxy re-attaches and the links come back by themselves; poll until routed
        const deadline = Date.now() + 30_000;
        let last = "";
        while (Date.now() < deadline) {
          last = (await curl(SEED_CURL)).out;
          if (last === '{"message":"success"}') break;
          await new Promise((r) => setTimeout(r, 200));
        }
        assert.equal(last, '{"message":"success"}');
      },
    );

    await t.step("SIGTERM stops every role with exit 0", async () => {
      for (const key of [...cluster.roles.keys()]) {
        const status = await cluster.stop(key);
        assert.equal(status.code, 0, `${key} exited ${status.code}`);
      }
    });
  }

  await t.step("tls-pass demo prints the answer obtained through both proxies", async () => {
    const r = await runCli(["demo"], { timeoutMs: 60_000 });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /HTTP 200/);
    assert.match(r.stdout, /\{"message":"success"\}/);
  });
});
