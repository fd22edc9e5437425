// Users, for admins: list and search, change a role, manage a person's
// extra device identifiers, and delete an account with what that erases
// spelled out first.

import { whenText } from "/assets/shared/format.js";
import { all } from "./attendees.js";
import { busy, confirmAction, describeError, h, pageHead, table, toast } from "./ui.js";

const USERS = `query ConsoleUsers($after: String) {
  users(first: 500, after: $after) {
    pageInfo { hasNextPage endCursor }
    nodes { id name email role bleUuid createdAt devices { identifier } }
  }
}`;

const ROLES = [
  ["ADMIN", "Admin"],
  ["ORGANIZER", "Organiser"],
  ["ATTENDEE", "Attendee"],
];

export async function render(ctx, root) {
  if (ctx.me.role !== "ADMIN") {
    root.replaceChildren(pageHead("Users", "Only admins manage users. Ask an admin to change a role or remove an account."));
    return undefined;
  }
  const users = await all(async (after) => (await ctx.api(USERS, { after })).users);
  const search = h("input", { id: "user-search", type: "search", placeholder: "Name, e-mail or identifier", autocomplete: "off" });
  const role = h("select", { id: "user-role-filter" }, h("option", { value: "" }, "All roles"), ROLES.map(([v, t]) => h("option", { value: v }, t)));
  const count = h("p", { class: "muted", role: "status" });
  const list = h("div", { id: "user-list" });

  const reload = async () => {
    users.splice(0, users.length, ...(await all(async (after) => (await ctx.api(USERS, { after })).users)));
    draw();
  };

  const rowOf = (u) => {
    const roleSelect = h(
      "select",
      { "aria-label": `Role of ${u.name}`, disabled: u.id === ctx.me.id },
      ROLES.map(([v, t]) => h("option", { value: v, selected: v === u.role }, t)),
    );
    roleSelect.addEventListener("change", async () => {
      const wanted = roleSelect.value;
      try {
        roleSelect.disabled = true;
        await ctx.api("mutation($id: ID!, $r: Role!) { updateUser(id: $id, input: { role: $r }) { id role } }", { id: u.id, r: wanted });
        u.role = wanted;
        toast(`${u.name} is now ${ROLES.find(([v]) => v === wanted)[1].toLowerCase()}.`);
      } catch (e) {
        roleSelect.value = u.role;
        toast(describeError(e), "error");
      } finally {
        roleSelect.disabled = false;
      }
    });

    const devices = h(
      "ul",
      { class: "devices" },
      u.devices.map((d) => {
        const remove = h("button", { type: "button", class: "small ghost", "aria-label": `Remove ${d.identifier} from ${u.name}` }, "×");
        remove.addEventListener("click", async () => {
          try {
            await busy(remove, "…", () => ctx.api("mutation($i: String!, $u: ID) { removeDeviceIdentifier(identifier: $i, userId: $u) }", { i: d.identifier, u: u.id }));
            toast(`Removed ${d.identifier}.`);
            await reload();
          } catch (e) {
            toast(describeError(e), "error");
          }
        });
        return h("li", {}, h("code", {}, d.identifier), remove);
      }),
    );
    const addInput = h("input", { type: "text", "aria-label": `New device identifier for ${u.name}`, placeholder: "MAC or device name", autocomplete: "off" });
    const addButton = h("button", { type: "submit", class: "small ghost" }, "Add");
    const add = h("form", { class: "add-device" }, addInput, addButton);
    add.addEventListener("submit", async (e) => {
      e.preventDefault();
      const identifier = addInput.value.trim();
      if (!identifier) {
        toast("Type the identifier a scanner hears for this device (a MAC address or an advertised name).", "error");
        addInput.focus();
        return;
      }
      try {
        await busy(addButton, "Adding…", () => ctx.api("mutation($i: String!, $u: ID) { addDeviceIdentifier(identifier: $i, userId: $u) { identifier } }", { i: identifier, u: u.id }));
        toast(`${identifier} now identifies ${u.name}.`);
        await reload();
      } catch (err) {
        toast(describeError(err), "error");
      }
    });

    const del = h("button", { type: "button", class: "small danger-ghost", disabled: u.id === ctx.me.id, "aria-label": `Delete ${u.name}` }, "Delete");
    del.addEventListener("click", async () => {
      const ok = await confirmAction({
        title: `Delete ${u.name}?`,
        lines: [
          "This erases, for good:",
          [
            `the account ${u.email ?? ""} and its log-in`,
            `its BLE identifier${u.devices.length ? ` and ${u.devices.length} device identifier${u.devices.length === 1 ? "" : "s"}` : ""}: scanners stop recognising this person`,
            "every registration for every event",
            "every attendance record: check-ins, stays and dwell times",
            "every sighting of them in the raw log, so no later recompute brings them back",
          ],
          "Event reports and CSV files made later will not list them. This cannot be undone.",
        ],
        confirm: "Delete the account",
        danger: true,
      });
      if (!ok) return;
      try {
        await busy(del, "Deleting…", () => ctx.api("mutation($id: ID!) { deleteUser(id: $id) }", { id: u.id }));
        toast(`${u.name}'s account was deleted.`);
        await reload();
      } catch (e) {
        toast(describeError(e), "error");
      }
    });

    return h(
      "tr",
      { dataset: { userId: u.id } },
      h("td", {}, h("span", { class: "strong" }, u.name), h("div", { class: "muted small" }, u.email ?? ""), h("div", { class: "muted small" }, `since ${whenText(new Date(u.createdAt))}`)),
      h("td", {}, roleSelect),
      h("td", {}, h("code", { class: "small" }, u.bleUuid ?? ""), devices, add),
      h("td", { class: "row-actions" }, del),
    );
  };

  const draw = () => {
    const q = search.value.trim().toLowerCase();
    const shown = users.filter(
      (u) =>
        (!role.value || u.role === role.value) &&
        (!q || [u.name, u.email, u.bleUuid, ...u.devices.map((d) => d.identifier)].some((t) => (t ?? "").toLowerCase().includes(q))),
    );
    count.textContent = `${shown.length} of ${users.length} users`;
    list.replaceChildren(shown.length ? table(["Person", "Role", "Identifiers", ""], shown.map(rowOf), "Users") : h("p", { class: "empty-state" }, "No user matches. Clear the search."));
  };
  search.addEventListener("input", draw);
  role.addEventListener("input", draw);

  root.replaceChildren(
    pageHead("Users", "Everyone with an account. People join by signing up in the app or through a CSV import."),
    h("div", { class: "toolbar", role: "search" }, h("label", { class: "inline" }, h("span", {}, "Search"), search), h("label", { class: "inline" }, h("span", {}, "Role"), role)),
    count,
    list,
  );
  draw();
  return undefined;
}
