/**
 * The descriptor budget under a real low open-file limit (docs/architecture.md, "The descriptor
 * budget"). The public proxy is a child process (`tls-pass run public`: `deno run -A cli.ts`, or
 * `$TLS_PASS_BIN`) started under `prlimit --nofile=256:256`, so `max_connections` comes from that
 * limit; its EPS, the EPS of private-proxy-1, the private proxy, the internal server (real TLS)
 * and an echo server run in this process. A flood of clients far over the budget, each sending a
 * ClientHello and holding, must leave exactly the planned number of clients served (their
 * dial-backs accepted and spliced: the echo comes back through both proxies) while every other
 * one is refused at once; when the flood goes, the whole budget is there again with no cool-down.
 * @module
 */
import { lockLoad } from "./_dev_ports.ts";
import assert from "node:assert/strict";
import { join } from "node:path";
import { stringify } from "yaml";
import { createPki, writePki } from "../lib/certs/pki.ts";
import { startEps } from "../lib/eps/server.ts";
import { httpsRequest } from "../lib/internal/https_request.ts";
import { startInternalServer } from "../lib/internal/server.ts";
import { writeAll } from "../lib/net/io.ts";
import { publicBudget } from "../lib/proxy/budget.ts";
import { startPrivate } from "../lib/proxy/private.ts";
import { formatHostPort, type HostPort } from "../lib/role.ts";
import { loadEpsSettings } from "../lib/settings/eps.ts";
import { loadPrivateSettings } from "../lib/settings/private.ts";
import { parseAddr, spawnCli } from "./_cli.ts";
import { clientHello, DOMAIN, until, within } from "./_cluster.ts";

/** The child's open-file limit, soft and hard. */
const LIMIT = 256;
/** Clients in the flood: several times the budget the limit gives. */
const FLOOD = 600;
/** The flood's name: announced to the echo server (DOMAIN goes to the real internal server). */
const FLOOD_DOMAIN = "flood.internal-server.local";
/** A refused client must be closed within this; the child's own timeouts are all far longer. */
const PROMPT_MS = 5000;
/** The child's hello, dial-back and token timeouts: a client that hangs is not "refused". */
const PATIENT_MS = 30_000;
/** Bound of one flood client (connect, hello, echo or refusal). */
const CLIENT_MS = 60_000;
const NAMES = ["public-proxy-1", "private-proxy-1", "internal-server"];

interface LogRecord {
  level: string;
  message: string;
  logger: string;
  properties: Record<string, unknown>;
}

/** The child's JSON log lines (`--log-format json`), parsed as they come. */
class ChildLog {
  readonly records: LogRecord[] = [];
  #offset = 0;
  constructor(readonly text: () => string) {}

