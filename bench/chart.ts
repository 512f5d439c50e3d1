/**
 * The benchmark's chart: one SVG panel per workload figure (W1 req/s, W2 req/s, W3 MB/s, W4 KiB
 * per held connection, W5 p50 and p99, W6 req/s, W7 set-up p50, idle RSS), a bar per topology
 * (tls-pass, haproxy2, haproxy2-splice, direct, then any other that ran) at its median with a
 * min–max whisker, and the ratio tls-pass / haproxy2 (median of per-round ratios) written on each
 * panel. Plain SVG 1.1 text, made here: no browser, no library. `deno task bench` writes it
 * beside results.md; for a results.json of any age:
 *
 *   deno run -A bench/chart.ts bench/results/NAME.json [OUT.svg]
 * @module
 */
import { normalizeResults, type Row } from "./report.ts";

/** Bar colours, in the order the topologies are drawn. */
const COLOURS: Record<string, string> = {
  "tls-pass": "#1f6fb4",
  haproxy2: "#e8711a",
  "haproxy2-splice": "#f4b26b",
  direct: "#8c8c8c",
};
const MORE_COLOURS = ["#2c9f4b", "#8e5fbf", "#c24a6b", "#3aa6a6", "#b59a2b"];
/** The topologies every chart puts first, in this order. */
const FIRST = ["tls-pass", "haproxy2", "haproxy2-splice", "direct"];

interface Bar {
  topology: string;
  median: number | null;
  min: number | null;
  max: number | null;
}

interface Panel {
  title: string;
  better: "higher" | "lower";
  bars: Bar[];
  /** tls-pass / haproxy2, median of per-round ratios (or of the medians when no pairs). */
  ratio: number | null;
}

/** Panels drawn from the summary: metric key and title. */
const SUMMARY_PANELS: [key: string, title: string][] = [
  ["w1_rps", "W1 req/s (new TLS connection each)"],
  ["w2_rps", "W2 req/s (keep-alive)"],
  ["w3_mb_per_s", "W3 MB/s (bulk download)"],
  ["w4_relay_rss_per_conn_kib", "W4 KiB per held connection"],
  ["w5_p50_ms", "W5 set-up p50 ms"],
  ["w5_p99_ms", "W5 set-up p99 ms"],
  ["w6_rps", "W6 req/s (HTTP/2, h2load)"],
  ["w4_relay_idle_rss_mib", "idle RSS MiB (relay processes)"],
];

const num = (x: unknown): number | null => typeof x === "number" && Number.isFinite(x) ? x : null;

