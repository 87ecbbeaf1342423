// dialtone's admin page: a thin client of the admin API (/v1/...), nothing
// else. The token lives in sessionStorage (never in a URL); every view is
// built with DOM calls and textContent, so data is never parsed as HTML.
"use strict";

const TOKEN_KEY = "dialtone-token";
const main = () => document.getElementById("main");

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) node.setAttribute(k, v === true ? "" : v);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

function status(id) {
  return el("p", { id, class: "status", role: "status", "aria-live": "polite" });
}

function say(node, text, kind) {
  node.textContent = text;
  node.className = "status" + (kind ? " " + kind : "");
}

// A list reloads on every keystroke or filter change, and replies can come
// back out of order: a slow reply to "" landing after the reply to "alice"
// would show every entry under a search for alice. Each load takes a ticket
// and applies its reply only while its ticket is still the newest.
function tickets() {
  let newest = 0;
  return () => {
    const mine = ++newest;
    return () => mine === newest;
  };
}

// A 401: the token was refused (mistyped, expired or revoked). api()
// throws this rather than answer, so the view that asked stops where it
// is; go() (or, for a button's request, the unhandledrejection listener
// below) shows the log-in form with the reason.
class LoggedOut extends Error {}

// Thrown by a view's `draw` once a newer view has taken the page, and by
// api() for a request of a session since replaced.
class Superseded extends Error {}

const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// A write answered 202 is committed but not yet in this node's copy (the
// answer's `detail` says so; writing it again would be refused as taken):
// it is read again after this long.
const CATCH_UP_MS = 1500;

async function api(method, path, { body, etag } = {}) {
  const sent = sessionStorage.getItem(TOKEN_KEY);
  const headers = { Authorization: "Bearer " + sent };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (etag) headers["If-Match"] = etag;
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = null;
  const text = await response.text();
  try { data = text ? JSON.parse(text) : null; } catch { data = text; }
  const reply = { status: response.status, etag: response.headers.get("ETag"), data };
  if (response.status === 401) {
    // Refused after another token took its place (a new log-in): only the
    // view that sent it ends, the new session stays.
    if (sessionStorage.getItem(TOKEN_KEY) !== sent) throw new Superseded();
    sessionStorage.removeItem(TOKEN_KEY);
    throw new LoggedOut(errorText(reply));
  }
  return reply;
}

// The calling token as the server describes it (`GET /v1/whoami`), read
// once a session: what it may do decides which controls are offered, so a
// read-only token is not shown buttons that can only be refused. Unknown
// (the read failed) offers everything and the server decides; a failed
// read is not kept, so the next view asks again instead of offering
// everything for the rest of the session after one busy answer.
let me = null;

async function whoAmI() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (me && me.token === token) return me;
  let r;
  try {
    r = await api("GET", "/v1/whoami");
  } catch (e) {
    if (e instanceof LoggedOut || e instanceof Superseded) throw e;
    return (me = null);
  }
  me = r.status === 200 ? { ...r.data, token } : null;
  return me;
}

// Whether the session may write at all, and may edit `template` (a tenant
// admin edits its tenant's and phones' templates, not shared ones).
function mayWrite() { return !me || me.writes; }
function mayEdit(template) {
  return mayWrite() && (!me || me.scope !== "tenant-admin" || template.scope === "tenant" || template.scope === "phone");
}
function resyncOn() { return !me || me.resync; }

function errorText(reply) {
  const error = reply.data && reply.data.error;
  return error ? error.message : "request failed (" + reply.status + ")";
}

// ---- lists -------------------------------------------------------------

// A list route answers one page at a time: `items`, and `next` to pass as
// `after` for the following page (absent on the last). listAll reads every
// page, the largest the server gives (1,000), but stops after LIST_PAGES
// pages so that no list, however long, keeps the page loading: `cut` then
// says the list is not whole, and `error` says why it stopped early.
const LIST_PAGE_SIZE = 1000;
const LIST_PAGES = 100;

async function listAll(path) {
  const items = [];
  let after = null;
  for (let n = 0; n < LIST_PAGES; n++) {
    const query = "limit=" + LIST_PAGE_SIZE + (after === null ? "" : "&after=" + encodeURIComponent(after));
    const reply = await api("GET", path + (path.includes("?") ? "&" : "?") + query);
    if (reply.status !== 200) return { items, cut: true, error: errorText(reply) };
    const page = reply.data || {};
    items.push(...(page.items || []));
    if (page.next === null || page.next === undefined || page.next === "") return { items, cut: false, error: null };
    // A cursor that does not move would read the same page again.
    if (String(page.next) === after) return { items, cut: true, error: "the list repeated a page" };
    after = String(page.next);
  }
  return { items, cut: true, error: null };
}

