/**
 * The status page at `GET /` of the admin endpoint (docs/architecture.md, "The admin endpoint"):
 * one self-contained HTML document, no build step, no external resource. Its script fetches
 * `/status` every two seconds and renders the document's summary and its `tables` (the same
 * tables `tls-pass status` prints), so the page knows nothing role-specific.
 * @module
 */

export const STATUS_PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>tls-pass status</title>
<style>
  :root { color-scheme: light dark; --ok: #1a7f37; --bad: #cf222e; --muted: #6e7781; }
  body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5rem; }
  h1 { font-size: 1.3rem; margin: 0 0 .25rem; }
  h2 { font-size: 1rem; margin: 1.5rem 0 .4rem; }
  .muted { color: var(--muted); }
  .ok { color: var(--ok); font-weight: 600; }
  .bad { color: var(--bad); font-weight: 600; }
  table { border-collapse: collapse; min-width: 24rem; }
  th, td { border-bottom: 1px solid #8884; padding: .25rem .75rem .25rem 0; text-align: left;
           font-variant-numeric: tabular-nums; }
  th { font-weight: 600; }
  td.num { text-align: right; }
  #error { color: var(--bad); }
</style>
</head>
<body>
<h1 id="title">tls-pass</h1>
<div id="summary" class="muted">loading…</div>
<div id="error"></div>
<div id="tables"></div>
<p class="muted">Refreshes every 2 s · <a href="/status">/status</a> · <a href="/metrics">/metrics</a></p>
<script>
"use strict";
function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = String(text);
  return e;
}
function render(s) {
  document.title = "tls-pass " + s.role + " " + (s.operator || "");
  document.getElementById("title").textContent =
    "tls-pass " + s.role + (s.operator ? " · " + s.operator : "");
  const sum = document.getElementById("summary");
  sum.replaceChildren();
  const ready = el("span", { id: "ready", class: s.ready ? "ok" : "bad" },
    s.ready ? "ready" : "not ready: " + (s.readyProblems || []).join("; "));
  sum.append(ready);
  for (const [k, v] of Object.entries(s.summary || {})) {
    sum.append(" · " + k + " ");
    sum.append(el("b", { "data-key": k }, v));
  }
  const box = document.getElementById("tables");
  box.replaceChildren();
  for (const t of s.tables || []) {
    box.append(el("h2", {}, t.title));
    if (t.rows.length === 0) { box.append(el("div", { class: "muted" }, t.empty || "none")); continue; }
    const table = el("table", { "data-table": t.title });
    const head = el("tr");
    for (const c of t.columns) head.append(el("th", {}, c));
    table.append(head);
    for (const r of t.rows) {
      const tr = el("tr");
      for (const v of r) tr.append(el("td", typeof v === "number" ? { class: "num" } : {}, v));
      table.append(tr);
    }
    box.append(table);
  }
}
async function refresh() {
  try {
    const r = await fetch("/status", { cache: "no-store" });
    if (!r.ok) throw new Error("GET /status: " + r.status);
    render(await r.json());
    document.getElementById("error").textContent = "";
  } catch (e) {
    document.getElementById("error").textContent = "Cannot load /status: " + e.message;
  }
}
refresh();
setInterval(refresh, 2000);
</script>
</body>
</html>
`;
