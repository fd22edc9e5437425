// The events list (search, state filter, sort with upcoming first) and one
// event's page: its heading, the life-cycle actions (activate, end, cancel,
// delete) and the tabs that the other modules draw.

import { eventWhen } from "/assets/shared/format.js";
import * as attendees from "./attendees.js";
import * as eventForm from "./event-form.js";
import * as importPage from "./import.js";
import * as live from "./live.js";
import * as reports from "./reports.js";
import { busy, confirmAction, describeError, h, pageHead, stateBadge, table, toast } from "./ui.js";

export const EVENT_FIELDS = `id name description location startsAt endsAt state registeredCount
  policy { minRssi departureGapSeconds graceSeconds requireRegistration } organizer { id name }`;

const LIST = `query ConsoleEvents($filter: EventFilterInput, $after: String) {
  events(filter: $filter, first: 500, after: $after) {
    pageInfo { hasNextPage endCursor }
    nodes { id name location startsAt endsAt state registeredCount }
  }
}`;

/** Every event the organiser runs (every event, for an admin). */
export async function loadEvents(ctx) {
  const filter = ctx.me.role === "ADMIN" ? null : { organizerId: ctx.me.id };
  const all = [];
  let after = null;
  for (;;) {
    const page = (await ctx.api(LIST, { filter, after })).events;
    all.push(...page.nodes);
    if (!page.pageInfo.hasNextPage || !page.pageInfo.endCursor) return all;
    after = page.pageInfo.endCursor;
  }
}

const RANK = { ACTIVE: 0, SCHEDULED: 1, ENDED: 2, CANCELLED: 3 };
const SORTS = {
  upcoming: [
    "Upcoming first",
    (a, b) =>
      RANK[a.state] - RANK[b.state] ||
      (a.state === "SCHEDULED" || a.state === "ACTIVE"
        ? Date.parse(a.startsAt) - Date.parse(b.startsAt)
        : Date.parse(b.startsAt) - Date.parse(a.startsAt)),
  ],
  newest: ["Latest start first", (a, b) => Date.parse(b.startsAt) - Date.parse(a.startsAt)],
  name: ["Name (A–Z)", (a, b) => a.name.localeCompare(b.name)],
  registered: ["Most registered", (a, b) => b.registeredCount - a.registeredCount],
};

export async function renderList(ctx, root) {
  const events = await loadEvents(ctx);
  const search = h("input", { id: "event-search", type: "search", placeholder: "Name or place", autocomplete: "off" });
  const state = h(
    "select",
    { id: "event-state" },
    h("option", { value: "" }, "All states"),
    ["ACTIVE", "SCHEDULED", "ENDED", "CANCELLED"].map((s) => h("option", { value: s }, stateBadge(s).textContent)),
  );
  const sort = h("select", { id: "event-sort" }, Object.entries(SORTS).map(([k, [text]]) => h("option", { value: k }, text)));
  const list = h("div", { id: "event-list" });
  const count = h("p", { class: "muted", id: "event-count", role: "status" });

  const draw = () => {
    const q = search.value.trim().toLowerCase();
    const shown = events
      .filter((e) => !state.value || e.state === state.value)
      .filter((e) => !q || e.name.toLowerCase().includes(q) || (e.location ?? "").toLowerCase().includes(q))
      .sort(SORTS[sort.value][1]);
    count.textContent = `${shown.length} of ${events.length} events`;
    if (events.length === 0) {
      list.replaceChildren(
        h("div", { class: "empty-state" }, h("p", {}, "No events yet."), h("a", { class: "button primary", href: "#/events/new" }, "Create your first event")),
      );
      return;
    }
    if (shown.length === 0) {
      list.replaceChildren(h("p", { class: "empty-state" }, "No event matches. Clear the search or pick another state."));
      return;
    }
    list.replaceChildren(
      table(
        ["Event", "When", "State", "Registered"],
        shown.map((e) =>
          h(
            "tr",
            { dataset: { eventId: e.id } },
            h("td", {}, h("a", { href: `#/events/${encodeURIComponent(e.id)}`, class: "strong" }, e.name), e.location ? h("div", { class: "muted small" }, e.location) : null),
            h("td", {}, eventWhen(e)),
            h("td", {}, stateBadge(e.state)),
            h("td", { class: "num" }, String(e.registeredCount)),
          ),
        ),
        "Your events",
      ),
    );
  };
  for (const control of [search, state, sort]) control.addEventListener("input", draw);

  root.replaceChildren(
    pageHead(
      "Events",
      ctx.me.role === "ADMIN" ? "Every event on this server." : "The events you run.",
      h("a", { class: "button primary", href: "#/events/new", id: "new-event" }, "New event"),
    ),
    h(
      "div",
      { class: "toolbar", role: "search" },
      h("label", { class: "inline" }, h("span", {}, "Search"), search),
      h("label", { class: "inline" }, h("span", {}, "State"), state),
      h("label", { class: "inline" }, h("span", {}, "Sort"), sort),
    ),
    count,
    list,
  );
  draw();
}

