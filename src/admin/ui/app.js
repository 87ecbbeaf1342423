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

async function api(method, path, { body, etag } = {}) {
  const headers = { Authorization: "Bearer " + sessionStorage.getItem(TOKEN_KEY) };
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
  if (response.status === 401) {
    sessionStorage.removeItem(TOKEN_KEY);
    location.hash = "#/login";
  }
  return { status: response.status, etag: response.headers.get("ETag"), data };
}

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

// A tenant in a picker: its name, and its slug where that differs (two
// companies of thousands may share a name).
function tenantOption(t) {
  return el("option", { value: t.slug, text: t.name === t.slug ? t.name : t.name + " (" + t.slug + ")" });
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

function loginView() {
  document.getElementById("nav").hidden = true;
  const input = el("input", { id: "token", type: "password", autocomplete: "off", required: true });
  const message = status("login-status");
  const form = el("form", {
    onsubmit: async (event) => {
      event.preventDefault();
      sessionStorage.setItem(TOKEN_KEY, input.value.trim());
      const reply = await api("GET", "/v1/tenants?limit=1");
      if (reply.status === 200) {
        location.hash = "#/templates";
      } else {
        sessionStorage.removeItem(TOKEN_KEY);
        say(message, "Log-in failed: " + errorText(reply), "error");
      }
    },
  },
    el("label", { for: "token", text: "API token" }), input,
    el("p", {}, el("button", { type: "submit", text: "Log in" })),
    message);
  show("Log in", form);
  input.focus();
}

// ---- templates ---------------------------------------------------------

async function templatesView() {
  const scope = el("select", { id: "scope-filter" },
    el("option", { value: "", text: "every scope" }),
    ...["family", "model", "tenant", "phone"].map((s) => el("option", { value: s, text: s })));
  const tbody = el("tbody");
  // Every template of the chosen scope, page after page (listAll), not the
  // server's first page of 100; the note says when the list is not whole.
  const note = status("templates-note");
  const ticket = tickets();
  const load = async () => {
    const newest = ticket();
    say(note, "Loading templates...");
    const query = scope.value ? "?scope=" + encodeURIComponent(scope.value) : "";
    const list = await listAll("/v1/templates" + query);
    if (!newest()) return;
    cutNote(note, list, "templates");
    tbody.replaceChildren();
    for (const t of list.items) {
      tbody.append(el("tr", {},
        el("td", {}, el("a", { href: "#/templates/" + t.id, text: t.family + " " + t.file_pattern })),
        el("td", { text: t.scope }),
        el("td", { text: t.tenant || t.scope_key || "" }),
        el("td", { text: "v" + t.version })));
    }
  };
  scope.addEventListener("change", load);
  show("Templates",
    el("p", {}, el("a", { href: "#/new-template", text: "New template" })),
    el("label", { for: "scope-filter", text: "Scope" }), scope, note,
    el("table", { id: "template-list" }, el("thead", {}, el("tr", {},
      el("th", { text: "Template" }), el("th", { text: "Scope" }),
      el("th", { text: "Applies to" }), el("th", { text: "Version" }))), tbody));
  await load();
}

// A new stored template, started from the shipped default it overrides.
async function newTemplateView() {
  const shipped = (await api("GET", "/v1/shipped-templates")).data || [];
  const pick = el("select", { id: "shipped" },
    ...shipped.map((s, i) => el("option", { value: String(i), text: s.family + " " + s.file_pattern })));
  const scope = el("select", { id: "new-scope" },
    ...["tenant", "phone", "model", "family"].map((s) => el("option", { value: s, text: s })));
  const target = el("input", { id: "new-target", placeholder: "tenant slug, MAC or model" });
  const message = status("new-status");
  const create = async () => {
    const chosen = shipped[Number(pick.value)];
    const source = await api("GET", "/v1/shipped-templates/" + encodeURIComponent(chosen.family) + "/" + encodeURIComponent(chosen.file_pattern));
    const body = { scope: scope.value, family: chosen.family, file_pattern: chosen.file_pattern, body: source.data.body };
    if (scope.value === "tenant") body.tenant = target.value.trim();
    if (scope.value === "phone") body.mac = target.value.trim();
    if (scope.value === "model") body.model = target.value.trim();
    const r = await api("POST", "/v1/templates", { body });
    if (r.status === 201) location.hash = "#/templates/" + r.data.id;
    else say(message, "Not created: " + errorText(r), "error");
  };
  show("New template",
    el("p", { text: "A stored template overrides the shipped default for the phones of its scope. It starts as a copy of the default." }),
    el("label", { for: "shipped", text: "Shipped default" }), pick,
    el("label", { for: "new-scope", text: "Scope" }), scope,
    el("label", { for: "new-target", text: "Applies to (tenant slug, MAC or model; empty for every phone of the family)" }), target,
    el("p", {}, el("button", { type: "button", text: "Create", onclick: create })),
    message);
}

function keyFields(t) {
  const fields = { scope: t.scope, family: t.family, file_pattern: t.file_pattern };
  if (t.scope === "tenant") fields.tenant = t.tenant;
  if (t.scope === "phone") fields.mac = t.scope_key;
  if (t.scope === "model") fields.model = t.scope_key;
  return fields;
}

async function templateView(id) {
  // The id comes from the address bar: only a number names a template, so
  // nothing like "../tenants/x" can make this page ask for another route.
  if (id === null || !/^\d+$/.test(id)) {
    return show("Template", el("p", { class: "status error", text: "No such template: a template's address ends in its number." }));
  }
  const reply = await api("GET", "/v1/templates/" + encodeURIComponent(id));
  if (reply.status !== 200) return show("Template", el("p", { text: errorText(reply) }));
  let template = reply.data;
  let etag = reply.etag;

  const gutter = el("pre", { class: "gutter", "aria-hidden": "true" });
  const body = el("textarea", { id: "body", spellcheck: "false", rows: 20 });
  body.value = template.body;
  const validation = status("validation");
  const saveStatus = status("save-status");
  const resyncOffer = el("div", { id: "resync-offer" });
  const mac = el("input", { id: "preview-mac", placeholder: "0015654aa937" });
  const previewOut = el("div", { id: "preview" });
  const versionsOut = el("div", { id: "versions" });

  // The gutter scrolls with the text; an error line is scrolled into view.
  const numberLines = (errorLine) => {
    const count = body.value.split("\n").length;
    gutter.replaceChildren(...Array.from({ length: count }, (_, i) =>
      el("span", { class: i + 1 === errorLine ? "error" : undefined, text: String(i + 1) })));
    // A trailing blank keeps the last line reachable past a horizontal scrollbar.
    gutter.append(el("span", { text: " " }));
    if (errorLine) {
      const mark = gutter.children[errorLine - 1];
      const top = mark.offsetTop - gutter.offsetTop;
      if (top < body.scrollTop || top > body.scrollTop + body.clientHeight - 40) body.scrollTop = Math.max(0, top - 60);
    }
    gutter.scrollTop = body.scrollTop;
  };
  body.addEventListener("scroll", () => { gutter.scrollTop = body.scrollTop; });
  let timer = null;
  const validationTicket = tickets();
  const validate = async () => {
    const newest = validationTicket();
    const r = await api("POST", "/v1/templates/validate", { body: { ...keyFields(template), body: body.value } });
    if (!newest()) return;
    if (r.status === 200) {
      numberLines(null);
      say(validation, "Valid: renders " + r.data.rendered_bytes + " bytes" +
        (r.data.sample_mac ? " for " + r.data.sample_mac : ""), "ok");
    } else {
      const d = r.data && r.data.error && r.data.error.details;
      numberLines(d && d.line);
      say(validation, d && d.line ? "Line " + d.line + ", column " + d.column + ": " + d.message : errorText(r), "error");
    }
  };
  body.addEventListener("input", () => {
    numberLines(null);
    clearTimeout(timer);
    timer = setTimeout(validate, 300);
  });

  const preview = async () => {
    const r = await api("POST", "/v1/preview", { body: { mac: mac.value.trim(), template_id: template.id, body: body.value } });
    previewOut.replaceChildren();
    if (r.status !== 200) {
      previewOut.append(el("p", { class: "status error", text: "Preview failed: " + errorText(r) }));
      return;
    }
    for (const f of r.data.files) {
      previewOut.append(
        el("h4", { text: f.file + (f.changed ? " (changes)" : " (unchanged)") }),
        el("p", { class: "muted", text: "rendered by " + f.template }),
        f.changed ? diffView(f.diff) : el("p", { text: "No difference from what the phone gets now." }));
    }
  };

  const save = async () => {
    const r = await api("PUT", "/v1/templates/" + template.id, { body: { body: body.value }, etag });
    if (r.status === 200) {
      template = r.data; etag = r.etag;
      say(saveStatus, "Saved as version " + template.version + ".", "ok");
      offerResync(template, resyncOffer);
      await loadVersions();
    } else if (r.status === 412) {
      say(saveStatus, "Conflict: someone else changed this template since you opened it. Your text is kept here; reload to see theirs.", "error");
    } else {
      say(saveStatus, "Not saved: " + errorText(r), "error");
    }
  };

  const loadVersions = async () => {
    const r = await api("GET", "/v1/templates/" + template.id + "/versions");
    const rows = ((r.data) || []).map((v) => el("tr", {},
      el("td", { text: "v" + v.version }),
      el("td", { text: v.updated_by }),
      el("td", { text: new Date(v.updated_at).toISOString() }),
      el("td", {},
        el("button", { type: "button", text: "Diff with current", onclick: async () => {
          const d = await api("GET", "/v1/templates/" + template.id + "/diff?from=" + v.version);
          versionsOut.querySelector(".diff-out").replaceChildren(diffView(d.data.diff));
        } }),
        v.version === template.version ? null : el("button", { type: "button", text: "Roll back to v" + v.version, onclick: async () => {
          const rb = await api("POST", "/v1/templates/" + template.id + "/rollback", { body: { version: v.version }, etag });
          if (rb.status === 200) {
            template = rb.data; etag = rb.etag; body.value = template.body; numberLines(null);
            say(saveStatus, "Rolled back: version " + template.version + " has version " + v.version + "'s text.", "ok");
            await loadVersions();
          } else {
            say(saveStatus, "Rollback refused: " + errorText(rb), "error");
          }
        } }))));
    versionsOut.replaceChildren(
      el("table", {}, el("thead", {}, el("tr", {}, el("th", { text: "Version" }), el("th", { text: "By" }),
        el("th", { text: "When" }), el("th", { text: "" }))), el("tbody", {}, rows)),
      el("div", { class: "diff-out" }));
  };

  show(template.family + " " + template.file_pattern + " (" + template.scope + ")",
    el("p", { class: "muted", text: "Version " + template.version + ", applies to " + (template.tenant || template.scope_key || "every " + template.family + " phone") }),
    el("label", { for: "body", text: "Template text" }),
    el("div", { class: "editor" }, gutter, body),
    validation,
    el("div", { class: "row" },
      el("div", {}, el("label", { for: "preview-mac", text: "Preview for phone (MAC)" }), mac),
      el("button", { type: "button", id: "preview-button", text: "Preview", onclick: preview }),
      el("button", { type: "button", id: "save-button", text: "Save", onclick: save })),
    saveStatus, resyncOffer,
    el("h3", { text: "Preview" }), previewOut,
    el("h3", { text: "Versions" }), versionsOut);
  numberLines(null);
  await loadVersions();
}

// ---- phones ------------------------------------------------------------

async function phonesView() {
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
  show("Phones",
    el("label", { for: "phone-search", text: "Search" }), q,
    el("table", {}, el("thead", {}, el("tr", {}, el("th", { text: "MAC" }), el("th", { text: "Tenant" }),
      el("th", { text: "Model" }), el("th", { text: "Label" }), el("th", { text: "Lines" }))), tbody));
  await load();
}

async function phoneView(mac) {
  if (mac === null) return show("Phone", el("p", { class: "status error", text: "No such phone." }));
  const reply = await api("GET", "/v1/phones/" + encodeURIComponent(mac));
  if (reply.status !== 200) return show("Phone", el("p", { text: errorText(reply) }));
  const p = reply.data;
  const history = await api("GET", "/v1/phones/" + encodeURIComponent(mac) + "/history?limit=20");
  const boots = history.data || [];
  const last = boots[0];
  const files = el("div", { id: "phone-files" });
  show("Phone " + p.mac,
    el("p", { text: p.family + " " + (p.model || "") + " in " + p.tenant + (p.label ? ", " + p.label : "") }),
    el("p", { text: last ? "Detected: " + (last.model || "model unknown") + ", firmware " + (last.firmware || "unknown") +
      "; last fetch " + new Date(last.at).toISOString() : "No boot recorded yet." }),
    el("h3", { text: "Lines" }),
    el("table", {}, el("tbody", {}, p.lines.map((l) => el("tr", {},
      el("td", { text: String(l.position) }), el("td", { text: l.extension }), el("td", { text: l.display_name }),
      el("td", { text: l.registrar }), el("td", { text: l.has_password ? "password set" : "no password" }))))),
    el("h3", { text: "Recent fetches" }),
    el("table", {}, el("tbody", {}, boots.map((b) => el("tr", {},
      el("td", { text: new Date(b.at).toISOString() }), el("td", { text: b.file }),
      el("td", { text: b.protocol }), el("td", { text: b.outcome }))))),
    el("p", {}, el("button", { type: "button", id: "preview-all", text: "Preview all files for this phone", onclick: async () => {
      const r = await api("GET", "/v1/phones/" + encodeURIComponent(mac) + "/files");
      files.replaceChildren(...((r.data && r.data.files) || []).flatMap((f) => [
        el("h4", { text: f.file }), el("p", { class: "muted", text: "rendered by " + f.template }),
        el("pre", { class: "file", text: f.body })]));
    } })),
    files);
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

async function directoryView() {
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
        el("button", { type: "button", text: "Test " + src.name, onclick: async () => {
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
  show("Directory",
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

async function route() {
  if (!sessionStorage.getItem(TOKEN_KEY)) return loginView();
  document.getElementById("nav").hidden = false;
  const [, section, id] = location.hash.split("/");
  if (section === "templates" && id) return templateView(hashPart(id));
  if (section === "new-template") return newTemplateView();
  if (section === "phones" && id) return phoneView(hashPart(id));
  if (section === "phones") return phonesView();
  if (section === "directory") return directoryView();
  if (section === "fleet") return fleetView();
  if (section === "unclaimed") return unclaimedView();
  if (section === "login") return loginView();
  return templatesView();
}

// A view that fails says so on the page instead of leaving it blank; the
// error still reaches the console.
function go() {
  return route().catch((e) => {
    show("Error", el("p", { class: "status error", text: "This view failed: " + e.message }));
    throw e;
  });
}

window.addEventListener("hashchange", go);
window.addEventListener("DOMContentLoaded", () => {
  document.getElementById("logout").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    location.hash = "#/login";
    go();
  });
  go();
});
