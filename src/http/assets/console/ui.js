// The console's small component kit: building DOM nodes, form fields with
// their hints and errors, buttons that show they are busy, toasts, a
// confirmation dialog, and error messages that say what to do. Text always
// goes in through `textContent`.

/**
 * Makes an element. `props`: `class`, `text`, `on<event>` handlers,
 * `dataset`, and anything else as an attribute (`false`/`null` leave it
 * out). Children may be nodes, strings or `null`.
 */
export function h(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props ?? {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
    else if (key === "value" || key === "checked") node[key] = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

let fieldSeq = 0;

/**
 * A labelled form field with a plain-words hint under it.
 * `opts`: `label`, `name`, `type` (input type, `textarea`, `select` or
 * `checkbox`), `value`, `hint`, `options` (for select: `[value, text]`),
 * and extra input attributes in `attrs`.
 */
export function field({ label, name, type = "text", value = "", hint, options = [], attrs = {} }) {
  const id = `f-${name}-${++fieldSeq}`;
  const hintId = hint ? `${id}-hint` : null;
  const common = { id, name, "aria-describedby": hintId, ...attrs };
  let input;
  if (type === "textarea") input = h("textarea", { ...common, rows: 3 }, value ?? "");
  else if (type === "select")
    input = h(
      "select",
      common,
      options.map(([v, text]) => h("option", { value: v, selected: String(v) === String(value) }, text)),
    );
  else if (type === "checkbox") input = h("input", { ...common, type: "checkbox", checked: Boolean(value) });
  else input = h("input", { ...common, type, value: value ?? "" });
  const labelNode = h("label", { for: id }, label);
  const hintNode = hint ? h("p", { class: "hint", id: hintId }, hint) : null;
  const wrap =
    type === "checkbox"
      ? h("div", { class: "field check" }, input, labelNode, hintNode)
      : h("div", { class: "field" }, labelNode, input, hintNode);
  return { wrap, input };
}

/** Runs `work` with `button` disabled and saying `busyText`; restores it after. */
export async function busy(button, busyText, work) {
  const text = button.textContent;
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  button.textContent = busyText;
  try {
    return await work();
  } finally {
    button.disabled = false;
    button.removeAttribute("aria-busy");
    button.textContent = text;
  }
}

/** What to tell the organiser about `error`, with what to do about it. */
export function describeError(error) {
  const message = error?.message ?? String(error);
  switch (error?.code) {
    case "NETWORK":
      return "Can't reach the Rollcall server. Check the network (the venue Wi-Fi) and try again.";
    case "UNAUTHENTICATED":
      return "Your session has expired. Log in again.";
    case "FORBIDDEN":
      return `Not allowed: ${message}. Ask an admin if you need this.`;
    case "NOT_FOUND":
      return `Not found: ${message}. It may have been deleted; reload the page.`;
    case "VALIDATION":
      return `${capitalise(message)}. Correct it and try again.`;
    case "CONFLICT":
      return `${capitalise(message)}.`;
    case "RATE_LIMITED":
      return "Too many requests. Wait a moment and try again.";
    case "INTERNAL":
      return "The server failed to do this. Try again; if it keeps failing, the server's log says why.";
    default:
      return capitalise(message);
  }
}

function capitalise(text) {
  return text ? text[0].toUpperCase() + text.slice(1) : text;
}

/** Shows `error` in a form's alert area (its input stays as it was) and moves focus there. */
export function showFormError(node, error) {
  node.textContent = typeof error === "string" ? error : describeError(error);
  node.hidden = false;
  node.focus();
}

export function clearFormError(node) {
  node.hidden = true;
  node.textContent = "";
}

/** A form-level alert: hidden until an error is shown in it. */
export function formAlert() {
  return h("p", { class: "form-error", role: "alert", tabindex: "-1", hidden: true });
}

/** A short message in the corner: `kind` is `ok` or `error`. Stays 6 s (errors 10 s). */
export function toast(message, kind = "ok") {
  const host = document.getElementById("toasts");
  const node = h("div", { class: `toast ${kind}`, role: kind === "error" ? "alert" : "status" }, message);
  host.append(node);
  setTimeout(() => node.remove(), kind === "error" ? 10_000 : 6_000);
  return node;
}

/**
 * Asks before something that cannot be undone. `lines` spell out what will
 * happen. Resolves to true when confirmed.
 */
export function confirmAction({ title, lines = [], confirm = "Confirm", danger = false }) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-title").textContent = title;
  document
    .getElementById("confirm-body")
    .replaceChildren(...lines.map((line) => (Array.isArray(line) ? h("ul", {}, line.map((l) => h("li", {}, l))) : h("p", {}, line))));
  const ok = document.getElementById("confirm-ok");
  ok.textContent = confirm;
  ok.className = danger ? "danger" : "primary";
  return new Promise((resolve) => {
    const done = (answer) => {
      dialog.removeEventListener("close", onClose);
      ok.removeEventListener("click", onOk);
      if (dialog.open) dialog.close();
      resolve(answer);
    };
    const onOk = (e) => {
      e.preventDefault();
      done(true);
    };
    const onClose = () => done(false);
    ok.addEventListener("click", onOk);
    dialog.addEventListener("close", onClose);
    dialog.showModal();
    document.getElementById("confirm-cancel").focus();
  });
}

/** A table whose wide content scrolls sideways on a phone. `columns`: header texts. */
export function table(columns, rows, caption) {
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      {},
      caption ? h("caption", { class: "visually-hidden" }, caption) : null,
      h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, rows),
    ),
  );
}

/** A page's heading row with its actions. */
export function pageHead(title, subtitle, ...actions) {
  return h(
    "div",
    { class: "page-head" },
    h("div", {}, h("h1", { id: "page-title", tabindex: "-1" }, title), subtitle ? h("p", { class: "muted" }, subtitle) : null),
    actions.length ? h("div", { class: "actions" }, actions) : null,
  );
}

/** A small coloured label for an event's state. */
export function stateBadge(state) {
  const names = { ACTIVE: "Live now", SCHEDULED: "Scheduled", ENDED: "Ended", CANCELLED: "Cancelled" };
  return h("span", { class: `badge state-${state.toLowerCase()}` }, names[state] ?? state);
}

/** "1 h 5 min", "12 min", "40 s". */
export function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const s = Math.round(seconds);
  if (s < 60) return `${s} s`;
  const m = Math.round(s / 60);
  if (m < 60) return `${m} min`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

/** A date for a `datetime-local` input, in local time. */
export function localInputValue(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}
