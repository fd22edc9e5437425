// An event's report: the headline figures, arrivals over time, the dwell
// distribution and the attendance rate, the same event beside the
// organiser's others (a series), and the attendance CSV to download.

import { drawArrivals, drawBars } from "/assets/shared/chart.js";
import { eventWhen, numFmt } from "/assets/shared/format.js";
import { all } from "./attendees.js";
import { loadEvents } from "./events.js";
import { busy, describeError, duration, h, table, toast } from "./ui.js";

const REPORT_FIELDS = "registered checkedIn noShows walkIns attendanceRate medianDwellSeconds meanDwellSeconds";

/** Dwell buckets, in minutes: [from, to) and a label. */
const DWELL_BUCKETS = [
  [0, 5, "< 5 min"],
  [5, 15, "5–15"],
  [15, 30, "15–30"],
  [30, 60, "30–60"],
  [60, 120, "1–2 h"],
  [120, 240, "2–4 h"],
  [240, Infinity, "4 h +"],
];

export async function render(ctx, root, event) {
  const [data, dwell] = await Promise.all([
    ctx.api(`query($id: ID!) { eventReport(eventId: $id) { ${REPORT_FIELDS} arrivals { start count } } }`, { id: event.id }),
    all(async (after) => (await ctx.api("query($id: ID!, $after: String) { attendance(eventId: $id, first: 500, after: $after) { pageInfo { hasNextPage endCursor } nodes { dwellSeconds } } }", { id: event.id, after })).attendance),
  ]);
  const r = data.eventReport;
  const rate = Math.round(r.attendanceRate * 100);
  const figure = (label, value, sub) => h("article", { class: "stat" }, h("h2", {}, label), h("p", { class: "num" }, value), sub ? h("p", { class: "sub" }, sub) : null);

  const download = h("button", { type: "button", class: "primary", id: "download-csv" }, "Download attendance CSV");
  download.addEventListener("click", () => downloadCsv(ctx, event, download));

  const arrivals = h("div", { class: "chart", id: "chart-arrivals" });
  const arrivalsLegend = h("span", { class: "muted" });
  const dwellChart = h("div", { class: "chart", id: "chart-dwell" });
  const rateChart = h("div", { class: "meter big", role: "img", "aria-label": `Attendance rate ${rate} %` }, h("span", { style: null }));
  const series = h("section", { class: "panel", id: "series", "aria-labelledby": "series-title" }, h("h2", { id: "series-title" }, "Across your events"), h("p", { class: "muted" }, "Loading…"));

  root.replaceChildren(
    h("div", { class: "toolbar" }, download, h("p", { class: "hint" }, "One row per registration: check-in, last seen, dwell, stays and signal, ready for a spreadsheet.")),
    h(
      "div",
      { class: "stats" },
      figure("Registered", numFmt.format(r.registered), `${numFmt.format(r.walkIns)} walked in`),
      figure("Checked in", numFmt.format(r.checkedIn), `${numFmt.format(r.noShows)} did not come`),
      figure("Attendance rate", `${rate} %`, "of registered people"),
      figure("Median stay", duration(r.medianDwellSeconds), `mean ${duration(r.meanDwellSeconds)}`),
    ),
    h("section", { class: "panel", "aria-labelledby": "rate-title" }, h("h2", { id: "rate-title" }, "Attendance rate"), rateChart, h("p", { class: "muted" }, `${numFmt.format(r.checkedIn)} of ${numFmt.format(r.registered)} registered people checked in.`)),
    h("div", { class: "panels" },
      h("section", { class: "panel", "aria-labelledby": "arrivals-title" }, h("div", { class: "panel-head" }, h("h2", { id: "arrivals-title" }, "Arrivals over time"), arrivalsLegend), arrivals),
      h("section", { class: "panel", "aria-labelledby": "dwell-title" }, h("div", { class: "panel-head" }, h("h2", { id: "dwell-title" }, "How long people stayed"), h("span", { class: "muted" }, "people per stay length")), dwellChart),
    ),
    series,
  );
  rateChart.firstChild.style.width = `${Math.min(100, rate)}%`;
  const times = r.arrivals.flatMap((b) => new Array(b.count).fill(Date.parse(b.start)));
  const counts = DWELL_BUCKETS.map(([from, to, label]) => ({ label, value: dwell.filter((d) => d.dwellSeconds >= from * 60 && d.dwellSeconds < to * 60).length }));
  const draw = () => {
    drawArrivals(arrivals, arrivalsLegend, event, times);
    drawBars(dwellChart, counts, "Dwell time distribution");
  };
  draw();
  const resize = new ResizeObserver(draw);
  resize.observe(arrivals);
  drawSeries(ctx, series, event).catch((e) => series.replaceChildren(h("h2", {}, "Across your events"), h("p", { class: "form-error" }, describeError(e))));
  return () => resize.disconnect();
}