// A list's note: nothing when the list is whole, or which part is shown.
function cutNote(node, list, what) {
  if (list.error) say(node, "Only " + list.items.length + " " + what + " listed: " + list.error, "error");
  else if (list.cut) say(node, "Only the first " + list.items.length + " " + what + " are listed; there are more.", "error");
  else say(node, "");
}

// A tenant as shown: its slug first, then its name where that differs.
// Names repeat among thousands of companies, and a tenant writes its own:
// the slug, which it cannot choose, leads so that no name (however long,
// however blank its tail) can push it out of sight and pass for another's.
const TENANT_NAME_SHOWN = 80;
function tenantLabel(t) {
  const name = t.name.replace(/\s+/gu, " ").trim();
  const chars = [...name];
  const shown = chars.length > TENANT_NAME_SHOWN ? chars.slice(0, TENANT_NAME_SHOWN - 1).join("") + "…" : name;
  return shown === t.slug ? t.slug : t.slug + " — " + shown;
}

function tenantOption(t) {
  return el("option", { value: t.slug, text: tenantLabel(t) });
}

// A MAC from the address bar or a form as the API's twelve hex digits, or
// null unless it is spelled as the API accepts (hex digits, with ":", "-"
// or "." anywhere between): anything else, ".." included, names no phone.
function macDigits(text) {
  if (text === null || !/^[0-9A-Fa-f:.-]+$/.test(text)) return null;
  const digits = text.replace(/[:.-]/g, "").toLowerCase();
  return digits.length === 12 ? digits : null;
}

// Every tenant the token sees (a tenant's own token sees one), as a select,
// with a note under it when the list is not whole. Each view with a tenant
// picker builds it here.
async function tenantPicker(id) {
  const list = await listAll("/v1/tenants");
  const select = el("select", { id }, ...list.items.map(tenantOption));
  const note = status(id + "-note");
  cutNote(note, list, "tenants");
  return { select, note, tenants: list.items };
}

function diffView(diff) {
  const pre = el("pre", { class: "diff" });
  for (const line of diff.split("\n")) {
    const kind = line.startsWith("+") && !line.startsWith("+++") ? "add"
      : line.startsWith("-") && !line.startsWith("---") ? "del" : null;
    pre.append(el("span", { class: kind || undefined, text: line + "\n" }));
  }
  return pre;
}

function show(title, ...content) {
  const target = main();
  target.replaceChildren(el("h2", { text: title }), ...content);
  target.focus();
  document.title = title + " - dialtone admin";
}

// ---- login -------------------------------------------------------------

// `note` says why the form is back (a refused token), if it is.
function loginView(note) {
  document.getElementById("nav").hidden = true;
  const input = el("input", { id: "token", type: "password", autocomplete: "off", required: true });
  const message = status("login-status");
  if (note) say(message, note, "error");
  const form = el("form", {
    id: "login-form",
    onsubmit: async (event) => {
      event.preventDefault();
      sessionStorage.setItem(TOKEN_KEY, input.value.trim());
      let reply;
      try {
        reply = await api("GET", "/v1/whoami");
      } catch (e) {
        if (!(e instanceof LoggedOut)) throw e;
        return say(message, "Log-in failed: " + e.message, "error");
      }
      if (reply.status !== 200) {
        sessionStorage.removeItem(TOKEN_KEY);
        return say(message, "Log-in failed: " + errorText(reply), "error");
      }
      me = { ...reply.data, token: sessionStorage.getItem(TOKEN_KEY) };
      // Back to the view a refused token interrupted, if any.
      const back = /^#\/(?!login$)./.test(location.hash) ? location.hash : "#/templates";
      if (location.hash === back) go();
      else location.hash = back;
    },
  },
    el("label", { for: "token", text: "API token" }), input,
    el("p", {}, el("button", { type: "submit", text: "Log in" })),
    message);
  show("Log in", form);
  input.focus();
}

// ---- phones ------------------------------------------------------------

