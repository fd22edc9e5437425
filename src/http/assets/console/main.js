// Rollcall's organiser console: log in, then run events from the browser
// (events, attendees, CSV import, reports, live check-ins, scanners' API
// keys and, for admins, users). Native ES modules, one per page, over the
// shared GraphQL client in /assets/shared/; no build step, nothing fetched
// from elsewhere, so it works at a venue with no internet.
//
// Routes are hash fragments, so every page has an address and Back works:
//   #/events                      the events list
//   #/events/new                  a new event
//   #/events/<id>/<tab>           one event: attendees, import, report, live, edit
//   #/scanners                    API keys and the scanners' health
//   #/users                       users (admins)
// Each page module exports `render(ctx, root, params)`; it may return a
// function that stops what it started (the live page's subscriptions).

import { ApiError, forgetSession, gql, readSession, socketUrl } from "/assets/shared/api.js";
import { bindLogInForm, showError } from "/assets/shared/login.js";
import { LiveSocket } from "/assets/shared/live-socket.js";
import * as events from "./events.js";
import * as scanners from "./scanners.js";
import * as users from "./users.js";
import { describeError, h } from "./ui.js";

// Shared with the dashboard, so its "Door screen" link opens already logged in.
const SESSION_KEY = "rollcall.session";
const EXPIRED = "Your session has expired. Please log in again.";

const $ = (id) => document.getElementById(id);

class Console {
  #session = null;
  #socket = null;
  #cleanup = null;
  #expiryTimer = null;
  #renderSeq = 0;

  boot() {
    bindLogInForm(SESSION_KEY, (session) => {
      this.#session = session;
      return this.#start();
    });
    $("logout").addEventListener("click", () => this.#logOut());
    window.addEventListener("hashchange", () => this.#route());
    const saved = readSession(SESSION_KEY);
    if (!saved) {
      this.#show("login");
      return;
    }
    this.#session = saved;
    this.#start().catch((e) => this.#fatal(e));
  }

  /** What pages get: the API with this session, the live socket, navigation. */
  get #ctx() {
    return {
      me: this.#session.user,
      token: this.#session.token,
      api: (query, variables) => this.#api(query, variables),
      socket: () => this.#liveSocket(),
      // The live page closes the socket when it goes, so the dot in the bar means "following live".
      closeSocket: () => {
        this.#socket?.stop();
        this.#socket = null;
      },
      go: (hash) => {
        if (location.hash === hash) this.#route();
        else location.hash = hash;
      },
    };
  }

  async #api(query, variables = {}) {
    try {
      return await gql(query, variables, this.#session?.token);
    } catch (e) {
      if (e instanceof ApiError && e.code === "UNAUTHENTICATED" && this.#session) this.#logOut(EXPIRED);
      throw e;
    }
  }

  #liveSocket() {
    if (!this.#socket) {
      this.#socket = new LiveSocket(socketUrl(), this.#session.token);
      this.#socket.onstatus = (state, text) => {
        $("connection").dataset.state = state;
        $("connection-text").textContent = text;
      };
      this.#socket.onauthfailure = () => this.#logOut("The server no longer accepts this session. Please log in again.");
      this.#socket.start();
    }
    return this.#socket;
  }

  async #start() {
    const s = this.#session;
    const left = Date.parse(s.expiresAt) - Date.now();
    if (!(left > 0)) {
      this.#logOut(EXPIRED);
      return;
    }
    clearTimeout(this.#expiryTimer);
    this.#expiryTimer = setTimeout(() => this.#logOut(EXPIRED), Math.min(left, 2 ** 31 - 1));
    // Checks the token too: a server restarted with a new secret refuses it.
    const me = (await gql("query ConsoleMe { me { id name role email } }", {}, s.token)).me;
    s.user = me;
    if (me.role === "ATTENDEE") {
      this.#logOut("The console is for organisers and admins; this account is an attendee's.");
      return;
    }
    $("whoami").textContent = `${me.name} · ${me.role.toLowerCase()}`;
    document.body.dataset.role = me.role;
    this.#show("app");
    if (!location.hash || location.hash === "#" || location.hash === "#/") history.replaceState(null, "", "#/events");
    this.#route();
  }

  /** Renders the page the address names. */
  async #route() {
    if (!this.#session?.user) return;
    this.#cleanup?.();
    this.#cleanup = null;
    const seq = ++this.#renderSeq;
    const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
    const root = $("page");
    root.replaceChildren(h("p", { class: "muted loading" }, "Loading…"));
    root.setAttribute("aria-busy", "true");
    let page = "events";
    let render;
    if (parts[0] === "scanners") {
      page = "scanners";
      render = () => scanners.render(this.#ctx, root);
    } else if (parts[0] === "users") {
      page = "users";
      render = () => users.render(this.#ctx, root);
    } else if (parts[0] === "events" && parts[1] === "new") {
      page = "event-new";
      render = () => events.renderNew(this.#ctx, root);
    } else if (parts[0] === "events" && parts[1]) {
      const tab = parts[2] || "attendees";
      page = `event-${tab}`;
      render = () => events.renderEvent(this.#ctx, root, parts[1], tab);
    } else {
      render = () => events.renderList(this.#ctx, root);
    }
    document.body.dataset.page = page;
    for (const link of document.querySelectorAll("#nav a")) {
      const current = link.dataset.section === page.split("-")[0];
      if (current) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
    try {
      const cleanup = await render();
      if (seq !== this.#renderSeq) {
        cleanup?.();
        return;
      }
      this.#cleanup = cleanup ?? null;
    } catch (e) {
      if (seq !== this.#renderSeq || !this.#session) return;
      root.replaceChildren(
        h("div", { class: "panel" }, h("h1", {}, "This page could not be loaded"), h("p", { class: "form-error" }, describeError(e)), h("p", {}, h("button", { type: "button", class: "ghost", onclick: () => this.#route() }, "Try again"))),
      );
    } finally {
      if (seq === this.#renderSeq) {
        root.removeAttribute("aria-busy");
        document.body.dataset.ready = page;
      }
    }
    // Moves focus to the new page's heading, so keyboard and screen-reader users start there.
    if (seq === this.#renderSeq) $("page-title")?.focus({ preventScroll: true });
  }

  #logOut(message) {
    clearTimeout(this.#expiryTimer);
    this.#cleanup?.();
    this.#cleanup = null;
    this.#socket?.stop();
    this.#socket = null;
    this.#session = null;
    forgetSession(SESSION_KEY);
    $("page").replaceChildren();
    const error = $("login-error");
    if (message) showError(error, message);
    else error.hidden = true;
    this.#show("login");
  }

  #fatal(e) {
    if (e instanceof ApiError && e.code === "UNAUTHENTICATED") this.#logOut(EXPIRED);
    else {
      this.#show("login");
      showError($("login-error"), describeError(e));
    }
  }

  #show(view) {
    document.body.dataset.view = view;
    if (view === "login") $("email").focus();
  }
}


new Console().boot();
