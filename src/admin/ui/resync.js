// Resyncs from the page: after a template save, the phones the template
// applies to can be told to fetch their files again (POST
// /v1/tenants/{slug}/resync, one call per tenant); the fleet view shows a
// tenant's resyncs (GET /v1/resyncs), polled while it is on screen. Uses
// el/api/status/say/errorText from app.js and when() from fleet.js.
"use strict";

const RESYNC_POLL_MS = 3000;
// The most the API lists in one answer.
const AFFECTED_LIMIT = 10000;
const MACS_PER_CALL = 500;

// The phones the saved template reaches now (the server resolves each
// phone's file, so phones with a nearer template of their own are left out).
async function affectedPhones(template) {
  const r = await api("GET", "/v1/templates/" + template.id + "/phones?limit=" + AFFECTED_LIMIT);
  if (r.status !== 200) throw new Error(errorText(r));
  return r.data;
}

// Shown under the save status once a save went through.
async function offerResync(template, out) {
  if (!mayWrite() || !resyncOn()) return;
  let phones, truncated;
  try {
    ({ phones, truncated } = await affectedPhones(template));
  } catch (e) {
    out.replaceChildren(el("p", { class: "status error", text: "Affected phones unknown: " + e.message }));
    return;
  }
  const result = status("resync-result");
  const byTenant = new Map();
  for (const p of phones) {
    if (!byTenant.has(p.tenant)) byTenant.set(p.tenant, []);
    byTenant.get(p.tenant).push(p.mac);
  }
  const send = async (event) => {
    // A second click while the first is sending would ask again for every
    // phone; the server spaces a phone's resyncs, but says so as "skipped".
    const button = event.currentTarget;
    button.disabled = true;
    try {
      await sendAll();
    } finally {
      button.disabled = false;
    }
  };
  const sendAll = async () => {
    const lines = [];
    let failed = false;
    for (const [tenant, macs] of byTenant) {
      for (let i = 0; i < macs.length; i += MACS_PER_CALL) {
        const r = await api("POST", "/v1/tenants/" + encodeURIComponent(tenant) + "/resync",
          { body: { macs: macs.slice(i, i + MACS_PER_CALL) } });
        if (r.status === 202) {
          lines.push(tenant + ": " + r.data.queued + " queued" +
            (r.data.skipped ? ", " + r.data.skipped + " skipped (the first: " + r.data.skipped_reasons[0].reason + ")" : ""));
        } else {
          failed = true;
          lines.push(tenant + ": not queued: " + errorText(r));
        }
      }
    }
    say(result, lines.join("; "), failed ? "error" : "ok");
  };
  // Past the listing's limit the button can reach only the phones listed:
  // said, not left for the admin to find out from the counts.
  const count = truncated ? "More than " + phones.length + " phones" :
    phones.length + " phone" + (phones.length === 1 ? "" : "s");
  const nodes = [
    el("p", { id: "affected", text: count + " use this template: " +
      phones.slice(0, 20).map((p) => p.mac).join(", ") + (phones.length > 20 ? ", ..." : "") }),
  ];
  if (truncated) {
    nodes.push(el("p", { id: "affected-truncated", class: "status error",
      text: "Only the first " + phones.length + " listed are resynced from here; resync each tenant's phones through the API for the rest." }));
  }
  nodes.push(
    el("p", {}, el("button", { type: "button", id: "resync-button",
      text: truncated ? "Resync the " + phones.length + " listed phones" : "Resync affected phones",
      disabled: phones.length === 0, onclick: send })),
    result);
  out.replaceChildren(...nodes);
}

let resyncTimer = null;

// A tenant's resyncs, newest first, refreshed until the table leaves the
// page or another tenant is chosen.
function resyncTable(out, slug) {
  clearTimeout(resyncTimer);
  const message = status("resyncs-status");
  const tbody = el("tbody");
  out.replaceChildren(message, el("table", { id: "resync-table" },
    el("thead", {}, el("tr", {}, ["MAC", "State", "Status", "Reason", "Queued", "Sent", "Answered", "Refetched"]
      .map((h) => el("th", { text: h })))), tbody));
  // The table is checked before each request (a timer that fires after
  // the view was left asks for nothing) and again after it (the view may
  // have been left while the request was out).
  const poll = async () => {
    if (!tbody.isConnected) return;
    const r = await api("GET", "/v1/resyncs?tenant=" + encodeURIComponent(slug));
    if (!tbody.isConnected) return;
    if (r.status !== 200) {
      say(message, "Resyncs not loaded: " + errorText(r), "error");
    } else {
      const items = r.data.resyncs || [];
      say(message, items.length ? "" : "No resyncs for this tenant.");
      tbody.replaceChildren(...items.map((x) => el("tr", { class: "resync-" + x.state },
        el("td", { text: x.mac }), el("td", { text: x.state }),
        el("td", { text: x.status === null || x.status === undefined ? "" : String(x.status) }),
        el("td", { text: x.reason || "" }), el("td", { text: when(x.queued_at) }),
        el("td", { text: x.sent_at ? when(x.sent_at) : "" }), el("td", { text: x.answered_at ? when(x.answered_at) : "" }),
        el("td", { text: x.refetched_at ? when(x.refetched_at) : "" }))));
    }
    resyncTimer = setTimeout(poll, RESYNC_POLL_MS);
  };
  return poll();
}