/** The organiser's other events that have started, with their figures, in one request. */
async function drawSeries(ctx, host, current) {
  const events = (await loadEvents(ctx))
    .filter((e) => e.state === "ACTIVE" || e.state === "ENDED")
    .sort((a, b) => Date.parse(b.startsAt) - Date.parse(a.startsAt))
    .slice(0, 20);
  if (events.length < 2) {
    host.replaceChildren(h("h2", { id: "series-title" }, "Across your events"), h("p", { class: "muted" }, "Once you have run more than one event, they are compared here."));
    return;
  }
  const query = `query ConsoleSeries(${events.map((_, i) => `$e${i}: ID!`).join(", ")}) { ${events.map((_, i) => `r${i}: eventReport(eventId: $e${i}) { registered checkedIn attendanceRate medianDwellSeconds }`).join(" ")} }`;
  const vars = Object.fromEntries(events.map((e, i) => [`e${i}`, e.id]));
  const data = await ctx.api(query, vars);
  const rows = events.map((e, i) => ({ event: e, report: data[`r${i}`] })).reverse();
  const chart = h("div", { class: "chart short", id: "chart-series" });
  host.replaceChildren(
    h("h2", { id: "series-title" }, "Across your events"),
    chart,
    table(
      ["Event", "When", "Registered", "Checked in", "Rate", "Median stay"],
      rows.map(({ event, report }) =>
        h(
          "tr",
          { class: event.id === current.id ? "current" : "" },
          h("td", {}, h("a", { href: `#/events/${encodeURIComponent(event.id)}/report` }, event.name)),
          h("td", {}, eventWhen(event)),
          h("td", { class: "num" }, numFmt.format(report.registered)),
          h("td", { class: "num" }, numFmt.format(report.checkedIn)),
          h("td", { class: "num" }, `${Math.round(report.attendanceRate * 100)} %`),
          h("td", { class: "num" }, duration(report.medianDwellSeconds)),
        ),
      ),
      "Attendance across events",
    ),
  );
  drawBars(
    chart,
    rows.map(({ event, report }) => ({ label: event.name.length > 14 ? `${event.name.slice(0, 13)}…` : event.name, value: Math.round(report.attendanceRate * 100) })),
    "Attendance rate across events",
    (v) => `${v} %`,
  );
}

/** Fetches the CSV with the session's token and saves it as a file. */
async function downloadCsv(ctx, event, button) {
  try {
    const blob = await busy(button, "Preparing…", async () => {
      let resp;
      try {
        resp = await fetch(`/events/${encodeURIComponent(event.id)}/attendance.csv`, { headers: { authorization: `Bearer ${ctx.token}` } });
      } catch {
        throw Object.assign(new Error("network"), { code: "NETWORK" });
      }
      if (!resp.ok) throw new Error(`The server refused the download (HTTP ${resp.status}: ${(await resp.text()).trim()}). Log in again and retry.`);
      return resp.blob();
    });
    const name = `attendance-${event.name.replace(/[^\p{L}\p{N}]+/gu, "-").replace(/^-|-$/g, "").toLowerCase() || event.id}.csv`;
    const url = URL.createObjectURL(blob);
    const link = h("a", { href: url, download: name, hidden: true });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
    toast(`Downloaded ${name}.`);
  } catch (e) {
    toast(describeError(e), "error");
  }
}
