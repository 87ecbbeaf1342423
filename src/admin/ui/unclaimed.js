// The unclaimed view (#/unclaimed): per tenant, the phones that asked for
// their own files from the tenant's networks with a MAC nobody has, each
// with a form that claims it as a phone in one step; for global admins also
// the unassigned list. Uses el/api/status/say/errorText/tickets/pause/
// CATCH_UP_MS/tenantPicker/tenantOption/tenantLabel from app.js; draws
// through the `draw` its route gives it.
"use strict";

const FAMILIES = ["yealink", "poly", "cisco-spa", "cisco-mpp", "cisco-sep", "grandstream", "snom", "fanvil"];

// Minutes are enough to tell phones apart; the cell's title has the rest.
function seenAt(ms) {
  const iso = new Date(ms).toISOString();
  return el("td", { title: iso, text: iso.slice(0, 16).replace("T", " ") + " UTC" });
}

// The claim form of one device: name, an optional first line, and the
// family when the phone did not tell it. `slugOf` names the target tenant.
function claimForm(device, slugOf, done) {
  if (!mayWrite()) return el("span", { class: "muted", text: "read-only token" });
  const id = "claim-" + device.mac;
  const out = status(id + "-status");
  const name = el("input", { id: id + "-name", size: 12 });
  const extension = el("input", { id: id + "-ext", size: 6 });
  const registrar = el("input", { id: id + "-registrar", size: 16 });
  const family = device.family ? null
    : el("select", { id: id + "-family" }, ...FAMILIES.map((f) => el("option", { value: f, text: f })));
  const claim = async (event) => {
    const button = event.currentTarget;
    const body = { name: name.value || undefined, lines: [] };
    if (family) body.family = family.value;
    if (extension.value || registrar.value) {
      body.lines.push({ extension: extension.value, display_name: name.value || extension.value, registrar: registrar.value });
    }
    say(out, "Claiming...");
    const slug = slugOf();
    const path = "/v1/tenants/" + encodeURIComponent(slug) + "/unclaimed/" + encodeURIComponent(device.mac) + "/claim";
    const r = await api("POST", path, { body });
    // The list is drawn again without the device; the note stays above it.
    if (r.status === 201) return done("Claimed " + device.mac + " as a phone of " + r.data.tenant + ".");
    if (!(r.status === 202 && r.data && r.data.committed)) return say(out, "Not claimed: " + errorText(r), "error");
    // Written, but this node's copy does not show the phone yet: claiming
    // again would be refused as taken, so the list is read again later.
    button.disabled = true;
    say(out, "Claimed: " + r.data.detail, "ok");
    await pause(CATCH_UP_MS);
    if (button.isConnected) done("Claimed " + device.mac + " as a phone of " + slug + ".");
  };
  return el("div", { class: "row" },
    el("label", { for: id + "-name", text: "Name" }), name,
    family && el("label", { for: id + "-family", text: "Family" }), family,
    el("label", { for: id + "-ext", text: "Extension" }), extension,
    el("label", { for: id + "-registrar", text: "Registrar" }), registrar,
    el("button", { type: "button", text: "Claim", "aria-label": "Claim " + device.mac, onclick: claim }), out);
}

// replaceChildren would print a null, so an absent note is no node at all.
function noted(note) {
  return note ? [el("p", { class: "status ok", role: "status", text: note })] : [];
}

function unclaimedTable(devices, slugOf, reload) {
  if (!devices.length) return el("p", { class: "muted", text: "No unclaimed phones." });
  return el("table", { class: "unclaimed" },
    el("thead", {}, el("tr", {}, ...["MAC", "Family", "Model", "Firmware", "Source", "First seen", "Last seen", "Fetches", ""]
      .map((h) => el("th", { text: h })))),
    el("tbody", {}, ...devices.map((d) => el("tr", {},
      el("td", { text: d.mac }), el("td", { text: d.family || "unknown" }),
      el("td", { text: d.model || "unknown" }), el("td", { text: d.firmware || "unknown" }),
      el("td", { text: d.source }), seenAt(d.first_seen),
      seenAt(d.last_seen), el("td", { text: String(d.count) }),
      el("td", {}, claimForm(d, slugOf, reload))))));
}

