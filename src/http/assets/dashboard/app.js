// Rollcall live dashboard: log in, pick an event, and follow its check-ins
// as they happen. Plain ES module, no dependencies, no build step: it is
// served from the server binary and must work at a venue with no internet.
//
// Data flow:
// - `logIn`, `me` and `events` over `POST /graphql` (the token lives in
//   sessionStorage, so it dies with the tab);
// - `checkIns(eventId, after)` and `eventStats(eventId)` over one WebSocket
//   speaking graphql-transport-ws (`LiveSocket` below). `checkIns` starts at
//   `after: ""` so the list is complete, and every later (re)subscription
//   passes the last cursor seen, so a dropped network or a LAGGED error
//   neither loses nor repeats a check-in.
//
// User-provided text (names, event names, scanner names) only ever reaches
// the page through `textContent`; nothing here assigns `innerHTML`.

const SESSION_KEY = "rollcall.dashboard.session";
const EVENT_KEY = "rollcall.dashboard.event";

/** How often the socket is pinged, and how long a silent socket is trusted. */
const HEARTBEAT_MS = 10_000;
const SILENT_LIMIT_MS = 25_000;
/** Reconnect backoff: doubles from BASE up to MAX, with ±25 % jitter. */
const BACKOFF_BASE_MS = 500;
const BACKOFF_MAX_MS = 30_000;
/** Rows kept on the page; the chart and counters use every check-in. */
const MAX_ROWS = 200;
/** Check-ins arriving this long after a (re)subscription are live ones and get highlighted. */
const REPLAY_SETTLE_MS = 1500;

const CHECK_INS = `subscription DashboardCheckIns($eventId: ID!, $after: String) {
  checkIns(eventId: $eventId, after: $after) { cursor eventId checkedInAt scanner user { id name } }
}`;
const EVENT_STATS = `subscription DashboardStats($eventId: ID!) {
  eventStats(eventId: $eventId) { eventId registered checkedIn presentNow at }
}`;
const EVENTS = `query DashboardEvents($filter: EventFilterInput, $after: String) {
  events(filter: $filter, first: 500, after: $after) {
    pageInfo { hasNextPage endCursor }
    nodes { id name state location startsAt endsAt registeredCount }
  }
}`;

const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------- HTTP API

class ApiError extends Error {
  constructor(message, code) {
    super(message);
    this.code = code;
  }
}

async function gql(query, variables = {}, token = null) {
  const headers = { "content-type": "application/json" };
  if (token) headers.authorization = `Bearer ${token}`;
  let resp;
  try {
    resp = await fetch("/graphql", { method: "POST", headers, body: JSON.stringify({ query, variables }) });
  } catch {
    throw new ApiError("Can't reach the Rollcall server. Check the network and try again.", "NETWORK");
  }
  let body;
  try {
    body = await resp.json();
  } catch {
    throw new ApiError(`The server answered HTTP ${resp.status} with no GraphQL body.`, "INTERNAL");
  }
  if (body.errors?.length) {
    const e = body.errors[0];
    throw new ApiError(e.message, e.extensions?.code ?? "INTERNAL");
  }
  return body.data;
}

// ------------------------------------------------- graphql-transport-ws client

/**
 * One WebSocket to `/graphql` speaking graphql-transport-ws, kept alive for
 * as long as it is started: it pings, notices a silent (half-open) socket,
 * and reconnects with exponential backoff, then sends every subscription
 * again. Variables are functions, read at each (re)send, so a subscription
 * can resume from its latest cursor.
 */
class LiveSocket {
  #url;
  #token;
  #ws = null;
  #acked = false;
  #heardData = false;
  #subs = new Set();
  #byId = new Map();
  #nextId = 1;
  #attempts = 0;
  #retryAt = 0;
  #retryTimer = null;
  #countdown = null;
  #heartbeat = null;
  #lastHeard = 0;
  #stopped = true;
  #onOnline = () => this.#retryNow();
  #onOffline = () => this.#abandon("offline");

