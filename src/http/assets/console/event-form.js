// Creating and editing an event, with the attendance policy explained in
// plain words beside each setting. On an error the form keeps what was
// typed and says what to fix.

import { busy, clearFormError, field, formAlert, h, localInputValue, showFormError, toast } from "./ui.js";

const DEFAULT_POLICY = { minRssi: -90, departureGapSeconds: 300, graceSeconds: 900, requireRegistration: true };

/** Draws the form into `root`; `event` is null for a new one. */
export function render(ctx, root, event) {
  const p = event?.policy ?? DEFAULT_POLICY;
  const inAnHour = new Date(Date.now() + 3600_000);
  inAnHour.setMinutes(0, 0, 0);
  const f = {
    name: field({ label: "Name", name: "name", value: event?.name, attrs: { required: true, maxlength: 200, autocomplete: "off" } }),
    description: field({ label: "Description", name: "description", type: "textarea", value: event?.description ?? "", hint: "Optional. Shown to attendees in the app." }),
    location: field({ label: "Place", name: "location", value: event?.location ?? "", hint: "Optional: the room or venue." }),
    startsAt: field({
      label: "Starts",
      name: "startsAt",
      type: "datetime-local",
      value: localInputValue(event?.startsAt ?? inAnHour.toISOString()),
      attrs: { required: true },
      hint: "In your local time.",
    }),
    endsAt: field({
      label: "Ends",
      name: "endsAt",
      type: "datetime-local",
      value: localInputValue(event?.endsAt ?? new Date(inAnHour.getTime() + 2 * 3600_000).toISOString()),
      attrs: { required: true },
    }),
    minRssi: field({
      label: "Weakest signal that counts (dBm)",
      name: "minRssi",
      type: "number",
      value: p.minRssi,
      attrs: { min: -127, max: 20, step: 1, required: true },
      hint: "A phone is heard only if its signal is at least this strong. −90 counts someone anywhere in a large room; −70 only people close to a scanner (use it when the scanner sits by a door and the corridor is busy).",
    }),
    gap: field({
      label: "A stay ends after this many minutes unheard",
      name: "departureGap",
      type: "number",
      value: Math.round(p.departureGapSeconds / 60),
      attrs: { min: 1, max: 1440, step: 1, required: true },
      hint: "If nobody hears a person for this long, they have left: their stay ends. Coming back later starts a new stay, never a second check-in. Dwell time is the sum of the stays.",
    }),
    grace: field({
      label: "Grace before and after (minutes)",
      name: "grace",
      type: "number",
      value: Math.round(p.graceSeconds / 60),
      attrs: { min: 0, max: 1440, step: 1, required: true },
      hint: "Sightings this long before the start or after the end still count, so early arrivals are checked in. The event's times are never stretched beyond this.",
    }),
    requireRegistration: field({
      label: "Only registered people are checked in",
      name: "requireRegistration",
      type: "checkbox",
      value: p.requireRegistration,
      hint: "Untick to welcome walk-ins: anyone with the app whom a scanner hears is registered and checked in.",
    }),
  };
  const alert = formAlert();
  const submit = h("button", { type: "submit", class: "primary", id: "event-save" }, event ? "Save changes" : "Create event");
  const form = h(
    "form",
    { class: "panel form", id: "event-form", novalidate: true },
    alert,
    h("fieldset", {}, h("legend", {}, "The event"), f.name.wrap, f.description.wrap, f.location.wrap, h("div", { class: "row" }, f.startsAt.wrap, f.endsAt.wrap)),
    h("fieldset", {}, h("legend", {}, "How attendance is taken"), f.minRssi.wrap, f.gap.wrap, f.grace.wrap, f.requireRegistration.wrap),
    h("div", { class: "form-actions" }, submit, h("a", { class: "button ghost", href: event ? `#/events/${encodeURIComponent(event.id)}` : "#/events" }, "Back without saving")),
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    clearFormError(alert);
    const name = f.name.input.value.trim();
    const starts = new Date(f.startsAt.input.value);
    const ends = new Date(f.endsAt.input.value);
    const num = (input) => Number.parseInt(input.value, 10);
    const problems = [];
    if (!name) problems.push([f.name.input, "Give the event a name."]);
    if (Number.isNaN(starts.getTime())) problems.push([f.startsAt.input, "Enter when the event starts."]);
    if (Number.isNaN(ends.getTime())) problems.push([f.endsAt.input, "Enter when the event ends."]);
    else if (!(ends > starts)) problems.push([f.endsAt.input, "The end must come after the start."]);
    for (const [input, what] of [
      [f.minRssi.input, "The weakest signal must be a whole number between −127 and 20."],
      [f.gap.input, "The stay gap must be at least one minute."],
      [f.grace.input, "The grace must be 0 minutes or more."],
    ]) {
      if (!input.checkValidity() || Number.isNaN(num(input))) problems.push([input, what]);
    }
    for (const input of form.querySelectorAll("[aria-invalid]")) input.removeAttribute("aria-invalid");
    if (problems.length) {
      for (const [input] of problems) input.setAttribute("aria-invalid", "true");
      showFormError(alert, problems.map(([, text]) => text).join(" "));
      problems[0][0].focus();
      return;
    }
    const input = {
      name,
      description: f.description.input.value.trim(),
      location: f.location.input.value.trim(),
      startsAt: starts.toISOString(),
      endsAt: ends.toISOString(),
      policy: {
        minRssi: num(f.minRssi.input),
        departureGapSeconds: num(f.gap.input) * 60,
        graceSeconds: num(f.grace.input) * 60,
        requireRegistration: f.requireRegistration.input.checked,
      },
    };
    try {
      const saved = await busy(submit, event ? "Saving…" : "Creating…", async () => {
        if (event) {
          return (await ctx.api("mutation($id: ID!, $input: UpdateEventInput!) { updateEvent(id: $id, input: $input) { id name } }", { id: event.id, input })).updateEvent;
        }
        if (!input.description) delete input.description;
        if (!input.location) delete input.location;
        return (await ctx.api("mutation($input: CreateEventInput!) { createEvent(input: $input) { id name } }", { input })).createEvent;
      });
      toast(event ? `Saved “${saved.name}”.` : `Created “${saved.name}”. Activate it when the doors open.`);
      ctx.go(`#/events/${encodeURIComponent(saved.id)}/attendees`);
    } catch (err) {
      showFormError(alert, err);
    }
  });
  root.append(form);
  return undefined;
}
