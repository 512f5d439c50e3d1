/**
 * The EPS role: listens for links (peer EPS servers and the own proxy), dials the peers it may
 * call, keeps one link per peer, and routes calls between them
 * (docs/architecture.md, "The picture").
 * @module
 */

import { logger } from "../log.ts";
import {
  formatHostPort,
  type HostPort,
  makeHandle,
  type Reloadable,
  type RoleHandle,
} from "../role.ts";
import type { EpsSettings } from "../settings/eps.ts";
import { calleesOf, type Directory, directoryValue, loadDirectory } from "./directory.ts";
import { checkOwnCertificate } from "./own_certificate.ts";
import {
  keepDialling,
  type LinkListener,
  type LinkTls,
  listenLinks,
  readLinkTlsSync,
} from "./link.ts";
import {
  checkRestartOnly,
  diffSettings,
  Reloader,
  sameValue,
  withReload,
} from "../settings/diff.ts";
import { Router } from "./router.ts";
import type { EpsAdmin } from "./server_admin.ts";
import type { AdminServer } from "../admin/server.ts";
import { Links } from "./server_links.ts";

const log = logger("eps", "server");

function abortPromise(signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) resolve();
    else signal.addEventListener("abort", () => resolve(), { once: true });
  });
}

/** The keys of an EPS server that a reload cannot change (docs/architecture.md, "Reload"). */
export const EPS_RESTART_ONLY = [
  "operator",
  "listen",
  "proxy_listen",
  "handshake_timeout_ms",
  "admin_listen",
];

/** A running EPS server; `reload` re-reads settings, directory and certificates (SIGHUP). */
export type EpsHandle = RoleHandle<"links" | "proxy"> & Reloadable<EpsSettings>;

/** Reads the own link material now (a reload), with problems naming the key and file. */
function readOwnTls(settings: EpsSettings, directory: Directory): LinkTls {
  const tls = readLinkTlsSync({
    cert: { key: "certificate_file", path: settings.certificateFile },
    key: { key: "key_file", path: settings.keyFile },
    ca: directory.caCertificateFiles.map((path, i) => ({
      key: `ca_certificate_files[${i}] (directory)`,
      path,
    })),
  }, settings.handshakeTimeoutMs);
  checkOwnCertificate(tls.cert, {
    operator: settings.operator,
    key: "certificate_file",
    file: settings.certificateFile,
    usages: ["serverAuth", "clientAuth"], // it listens for links and dials its peers
  });
  return tls;
}

/** What an EPS server reads and checks before it binds anything. */
export interface EpsPreflight {
  directory: Directory;
  tls: LinkTls;
  /** Not fatal, but worth saying (`run` logs them, `check` prints them). */
  warnings: string[];
}

/**
 * The checks `run eps` makes before binding, also run by `tls-pass check eps`: loads the
 * directory, reads the own certificate, key and the directory's CA files, and checks that the
 * certificate is the operator's (docs/settings.md, "`tls-pass check ROLE`"). Throws
 * SettingsError naming the file and key of every problem.
 */
export async function preflightEps(settings: EpsSettings): Promise<EpsPreflight> {
  const directory = await loadDirectory([settings.directoryDir]);
  const warnings = directory.operators.has(settings.operator)
    ? []
    : [`Operator "${settings.operator}" is not in the directory: no peer may call it`];
  return { directory, tls: readOwnTls(settings, directory), warnings };
}

/**
 * Starts an EPS server. Resolves once its listeners are bound (`links`, `proxy`); peers are
 * dialled in the background and calls to a peer not linked yet wait for it up to their deadline.
 */
