// The event's check-ins as they arrive, through the same `checkIns` and
// `eventStats` subscriptions (and the same resume-from-cursor feed) as the
// door-screen dashboard.

import { CheckInFeed, StatsFeed } from "/assets/shared/check-ins.js";
import { hue, initials, numFmt, whenText } from "/assets/shared/format.js";
import { h } from "./ui.js";

/** Rows kept on the page. */
const MAX_ROWS = 300;

export function render(ctx, root, event) {
  const socket = ctx.socket();
  const counters = {
    checkedIn: h("p", { class: "num", id: "live-checked-in" }, "–"),
    present: h("p", { class: "num", id: "live-present" }, "–"),
    registered: h("p", { class: "num", id: "live-registered" }, "–"),
  };
  const list = h("ol", { class: "checkins", id: "live-checkins", "aria-live": "polite", "aria-label": "Check-ins, newest first" });
  const empty = h("p", { class: "muted placeholder", id: "live-empty" }, event.state === "ACTIVE" ? "Waiting for the first arrival…" : "No check-ins. Activate the event so that scanners' sightings count.");
  const banner = h("p", { class: "form-error", role: "alert", hidden: true });
  const seen = new Set();
  let count = 0;

  const feed = new CheckInFeed(socket, event.id, {
    onItem: (item) => {
      if (seen.has(item.cursor)) return;
      seen.add(item.cursor);
      count += 1;
      const avatar = h("span", { class: "avatar", "aria-hidden": "true" }, initials(item.user.name));
      avatar.style.background = `hsl(${hue(item.user.id)} 55% 30%)`; // dark enough for white initials (WCAG AA)
      list.prepend(
        h(
          "li",
          { dataset: { userId: item.user.id, cursor: item.cursor } },
          avatar,
          h("span", { class: "name" }, item.user.name),
          h("time", { class: "time", datetime: item.checkedInAt }, whenText(new Date(item.checkedInAt))),
          h("span", { class: "scanner" }, item.scanner ? `via ${item.scanner}` : "checked in by hand"),
        ),
      );
      while (list.children.length > MAX_ROWS) list.lastElementChild.remove();
      empty.hidden = true;
      if (counters.checkedIn.textContent === "–" || Number(counters.checkedIn.dataset.value ?? 0) < count) {
        counters.checkedIn.textContent = numFmt.format(count);
        counters.checkedIn.dataset.value = String(count);
      }
    },
    onFailed: (code, message) => {
      banner.textContent = code === "FORBIDDEN" ? "Only the event's organiser or an admin can follow it live." : `Live updates stopped: ${message}. Reload the page to try again.`;
      banner.hidden = false;
    },
  });
  const stats = new StatsFeed(socket, event.id, {
    onStats: (s) => {
      const checkedIn = Math.max(s.checkedIn, count);
      counters.checkedIn.textContent = numFmt.format(checkedIn);
      counters.checkedIn.dataset.value = String(checkedIn);
      counters.present.textContent = numFmt.format(s.presentNow);
      counters.registered.textContent = numFmt.format(s.registered);
    },
    onFailed: () => {},
  });

  root.replaceChildren(
    banner,
    h(
      "div",
      { class: "stats" },
      h("article", { class: "stat" }, h("h2", {}, "Checked in"), counters.checkedIn),
      h("article", { class: "stat" }, h("h2", {}, "Here now"), counters.present),
      h("article", { class: "stat" }, h("h2", {}, "Registered"), counters.registered),
    ),
    h(
      "section",
      { class: "panel", "aria-labelledby": "live-title" },
      h("div", { class: "panel-head" }, h("h2", { id: "live-title" }, "Check-ins"), h("a", { href: `/dashboard#event=${encodeURIComponent(event.id)}` }, "Open the door screen")),
      list,
      empty,
    ),
  );
  feed.start();
  stats.start();
  return () => {
    feed.stop();
    stats.stop();
    ctx.closeSocket();
  };
}