async function phonesView(draw) {
  const q = el("input", { id: "phone-search", type: "search", placeholder: "MAC, extension or name" });
  const tbody = el("tbody");
  const ticket = tickets();
  const load = async () => {
    const newest = ticket();
    const reply = await api("GET", "/v1/phones?limit=200&q=" + encodeURIComponent(q.value));
    if (!newest()) return;
    tbody.replaceChildren();
    for (const p of (reply.data && reply.data.items) || []) {
      tbody.append(el("tr", {},
        el("td", {}, el("a", { href: "#/phones/" + p.mac, text: p.mac })),
        el("td", { text: p.tenant }), el("td", { text: p.family + " " + (p.model || "") }),
        el("td", { text: p.label || "" }),
        el("td", { text: p.lines.map((l) => l.extension + " " + l.display_name).join(", ") })));
    }
  };
  q.addEventListener("input", () => load());
  draw("Phones",
    el("label", { for: "phone-search", text: "Search" }), q,
    el("table", {}, el("thead", {}, el("tr", {}, el("th", { text: "MAC" }), el("th", { text: "Tenant" }),
      el("th", { text: "Model" }), el("th", { text: "Label" }), el("th", { text: "Lines" }))), tbody));
  await load();
}

async function phoneView(draw, address) {
  // As a template's number: only a MAC names a phone, so nothing like ".."
  // can make this page ask for another route.
  const mac = macDigits(address);
  if (mac === null) {
    return draw("Phone", el("p", { class: "status error", text: "No such phone: a phone's address ends in its MAC." }));
  }
  const reply = await api("GET", "/v1/phones/" + mac);
  if (reply.status !== 200) return draw("Phone", el("p", { text: errorText(reply) }));
  const p = reply.data;
  // The phone is read from this node's copy, its fetches and files from
  // the database, which can be busy (429, 503) or refuse to render (422)
  // on their own: each part says so, the rest of the page stays.
  // Who changed it is read from the audit log by its MAC (a tenant's
  // token reads its own tenant's rows only), at once with the fetches.
  const [history, changes] = await Promise.all([
    api("GET", "/v1/phones/" + mac + "/history?limit=20"),
    api("GET", "/v1/audit?limit=10&key=" + mac),
  ]);
  const boots = history.status === 200 ? history.data : [];
  const last = boots[0];
  const files = el("div", { id: "phone-files" });
  draw("Phone " + p.mac,
    el("p", { text: p.family + " " + (p.model || "") + " in " + p.tenant + (p.label ? ", " + p.label : "") }),
    ...(p.mac_vendor ? [el("p", { class: "status error", text: "The MAC's vendor prefix is " + p.mac_vendor +
      "'s, not " + p.family + "'s: check the phone's family (a phone's own files are refused to another family's phone)." })] : []),
    ...(history.status !== 200 ? [] : [el("p", { text: last ? "Detected: " + (last.model || "model unknown") + ", firmware " + (last.firmware || "unknown") +
      "; last fetch " + new Date(last.at).toISOString() : "No boot recorded yet." })]),
    el("h3", { text: "Lines" }),
    el("table", {}, el("tbody", {}, p.lines.map((l) => el("tr", {},
      el("td", { text: String(l.position) }), el("td", { text: l.extension }), el("td", { text: l.display_name }),
      el("td", { text: l.registrar }), el("td", { text: l.has_password ? "password set" : "no password" }))))),
    el("h3", { text: "Recent fetches" }),
    history.status !== 200
      ? el("p", { id: "phone-history", class: "status error", text: "Recent fetches not loaded: " + errorText(history) })
      : el("table", { id: "phone-history" }, el("tbody", {}, boots.map((b) => el("tr", {},
        el("td", { text: new Date(b.at).toISOString() }), el("td", { text: b.file }),
        el("td", { text: b.protocol }), el("td", { text: b.outcome }))))),
    el("h3", { text: "Recent changes" }),
    changes.status !== 200
      ? el("p", { id: "phone-changes", class: "status error", text: "Recent changes not loaded: " + errorText(changes) })
      : el("table", { id: "phone-changes" }, el("tbody", {}, changes.data.items.map((c) => el("tr", {},
        el("td", { text: new Date(c.at).toISOString() }), el("td", { text: c.actor }), el("td", { text: c.action }),
        el("td", { class: "muted", text: JSON.stringify(c.summary).slice(0, 200) }))))),
    el("p", {}, el("button", { type: "button", id: "preview-all", text: "Preview all files for this phone", onclick: async () => {
      const r = await api("GET", "/v1/phones/" + mac + "/files");
      if (r.status !== 200) {
        return files.replaceChildren(el("p", { class: "status error", text: "Files not rendered: " + errorText(r) }));
      }
      files.replaceChildren(...r.data.files.flatMap((f) => [
        el("h4", { text: f.file }), el("p", { class: "muted", text: "rendered by " + f.template }),
        el("pre", { class: "file", text: f.body })]));
    } })),
    files,
    ...(mayWrite() ? [replaceForm(mac, reply.etag)] : []));
}