export async function startEps(
  settings: EpsSettings,
  signal?: AbortSignal,
): Promise<EpsHandle> {
  signal?.throwIfAborted();
  const own = settings.operator;
  const first = await preflightEps(settings);
  if (first.warnings.length > 0) {
    log.warn("Operator {operator} is not in the directory: no peer may call it", { operator: own });
  }
  let directory = first.directory;
  let tls = first.tls;
  let current = settings;

  const stop = new AbortController();
  const links = new Links(own, settings);
  const router = new Router({
    operator: own,
    directory,
    links: {
      instances: () => links.instances(),
      linkTo: (peer, s) => links.linkTo(peer, s),
    },
    callTimeoutMs: settings.callTimeoutMs,
    maxMessageBytes: settings.maxMessageBytes,
    clock: links.clock,
  });
  links.router = router;

  const listeners: LinkListener[] = [];
  const addrs: Partial<Record<"links" | "proxy" | "admin", HostPort>> = {};
  // the admin endpoint's modules (prom-client) are loaded only when it is on: 3-6 MiB of RSS
  // (docs/architecture.md, "Memory")
  const admin: EpsAdmin | undefined = settings.adminListen
    ? new (await import("./server_admin.ts")).EpsAdmin(own)
    : undefined;
  let adminServer: AdminServer | undefined;
  try {
    if (admin) {
      const { openAdmin } = await import("../admin/role_admin.ts");
      adminServer = await openAdmin(settings.adminListen, admin.source());
      addrs.admin = adminServer!.addr;
      links.onRouted = (method, code) => admin.calls.count(method, code);
    }
    if (settings.listen) {
      const l = await listenLinks(settings.listen, tls, {
        directory,
        known: [own],
        what: "links",
        onLink: (conn, peer) => void links.add(conn, peer, false),
      });
      listeners.push(l);
      addrs.links = l.addr;
      log.info("EPS {operator} listening for links on {addr}", {
        operator: own,
        addr: formatHostPort(l.addr),
      });
    }
    if (settings.proxyListen) {
      const l = await listenLinks(settings.proxyListen, tls, {
        directory,
        known: [own],
        only: [own],
        what: "proxy",
        onLink: (conn, peer) => void links.add(conn, peer, false),
      });
      listeners.push(l);
      addrs.proxy = l.addr;
      log.info("EPS {operator} listening for its proxy on {addr}", {
        operator: own,
        addr: formatHostPort(l.addr),
      });
    }
  } catch (err) {
    await Promise.all(listeners.map((l) => l.close()));
    await adminServer?.close();
    throw err;
  }
  admin?.attach({
    addrs,
    peers: () => links.peerRows(),
    instances: () => links.instanceRows(),
  });

  // one dialler per peer this operator may call and that has an address; a reload adds and stops
  // diallers, and a changed address is read at the next dial
  const diallers = new Map<string, AbortController>();
  const dialling = new Set<Promise<void>>();
  const syncDialling = (): string[] => {
    const lines: string[] = [];
    const wanted = new Set(
      calleesOf(directory, own).filter((peer) => directory.operators.get(peer)?.address),
    );
    for (const [peer, ctl] of diallers) {
      if (wanted.has(peer)) continue;
      ctl.abort();
      diallers.delete(peer);
      links.peer(peer).dialled = false;
      lines.push(`no longer dialling ${peer} (a link up stays up)`);
    }
    for (const peer of wanted) {
      if (diallers.has(peer)) continue;
      const ctl = new AbortController();
      diallers.set(peer, ctl);
      const p = links.peer(peer);
      p.dialled = true;
      if (p.state !== "up") p.state = "connecting";
      const peerSignal = AbortSignal.any([stop.signal, ctl.signal]);
      const task = keepDialling(
        peer,
        () => directory.operators.get(peer)?.address ?? { hostname: "", port: 0 },
        () => tls,
        {
          get directory() {
            return directory;
          },
          signal: peerSignal,
          needed: async () => {
            await links.needed(peer, peerSignal);
            // after a failed dial the peer stays "down" (calls fail fast) until a link is up again
            if (links.peer(peer).state !== "down") links.setState(peer, "connecting");
          },
          onConn: (conn) => links.add(conn, peer, true),
          onDown: (reason) => links.setState(peer, "down", reason),
        },
      );
      dialling.add(task);
      void task.finally(() => dialling.delete(task));
      lines.push(`dialling ${peer}`);
    }
    return lines;
  };
  syncDialling();

  const reloader = new Reloader<EpsSettings>(async (next) => {
    const applied = checkRestartOnly(
      diffSettings(current, next, { restartOnly: EPS_RESTART_ONLY }),
    );
    const nextDirectory = await loadDirectory([next.directoryDir]);
    const nextTls = readOwnTls(next, nextDirectory);
    // everything is read and valid: apply (links up stay up; new links and calls use it)
    if (!sameValue(directoryValue(directory), directoryValue(nextDirectory))) {
      applied.push(`directory: re-read (${nextDirectory.operators.size} operators)`);
    }
    if (nextTls.cert !== tls.cert || nextTls.key !== tls.key || !sameValue(nextTls.ca, tls.ca)) {
      applied.push("certificates: new links use the new files");
    }
    directory = nextDirectory;
    tls = nextTls;
    current = next;
    links.settings = next;
    router.update({
      directory,
      callTimeoutMs: next.callTimeoutMs,
      maxMessageBytes: next.maxMessageBytes,
    });
    for (const l of listeners) l.reconfigure(tls, directory);
    applied.push(...syncDialling());
    return applied;
  });

  const finished = (async () => {
    await abortPromise(stop.signal);
    const closing = listeners.map((l) => l.close());
    while (dialling.size > 0) await Promise.all([...dialling]);
    await links.close();
    await Promise.all(closing);
    await Promise.all(listeners.map((l) => l.finished));
    await adminServer?.close();
    log.info("EPS {operator} stopped", { operator: own });
  })();
  const handle = makeHandle(
    addrs as Record<"links" | "proxy", HostPort>,
    finished,
    () => stop.abort(),
    signal,
  );
  if (admin) admin.reloads = reloader;
  return withReload(handle, reloader);
}