  /** The records that match `pred`, after reading what the child wrote since the last call. */
  find(pred: (r: LogRecord) => boolean): LogRecord[] {
    const t = this.text();
    for (let nl; (nl = t.indexOf("\n", this.#offset)) >= 0;) {
      const line = t.slice(this.#offset, nl);
      this.#offset = nl + 1;
      if (line.startsWith("{")) this.records.push(JSON.parse(line) as LogRecord);
    }
    return this.records.filter(pred);
  }

  /** Splices the child closed for `domain` ("Closed {client} for {domain} via …"). */
  closed(domain: string): number {
    // the line starts with its connection id: `conn "k3f9x-1a": Closed …`
    return this.find((r) => /^conn \S+: Closed /.test(r.message) && r.properties.domain === domain)
      .length;
  }

  /** The sum of `{count}` over the rate-limited warnings whose message starts with `prefix`. */
  counted(prefix: string): number {
    return this.find((r) => r.message.startsWith(prefix))
      .reduce((n, r) => n + Number(r.properties.count ?? 0), 0);
  }
}

/** Whether this process has CAP_SYS_RESOURCE (with it, the child could raise its hard limit). */
function hasCapSysResource(): boolean {
  const m = Deno.readTextFileSync("/proc/self/status").match(/^CapEff:\s*([0-9a-f]+)$/m);
  return m !== null && ((BigInt(`0x${m[1]}`) >> 24n) & 1n) === 1n;
}

/**
 * Runs the child under RLIMIT_NOFILE = LIMIT. cli.ts raises the soft limit to the hard one and,
 * as root, the hard one too: pinning both and taking CAP_SYS_RESOURCE away keeps it at LIMIT.
 */
function lowLimit(): string[] {
  const w = ["prlimit", `--nofile=${LIMIT}:${LIMIT}`, "--"];
  if (hasCapSysResource()) {
    w.push("setpriv", "--inh-caps=-sys_resource", "--bounding-set=-sys_resource", "--");
  }
  return w;
}

/** A TCP server that sends back every byte until the client half-closes. */
function startEcho(): { addr: HostPort; accepted(): number; close(): Promise<void> } {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns = new Set<Deno.Conn>();
  let accepted = 0;
  const tasks = new Set<Promise<void>>();
  const done = (async () => {
    for await (const conn of listener) {
      accepted++;
      conns.add(conn);
      const t = (async () => {
        try {
          const buf = new Uint8Array(16_384);
          for (let n; (n = await conn.read(buf)) !== null;) {
            await writeAll(conn, buf.subarray(0, n));
          }
          await conn.closeWrite();
        } catch {
          // the peer went away
        } finally {
          conns.delete(conn);
          conn.close();
        }
      })();
      tasks.add(t);
      t.finally(() => tasks.delete(t));
    }
    await Promise.all(tasks);
  })();
  return {
    addr: { hostname: "127.0.0.1", port: listener.addr.port },
    accepted: () => accepted,
    close: async () => {
      listener.close();
      for (const c of conns) {
        try {
          c.close();
        } catch { /* closed meanwhile */ }
      }
      await done;
    },
  };
}

type Outcome =
  | { kind: "served"; conn: Deno.TcpConn; ms: number }
  | { kind: "refused"; ms: number; alert: boolean }
  | { kind: "hung"; ms: number; got: number };

/**
 * One flood client: connects, sends `hello`, and waits for it to come back through both proxies
 * and the echo server (served: the connection stays open, held) or for the end of the connection
 * (refused). Bounded by CLIENT_MS (hung).
 */
async function floodClient(addr: HostPort, hello: Uint8Array): Promise<Outcome> {
  const started = performance.now();
  const conn = await Deno.connect({ ...addr, transport: "tcp" });
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    conn.close();
  }, CLIENT_MS);
  const buf = new Uint8Array(hello.length);
  let got = 0;
  try {
    await writeAll(conn, hello);
    while (got < hello.length) {
      const n = await conn.read(buf.subarray(got));
      if (n === null) break;
      got += n;
    }
  } catch (err) {
    if (
      !timedOut && !(err instanceof Deno.errors.ConnectionReset) &&
      !(err instanceof Deno.errors.BrokenPipe)
    ) {
      clearTimeout(timer);
      conn.close();
      throw err;
    }
  }
  clearTimeout(timer);
  const ms = performance.now() - started;
  if (timedOut) return { kind: "hung", ms, got };
  if (got === hello.length && buf.every((b, i) => b === hello[i])) {
    return { kind: "served", conn, ms };
  }
  conn.close();
  // a TLS alert record (content type 21) is allowed; the refusal may also be a plain close/reset
  return { kind: "refused", ms, alert: got > 0 && buf[0] === 21 };
}

/** Sends a few bytes on a held flood connection and reads them back: its splice is alive. */
async function echoes(conn: Deno.TcpConn, text: string): Promise<boolean> {
  const bytes = new TextEncoder().encode(text);
  await writeAll(conn, bytes);
  const buf = new Uint8Array(bytes.length);
  let got = 0;
  while (got < bytes.length) {
    const n = await conn.read(buf.subarray(got));
    if (n === null) return false;
    got += n;
  }
  return new TextDecoder().decode(buf) === text;
}

function closeAll(conns: Deno.TcpConn[]): void {
  for (const c of conns.splice(0)) {
    try {
      c.close();
    } catch { /* closed already */ }
  }
}

async function writeYaml(dir: string, name: string, data: unknown): Promise<string> {
  const folder = join(dir, "roles", name);
  await Deno.mkdir(folder, { recursive: true });
  await Deno.writeTextFile(join(folder, "settings.yml"), stringify(data));
  return folder;
}

/** How many of `outcomes` are of `kind`. */
function count(outcomes: Outcome[], kind: Outcome["kind"]): number {
  return outcomes.filter((o) => o.kind === kind).length;
}

Deno.test({
  name:
    "a public proxy under a 256-descriptor limit serves its budget through a flood, refuses the rest at once, and recovers",
  ignore: Deno.build.os !== "linux",
  async fn(t) {
    await using _load = await lockLoad(); // docs: tests/_dev_ports.ts, LOAD_LOCK
    await using stack = new AsyncDisposableStack();
    const dir = await Deno.makeTempDir({ prefix: "tls-pass-budget-" });
    stack.defer(() => Deno.remove(dir, { recursive: true }));
    const held: Deno.TcpConn[] = [];
    stack.defer(() => closeAll(held));

    const pki = await createPki(NAMES);
    const certs = join(dir, "certs");
    await writePki(pki, certs);
    const cert = (n: string) => join(certs, `${n}.crt`);
    const key = (n: string) => join(certs, `${n}.key`);
    const root = join(certs, "root.crt");
    const rootPem = await Deno.readTextFile(root);
    const directoryDir = join(dir, "directory");
    await Deno.mkdir(directoryDir);
    const writeDirectory = (publicEps?: HostPort) =>
      Deno.writeTextFile(
        join(directoryDir, "operators.yml"),
        stringify({
          "ca_certificate_files": [root],
          operators: {
            "public-proxy-1": {
              ...(publicEps ? { address: formatHostPort(publicEps) } : {}),
              fingerprints: [pki.leaves["public-proxy-1"]!.fingerprint],
              permissions: ["announceConnections", "withdrawConnections", "openPool"].map(
                (method) => ({ method, from: ["private-proxy-1"] }),
              ),
            },
            "private-proxy-1": {
              permissions: [{ method: "incomingConnection", from: ["public-proxy-1"] }],
              proxy: { "allowed_domains": [".internal-server.local"] },
            },
          },
        }),
      );
    await writeDirectory();

    const internal = await startInternalServer({
      listen: { hostname: "127.0.0.1", port: 0 },
      tls: true,
      certificateFile: cert("internal-server"),
      keyFile: key("internal-server"),
      maxBodyBytes: 1024 * 1024,
    });
    stack.defer(() => internal.close());
    const echo = startEcho();
    stack.defer(() => echo.close());

    const eps = async (operator: string) =>
      await startEps(
        await loadEpsSettings([
          await writeYaml(dir, `eps-${operator}`, {
            operator,
            listen: "127.0.0.1:0",
            "certificate_file": cert(operator),
            "key_file": key(operator),
            "directory_dir": directoryDir,
            "call_timeout_ms": 10_000,
            "keepalive_interval_ms": 60_000,
          }),
        ]),
      );
    const epsPublic = await eps("public-proxy-1");
    stack.defer(() => epsPublic.close());
    // now the public EPS has a port: its peer dials it from the directory
    await writeDirectory(epsPublic.addrs.links);
    const epsPrivate = await eps("private-proxy-1");
    stack.defer(() => epsPrivate.close());
    const epsBlock = (operator: string, address: HostPort) => ({
      address: formatHostPort(address),
      "certificate_file": cert(operator),
      "key_file": key(operator),
      "ca_certificate_files": [root],
      "call_timeout_ms": 10_000,
    });

    // -- the public proxy: a child process under the low limit ---------------------------------
    const publicDir = await writeYaml(dir, "public", {
      operator: "public-proxy-1",
      "public_listen": "127.0.0.1:0",
      "private_listen": "127.0.0.1:0",
      eps: epsBlock("public-proxy-1", epsPublic.addrs.links),
      "directory_dir": directoryDir,
      store: "memory",
      "hello_timeout_ms": PATIENT_MS,
      "dial_back_timeout_ms": PATIENT_MS,
      "token_timeout_ms": PATIENT_MS,
      "notice_timeout_ms": 10_000,
      "grace_ms": 500,
    });
    const sockets = Deno.env.get("TLS_PASS_SOCKETS");
    const child = await spawnCli(
      ["run", "public", "--settings", publicDir, "--log-format", "json"],
      {
        // the driver under test: the child runs the same one as this process
        env: sockets === undefined ? {} : { TLS_PASS_SOCKETS: sockets },
        wrapper: lowLimit(),
        timeoutMs: 60_000,
      },
    );
    let status: Deno.CommandStatus | undefined;
    stack.defer(async () => {
      if (status === undefined) await child.stop("SIGTERM");
    });
    const log = new ChildLog(() => child.stderr());
    const publicAddr = parseAddr(child.ready.addrs.public!);
    const privateAddr = parseAddr(child.ready.addrs.private!);
    const planned = publicBudget(undefined, LIMIT);

    await t.step("the child plans its budget from its open-file limit and logs it", async () => {
      // prlimit and setpriv exec: the child is the proxy itself
      assert.equal(child.ready.pid, child.child.pid);
      const limits = await Deno.readTextFile(`/proc/${child.child.pid}/limits`);
      assert.match(limits, new RegExp(`^Max open files\\s+${LIMIT}\\s+${LIMIT}\\s`, "m"));
      // stderr is read apart from the ready line on stdout: its lines may come a little later
      const budgetLines = () => log.find((r) => r.message.startsWith("Descriptor budget:"));
      const driverLines = () => log.find((r) => r.message.startsWith("Data plane:"));
      await until(
        () => budgetLines().length > 0 && driverLines().length > 0,
        "the child's budget and data plane log lines",
      );
      const lines = budgetLines();
      assert.equal(lines.length, 1, `one budget line; stderr:\n${child.stderr()}`);
      assert.deepEqual(lines[0]!.properties, {
        clients: planned.maxConnections,
        dialBacks: planned.maxDialBacks,
        from: "open-file limit",
        limit: LIMIT,
      });
      if (sockets !== undefined) {
        assert.equal(
          driverLines()[0]?.properties.driver,
          sockets === "deno" ? "portable" : sockets,
          "the child runs the driver asked for",
        );
      }
    });

    // -- the private proxy, in this process -----------------------------------------------------
    const priv = await startPrivate(
      await loadPrivateSettings([
        await writeYaml(dir, "private", {
          operator: "private-proxy-1",
          eps: epsBlock("private-proxy-1", epsPrivate.addrs.links),
          "announce_to": ["public-proxy-1"],
          endpoints: { "public-proxy-1": formatHostPort(privateAddr) },
          announcements: [
            { domain: DOMAIN, internal: formatHostPort(internal.addrs.main) },
            { domain: FLOOD_DOMAIN, internal: formatHostPort(echo.addr) },
          ],
          "retry_ms": 50,
          "dial_timeout_ms": 10_000,
          "connect_timeout_ms": 10_000,
          "grace_ms": 500,
        }),
      ]),
    );
    stack.defer(() => priv.close());
    await within(priv.ready, 20_000, "the private proxy's first announcement");

    const request = async () => {
      const r = await httpsRequest({
        connect: publicAddr,
        serverName: DOMAIN,
        caCerts: [rootPem],
        method: "POST",
        path: "/echo",
        body: '{"b":1,"a":2}',
        signal: AbortSignal.timeout(10_000),
      });
      assert.equal(r.status, 200);
      assert.equal(r.body, '{"a":2,"b":1}');
    };
    /** Requests to DOMAIN the child has closed so far, and how many it must have closed. */
    let requests = 0;
    const served = async () => {
      await request();
      requests++;
      // the child logs a splice's end after both sockets closed: its count dropped with it
      await until(() => log.closed(DOMAIN) === requests, "the request's splice closed");
    };

    await t.step("a real TLS request goes through the child to the internal server", served);

    const hello = clientHello(FLOOD_DOMAIN);
    let floodServed = 0;
    await t.step(
      `a flood of ${FLOOD} clients: the budget is served, the rest refused at once`,
      async () => {
        const started = performance.now();
        const outcomes = await Promise.all(
          Array.from({ length: FLOOD }, () => floodClient(publicAddr, hello)),
        );
        const ms = performance.now() - started;
        for (const o of outcomes) if (o.kind === "served") held.push(o.conn);
        const refused = outcomes.filter((o) => o.kind === "refused");
        const slowest = Math.max(0, ...refused.map((o) => o.ms));
        let fds = 0;
        for await (const _ of Deno.readDir(`/proc/${child.child.pid}/fd`)) fds++;
        const summary = `${held.length} served, ${refused.length} refused (${
          refused.filter((o) => o.alert).length
        } with an alert, slowest ${Math.round(slowest)} ms), ${count(outcomes, "hung")} hung, in ${
          Math.round(ms)
        } ms; the child holds ${fds} descriptors of ${LIMIT}; echo accepted ${echo.accepted()}`;
        // deno-lint-ignore no-console
        console.log(`budget flood: ${summary}`);
        assert.equal(count(outcomes, "hung"), 0, summary);
        // every client within the budget got its dial-back, although the flood held the budget
        assert.equal(held.length, planned.maxConnections, summary);
        assert.equal(refused.length, FLOOD - planned.maxConnections, summary);
        assert.ok(slowest < PROMPT_MS, `refusals must be prompt: ${summary}`);
        assert.equal(echo.accepted(), planned.maxConnections, summary);
        floodServed = held.length;
      },
    );

    await t.step("at the budget, one more client is refused at once", async () => {
      const o = await floodClient(publicAddr, hello);
      if (o.kind === "served") held.push(o.conn);
      assert.equal(o.kind, "refused");
      assert.ok(o.ms < PROMPT_MS, `refused after ${Math.round(o.ms)} ms`);
    });

    await t.step("every held client's splice is alive", async () => {
      const alive = await within(
        Promise.all(held.map((c, i) => echoes(c, `ping ${i}\n`))),
        20_000,
        "echoes on the held splices",
      );
      assert.equal(alive.filter(Boolean).length, held.length);
    });

    await t.step("with the budget all but full, a real TLS request is served", async () => {
      closeAll(held.splice(0, 2));
      await until(
        () => log.closed(FLOOD_DOMAIN) === 2,
        "two flood splices closed in the child",
        10_000,
      );
      await served();
    });

    await t.step("the flood closes: a new client is served at once", async () => {
      closeAll(held);
      await until(
        () => log.closed(FLOOD_DOMAIN) === floodServed,
        "every flood splice closed in the child",
        20_000,
      );
      await served();
    });

    await t.step("and the whole budget is there again", async () => {
      const before = log.closed(FLOOD_DOMAIN);
      const outcomes = await Promise.all(
        Array.from({ length: planned.maxConnections }, () => floodClient(publicAddr, hello)),
      );
      for (const o of outcomes) if (o.kind === "served") held.push(o.conn);
      const summary = `${held.length} of ${planned.maxConnections} served, ${
        count(outcomes, "refused")
      } refused, ${count(outcomes, "hung")} hung`;
      // deno-lint-ignore no-console
      console.log(`budget recovery: ${summary}`);
      assert.equal(held.length, planned.maxConnections, summary);
      closeAll(held);
      await until(
        () => log.closed(FLOOD_DOMAIN) === before + planned.maxConnections,
        "the second wave's splices closed in the child",
        20_000,
      );
    });

    await t.step(
      "the child stops cleanly; its logs count the refusals, no accept failed",
      async () => {
        status = await child.stop("SIGTERM");
        assert.equal(status.code, 0, child.stderr().slice(-4000));
        const refusedLogged = log.counted("Refused connections:");
        const acceptFailed = log.counted("Cannot accept connections");
        const expired = log.counted("Closed clients: no dial-back");
        const stopped = log.find((r) => r.message.startsWith("Stopped:"))[0]?.properties ?? {};
        const through = Number(stopped.poolHits) + Number(stopped.notices);
        // deno-lint-ignore no-console
        console.log(
          `budget logs: ${refusedLogged} refused connections counted, ${acceptFailed} failed accepts, ${expired} expired, ${stopped.poolHits} from the pool + ${stopped.notices} by notice`,
        );
        assert.equal(acceptFailed, 0, "the child never ran out of descriptors");
        assert.equal(expired, 0, "no client waited in vain for its dial-back");
        // the flood's refusals and the one at the budget (refused dial-backs count here too)
        assert.ok(refusedLogged >= FLOOD - floodServed + 1, `${refusedLogged} counted`);
        // every client served: the flood's, the second wave's and the requests
        assert.equal(through, floodServed + planned.maxConnections + requests);
      },
    );
  },
});
