import assert from "node:assert/strict";
import type { Logger } from "@logtape/logtape";
import type { DataEvent } from "../dataplane/mod.ts";
import { Counters } from "./counters.ts";
import { newPublicStats, onPublicEvent } from "./public_events.ts";

/** A logger that keeps its info lines (message template and properties). */
function infoLines(): { log: Logger; lines: [string, Record<string, unknown>][] } {
  const lines: [string, Record<string, unknown>][] = [];
  const log = {
    info: (m: string, p: Record<string, unknown>) => lines.push([m, p]),
    debug: () => {},
    warn: () => {},
  } as unknown as Logger;
  return { log, lines };
}

const SETTINGS = { dialBackTimeoutMs: 1, maxConnections: 1, maxDialBacks: 1, tokenTimeoutMs: 1 };
const ended = (alpn: readonly string[] | undefined): DataEvent => ({
  type: "ended",
  conn: 1,
  connId: "k-1",
  via: "notice",
  operator: "op1",
  domain: "a.example",
  client: "127.0.0.2:5000",
  ...(alpn !== undefined ? { alpn } : {}),
  up: 10,
  down: 20,
  reason: { kind: "done" },
  phases: { accepted: 1, hello: 2, dialBack: 3, internal: 0, piped: 4, ended: 5 },
});

for (
  const [what, alpn, text] of [
    ["h2 and http/1.1", ["h2", "http/1.1"], "h2,http/1.1"],
    ["no protocol", [], "none"],
    ["a data plane without the list", undefined, "none"],
  ] as const
) {
  Deno.test(`the public close line shows the client's ALPN list: ${what}`, () => {
    const { log, lines } = infoLines();
    onPublicEvent(ended(alpn), newPublicStats(), log, new Counters(log), SETTINGS);
    assert.equal(lines.length, 1);
    const [message, props] = lines[0]!;
    assert.match(message, /^conn \{conn\}: Closed .* ALPN \{alpnText\}, \{reason\}$/);
    assert.deepEqual([props.alpn, props.alpnText], [alpn ?? [], text]);
  });
}
