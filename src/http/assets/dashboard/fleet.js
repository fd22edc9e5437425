// The event's scanner fleet on the dashboard: every scanner whose key may
// report for the event, when the server last heard from it, the BLE adverts
// it heard per minute and the sightings waiting in its outbox. Read from
// `scanners(eventId)` over HTTP when the event is picked and every
// REFRESH_MS after. A stale scanner (not heard from) or a silent one (heard,
// but deaf while others at the event hear people) gets the `warn` class and
// says why in words, so the colour is never the only sign.

import { ApiError, gql } from "/assets/shared/api.js";
import { el, numFmt, whenText } from "/assets/shared/format.js";

/** How often the fleet is read again. */
const REFRESH_MS = 10_000;

const FLEET = `query DashboardFleet($e: ID!) {
  scanners(eventId: $e) { apiKey { id } name lastHeardAt advertsPerMinute outboxDepth stale silent }
}`;

const $ = (id) => document.getElementById(id);

/** The fleet panel of one event: reads and draws it until stopped. */
export class FleetPanel {
  #eventId;
  #token;
  #timer = null;
  #stopped = false;
  #onAuthFailure;

  constructor(eventId, token, { onAuthFailure }) {
    this.#eventId = eventId;
    this.#token = token;
    this.#onAuthFailure = onAuthFailure;
  }

  start() {
    $("fleet-list").replaceChildren();
    $("fleet-summary").textContent = "";
    $("fleet-note").hidden = true;
    this.#refresh();
  }

  stop() {
    this.#stopped = true;
    clearTimeout(this.#timer);
  }

  async #refresh() {
    try {
      const { scanners } = await gql(FLEET, { e: this.#eventId }, this.#token);
      if (this.#stopped) return;
      draw(scanners);
    } catch (e) {
      if (this.#stopped) return;
      if (e instanceof ApiError && e.code === "UNAUTHENTICATED") {
        this.#onAuthFailure();
        return;
      }
      // Keep the last good picture; say it is not current.
      note(`Could not read the scanners: ${e.message ?? e}. Trying again.`);
    }
    if (!this.#stopped) this.#timer = setTimeout(() => this.#refresh(), REFRESH_MS);
  }
}

/** Draws the fleet, those needing a look first. */
function draw(scanners) {
  const rows = scanners
    .map((s) => ({ ...s, problem: problemOf(s) }))
    .sort((a, b) => Number(Boolean(b.problem)) - Number(Boolean(a.problem)) || a.name.localeCompare(b.name));
  $("fleet-list").replaceChildren(...rows.map(row));
  const troubled = rows.filter((r) => r.problem).length;
  $("fleet-summary").textContent =
    rows.length === 0
      ? ""
      : `${rows.length} ${rows.length === 1 ? "scanner" : "scanners"}` + (troubled ? ` · ${troubled} need a look` : " · all well");
  if (rows.length === 0) note("No scanner key may report for this event yet: issue one in the console.");
  else $("fleet-note").hidden = true;
}

function note(text) {
  $("fleet-note").textContent = text;
  $("fleet-note").hidden = false;
}

/** What is wrong with a scanner, in words, or null. */
function problemOf(s) {
  if (s.stale) return s.lastHeardAt ? "Not heard from lately" : "Never heard from";
  if (s.silent) return "Hears nothing while others do";
  return null;
}

function row(s) {
  const li = el("li", s.problem ? "fleet-item warn" : "fleet-item");
  li.dataset.key = s.apiKey.id;
  li.dataset.state = s.stale ? "stale" : s.silent ? "silent" : "ok";
  const head = el("div", "fleet-head");
  head.append(el("span", "fleet-dot"), el("span", "fleet-name", s.name), el("span", "fleet-state", s.problem ?? "OK"));
  const facts = el("dl", "fleet-facts");
  const fact = (term, value) => {
    const pair = el("div");
    pair.append(el("dt", "", term), el("dd", "", value));
    facts.append(pair);
    return pair;
  };
  const heard = s.lastHeardAt ? new Date(s.lastHeardAt) : null;
  const lastHeard = fact("Last heard", heard ? agoText(heard) : "never");
  if (heard) lastHeard.title = whenText(heard);
  fact("Adverts / min", s.advertsPerMinute == null ? "–" : numFmt.format(s.advertsPerMinute));
  fact("Outbox", s.outboxDepth == null ? "–" : numFmt.format(s.outboxDepth));
  li.append(head, facts);
  return li;
}

/** "just now", "40 s ago", "3 min ago", "2 h ago", or the date and time. */
function agoText(date) {
  const secs = Math.max(0, Math.round((Date.now() - date.getTime()) / 1000));
  if (secs < 5) return "just now";
  if (secs < 60) return `${secs} s ago`;
  if (secs < 3600) return `${Math.floor(secs / 60)} min ago`;
  if (secs < 24 * 3600) return `${Math.floor(secs / 3600)} h ago`;
  return whenText(date);
}
