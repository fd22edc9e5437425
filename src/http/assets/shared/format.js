// Formatting and DOM helpers shared by the pages. User-provided text
// (names, event names) reaches the page only through `textContent`: `el()`
// is how nodes are made, and nothing assigns `innerHTML`.

export const timeFmt = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
export const shortTimeFmt = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
export const dayFmt = new Intl.DateTimeFormat(undefined, { weekday: "short", day: "numeric", month: "short" });
export const numFmt = new Intl.NumberFormat();

export function sameDay(a, b) {
  return a.toDateString() === b.toDateString();
}

export function whenText(date) {
  return sameDay(date, new Date()) ? timeFmt.format(date) : `${dayFmt.format(date)}, ${timeFmt.format(date)}`;
}

/** When an event runs: "Sat 3 May, 09:00–17:00". */
export function eventWhen(ev) {
  const start = new Date(ev.startsAt);
  const end = new Date(ev.endsAt);
  return sameDay(start, end)
    ? `${dayFmt.format(start)}, ${shortTimeFmt.format(start)}–${shortTimeFmt.format(end)}`
    : `${dayFmt.format(start)} ${shortTimeFmt.format(start)} – ${dayFmt.format(end)} ${shortTimeFmt.format(end)}`;
}

/** State, time and place of an event, on one line. */
export function eventMeta(ev) {
  const parts = [STATE_NAMES[ev.state] ?? ev.state, eventWhen(ev)];
  if (ev.location) parts.push(ev.location);
  return parts.join(" · ");
}

export const STATE_NAMES = { ACTIVE: "Live now", SCHEDULED: "Scheduled", ENDED: "Ended", CANCELLED: "Cancelled" };

/** Up to two initials, from the first letters of the first and last words. */
export function initials(name) {
  const words = name.match(/[\p{L}\p{N}][^\s]*/gu) ?? [];
  const letter = (w) => w.match(/[\p{L}\p{N}]/u)?.[0] ?? "";
  const first = letter(words[0] ?? "");
  const last = words.length > 1 ? letter(words[words.length - 1]) : "";
  return (first + last).toUpperCase() || "?";
}

export function hue(text) {
  let h = 0;
  for (const ch of text) h = (h * 31 + ch.codePointAt(0)) % 360;
  return h;
}

export function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}