function escapeXml(s: string): string {
  return s.replace(
    /[&<>"']/g,
    (c) =>
      c === "&"
        ? "&amp;"
        : c === "<"
        ? "&lt;"
        : c === ">"
        ? "&gt;"
        : c === '"'
        ? "&quot;"
        : "&apos;",
  );
}

/** 1234 → "1,234", 12.34 → "12.3", 0.1234 → "0.12", 45678 → "45.7k". */
export function compact(x: number): string {
  const a = Math.abs(x);
  if (a >= 100_000) return `${(x / 1000).toFixed(0)}k`;
  if (a >= 10_000) return `${(x / 1000).toFixed(1)}k`;
  if (a >= 100) return Math.round(x).toLocaleString("en-US");
  if (a >= 10) return x.toFixed(1);
  return x.toFixed(2);
}

/** The topologies of a report, the usual four first. */
function orderOf(json: Row): string[] {
  const ran = Object.keys((json.summary ?? {}) as Row);
  return [...FIRST.filter((t) => ran.includes(t)), ...ran.filter((t) => !FIRST.includes(t))];
}

function ratioOf(json: Row, key: string, bars: Bar[]): number | null {
  const paired = num((json.ratios?.haproxy2?.["tls-pass"]?.[key] as Row | undefined)?.median);
  if (paired !== null) return paired;
  const a = bars.find((b) => b.topology === "tls-pass")?.median ?? null;
  const b = bars.find((b) => b.topology === "haproxy2")?.median ?? null;
  return a !== null && b !== null && b !== 0 ? a / b : null;
}

/** The panels of a results.json (any age), those without any figure left out. */
export function panelsOf(results: Row): Panel[] {
  const json = normalizeResults(results);
  const order = orderOf(json);
  const better = (k: string): "higher" | "lower" =>
    (json.metrics?.[k]?.better as "higher" | "lower" | undefined) ??
      (/rps|mb_per_s/.test(k) ? "higher" : "lower");
  const panels: Panel[] = [];
  for (const [key, title] of SUMMARY_PANELS) {
    const bars = order.map((t): Bar => {
      const s = json.summary?.[t]?.[key] as Row | undefined;
      return { topology: t, median: num(s?.median), min: num(s?.min), max: num(s?.max) };
    });
    if (bars.every((b) => b.median === null)) continue;
    panels.push({ title, better: better(key), bars, ratio: ratioOf(json, key, bars) });
  }
  // W7: the largest burst's set-up p50 (medians over rounds of each burst's p50)
  const w7 = (json.w7 ?? {}) as Record<string, Record<string, Row>>;
  const sizes = [...new Set(Object.values(w7).flatMap((x) => Object.keys(x ?? {})))]
    .map(Number).sort((a, b) => a - b);
  const size = sizes.at(-1);
  if (size !== undefined) {
    const bars = order.map((t): Bar => {
      const s = w7[t]?.[String(size)]?.setup_p50_ms as Row | undefined;
      return { topology: t, median: num(s?.median), min: num(s?.min), max: num(s?.max) };
    });
    if (bars.some((b) => b.median !== null)) {
      const paired = num(w7["tls-pass"]?.[String(size)]?.vs_haproxy2?.setup_p50_ms);
      panels.push({
        title: `W7 burst of ${size.toLocaleString("en-US")}: set-up p50 ms`,
        better: "lower",
        bars,
        ratio: paired ?? ratioOf({}, "", bars),
      });
    }
  }
  return panels;
}

const PANEL_W = 300;
const PANEL_H = 230;
const COLS = 4;
const TOP = 74;

function panelSvg(p: Panel, x0: number, y0: number, colours: Record<string, string>): string {
  const plotX = x0 + 44;
  const plotY = y0 + 58;
  const plotW = PANEL_W - 60;
  const plotH = PANEL_H - 104;
  const top = Math.max(0, ...p.bars.flatMap((b) => [b.median ?? 0, b.max ?? 0]));
  const yMax = top > 0 ? top * 1.18 : 1;
  const y = (v: number) => plotY + plotH - (v / yMax) * plotH;
  const parts: string[] = [];
  parts.push(
    `<rect x="${x0 + 4}" y="${y0 + 4}" width="${PANEL_W - 8}" height="${PANEL_H - 8}" ` +
      `rx="6" fill="#ffffff" stroke="#d0d0d0"/>`,
  );
  parts.push(
    `<text x="${x0 + 14}" y="${y0 + 24}" font-size="13" font-weight="bold">${
      escapeXml(p.title)
    }</text>`,
  );
  const ratio = p.ratio === null
    ? "tls-pass / haproxy2: –"
    : `tls-pass / haproxy2 = ${p.ratio.toFixed(2)} ×`;
  parts.push(
    `<text x="${x0 + 14}" y="${y0 + 40}" font-size="11" fill="#333333">${
      escapeXml(`${ratio} (${p.better} is better)`)
    }</text>`,
  );
  for (let i = 0; i <= 4; i++) {
    const v = (yMax * i) / 4;
    const gy = y(v).toFixed(1);
    parts.push(
      `<line x1="${plotX}" y1="${gy}" x2="${plotX + plotW}" y2="${gy}" stroke="#eeeeee"/>`,
      `<text x="${plotX - 4}" y="${gy}" font-size="9" fill="#777777" text-anchor="end" ` +
        `dominant-baseline="middle">${escapeXml(compact(v))}</text>`,
    );
  }
  const slot = plotW / Math.max(1, p.bars.length);
  const barW = Math.min(44, slot * 0.62);
  p.bars.forEach((b, i) => {
    const cx = plotX + slot * (i + 0.5);
    const colour = colours[b.topology] ?? "#555555";
    const name = escapeXml(b.topology);
    if (b.median === null) {
      parts.push(
        `<text x="${cx.toFixed(1)}" y="${(plotY + plotH - 4).toFixed(1)}" font-size="10" ` +
          `fill="#999999" text-anchor="middle">–</text>`,
      );
    } else {
      const by = y(b.median);
      parts.push(
        `<rect x="${(cx - barW / 2).toFixed(1)}" y="${by.toFixed(1)}" width="${
          barW.toFixed(1)
        }" height="${(plotY + plotH - by).toFixed(1)}" fill="${colour}">` +
          `<title>${name}: median ${escapeXml(compact(b.median))}${
            b.min !== null && b.max !== null
              ? `, min–max ${escapeXml(compact(b.min))}–${escapeXml(compact(b.max))}`
              : ""
          }</title></rect>`,
      );
      if (b.min !== null && b.max !== null && b.max > b.min) {
        const w = barW / 4;
        const y1 = y(b.min).toFixed(1);
        const y2 = y(b.max).toFixed(1);
        parts.push(
          `<path d="M${cx.toFixed(1)} ${y1}V${y2}M${(cx - w).toFixed(1)} ${y1}H${
            (cx + w).toFixed(1)
          }M${(cx - w).toFixed(1)} ${y2}H${(cx + w).toFixed(1)}" stroke="#222222" ` +
            `stroke-width="1.2" fill="none"/>`,
        );
      }
      const labelY = Math.min(by, b.max !== null ? y(b.max) : by) - 4;
      parts.push(
        `<text x="${cx.toFixed(1)}" y="${labelY.toFixed(1)}" font-size="10" ` +
          `text-anchor="middle">${escapeXml(compact(b.median))}</text>`,
      );
    }
    parts.push(
      `<text x="${cx.toFixed(1)}" y="${(plotY + plotH + 14).toFixed(1)}" font-size="9" ` +
        `fill="#444444" text-anchor="middle">${name}</text>`,
    );
  });
  parts.push(
    `<line x1="${plotX}" y1="${plotY + plotH}" x2="${plotX + plotW}" y2="${
      plotY + plotH
    }" stroke="#999999"/>`,
  );
  return parts.join("\n");
}

/** The SVG document for a results.json (the `json` of `buildReport`, or a saved file). */
export function renderChart(results: Row): string {
  const json = normalizeResults(results);
  const panels = panelsOf(json);
  const order = orderOf(json);
  const colours: Record<string, string> = { ...COLOURS };
  let extra = 0;
  for (const t of order) colours[t] ??= MORE_COLOURS[extra++ % MORE_COLOURS.length]!;
  const rowsN = Math.max(1, Math.ceil(panels.length / COLS));
  const width = PANEL_W * COLS;
  const height = TOP + rowsN * PANEL_H + 28;
  const meta = (json.meta ?? {}) as Row;
  const title = `tls-pass benchmark ${meta.date ?? ""}${meta.quick ? " (quick)" : ""}`;
  const sub = `${meta.rounds ?? "?"} round(s); bars: median over rounds, whiskers: min–max; ` +
    "ratio: median of per-round ratios tls-pass / haproxy2";
  const out: string[] = [
    `<?xml version="1.0" encoding="UTF-8"?>`,
    `<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="${width}" height="${height}" ` +
    `viewBox="0 0 ${width} ${height}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">`,
    `<title>${escapeXml(title)}</title>`,
    `<rect width="${width}" height="${height}" fill="#f7f7f7"/>`,
    `<text x="12" y="24" font-size="16" font-weight="bold">${escapeXml(title)}</text>`,
    `<text x="12" y="42" font-size="11" fill="#444444">${escapeXml(sub)}</text>`,
  ];
  order.forEach((t, i) => {
    const lx = 12 + i * 150;
    out.push(
      `<rect x="${lx}" y="52" width="12" height="12" fill="${colours[t]}"/>`,
      `<text x="${lx + 17}" y="62" font-size="11">${escapeXml(t)}</text>`,
    );
  });
  if (panels.length === 0) {
    out.push(`<text x="12" y="${TOP + 20}" font-size="12">No figures in this run.</text>`);
  }
  panels.forEach((p, i) => {
    out.push(panelSvg(p, (i % COLS) * PANEL_W, TOP + Math.floor(i / COLS) * PANEL_H, colours));
  });
  out.push(
    `<text x="12" y="${height - 10}" font-size="10" fill="#666666">` +
      `${escapeXml("Written by bench/chart.ts from results.json; the tables are in results.md.")}` +
      `</text>`,
    "</svg>",
    "",
  );
  return out.join("\n");
}

if (import.meta.main) {
  const [input, output] = Deno.args;
  if (!input) {
    // deno-lint-ignore no-console -- this CLI's usage line
    console.error("usage: deno run -A bench/chart.ts RESULTS.json [OUT.svg]");
    Deno.exit(2);
  }
  const out = output ?? input.replace(/\.json$/, "") + ".svg";
  await Deno.writeTextFile(out, renderChart(JSON.parse(await Deno.readTextFile(input))));
  // deno-lint-ignore no-console -- this CLI's output
  console.error(`wrote ${out}`);
}
