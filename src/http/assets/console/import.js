// Importing attendees from a CSV file into an event. The server judges the
// file by the same rules as `rollcall import users` (`importAttendees`):
// first with `dryRun: true`, whose answer is the preview (each row, and
// each bad row's reason), and only when the organiser confirms, for real.

import { busy, clearFormError, describeError, formAlert, h, showFormError, table, toast } from "./ui.js";

const IMPORT = `mutation ConsoleImport($csv: String!, $eventId: ID, $dryRun: Boolean!) {
  importAttendees(csv: $csv, eventId: $eventId, dryRun: $dryRun) {
    dryRun created existing registered
    rows { line email name eventId }
    refused { line reason }
  }
}`;

export function render(ctx, root, event) {
  const file = h("input", { id: "import-file", type: "file", accept: ".csv,text/csv", "aria-describedby": "import-hint" });
  const forced = h("input", { id: "import-forced", type: "checkbox", checked: true });
  const alert = formAlert();
  const check = h("button", { type: "submit", class: "primary", id: "import-check" }, "Check the file");
  const confirm = h("button", { type: "button", class: "primary", id: "import-confirm", hidden: true }, "Import");
  const preview = h("section", { id: "import-preview", "aria-live": "polite" });
  let text = null;

  const reset = () => {
    preview.replaceChildren();
    confirm.hidden = true;
    clearFormError(alert);
  };
  file.addEventListener("change", reset);
  forced.addEventListener("change", reset);

  const run = (dryRun) =>
    ctx.api(IMPORT, { csv: text, eventId: forced.checked ? event.id : null, dryRun }).then((d) => d.importAttendees);

  const form = h(
    "form",
    { class: "panel form", id: "import-form", novalidate: true },
    h("h2", {}, "Import attendees from a CSV file"),
    h(
      "p",
      { class: "hint", id: "import-hint" },
      "One row per registration: email,name and, optionally, bleUuid (for badges handed out already) and eventId. A header row may name the columns in another order. " +
        "Someone registered for several events has one row per event. People who already have an account are kept as they are. Nothing is written until you confirm the preview.",
    ),
    h("div", { class: "field" }, h("label", { for: "import-file" }, "CSV file"), file),
    h("div", { class: "field check" }, forced, h("label", { for: "import-forced" }, `Register everyone for “${event.name}”`), h("p", { class: "hint" }, "Untick to use each row's eventId column instead (events you run).")),
    alert,
    h("div", { class: "form-actions" }, check),
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    reset();
    const chosen = file.files?.[0];
    if (!chosen) {
      showFormError(alert, "Choose a CSV file first.");
      file.focus();
      return;
    }
    try {
      text = await chosen.text();
      const result = await busy(check, "Checking…", () => run(true));
      showPreview(result, chosen.name);
    } catch (err) {
      showFormError(alert, err);
    }
  });

  const showPreview = (result, name) => {
    const lines = text.split(/\r\n|\n|\r/);
    const rows = [
      ...result.rows.map((r) => ({ line: r.line, ok: true, cells: [r.email, r.name], note: r.eventId ? (r.eventId === event.id ? "Register for this event" : `Register for event ${r.eventId}`) : "Account only" })),
      ...result.refused.map((r) => ({ line: r.line, ok: false, cells: [lines[r.line - 1] ?? "", ""], note: r.reason })),
    ].sort((a, b) => a.line - b.line);
    const good = result.rows.length;
    const bad = result.refused.length;
    const summary = `${name}: ${good} row${good === 1 ? "" : "s"} can be imported (${result.created} new account${result.created === 1 ? "" : "s"}, ${result.existing} already known, ${result.registered} new registration${result.registered === 1 ? "" : "s"}); ${bad} row${bad === 1 ? "" : "s"} refused.`;
    preview.replaceChildren(
      h("h2", {}, "Preview: nothing is written yet"),
      h("p", { id: "import-summary", class: bad ? "warn" : "" }, summary),
      bad ? h("p", { class: "hint" }, "Refused rows are skipped. To import them, fix them in the file and import it again: rows already imported are left as they are.") : null,
      table(
        ["Line", "Row", "", "What happens"],
        rows.map((r) =>
          h(
            "tr",
            { class: r.ok ? "" : "refused", dataset: { line: String(r.line) } },
            h("td", { class: "num" }, String(r.line)),
            h("td", { colspan: r.ok ? null : 2 }, r.ok ? r.cells[0] : h("code", {}, r.cells[0])),
            r.ok ? h("td", {}, r.cells[1]) : null,
            h("td", {}, r.ok ? r.note : h("span", { class: "refused-reason" }, `Refused: ${r.note}`)),
          ),
        ),
        "Rows in the file",
      ),
    );
    confirm.textContent = `Import ${good} row${good === 1 ? "" : "s"}`;
    confirm.hidden = good === 0;
    if (good > 0) preview.append(h("div", { class: "form-actions" }, confirm));
  };

  confirm.addEventListener("click", async () => {
    try {
      const result = await busy(confirm, "Importing…", () => run(false));
      const n = (count, word) => `${count} ${word}${count === 1 ? "" : "s"}`;
      const refused = result.refused.length ? `; ${n(result.refused.length, "row")} refused` : "";
      toast(`Imported: ${n(result.created, "new account")}, ${n(result.registered, "registration")} added${refused}.`);
      confirm.hidden = true;
      preview.prepend(h("p", { class: "done", id: "import-done", role: "status" }, `Done: ${n(result.created, "account")} created, ${n(result.registered, "registration")} added. See them on the Attendees tab.`));
    } catch (err) {
      toast(describeError(err), "error");
    }
  });

  root.replaceChildren(form, preview);
  return undefined;
}
