// An event's attendees: every registration joined with its attendance
// (check-in time, dwell, present now), searchable; registering someone by
// e-mail, cancelling or reinstating a registration, and a manual check-in
// (`recordAttendance`) and undo of a manual one (`undoManualCheckIn`).

import { timeFmt, whenText } from "/assets/shared/format.js";
import { busy, clearFormError, describeError, duration, formAlert, h, showFormError, table, toast } from "./ui.js";

const REGISTRATIONS = `query ConsoleRegistrations($id: ID!, $after: String) {
  event(id: $id) { registrations(first: 500, after: $after) {
    pageInfo { hasNextPage endCursor }
    nodes { status walkIn registeredAt user { id name email } }
  } }
}`;
const ATTENDANCE = `query ConsoleAttendance($id: ID!, $after: String) {
  attendance(eventId: $id, first: 500, after: $after) {
    pageInfo { hasNextPage endCursor }
    nodes { checkedInAt lastSeen dwellSeconds presentNow sightings manual user { id name email } }
  }
}`;

/** Follows a connection's pages to the end. */
export async function all(fetchPage) {
  const out = [];
  let after = null;
  for (;;) {
    const page = await fetchPage(after);
    out.push(...page.nodes);
    if (!page.pageInfo.hasNextPage || !page.pageInfo.endCursor) return out;
    after = page.pageInfo.endCursor;
  }
}

/** Registrations and attendance, one row per person. */
export async function loadPeople(ctx, eventId) {
  const [regs, seen] = await Promise.all([
    all(async (after) => (await ctx.api(REGISTRATIONS, { id: eventId, after })).event.registrations),
    all(async (after) => (await ctx.api(ATTENDANCE, { id: eventId, after })).attendance),
  ]);
  const people = new Map();
  for (const r of regs) if (r.user) people.set(r.user.id, { user: r.user, registration: r, attendance: null });
  for (const a of seen) {
    if (!a.user) continue;
    const row = people.get(a.user.id) ?? { user: a.user, registration: null, attendance: null };
    row.attendance = a;
    people.set(a.user.id, row);
  }
  return [...people.values()].sort((a, b) => a.user.name.localeCompare(b.user.name));
}