// A hardware swap: the phone keeps its lines, passwords and templates under
// the replacement's MAC. Sent with the tag the page was drawn from, so a
// phone edited since is refused rather than swapped unseen.
function replaceForm(mac, etag) {
  const input = el("input", { id: "replace-mac", placeholder: "00:15:65:12:34:56", autocomplete: "off" });
  const message = status("replace-status");
  return el("form", {
    id: "replace-form",
    onsubmit: async (event) => {
      event.preventDefault();
      const r = await api("POST", "/v1/phones/" + mac + "/replace", { body: { new_mac: input.value.trim() }, etag });
      if (r.status === 200) location.hash = "#/phones/" + r.data.mac;
      else if (r.status === 202) say(message, "Replaced; this node shows it in a moment.", "");
      else say(message, "Not replaced: " + errorText(r), "error");
    },
  },
    el("h3", { text: "Replace hardware" }),
    el("p", { class: "muted", text: "The new phone takes this one's lines, passwords and templates; this MAC is then no phone." }),
    el("label", { for: "replace-mac", text: "New MAC" }), input,
    el("p", {}, el("button", { type: "submit", text: "Replace" })),
    message);
}

// ---- directory ---------------------------------------------------------

function ago(ms) {
  if (ms === null || ms === undefined) return "never";
  const s = Math.round(ms / 1000);
  return s < 120 ? s + " s ago" : s < 7200 ? Math.round(s / 60) + " min ago" : Math.round(s / 3600) + " h ago";
}

// A mirrored LDAP source's copy on the node that answered: size, age, the
// last syncs and the last error, all as text.
function mirrorLine(src) {
  const m = src.mirror;
  const now = Date.now();
  const since = (at) => (at === null || at === undefined ? "never" : ago(now - at));
  const parts = [
    "Mirror: " + m.entries + " entries, current as of " + ago(m.age_ms),
    "full sync " + since(m.last_full_sync) + (m.last_full_ms !== null ? " (" + m.last_full_ms + " ms)" : ""),
    m.incremental
      ? "incremental (" + m.incremental + ") " + since(m.last_incremental_sync) +
        (m.last_incremental_ms !== null ? " (" + m.last_incremental_ms + " ms)" : "")
      : "full syncs only",
  ];
  return el("p", { id: "mirror-" + src.name, class: m.last_error ? "status error" : "status" },
    parts.join("; ") + (m.last_error ? ". Last error: " + m.last_error : ""));
}

