/**
 * The `/status` document (docs/architecture.md, "The admin endpoint"): what every role's document
 * has in common, its `tables` (rendered the same by the status page and `tls-pass status`), and the
 * text rendering of those tables.
 * @module
 */
import type { ReloadResult } from "../role.ts";

/** One table of the status: the page renders it as HTML, `tls-pass status` as text. */
export interface StatusTable {
  title: string;
  columns: string[];
  rows: (string | number)[][];
  /** Shown instead of an empty table. */
  empty?: string;
}

/** The part of `/status` every role has; each role adds its own structured fields. */
export interface StatusDocument {
  role: string;
  operator?: string;
  version: string;
  pid: number;
  startedAt: string;
  uptimeS: number;
  ready: boolean;
  readyProblems: string[];
  /** Headline figures, in order. */
  summary: Record<string, string | number>;
  tables: StatusTable[];
  lastReload: ReloadResult | null;
  [key: string]: unknown;
}

/** Seconds or a short human duration until `at` (epoch ms). */
export function untilText(at: number, now = Date.now()): string {
  const s = Math.round((at - now) / 1000);
  if (s < 0) return "expired";
  if (s < 120) return `${s} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  if (s < 172_800) return `${Math.round(s / 3600)} h`;
  return `${Math.round(s / 86_400)} d`;
}

/** The table of the last reload (empty before the first). */
export function reloadTable(r: ReloadResult | null): StatusTable {
  const rows: (string | number)[][] = [];
  if (r !== null) {
    const lines = r.ok ? (r.applied.length ? r.applied : ["nothing changed"]) : r.problems;
    for (const line of lines) rows.push([r.at, r.ok ? "applied" : "refused", line]);
  }
  return {
    title: "Last reload",
    columns: ["at", "result", "detail"],
    rows,
    empty: "no reload since start (kill -HUP PID re-reads the settings)",
  };
}

/** Renders a status document as plain-text tables (what `tls-pass status` prints). */
export function renderStatus(doc: StatusDocument): string {
  const out: string[] = [];
  const head = `tls-pass ${doc.role}${
    doc.operator ? ` ${doc.operator}` : ""
  } (pid ${doc.pid}, ${doc.version}, up ${doc.uptimeS} s): ${
    doc.ready ? "ready" : `NOT READY: ${doc.readyProblems.join("; ")}`
  }`;
  out.push(head);
  for (const [k, v] of Object.entries(doc.summary)) out.push(`  ${k}: ${v}`);
  for (const t of doc.tables) {
    out.push("", t.title);
    if (t.rows.length === 0) {
      out.push(`  ${t.empty ?? "none"}`);
      continue;
    }
    const cells = [t.columns, ...t.rows.map((r) => r.map(String))];
    const widths = t.columns.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? "").length)));
    for (const [n, r] of cells.entries()) {
      const line = r.map((c, i) => {
        const numeric = n > 0 && typeof t.rows[n - 1]![i] === "number";
        return numeric ? c.padStart(widths[i]!) : c.padEnd(widths[i]!);
      }).join("  ").trimEnd();
      out.push(`  ${line}`);
      if (n === 0) out.push(`  ${widths.map((w) => "-".repeat(w)).join("  ")}`);
    }
  }
  return out.join("\n");
}
