// The live view of one event on the dashboard: follows its check-ins and
// counters (through the shared feeds in `check-ins.js`) and draws the list,
// the counters and the arrivals chart.

import { CheckInFeed, StatsFeed } from "/assets/shared/check-ins.js";
import { drawArrivals } from "/assets/shared/chart.js";
import { el, hue, initials, numFmt, whenText } from "/assets/shared/format.js";

/** Rows kept on the page; the chart and counters use every check-in. */
const MAX_ROWS = 200;
/** Check-ins arriving this long after a (re)subscription are live ones and get highlighted. */
const REPLAY_SETTLE_MS = 1500;

const $ = (id) => document.getElementById(id);

/** The live view of one event: owns its subscriptions and what they delivered. */
export class EventLive {
  #event;
  #ui;
  #items = [];
  #cursors = new Set();
  #stats = null;
  #pending = [];
  #flushTimer = null;
  #chartTimer = null;
  #subscribedAt = 0;
  #checkIns;
  #statsFeed;
  #closed = false;

  constructor(event, socket, ui) {
    this.#event = event;
    this.#ui = ui;
    const onFailed = (code, message) => {
      if (!this.#closed) this.#ui.liveFailed(code, message);
    };
    this.#checkIns = new CheckInFeed(socket, event.id, {
      onItem: (item) => this.#accept(item),
      onSubscribe: () => {
        this.#subscribedAt = Date.now();
      },
      onFailed,
    });
    this.#statsFeed = new StatsFeed(socket, event.id, {
      onStats: (stats) => {
        this.#stats = stats;
        this.#renderStats();
      },
      onFailed,
    });
  }

  start() {
    this.#subscribedAt = Date.now();
    this.#checkIns.start();
    this.#statsFeed.start();
    this.#render();
    this.#chartTimer = setInterval(() => this.#drawChart(), 30_000);
  }

  stop() {
    this.#closed = true;
    clearTimeout(this.#flushTimer);
    clearInterval(this.#chartTimer);
    this.#checkIns.stop();
    this.#statsFeed.stop();
  }

  redraw() {
    this.#drawChart();
  }

#accept(item) {
    // Counts what the server sent, repeats included, so a test can tell a
    // resume from its cursor from a replay of everything.
    const list = $("checkins");
    list.dataset.delivered = String(Number(list.dataset.delivered ?? 0) + 1);
    if (this.#cursors.has(item.cursor)) return;
    this.#cursors.add(item.cursor);
    const entry = { ...item, at: Date.parse(item.checkedInAt), fresh: Date.now() - this.#subscribedAt > REPLAY_SETTLE_MS };
    this.#items.push(entry);
    this.#pending.push(entry);
    // Batch DOM work: a replay delivers thousands of items back to back.
    if (!this.#flushTimer) this.#flushTimer = setTimeout(() => this.#flush(), 16);
  }

  #flush() {
    this.#flushTimer = null;
    if (this.#closed) return;
    const list = $("checkins");
    const fresh = this.#pending.slice(-MAX_ROWS);
    this.#pending = [];
    const frag = document.createDocumentFragment();
    for (let i = fresh.length - 1; i >= 0; i--) frag.append(this.#row(fresh[i]));
    list.prepend(frag);
    while (list.children.length > MAX_ROWS) list.lastElementChild.remove();
    this.#render();
  }

  #row(item) {
    const li = el("li", item.fresh ? "fresh" : "");
    li.dataset.userId = item.user.id;
    li.dataset.cursor = item.cursor;
    const avatar = el("span", "avatar", initials(item.user.name));
    avatar.style.background = `hsl(${hue(item.user.id)} 55% 45%)`;
    avatar.setAttribute("aria-hidden", "true");
    const time = el("time", "time", whenText(new Date(item.at)));
    time.dateTime = item.checkedInAt;
    li.append(avatar, el("span", "name", item.user.name), time);
    if (item.scanner) li.append(el("span", "scanner", `via ${item.scanner}`));
    return li;
  }

  #render() {
    const n = this.#items.length;
    $("checkins-empty").hidden = n > 0;
    $("list-count").textContent = n > MAX_ROWS ? `latest ${MAX_ROWS} of ${numFmt.format(n)}` : "";
    this.#renderStats();
    this.#drawChart();
  }

  #renderStats() {
    const s = this.#stats;
    // The check-in stream can be a moment ahead of the coalesced stats.
    const checkedIn = Math.max(s?.checkedIn ?? 0, this.#items.length);
    const registered = s?.registered ?? this.#event.registeredCount;
    setNumber("stat-checked-in", s || this.#items.length ? checkedIn : null);
    setNumber("stat-present", s ? s.presentNow : null);
    setNumber("stat-registered", registered);
    const rate = registered > 0 ? Math.min(100, Math.round((checkedIn / registered) * 100)) : 0;
    $("stat-meter").style.width = `${rate}%`;
    $("stat-rate").textContent = registered > 0 ? `${rate} % of registered` : "";
    const toCome = Math.max(0, registered - checkedIn);
    $("stat-to-come").textContent = registered > 0 ? `${numFmt.format(toCome)} still to come` : "";
  }

  #drawChart() {
    if (this.#closed) return;
    drawArrivals(
      $("chart"),
      $("chart-legend"),
      this.#event,
      this.#items.map((i) => i.at),
    );
  }
}

function setNumber(id, value) {
  const node = $(id);
  const text = value === null || value === undefined ? "–" : numFmt.format(value);
  if (node.textContent === text) return;
  node.textContent = text;
  node.dataset.value = value ?? "";
  node.classList.remove("bump");
  void node.offsetWidth; // restart the animation
  node.classList.add("bump");
}