  /** Called with (state, text) as the connection changes. */
  onstatus = () => {};
  /** Called with the close reason when the server refuses the credentials. */
  onauthfailure = () => {};

  constructor(url, token) {
    this.#url = url;
    this.#token = token;
  }

  start() {
    this.#stopped = false;
    window.addEventListener("online", this.#onOnline);
    window.addEventListener("offline", this.#onOffline);
    this.#connect();
  }

  stop() {
    this.#stopped = true;
    window.removeEventListener("online", this.#onOnline);
    window.removeEventListener("offline", this.#onOffline);
    clearTimeout(this.#retryTimer);
    clearInterval(this.#countdown);
    clearInterval(this.#heartbeat);
    this.#subs.clear();
    this.#byId.clear();
    const ws = this.#ws;
    this.#ws = null;
    if (ws) ws.close(1000, "bye");
    this.onstatus("idle", "Not connected");
  }

  /**
   * Subscribes; `sink` has next(payload), error(errors) and complete().
   * Returns a function that unsubscribes.
   */
  subscribe(query, variables, sink) {
    const sub = { query, variables, sink, id: null };
    this.#subs.add(sub);
    if (this.#acked) this.#sendSubscribe(sub);
    return () => {
      this.#subs.delete(sub);
      if (sub.id && this.#byId.delete(sub.id)) this.#send({ id: sub.id, type: "complete" });
    };
  }

  #connect() {
    clearInterval(this.#countdown);
    this.onstatus("connecting", "Connecting…");
    let ws;
    try {
      ws = new WebSocket(this.#url, "graphql-transport-ws");
    } catch {
      this.#scheduleRetry();
      return;
    }
    this.#ws = ws;
    this.#acked = false;
    this.#heardData = false;
    this.#lastHeard = Date.now();
    ws.onopen = () => {
      if (ws !== this.#ws) return;
      this.#send({ type: "connection_init", payload: { authorization: `Bearer ${this.#token}` } });
    };
    ws.onmessage = (ev) => {
      if (ws !== this.#ws) return;
      this.#lastHeard = Date.now();
      this.#receive(ev.data);
    };
    ws.onclose = (ev) => {
      if (ws !== this.#ws) return;
      this.#closed(ev.code, ev.reason);
    };
    clearInterval(this.#heartbeat);
    this.#heartbeat = setInterval(() => this.#beat(), HEARTBEAT_MS);
  }

  #send(msg) {
    if (this.#ws?.readyState === WebSocket.OPEN) this.#ws.send(JSON.stringify(msg));
  }

  #sendSubscribe(sub) {
    sub.id = String(this.#nextId++);
    this.#byId.set(sub.id, sub);
    this.#send({ id: sub.id, type: "subscribe", payload: { query: sub.query, variables: sub.variables() } });
  }

  #receive(text) {
    let msg;
    try {
      msg = JSON.parse(text);
    } catch {
      return;
    }
    const sub = msg.id ? this.#byId.get(msg.id) : undefined;
    switch (msg.type) {
      case "connection_ack":
        this.#acked = true;
        this.#attempts = 0;
        this.onstatus("syncing", "Syncing…");
        for (const s of this.#subs) this.#sendSubscribe(s);
        break;
      case "next":
        if (!sub) return;
        if (!this.#heardData) {
          this.#heardData = true;
          this.onstatus("live", "Live");
        }
        sub.sink.next(msg.payload);
        break;
      case "error":
      case "complete":
        if (!sub) return;
        this.#byId.delete(msg.id);
        this.#subs.delete(sub);
        if (msg.type === "error") sub.sink.error(msg.payload);
        else sub.sink.complete();
        break;
      case "ping":
        this.#send({ type: "pong" });
        break;
      default:
        break;
    }
  }

  #beat() {
    if (!this.#ws) return;
    const silent = Date.now() - this.#lastHeard;
    if (silent > SILENT_LIMIT_MS || (!this.#acked && silent > HEARTBEAT_MS)) {
      this.#abandon("no answer from the server");
    } else if (this.#acked) {
      this.#send({ type: "ping" });
    }
  }

  /** Gives up on the current socket without waiting for its close event. */
  #abandon(reason) {
    const ws = this.#ws;
    if (!ws || this.#stopped) return;
    this.#ws = null;
    ws.close(1000, reason);
    this.#closed(1006, reason);
  }

  #closed(code, reason) {
    this.#ws = null;
    this.#acked = false;
    this.#byId.clear();
    clearInterval(this.#heartbeat);
    if (this.#stopped) return;
    // 4403: the server refused the token (or it expired); retrying cannot help.
    // Every other close (a restart, a dropped network, 4408, 4429) is retried.
    if (code === 4403) {
      this.onstatus("error", "Not allowed");
      this.onauthfailure(reason);
      return;
    }
    this.#scheduleRetry();
  }

  #scheduleRetry() {
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** this.#attempts);
    const delay = Math.round(base * (0.75 + Math.random() * 0.5));
    this.#attempts = Math.min(this.#attempts + 1, 16);
    this.#retryAt = Date.now() + delay;
    clearTimeout(this.#retryTimer);
    this.#retryTimer = setTimeout(() => this.#connect(), delay);
    const show = () => {
      if (!navigator.onLine) {
        this.onstatus("offline", "Offline: waiting for the network");
        return;
      }
      const secs = Math.max(1, Math.ceil((this.#retryAt - Date.now()) / 1000));
      this.onstatus("reconnecting", `Reconnecting in ${secs} s`);
    };
    show();
    clearInterval(this.#countdown);
    this.#countdown = setInterval(show, 1000);
  }

  #retryNow() {
    if (this.#stopped || this.#ws) return;
    clearTimeout(this.#retryTimer);
    this.#connect();
  }
}

// ------------------------------------------------------------ formatting

const timeFmt = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
const shortTimeFmt = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const dayFmt = new Intl.DateTimeFormat(undefined, { weekday: "short", day: "numeric", month: "short" });
const numFmt = new Intl.NumberFormat();

function sameDay(a, b) {
  return a.toDateString() === b.toDateString();
}

function whenText(date) {
  return sameDay(date, new Date()) ? timeFmt.format(date) : `${dayFmt.format(date)}, ${timeFmt.format(date)}`;
}

function eventMeta(ev) {
  const start = new Date(ev.startsAt);
  const end = new Date(ev.endsAt);
  const span = sameDay(start, end)
    ? `${dayFmt.format(start)}, ${shortTimeFmt.format(start)}–${shortTimeFmt.format(end)}`
    : `${dayFmt.format(start)} ${shortTimeFmt.format(start)} – ${dayFmt.format(end)} ${shortTimeFmt.format(end)}`;
  const parts = [STATE_NAMES[ev.state] ?? ev.state, span];
  if (ev.location) parts.push(ev.location);
  return parts.join(" · ");
}

const STATE_NAMES = { ACTIVE: "Live now", SCHEDULED: "Scheduled", ENDED: "Ended", CANCELLED: "Cancelled" };

/** Up to two initials, from the first letters of the first and last words. */
function initials(name) {
  const words = name.match(/[\p{L}\p{N}][^\s]*/gu) ?? [];
  const letter = (w) => w.match(/[\p{L}\p{N}]/u)?.[0] ?? "";
  const first = letter(words[0] ?? "");
  const last = words.length > 1 ? letter(words[words.length - 1]) : "";
  return (first + last).toUpperCase() || "?";
}

function hue(text) {
  let h = 0;
  for (const ch of text) h = (h * 31 + ch.codePointAt(0)) % 360;
  return h;
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

// ------------------------------------------------------------ the chart

const SVG_NS = "http://www.w3.org/2000/svg";
const BUCKET_MINUTES = [5, 10, 15, 30, 60, 120, 240, 720, 1440];
const MAX_BARS = 48;

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

function niceMax(n) {
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
function drawChart(host, legend, event, times) {
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

// ------------------------------------------------------------ one event, live

/** The live view of one event: owns its subscriptions and what they delivered. */
class EventLive {
  #event;
  #socket;
  #ui;
  #items = [];
  #cursors = new Set();
  #lastCursor = "";
  #stats = null;
  #pending = [];
  #flushTimer = null;
  #chartTimer = null;
  #subscribedAt = 0;
  #resumeTimer = null;
  #stopCheckIns = null;
  #stopStats = null;
  #closed = false;

  constructor(event, socket, ui) {
    this.#event = event;
    this.#socket = socket;
    this.#ui = ui;
  }

  start() {
    this.#subscribeCheckIns();
    this.#subscribeStats();
    this.#render();
    this.#chartTimer = setInterval(() => this.#drawChart(), 30_000);
  }

  stop() {
    this.#closed = true;
    clearTimeout(this.#flushTimer);
    clearTimeout(this.#resumeTimer);
    clearInterval(this.#chartTimer);
    this.#stopCheckIns?.();
    this.#stopStats?.();
  }

  redraw() {
    this.#drawChart();
  }

  #subscribeCheckIns() {
    this.#subscribedAt = Date.now();
    let lagged = false;
    // LAGGED: the server dropped this subscriber for falling behind. It comes
    // as `next` + `complete` mid-stream, or as `error` if nothing was sent yet.
    const isLagged = (errors) => {
      const e = errors?.[0];
      if (e?.extensions?.code !== "LAGGED") return false;
      if (e.extensions.lastCursor) this.#lastCursor = e.extensions.lastCursor;
      return true;
    };
    const resume = (delay) => {
      if (!this.#closed) this.#resumeTimer = setTimeout(() => this.#subscribeCheckIns(), delay);
    };
    this.#stopCheckIns = this.#socket.subscribe(
      CHECK_INS,
      () => {
        // Every (re)send resumes after the last check-in shown.
        this.#subscribedAt = Date.now();
        return { eventId: this.#event.id, after: this.#lastCursor };
      },
      {
        next: (payload) => {
          if (payload.errors?.length) {
            if (isLagged(payload.errors)) lagged = true;
            else this.#failed(payload.errors);
            return;
          }
          const item = payload.data?.checkIns;
          if (item) this.#accept(item);
        },
        error: (errors) => {
          if (isLagged(errors)) resume(0);
          else this.#failed(errors);
        },
        // After LAGGED, resume at once from the last cursor. Any other end of
        // the stream: resume too, after a moment, so a server restart heals.
        complete: () => resume(lagged ? 0 : 1000),
      },
    );
  }

  #subscribeStats() {
    this.#stopStats = this.#socket.subscribe(EVENT_STATS, () => ({ eventId: this.#event.id }), {
      next: (payload) => {
        if (payload.errors?.length) {
          this.#failed(payload.errors);
          return;
        }
        const stats = payload.data?.eventStats;
        if (stats) {
          this.#stats = stats;
          this.#renderStats();
        }
      },
      error: (errors) => this.#failed(errors),
      complete: () => {
        if (!this.#closed) this.#resumeTimer = setTimeout(() => this.#subscribeStats(), 1000);
      },
    });
  }

  #failed(errors) {
    if (this.#closed) return;
    const e = Array.isArray(errors) ? errors[0] : errors;
    const code = e?.extensions?.code;
    this.#ui.liveFailed(code, e?.message ?? "unknown error");
  }

  #accept(item) {
    // Counts what the server sent, repeats included, so a test can tell a
    // resume from its cursor from a replay of everything.
    const list = $("checkins");
    list.dataset.delivered = String(Number(list.dataset.delivered ?? 0) + 1);
    if (this.#cursors.has(item.cursor)) return;
    this.#cursors.add(item.cursor);
    this.#lastCursor = item.cursor;
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
    drawChart(
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

// ------------------------------------------------------------ the app

class Dashboard {
  #session = null;
  #events = [];
  #socket = null;
  #live = null;
  #expiryTimer = null;

  boot() {
    $("login-form").addEventListener("submit", (e) => {
      e.preventDefault();
      this.#logIn();
    });
    $("logout").addEventListener("click", () => this.#logOut());
    $("event-select").addEventListener("change", (e) => this.#pick(e.target.value));
    $("screen-mode").addEventListener("click", () => this.#toggleScreen());
    document.addEventListener("keydown", (e) => {
      if (e.target instanceof HTMLInputElement || e.target instanceof HTMLSelectElement) return;
      if (e.key === "f" && document.body.dataset.view === "dashboard") this.#toggleScreen();
      if (e.key === "Escape") document.body.classList.remove("screen");
    });
    if (new URLSearchParams(location.search).has("screen")) document.body.classList.add("screen");
    new ResizeObserver(() => this.#live?.redraw()).observe($("chart"));
    const tick = () => {
      $("clock").textContent = shortTimeFmt.format(new Date());
    };
    tick();
    setInterval(tick, 1000);

    const saved = readSession();
    if (!saved) {
      this.#show("login");
      return;
    }
    this.#session = saved;
    this.#start().catch((e) => this.#handleFatal(e));
  }

  async #logIn() {
    const email = $("email").value.trim();
    const password = $("password").value;
    const error = $("login-error");
    error.hidden = true;
    if (!email || !password) {
      showError(error, "Enter your e-mail and password.");
      return;
    }
    const button = $("login");
    button.disabled = true;
    button.textContent = "Logging in…";
    try {
      const data = await gql(
        `mutation DashboardLogIn($email: String!, $password: String!) {
           logIn(email: $email, password: $password) { token expiresAt user { id name role } }
         }`,
        { email, password },
      );
      this.#session = { token: data.logIn.token, expiresAt: data.logIn.expiresAt, user: data.logIn.user };
      sessionStorage.setItem(SESSION_KEY, JSON.stringify(this.#session));
      $("password").value = "";
      await this.#start();
    } catch (e) {
      const messages = {
        UNAUTHENTICATED: "Wrong e-mail or password.",
        RATE_LIMITED: "Too many attempts. Wait a moment and try again.",
      };
      showError(error, messages[e.code] ?? e.message);
    } finally {
      button.disabled = false;
      button.textContent = "Log in";
    }
  }

  async #start() {
    const s = this.#session;
    clearTimeout(this.#expiryTimer);
    const left = Date.parse(s.expiresAt) - Date.now();
    if (!(left > 0)) {
      this.#logOut("Your session has expired. Please log in again.");
      return;
    }
    this.#expiryTimer = setTimeout(
      () => this.#logOut("Your session has expired. Please log in again."),
      Math.min(left, 2 ** 31 - 1),
    );
    // Checks the token too: a server restarted with a new secret refuses it.
    const me = (await gql("query DashboardMe { me { id name role } }", {}, s.token)).me;
    s.user = me;
    $("whoami").textContent = `${me.name} · ${me.role.toLowerCase()}`;
    $("whoami").title = me.name;
    this.#events = await this.#loadEvents(me);
    if (this.#events.length === 0) {
      $("empty-text").textContent =
        me.role === "ATTENDEE"
          ? "The dashboard is for organisers and admins; this account is an attendee's."
          : "Create an event (in the GraphQL playground at /) and it will show here.";
      this.#show("empty");
      return;
    }
    this.#fillPicker();
    this.#socket = new LiveSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/graphql`, s.token);
    this.#socket.onstatus = (state, text) => setStatus(state, text);
    this.#socket.onauthfailure = () => this.#logOut("The server no longer accepts this session. Please log in again.");
    this.#socket.start();
    this.#show("dashboard");
    const wanted = new URLSearchParams(location.hash.slice(1)).get("event") ?? sessionStorage.getItem(EVENT_KEY);
    const initial = this.#events.find((e) => e.id === wanted) ?? this.#events[0];
    $("event-select").value = initial.id;
    this.#pick(initial.id);
  }

  /** The user's events: an organiser's own, every event for an admin. Live ones first. */
  async #loadEvents(me) {
    const filter = me.role === "ADMIN" ? null : { organizerId: me.id };
    const all = [];
    let after = null;
    for (;;) {
      const page = (await gql(EVENTS, { filter, after }, this.#session.token)).events;
      all.push(...page.nodes);
      if (!page.pageInfo.hasNextPage || !page.pageInfo.endCursor) break;
      after = page.pageInfo.endCursor;
    }
    const rank = { ACTIVE: 0, SCHEDULED: 1, ENDED: 2, CANCELLED: 3 };
    return all.sort(
      (a, b) =>
        (rank[a.state] ?? 9) - (rank[b.state] ?? 9) ||
        (a.state === "SCHEDULED" ? Date.parse(a.startsAt) - Date.parse(b.startsAt) : Date.parse(b.startsAt) - Date.parse(a.startsAt)),
    );
  }

  #fillPicker() {
    const select = $("event-select");
    select.replaceChildren(
      ...this.#events.map((ev) => {
        const opt = el("option", "", `${ev.name} · ${STATE_NAMES[ev.state] ?? ev.state}`);
        opt.value = ev.id;
        return opt;
      }),
    );
  }

  #pick(id) {
    const event = this.#events.find((e) => e.id === id);
    if (!event) return;
    sessionStorage.setItem(EVENT_KEY, id);
    history.replaceState(null, "", `#event=${encodeURIComponent(id)}`);
    this.#live?.stop();
    hideBanner();
    $("event-name").textContent = event.name;
    $("event-meta").textContent = eventMeta(event);
    document.title = `${event.name} · Rollcall`;
    $("checkins").replaceChildren();
    $("checkins").dataset.delivered = "0";
    for (const id of ["stat-checked-in", "stat-present", "stat-registered"]) $(id).textContent = "–";
    document.body.dataset.eventId = id;
    this.#live = new EventLive(event, this.#socket, { liveFailed: (code, message) => this.#liveFailed(code, message) });
    this.#live.start();
  }

  #liveFailed(code, message) {
    if (code === "UNAUTHENTICATED") {
      this.#logOut("Your session has expired. Please log in again.");
      return;
    }
    this.#live?.stop();
    this.#live = null;
    const texts = {
      FORBIDDEN: "You can't follow this event: only its organiser or an admin can.",
      NOT_FOUND: "This event no longer exists.",
    };
    showBanner(texts[code] ?? `Live updates are not available: ${message}`);
    setStatus("error", code === "FORBIDDEN" ? "Forbidden" : "Not live");
  }

  #logOut(message) {
    clearTimeout(this.#expiryTimer);
    this.#live?.stop();
    this.#live = null;
    this.#socket?.stop();
    this.#socket = null;
    this.#session = null;
    sessionStorage.removeItem(SESSION_KEY);
    document.body.classList.remove("screen");
    setStatus("idle", "Not connected");
    hideBanner();
    const error = $("login-error");
    if (message) showError(error, message);
    else error.hidden = true;
    this.#show("login");
  }

  #handleFatal(e) {
    if (e instanceof ApiError && e.code === "UNAUTHENTICATED") {
      this.#logOut("Your session has expired. Please log in again.");
    } else {
      this.#show("login");
      showError($("login-error"), e.message ?? String(e));
    }
  }

  #toggleScreen() {
    const on = document.body.classList.toggle("screen");
    if (on) document.documentElement.requestFullscreen?.().catch(() => {});
    else if (document.fullscreenElement) document.exitFullscreen().catch(() => {});
    this.#live?.redraw();
  }

  #show(view) {
    document.body.dataset.view = view;
    if (view === "login") $("email").focus();
  }
}

function readSession() {
  try {
    const s = JSON.parse(sessionStorage.getItem(SESSION_KEY) ?? "null");
    return s?.token && s?.expiresAt ? s : null;
  } catch {
    return null;
  }
}

function setStatus(state, text) {
  $("connection").dataset.state = state;
  $("connection-text").textContent = text;
}

function showError(node, text) {
  node.textContent = text;
  node.hidden = false;
}

function showBanner(text) {
  showError($("banner"), text);
}

function hideBanner() {
  $("banner").hidden = true;
}

new Dashboard().boot();
