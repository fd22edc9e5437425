// Rollcall live dashboard: log in, pick an event, and follow its check-ins
// as they happen. Native ES modules, no dependencies, no build step: they
// are served from the server binary and must work at a venue with no
// internet.
//
// Data flow:
// - `logIn`, `me` and `events` over `POST /graphql` (`/assets/shared/api.js`;
//   the token lives in sessionStorage, so it dies with the tab);
// - `checkIns(eventId, after)` and `eventStats(eventId)` over one WebSocket
//   (`/assets/shared/live-socket.js`), resumed from the last cursor after a
//   drop or a LAGGED error (`/assets/shared/check-ins.js`), drawn by
//   `event-live.js`;
// - the event's scanners, `scanners(eventId)` over HTTP every few seconds,
//   drawn by `fleet.js`;
// - in door mode (button, key D, or `?door`), `doorCode(eventId)` every 30
//   seconds, drawn by `door-code.js`.

import { ApiError, forgetSession, gql, readSession, socketUrl } from "/assets/shared/api.js";
import { bindLogInForm, showError } from "/assets/shared/login.js";
import { el, eventMeta, shortTimeFmt, STATE_NAMES } from "/assets/shared/format.js";
import { LiveSocket } from "/assets/shared/live-socket.js";
import { DoorCode } from "./door-code.js";
import { EventLive } from "./event-live.js";
import { FleetPanel } from "./fleet.js";

// Shared with the console, so its "Door screen" link opens already logged in.
const SESSION_KEY = "rollcall.session";
const EVENT_KEY = "rollcall.dashboard.event";

const EVENTS = `query DashboardEvents($filter: EventFilterInput, $after: String) {
  events(filter: $filter, first: 500, after: $after) {
    pageInfo { hasNextPage endCursor }
    nodes { id name state location startsAt endsAt registeredCount }
  }
}`;

const $ = (id) => document.getElementById(id);

class Dashboard {
  #session = null;
  #events = [];
  #socket = null;
  #live = null;
  #fleet = null;
  #door = null;
  #expiryTimer = null;

  boot() {
    bindLogInForm(SESSION_KEY, (session) => {
      this.#session = session;
      return this.#start();
    });
    $("logout").addEventListener("click", () => this.#logOut());
    $("event-select").addEventListener("change", (e) => this.#pick(e.target.value));
    $("screen-mode").addEventListener("click", () => this.#toggleScreen());
    $("door-mode").addEventListener("click", () => this.#toggleDoor());
    document.addEventListener("keydown", (e) => {
      if (e.target instanceof HTMLInputElement || e.target instanceof HTMLSelectElement) return;
      if (e.key === "f" && document.body.dataset.view === "dashboard") this.#toggleScreen();
      if (e.key === "d" && document.body.dataset.view === "dashboard") this.#toggleDoor();
      if (e.key === "Escape") document.body.classList.remove("screen");
    });
    if (new URLSearchParams(location.search).has("screen")) document.body.classList.add("screen");
    if (new URLSearchParams(location.search).has("door")) document.body.classList.add("door");
    new ResizeObserver(() => this.#live?.redraw()).observe($("chart"));
    const tick = () => {
      $("clock").textContent = shortTimeFmt.format(new Date());
    };
    tick();
    setInterval(tick, 1000);

    const saved = readSession(SESSION_KEY);
    if (!saved) {
      this.#show("login");
      return;
    }
    this.#session = saved;
    this.#start().catch((e) => this.#handleFatal(e));
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
          : "Create an event in the console (/console) and it will show here.";
      this.#show("empty");
      return;
    }
    this.#fillPicker();
    this.#socket = new LiveSocket(socketUrl(), s.token);
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
    this.#fleet?.stop();
    this.#fleet = new FleetPanel(event.id, this.#session.token, {
      onAuthFailure: () => this.#logOut("Your session has expired. Please log in again."),
    });
    this.#fleet.start();
    this.#showDoorCode();
  }

  /** Door mode: the event's check-in QR code, for attendees' apps. */
  #toggleDoor() {
    document.body.classList.toggle("door");
    this.#showDoorCode();
  }

  #showDoorCode() {
    this.#door?.stop();
    this.#door = null;
    const id = document.body.dataset.eventId;
    if (!document.body.classList.contains("door") || !id || !this.#session) return;
    this.#door = new DoorCode(id, this.#session.token, (code, message) => {
      if (code === "UNAUTHENTICATED") this.#logOut("Your session has expired. Please log in again.");
      else showBanner(`The check-in code is not available: ${message}`);
    });
    this.#door.start();
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
    this.#fleet?.stop();
    this.#fleet = null;
    this.#door?.stop();
    this.#door = null;
    this.#socket?.stop();
    this.#socket = null;
    this.#session = null;
    forgetSession(SESSION_KEY);
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

function setStatus(state, text) {
  $("connection").dataset.state = state;
  $("connection-text").textContent = text;
}


function showBanner(text) {
  showError($("banner"), text);
}

function hideBanner() {
  $("banner").hidden = true;
}

new Dashboard().boot();