// One tenant's section: its list, drawn again after a claim.
function tenantSection(t) {
  const box = el("section", { class: "unclaimed-tenant", "aria-label": "Unclaimed phones of " + tenantLabel(t) });
  const load = async (note) => {
    const r = await api("GET", "/v1/tenants/" + encodeURIComponent(t.slug) + "/unclaimed");
    const devices = (r.data && r.data.devices) || [];
    box.replaceChildren(el("h3", { text: tenantLabel(t) + " (" + devices.length + ")" }), ...noted(note),
      r.status === 200 ? unclaimedTable(devices, () => t.slug, load) : el("p", { class: "status error", text: errorText(r) }));
  };
  return { box, load };
}

// The lists are per tenant and read from the database, and a provider has
// thousands of tenants: the page loads the chosen tenant's list only (and,
// for global admins, the unassigned list). "Check every tenant" asks once
// (GET /v1/unclaimed/counts, one grouped count in the database) which
// tenants have unclaimed phones; picking one shows its list.
async function unclaimedView(draw) {
  const picker = await tenantPicker("unclaimed-tenant");
  const items = picker.tenants;
  const bySlug = new Map(items.map((t) => [t.slug, t]));
  const shown = el("div", { id: "unclaimed-shown" });
  const ticket = tickets();
  const showTenant = async () => {
    const newest = ticket();
    const t = bySlug.get(picker.select.value);
    if (!t) return shown.replaceChildren(el("p", { class: "muted", text: "No tenants." }));
    const section = tenantSection(t);
    await section.load();
    if (newest()) shown.replaceChildren(section.box);
  };
  picker.select.addEventListener("change", showTenant);

  const scanStatus = status("unclaimed-scan-status");
  const found = el("ul", { id: "unclaimed-found" });
  const scanButton = el("button", { type: "button", id: "unclaimed-scan", text: "Check every tenant", onclick: () => scan() });
  const scan = async () => {
    scanButton.disabled = true;
    found.replaceChildren();
    say(scanStatus, "Checking " + items.length + " tenants...");
    const r = await api("GET", "/v1/unclaimed/counts");
    scanButton.disabled = false;
    if (!found.isConnected) return;
    if (r.status !== 200) return say(scanStatus, "Not checked: " + errorText(r), "error");
    // In the picker's order; a tenant the picker lacks (created since the
    // page loaded) cannot be picked, so it is not offered.
    const order = new Map(items.map((t, index) => [t.slug, index]));
    const hits = (r.data.tenants || []).filter((c) => order.has(c.slug))
      .sort((a, b) => order.get(a.slug) - order.get(b.slug));
    found.replaceChildren(...hits.map((c) => el("li", {},
      el("button", { type: "button", text: tenantLabel(bySlug.get(c.slug)) + ": " + c.count, onclick: () => {
        picker.select.value = c.slug;
        showTenant();
      } }))));
    say(scanStatus, hits.length + " of " + items.length + " tenants have unclaimed phones.", "ok");
  };

  const sections = [];
  // Only global admins have the unassigned list (403 otherwise: not shown).
  const stray = await api("GET", "/v1/unclaimed");
  if (stray.status === 200 && items.length) {
    const box = el("section", { class: "unclaimed-tenant", "aria-label": "Unassigned unclaimed phones" });
    const target = el("select", { id: "unassigned-tenant" },
      ...items.map(tenantOption));
    const load = async (note) => {
      const r = await api("GET", "/v1/unclaimed");
      const devices = (r.data && r.data.devices) || [];
      box.replaceChildren(el("h3", { text: "Unassigned (" + devices.length + ")" }), ...noted(note),
        el("label", { for: "unassigned-tenant", text: "Claim into tenant" }), target,
        unclaimedTable(devices, () => target.value, load));
    };
    await load();
    sections.push(box);
  }
  await showTenant();
  draw("Unclaimed phones",
    el("p", { class: "muted", text: "Unknown phones that asked for their own files from a tenant's provisioning networks." }),
    el("label", { for: "unclaimed-tenant", text: "Tenant" }), picker.select, picker.note,
    ...(items.length > 1 ? [el("p", {}, scanButton)] : []), scanStatus, found,
    shown, ...sections);
}
