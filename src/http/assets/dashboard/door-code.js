// Door mode: the dashboard shows the event's check-in QR code, for
// attendees' apps to scan (`checkInWithCode`). The code changes every 30
// seconds; the server renders it as SVG (`doorCode { svg nextAt }`), so the
// page needs nothing from the internet. The SVG is parsed as XML and
// imported as nodes, never written as markup.

import { ApiError, gql } from "/assets/shared/api.js";

const DOOR_CODE = `query DashboardDoorCode($e: ID!) {
  doorCode(eventId: $e) { code svg nextAt slotSeconds }
}`;

/** Fetch a little after the server's next code starts (clocks differ). */
const AFTER_NEXT_MS = 300;
/** After a failure, try again this soon. */
const RETRY_MS = 5000;

const $ = (id) => document.getElementById(id);

/** One event's door code on the page, refreshed while it runs. */
export class DoorCode {
  #eventId;
  #token;
  #onFailed;
  #timer = null;
  #stopped = false;

  constructor(eventId, token, onFailed) {
    this.#eventId = eventId;
    this.#token = token;
    this.#onFailed = onFailed;
  }

  start() {
    this.#refresh();
  }

  stop() {
    this.#stopped = true;
    clearTimeout(this.#timer);
    $("door-qr").replaceChildren();
    $("door-code").textContent = "";
  }

  async #refresh() {
    let wait = RETRY_MS;
    try {
      const { doorCode } = await gql(DOOR_CODE, { e: this.#eventId }, this.#token);
      if (this.#stopped) return;
      show(doorCode);
      // Never longer than one period, whatever this machine's clock says.
      const left = Date.parse(doorCode.nextAt) - Date.now() + AFTER_NEXT_MS;
      wait = Math.min(Math.max(left, 1000), doorCode.slotSeconds * 1000);
    } catch (e) {
      if (this.#stopped) return;
      const code = e instanceof ApiError ? e.code : "INTERNAL";
      if (code !== "NETWORK") {
        this.#onFailed(code, e.message);
        return;
      }
      $("door-code").textContent = "Offline: the code will come back with the network.";
      $("door-qr").replaceChildren();
    }
    this.#timer = setTimeout(() => this.#refresh(), wait);
  }
}

/** Puts the code's QR image and text on the page. */
function show(doorCode) {
  const doc = new DOMParser().parseFromString(doorCode.svg, "image/svg+xml");
  const svg = doc.documentElement;
  if (svg.nodeName !== "svg" || doc.getElementsByTagName("parsererror").length > 0) {
    throw new ApiError("The server sent an unreadable QR code.", "INTERNAL");
  }
  // Sized by the page's CSS; the viewBox keeps its proportions.
  svg.removeAttribute("width");
  svg.removeAttribute("height");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", "Check-in code: scan it with the Rollcall app");
  $("door-qr").replaceChildren(document.importNode(svg, true));
  $("door-qr").dataset.code = doorCode.code;
  $("door-code").textContent = doorCode.code;
}
