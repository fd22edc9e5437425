// Charts drawn as inline SVG (no library): arrivals over time for the
// dashboard and the console's live page, and plain bar charts for reports.

import { numFmt, shortTimeFmt } from "./format.js";

const SVG_NS = "http://www.w3.org/2000/svg";
const BUCKET_MINUTES = [5, 10, 15, 30, 60, 120, 240, 720, 1440];
const MAX_BARS = 48;

export function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

export function niceMax(n) {
  if (n <= 4) return Math.max(n, 1);
  const pow = 10 ** Math.floor(Math.log10(n));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * pow >= n) return m * pow;
  return 10 * pow;
}

/**
 * Draws arrivals per time bucket (bars) and the running total (line) into
 * `host`, from the check-in times it is given. The bucket grows with the
 * span shown (5 minutes for a morning, hours for a festival).
 */
export function drawArrivals(host, legend, event, times) {
  const width = Math.max(280, host.clientWidth);
  const height = Math.max(220, host.clientHeight);
  const pad = { top: 16, right: 44, bottom: 28, left: 40 };
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "Arrivals over time" });
  const now = Date.now();
  const eventStart = Date.parse(event.startsAt);
  const eventEnd = Date.parse(event.endsAt);
  let from = eventStart;
  let to = Math.min(now, eventEnd);
  for (const t of times) {
    if (t < from) from = t;
    if (t > to) to = t;
  }
  if (times.length === 0 && to <= from) {
    root.append(
      svg("text", { x: width / 2, y: height / 2, "text-anchor": "middle", class: "empty" }, "Arrivals will show here once the doors open."),
    );
    host.replaceChildren(root);
    legend.textContent = "";
    return;
  }
  const minutes = BUCKET_MINUTES.find((m) => (to - from) / (m * 60_000) <= MAX_BARS) ?? 1440;
  const size = minutes * 60_000;
  const first = Math.floor(from / size) * size;
  const count = Math.max(1, Math.floor((to - first) / size) + 1);
  const buckets = new Array(count).fill(0);
  for (const t of times) buckets[Math.min(count - 1, Math.floor((t - first) / size))] += 1;

  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  const yMax = niceMax(Math.max(...buckets));
  const total = times.length;
  const cumMax = niceMax(total);
  const x = (i) => pad.left + (i / count) * plotW;
  const y = (v) => pad.top + plotH - (v / yMax) * plotH;
  const yc = (v) => pad.top + plotH - (v / cumMax) * plotH;

  for (let i = 0; i <= 4; i++) {
    const v = (yMax * i) / 4;
    const gy = y(v);
    root.append(svg("line", { x1: pad.left, x2: width - pad.right, y1: gy, y2: gy, class: "grid" }));
    if (Number.isInteger(v)) root.append(svg("text", { x: pad.left - 8, y: gy + 4, "text-anchor": "end" }, numFmt.format(v)));
    const c = (cumMax * i) / 4;
    if (Number.isInteger(c)) root.append(svg("text", { x: width - pad.right + 8, y: yc(c) + 4 }, numFmt.format(c)));
  }

  const barW = Math.max(1, plotW / count - Math.min(6, plotW / count / 4));
  const current = Math.floor((now - first) / size);
  buckets.forEach((n, i) => {
    if (n === 0) return;
    const bar = svg("rect", {
      x: x(i) + (plotW / count - barW) / 2,
      y: y(n),
      width: barW,
      height: Math.max(0, pad.top + plotH - y(n)),
      rx: Math.min(4, barW / 3),
      class: i === current ? "bar-rect now" : "bar-rect",
    });
    bar.append(svg("title", {}, `${shortTimeFmt.format(new Date(first + i * size))}: ${n}`));
    root.append(bar);
  });

  let running = 0;
  const points = [[x(0), yc(0)]];
  buckets.forEach((n, i) => {
    running += n;
    points.push([x(i + 1), yc(running)]);
  });
  const line = points.map(([px, py]) => `${px.toFixed(1)},${py.toFixed(1)}`).join(" ");
  const area = `${line} ${x(count).toFixed(1)},${yc(0).toFixed(1)}`;
  root.append(svg("polygon", { points: area, class: "cumulative-area" }));
  root.append(svg("polyline", { points: line, class: "cumulative" }));

  const labelEvery = Math.max(1, Math.ceil(count / Math.max(2, Math.floor(plotW / 70))));
  for (let i = 0; i <= count; i += labelEvery) {
    root.append(
      svg("text", { x: x(i), y: height - 8, "text-anchor": "middle" }, shortTimeFmt.format(new Date(first + i * size))),
    );
  }
  host.replaceChildren(root);
  const unit = minutes < 60 ? `${minutes} min` : `${minutes / 60} h`;
  legend.textContent = `per ${unit} · line: running total`;
}

/**
 * Draws one bar per `{ label, value }` into `host`, labelled underneath,
 * with `title` as the chart's accessible name. Used for distributions
 * (dwell time) and comparisons (attendance across events).
 */
export function drawBars(host, bars, title, format = (v) => numFmt.format(v)) {
  const width = Math.max(280, host.clientWidth);
  const height = Math.max(200, host.clientHeight);
  const pad = { top: 16, right: 12, bottom: 40, left: 40 };
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": title });
  if (bars.length === 0 || bars.every((b) => b.value === 0)) {
    root.append(svg("text", { x: width / 2, y: height / 2, "text-anchor": "middle", class: "empty" }, "Nothing to show yet."));
    host.replaceChildren(root);
    return;
  }
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  const yMax = niceMax(Math.max(...bars.map((b) => b.value)));
  const y = (v) => pad.top + plotH - (v / yMax) * plotH;
  for (let i = 0; i <= 4; i++) {
    const v = (yMax * i) / 4;
    root.append(svg("line", { x1: pad.left, x2: width - pad.right, y1: y(v), y2: y(v), class: "grid" }));
    if (Number.isInteger(v)) root.append(svg("text", { x: pad.left - 8, y: y(v) + 4, "text-anchor": "end" }, format(v)));
  }
  const slot = plotW / bars.length;
  const barW = Math.max(2, slot * 0.7);
  bars.forEach((b, i) => {
    const x = pad.left + i * slot + (slot - barW) / 2;
    const rect = svg("rect", { x, y: y(b.value), width: barW, height: Math.max(0, pad.top + plotH - y(b.value)), rx: 3, class: "bar-rect" });
    rect.append(svg("title", {}, `${b.label}: ${format(b.value)}`));
    root.append(rect);
    root.append(svg("text", { x: x + barW / 2, y: height - pad.bottom + 16, "text-anchor": "middle" }, b.label));
  });
  host.replaceChildren(root);
}