export async function render(ctx, root, event) {
  const people = await loadPeople(ctx, event.id);
  const search = h("input", { id: "attendee-search", type: "search", placeholder: "Name or e-mail", autocomplete: "off" });
  const summary = h("p", { class: "muted", id: "attendee-summary", role: "status" });
  const list = h("div", { id: "attendee-list" });

  const reload = async () => {
    const fresh = await loadPeople(ctx, event.id);
    people.splice(0, people.length, ...fresh);
    draw();
  };

  const action = (label, busyText, work, done) => {
    const button = h("button", { type: "button", class: "small ghost" }, label);
    button.addEventListener("click", async () => {
      try {
        await busy(button, busyText, work);
        toast(done);
        await reload();
      } catch (e) {
        toast(describeError(e), "error");
      }
    });
    return button;
  };

  const rowOf = ({ user, registration, attendance }) => {
    const registered = registration?.status === "REGISTERED";
    const regText = !registration ? "Not registered" : registration.status === "CANCELLED" ? "Cancelled" : registration.walkIn ? "Walk-in" : "Registered";
    const actions = [];
    if (!attendance && registered) {
      actions.push(
        action(
          "Check in",
          "Checking in…",
          () => ctx.api("mutation($e: ID!, $u: ID!) { recordAttendance(eventId: $e, userId: $u) { checkedInAt } }", { e: event.id, u: user.id }),
          `${user.name} is checked in.`,
        ),
      );
    }
    if (attendance?.manual) {
      actions.push(
        action(
          "Undo check-in",
          "Undoing…",
          () => ctx.api("mutation($e: ID!, $u: ID!) { undoManualCheckIn(eventId: $e, userId: $u) }", { e: event.id, u: user.id }),
          `${user.name}'s manual check-in is undone.`,
        ),
      );
    }
    if (registered) {
      actions.push(
        action(
          "Cancel registration",
          "Cancelling…",
          () => ctx.api("mutation($e: ID!, $u: ID!) { cancelRegistration(eventId: $e, userId: $u) { status } }", { e: event.id, u: user.id }),
          `${user.name}'s registration is cancelled.`,
        ),
      );
    } else {
      actions.push(
        action(
          "Register",
          "Registering…",
          () => ctx.api("mutation($e: ID!, $u: ID!) { registerForEvent(eventId: $e, userId: $u) { status } }", { e: event.id, u: user.id }),
          `${user.name} is registered.`,
        ),
      );
    }
    for (const b of actions) b.setAttribute("aria-label", `${b.textContent}: ${user.name}`);
    return h(
      "tr",
      { dataset: { userId: user.id, checkedIn: attendance ? "yes" : "no" } },
      h("td", {}, h("span", { class: "strong name" }, user.name), h("div", { class: "muted small" }, user.email ?? "")),
      h("td", {}, regText),
      h("td", {}, attendance ? h("time", { datetime: attendance.checkedInAt, title: new Date(attendance.checkedInAt).toLocaleString() }, whenText(new Date(attendance.checkedInAt))) : h("span", { class: "muted" }, "Not yet")),
      h("td", { class: "num" }, attendance ? duration(attendance.dwellSeconds) : "–"),
      h("td", {}, attendance?.presentNow ? h("span", { class: "badge present" }, "Here now") : attendance ? h("span", { class: "muted" }, `left ${timeFmt.format(new Date(attendance.lastSeen))}`) : ""),
      h("td", { class: "row-actions" }, actions),
    );
  };

  const draw = () => {
    const q = search.value.trim().toLowerCase();
    const shown = people.filter((p) => !q || p.user.name.toLowerCase().includes(q) || (p.user.email ?? "").toLowerCase().includes(q));
    const registered = people.filter((p) => p.registration?.status === "REGISTERED").length;
    const checkedIn = people.filter((p) => p.attendance).length;
    const present = people.filter((p) => p.attendance?.presentNow).length;
    summary.textContent = `${registered} registered · ${checkedIn} checked in · ${present} here now${q ? ` · ${shown.length} match “${search.value.trim()}”` : ""}`;
    if (people.length === 0) {
      list.replaceChildren(h("p", { class: "empty-state" }, "Nobody is registered yet. Register someone above, or import a CSV file on the Import tab."));
      return;
    }
    list.replaceChildren(table(["Person", "Registration", "Checked in", "Dwell", "Now", "Actions"], shown.map(rowOf), "Attendees"));
  };
  search.addEventListener("input", draw);

  // Register someone who has an account, by e-mail.
  const email = h("input", { id: "register-email", type: "email", autocomplete: "off", required: true, "aria-describedby": "register-hint" });
  const alert = formAlert();
  const submit = h("button", { type: "submit", class: "primary" }, "Register");
  const form = h(
    "form",
    { class: "inline-form", id: "register-form", novalidate: true },
    h("label", { for: "register-email" }, "Register someone by e-mail"),
    h("div", { class: "row" }, email, submit),
    h("p", { class: "hint", id: "register-hint" }, "They need an account already; to create accounts, import a CSV file on the Import tab."),
    alert,
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    clearFormError(alert);
    const address = email.value.trim();
    if (!address) {
      showFormError(alert, "Enter the person's e-mail address.");
      email.focus();
      return;
    }
    try {
      const name = await busy(submit, "Registering…", async () => {
        const user = (await ctx.api("query($e: String!) { userByEmail(email: $e) { id name } }", { e: address })).userByEmail;
        if (!user) throw new Error(`No account has the e-mail ${address}. Check the spelling, or import them with a CSV file on the Import tab.`);
        await ctx.api("mutation($e: ID!, $u: ID!) { registerForEvent(eventId: $e, userId: $u) { status } }", { e: event.id, u: user.id });
        return user.name;
      });
      toast(`${name} is registered.`);
      email.value = "";
      await reload();
    } catch (err) {
      showFormError(alert, err);
    }
  });

  root.replaceChildren(
    h("div", { class: "panel" }, form),
    h("div", { class: "toolbar", role: "search" }, h("label", { class: "inline" }, h("span", {}, "Search"), search)),
    summary,
    list,
  );
  draw();
  return undefined;
}