export async function renderNew(ctx, root) {
  root.replaceChildren(pageHead("New event", "It starts as Scheduled; activate it when the doors open."));
  eventForm.render(ctx, root, null);
}

const TABS = [
  ["attendees", "Attendees"],
  ["import", "Import"],
  ["live", "Live"],
  ["report", "Report"],
  ["edit", "Edit"],
];

/** One event: heading, actions, tabs, and the chosen tab's content. */
export async function renderEvent(ctx, root, id, tab) {
  const data = await ctx.api(`query ConsoleEvent($id: ID!) { event(id: $id) { ${EVENT_FIELDS} } }`, { id });
  const event = data.event;
  if (!event) {
    root.replaceChildren(pageHead("No such event", "It may have been deleted."), h("a", { href: "#/events" }, "Back to the events"));
    return undefined;
  }
  document.title = `${event.name} · Rollcall console`;
  const body = h("div", { class: "tab-body", id: "tab-body", role: "tabpanel", "aria-labelledby": `tab-${tab}` });
  root.replaceChildren(
    h("p", { class: "crumbs" }, h("a", { href: "#/events" }, "← All events")),
    pageHead(event.name, [eventWhen(event), event.location].filter(Boolean).join(" · "), ...lifecycleButtons(ctx, event)),
    h(
      "nav",
      { class: "tabs", "aria-label": "Event sections" },
      TABS.map(([key, text]) =>
        h("a", { href: `#/events/${encodeURIComponent(id)}/${key}`, id: `tab-${key}`, "aria-current": key === tab ? "page" : null }, text),
      ),
    ),
    body,
  );
  root.querySelector(".page-head h1").after(stateBadge(event.state));
  const pages = { attendees, import: importPage, live, report: reports };
  if (tab === "edit") return eventForm.render(ctx, body, event);
  return (pages[tab] ?? attendees).render(ctx, body, event);
}

/** The buttons that move the event along its life cycle, as its state allows. */
function lifecycleButtons(ctx, event) {
  const act = (label, mutation, confirmWith, done) => {
    const button = h("button", { type: "button", class: "ghost", id: `event-${mutation}` }, label);
    button.addEventListener("click", async () => {
      if (confirmWith && !(await confirmAction(confirmWith))) return;
      try {
        await busy(button, `${label}…`, () => ctx.api(`mutation($id: ID!) { ${mutation}(id: $id) { id state } }`, { id: event.id }));
        toast(done);
        ctx.go(`#/events/${encodeURIComponent(event.id)}/${mutation === "activateEvent" ? "live" : "attendees"}`);
      } catch (e) {
        toast(describeError(e), "error");
      }
    });
    return button;
  };
  const buttons = [];
  if (event.state === "SCHEDULED") {
    buttons.push(act("Activate", "activateEvent", null, `“${event.name}” is live: scanners' sightings now count.`));
  }
  if (event.state === "SCHEDULED" || event.state === "ACTIVE") {
    buttons.push(
      act(
        "End",
        "endEvent",
        {
          title: `End “${event.name}”?`,
          lines: ["Attendance stops being taken for good: an ended event cannot be activated again.", "Sightings that scanners upload late still count if they were made during the event."],
          confirm: "End the event",
        },
        `“${event.name}” has ended.`,
      ),
      act(
        "Cancel event",
        "cancelEvent",
        {
          title: `Cancel “${event.name}”?`,
          lines: ["The event is called off and takes no attendance. Registrations stay, so people can be told.", "A cancelled event cannot be activated again."],
          confirm: "Cancel the event",
          danger: true,
        },
        `“${event.name}” is cancelled.`,
      ),
    );
  }
  const del = h("button", { type: "button", class: "danger-ghost", id: "event-delete" }, "Delete");
  del.addEventListener("click", async () => {
    const ok = await confirmAction({
      title: `Delete “${event.name}”?`,
      lines: [
        "This erases, for good:",
        ["the event and its settings", `its ${event.registeredCount} registrations`, "its attendance: every check-in, stay and dwell time"],
        "The people's accounts are kept. This cannot be undone; download the report's CSV first if you need it.",
      ],
      confirm: "Delete the event",
      danger: true,
    });
    if (!ok) return;
    try {
      await busy(del, "Deleting…", () => ctx.api("mutation($id: ID!) { deleteEvent(id: $id) }", { id: event.id }));
      toast(`“${event.name}” was deleted.`);
      ctx.go("#/events");
    } catch (e) {
      toast(describeError(e), "error");
    }
  });
  buttons.push(del);
  return buttons;
}
