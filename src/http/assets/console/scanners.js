// Scanners: their API keys (issue one, with the secret shown once and a copy
// button; revoke one) and the fleet's health from their heartbeats.

import { whenText } from "/assets/shared/format.js";
import { loadEvents } from "./events.js";
import { busy, clearFormError, confirmAction, describeError, field, formAlert, h, pageHead, showFormError, table, toast } from "./ui.js";

const KEYS = `query ConsoleKeys { apiKeys {
  id name prefix allEvents eventIds createdAt lastUsedAt revoked revokedAt lastBatchAt unknownDevices
  heartbeat { at version outboxDepth lastUploadAt clockSkewMs }
} }`;

/** A heartbeat older than this means the scanner is quiet. */
const QUIET_MS = 5 * 60_000;
/** Clocks further apart than this skew check-in times noticeably. */
const SKEW_WARN_MS = 30_000;

export async function render(ctx, root) {
  const [keys, events] = await Promise.all([ctx.api(KEYS).then((d) => d.apiKeys), loadEvents(ctx)]);
  const names = new Map(events.map((e) => [e.id, e.name]));
  const list = h("div", { id: "key-list" });
  const secretBox = h("section", { id: "secret", class: "panel secret", hidden: true, "aria-labelledby": "secret-title" });

  const reload = async () => {
    keys.splice(0, keys.length, ...(await ctx.api(KEYS)).apiKeys);
    draw();
  };

  const health = (k) => {
    const hb = k.heartbeat;
    if (k.revoked) return h("span", { class: "muted" }, "–");
    if (!hb) return h("span", { class: "muted" }, k.lastUsedAt ? "No heartbeat (old scanner?)" : "Never connected");
    const quiet = Date.now() - Date.parse(hb.at) > QUIET_MS;
    const skew = Math.abs(hb.clockSkewMs) > SKEW_WARN_MS;
    const parts = [`v${hb.version}`, `${hb.outboxDepth} waiting to upload`];
    if (skew) parts.push(`clock ${Math.round(hb.clockSkewMs / 1000)} s off`);
    return h(
      "div",
      {},
      h("span", { class: `badge ${quiet ? "warn" : "ok"}` }, quiet ? `Quiet since ${whenText(new Date(hb.at))}` : "Healthy"),
      h("div", { class: `small ${skew ? "warn" : "muted"}` }, parts.join(" · ")),
    );
  };

  const scope = (k) => (k.allEvents ? "Every event" : k.eventIds.length === 0 ? "All events its creator runs" : k.eventIds.map((id) => names.get(id) ?? id).join(", "));

  const draw = () => {
    if (keys.length === 0) {
      list.replaceChildren(h("p", { class: "empty-state" }, "No keys yet. Issue one for each scanner above."));
      return;
    }
    list.replaceChildren(
      table(
        ["Scanner", "Key", "May report for", "Last used", "Health", ""],
        keys.map((k) => {
          const revoke = k.revoked ? h("span", { class: "badge" }, "Revoked") : h("button", { type: "button", class: "small danger-ghost", "aria-label": `Revoke ${k.name}` }, "Revoke");
          if (!k.revoked) {
            revoke.addEventListener("click", async () => {
              const ok = await confirmAction({
                title: `Revoke the key “${k.name}”?`,
                lines: ["A scanner using it can no longer upload sightings or read events, from now on.", "What it uploaded so far stays. Issue a new key to bring the scanner back."],
                confirm: "Revoke the key",
                danger: true,
              });
              if (!ok) return;
              try {
                await busy(revoke, "Revoking…", () => ctx.api("mutation($id: ID!) { revokeApiKey(id: $id) { id revoked } }", { id: k.id }));
                toast(`The key “${k.name}” is revoked.`);
                await reload();
              } catch (e) {
                toast(describeError(e), "error");
              }
            });
          }
          return h(
            "tr",
            { dataset: { keyId: k.id, revoked: String(k.revoked) } },
            h("td", {}, h("span", { class: "strong" }, k.name), h("div", { class: "muted small" }, `issued ${whenText(new Date(k.createdAt))}`)),
            h("td", {}, h("code", {}, `${k.prefix}…`)),
            h("td", {}, scope(k)),
            h("td", {}, k.lastUsedAt ? whenText(new Date(k.lastUsedAt)) : "Never", k.unknownDevices ? h("div", { class: "muted small" }, `${k.unknownDevices} unknown devices heard`) : null),
            h("td", {}, health(k)),
            h("td", { class: "row-actions" }, revoke),
          );
        }),
        "API keys",
      ),
    );
  };

  // Issue a key.
  const name = field({ label: "Scanner name", name: "keyName", attrs: { required: true, maxlength: 200, placeholder: "Main door", autocomplete: "off" }, hint: "Say where it stands; check-ins show it as “via <name>”." });
  const scopeField = field({
    label: "May report for",
    name: "keyScope",
    type: "select",
    options: [["", ctx.me.role === "ADMIN" ? "Every event" : "Every event I run"], ...events.filter((e) => e.state !== "ENDED" && e.state !== "CANCELLED").map((e) => [e.id, `Only “${e.name}”`])],
    hint: "A key limited to one event cannot upload sightings for any other.",
  });
  const alert = formAlert();
  const submit = h("button", { type: "submit", class: "primary", id: "key-create" }, "Issue key");
  const form = h("form", { class: "panel form", id: "key-form", novalidate: true }, h("h2", {}, "Issue a key for a scanner"), name.wrap, scopeField.wrap, alert, h("div", { class: "form-actions" }, submit));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    clearFormError(alert);
    const keyName = name.input.value.trim();
    if (!keyName) {
      name.input.setAttribute("aria-invalid", "true");
      showFormError(alert, "Give the scanner a name, such as where it stands.");
      name.input.focus();
      return;
    }
    name.input.removeAttribute("aria-invalid");
    try {
      const scopes = scopeField.input.value ? [scopeField.input.value] : null;
      const created = await busy(submit, "Issuing…", () =>
        ctx.api("mutation($n: String!, $s: [ID!]) { createApiKey(name: $n, scopes: $s) { secret apiKey { id name } } }", { n: keyName, s: scopes }),
      );
      name.input.value = "";
      showSecret(created.createApiKey);
      toast(`Issued a key for “${created.createApiKey.apiKey.name}”. Copy its secret now.`);
      await reload();
    } catch (err) {
      showFormError(alert, err);
    }
  });

  const showSecret = ({ secret, apiKey }) => {
    const input = h("input", { id: "secret-value", type: "text", readonly: true, value: secret, "aria-describedby": "secret-warning", spellcheck: "false" });
    const copy = h("button", { type: "button", class: "primary", id: "secret-copy" }, "Copy");
    const copied = h("span", { class: "muted", role: "status" });
    copy.addEventListener("click", async () => {
      input.select();
      try {
        await navigator.clipboard.writeText(secret);
      } catch {
        document.execCommand?.("copy");
      }
      copied.textContent = "Copied.";
    });
    const done = h("button", { type: "button", class: "ghost" }, "I have stored it");
    done.addEventListener("click", () => {
      secretBox.hidden = true;
      secretBox.replaceChildren();
    });
    secretBox.replaceChildren(
      h("h2", { id: "secret-title" }, `The secret for “${apiKey.name}”`),
      h("p", { id: "secret-warning", class: "warn" }, "This is the only time it is shown. Save it in the scanner's key file (rollcall-scanner --api-key-file) now; if it is lost, revoke the key and issue another."),
      h("div", { class: "row" }, h("label", { class: "visually-hidden", for: "secret-value" }, "Secret"), input, copy),
      copied,
      h("div", { class: "form-actions" }, done),
    );
    secretBox.hidden = false;
    input.focus();
    input.select();
  };

  root.replaceChildren(pageHead("Scanners", "Each scanner uploads with its own key. Revoke a key when a scanner is lost."), secretBox, form, list);
  draw();
  return undefined;
}