async function directoryView(draw) {
  const picker = await tenantPicker("tenant");
  const tenant = picker.select;
  const q = el("input", { id: "entry-search", type: "search" });
  const entries = el("tbody");
  const sources = el("div", { id: "sources" });
  const entriesTicket = tickets();
  const loadEntries = async () => {
    const newest = entriesTicket();
    const slug = encodeURIComponent(tenant.value);
    const e = await api("GET", "/v1/tenants/" + slug + "/directory?q=" + encodeURIComponent(q.value));
    if (!newest()) return;
    entries.replaceChildren(...((e.data && e.data.items) || []).map((x) => el("tr", {},
      el("td", { text: x.name }), el("td", { text: x.company || "" }),
      el("td", { text: x.numbers.map((n) => n.number + " (" + n.kind + ")").join(", ") }))));
  };
  // Sources load with the tenant, not with each keystroke of the search,
  // so a source test under way keeps its result on the page.
  const sourcesTicket = tickets();
  const loadSources = async () => {
    const newest = sourcesTicket();
    const slug = encodeURIComponent(tenant.value);
    const s = await api("GET", "/v1/tenants/" + slug + "/directory-sources");
    if (!newest()) return;
    if (s.status !== 200) {
      return sources.replaceChildren(el("p", { class: "status error", text: "Sources not loaded: " + errorText(s) }));
    }
    sources.replaceChildren(...(s.data || []).map((src) => {
      const out = status("test-" + src.name);
      return el("div", {},
        el("h4", { text: src.name + " (" + src.kind + ", priority " + src.priority + (src.enabled ? "" : ", disabled") + ")" }),
        src.mirror ? mirrorLine(src) : null,
        // A source test reaches out of the node: a write token's to ask.
        !mayWrite() ? null : el("button", { type: "button", text: "Test " + src.name, onclick: async () => {
          say(out, "Testing...");
          const r = await api("POST", "/v1/tenants/" + slug + "/directory-sources/" + encodeURIComponent(src.name) + "/test", { body: {} });
          if (r.status !== 200) return say(out, "Test failed: " + errorText(r), "error");
          const t = r.data;
          say(out, t.outcome + (t.name ? ": " + t.name : "") + (t.error ? ": " + t.error : "") +
            " in " + t.first_ms + " ms" + (t.repeat_ms !== null ? " (then " + t.repeat_ms + " ms)" : "") +
            " for " + t.number, t.outcome === "error" ? "error" : "ok");
        } }), out);
    }));
  };
  const load = () => Promise.all([loadEntries(), loadSources()]);
  tenant.addEventListener("change", load);
  q.addEventListener("input", loadEntries);
  draw("Directory",
    el("label", { for: "tenant", text: "Tenant" }), tenant, picker.note,
    el("label", { for: "entry-search", text: "Search entries" }), q,
    el("table", {}, el("thead", {}, el("tr", {}, el("th", { text: "Name" }), el("th", { text: "Company" }),
      el("th", { text: "Numbers" }))), entries),
    el("h3", { text: "Sources" }), sources);
  await load();
}

// ---- routing -----------------------------------------------------------

// A part of the address bar's hash as text; null for a malformed escape
// (a lone "%"), which decodeURIComponent would throw on.
function hashPart(part) {
  try {
    return decodeURIComponent(part);
  } catch {
    return null;
  }
}

// Each route takes a ticket, and its view draws through `draw`, which
// shows it only while the ticket is the newest: a slow view (a directory
// reading many pages of tenants) never covers one opened after it.
const routeTicket = tickets();

async function route(draw) {
  if (!sessionStorage.getItem(TOKEN_KEY)) return loginView();
  await whoAmI();
  document.getElementById("nav").hidden = false;
  const [, section, id] = location.hash.split("/");
  if (section === "templates" && id) return templateView(draw, hashPart(id));
  if (section === "new-template") return newTemplateView(draw);
  if (section === "phones" && id) return phoneView(draw, hashPart(id));
  if (section === "phones") return phonesView(draw);
  if (section === "directory") return directoryView(draw);
  if (section === "fleet") return fleetView(draw);
  if (section === "unclaimed") return unclaimedView(draw);
  if (section === "login") return loginView();
  return templatesView(draw);
}

// A refused token ends every view under way (their tickets go stale) and
// brings back the log-in form, once: the views' later requests, sent
// without a token, are refused too.
function loggedOut(e) {
  routeTicket();
  document.getElementById("nav").hidden = true;
  if (document.getElementById("login-form")) return;
  loginView("Logged out: " + e.message);
}

// A view that fails says so on the page instead of leaving it blank; the
// error still reaches the console.
function go() {
  const fresh = routeTicket();
  const draw = (title, ...content) => {
    if (!fresh()) throw new Superseded();
    show(title, ...content);
  };
  return route(draw).catch((e) => {
    if (e instanceof LoggedOut) return loggedOut(e);
    if (e instanceof Superseded || !fresh()) return;
    show("Error", el("p", { class: "status error", text: "This view failed: " + e.message }));
    throw e;
  });
}

// A button's or a poll's request refused for its token.
window.addEventListener("unhandledrejection", (event) => {
  if (event.reason instanceof Superseded) return event.preventDefault();
  if (!(event.reason instanceof LoggedOut)) return;
  event.preventDefault();
  loggedOut(event.reason);
});
window.addEventListener("hashchange", go);
window.addEventListener("DOMContentLoaded", () => {
  document.getElementById("logout").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    me = null;
    location.hash = "#/login";
    go();
  });
  go();
});
