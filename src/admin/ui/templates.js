// The template views: the list (#/templates), a new template
// (#/new-template) and the editor (#/templates/{id}) with validation,
// preview, save, versions and rollback. Uses el/api/status/say/
// errorText/tickets/listAll/cutNote/diffView/macDigits/pause/CATCH_UP_MS
// from app.js and offerResync from resync.js; each view draws through the
// `draw` its route gives it.
"use strict";

// How many times a template answered 202 is looked for (CATCH_UP_MS apart).
const CATCH_UP_TRIES = 5;

async function templatesView(draw) {
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
  draw("Templates",
    ...(mayWrite() ? [el("p", {}, el("a", { href: "#/new-template", text: "New template" }))] : []),
    el("label", { for: "scope-filter", text: "Scope" }), scope, note,
    el("table", { id: "template-list" }, el("thead", {}, el("tr", {},
      el("th", { text: "Template" }), el("th", { text: "Scope" }),
      el("th", { text: "Applies to" }), el("th", { text: "Version" }))), tbody));
  await load();
}

// The id of the template a 202 created (the answer carries none), found
// by its key once this node lists it; null if it never does.
async function createdId(body) {
  const query = "?scope=" + encodeURIComponent(body.scope) + "&family=" + encodeURIComponent(body.family) +
    "&file_pattern=" + encodeURIComponent(body.file_pattern) +
    (body.scope === "tenant" ? "&tenant=" + encodeURIComponent(body.tenant) : "");
  const same = (t) => body.scope === "phone" ? t.scope_key === macDigits(body.mac)
    : body.scope === "model" ? t.scope_key === body.model : true;
  for (let n = 0; n < CATCH_UP_TRIES; n++) {
    await pause(CATCH_UP_MS);
    const hit = (await listAll("/v1/templates" + query)).items.find(same);
    if (hit) return hit.id;
  }
  return null;
}

// A new stored template, started from the shipped default it overrides.
async function newTemplateView(draw) {
  if (!mayWrite()) {
    return draw("New template", el("p", { class: "status error", text: "This token is read-only: it cannot create templates." }));
  }
  const reply = await api("GET", "/v1/shipped-templates");
  const shipped = reply.status === 200 ? reply.data : [];
  const pick = el("select", { id: "shipped" },
    ...shipped.map((s, i) => el("option", { value: String(i), text: s.family + " " + s.file_pattern })));
  const scope = el("select", { id: "new-scope" },
    ...["tenant", "phone", "model", "family"].map((s) => el("option", { value: s, text: s })));
  const target = el("input", { id: "new-target", placeholder: "tenant slug, MAC or model" });
  const message = status("new-status");
  if (reply.status !== 200) say(message, "Shipped defaults not loaded: " + errorText(reply), "error");
  const create = async (event) => {
    const button = event.currentTarget;
    const chosen = shipped[Number(pick.value)];
    if (!chosen) return;
    const source = await api("GET", "/v1/shipped-templates/" + encodeURIComponent(chosen.family) + "/" + encodeURIComponent(chosen.file_pattern));
    if (source.status !== 200) return say(message, "Not created: " + errorText(source), "error");
    const body = { scope: scope.value, family: chosen.family, file_pattern: chosen.file_pattern, body: source.data.body };
    if (scope.value === "tenant") body.tenant = target.value.trim();
    if (scope.value === "phone") body.mac = target.value.trim();
    if (scope.value === "model") body.model = target.value.trim();
    const r = await api("POST", "/v1/templates", { body });
    if (r.status === 201) {
      location.hash = "#/templates/" + r.data.id;
      return;
    }
    if (!(r.status === 202 && r.data && r.data.committed)) return say(message, "Not created: " + errorText(r), "error");
    // Written, but this node's copy does not have it yet: creating it again
    // would be refused as a duplicate, so the editor opens once it is listed.
    button.disabled = true;
    say(message, "Created: " + r.data.detail, "ok");
    const id = await createdId(body);
    if (!message.isConnected) return;
    if (id !== null) location.hash = "#/templates/" + id;
    else say(message, "Created, but not listed yet: find it in the templates list in a moment.", "ok");
  };
  draw("New template",
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

async function templateView(draw, id) {
  // The id comes from the address bar: only a number names a template, so
  // nothing like "../tenants/x" can make this page ask for another route.
  if (id === null || !/^\d+$/.test(id)) {
    return draw("Template", el("p", { class: "status error", text: "No such template: a template's address ends in its number." }));
  }
  const reply = await api("GET", "/v1/templates/" + encodeURIComponent(id));
  if (reply.status !== 200) return draw("Template", el("p", { text: errorText(reply) }));
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
  // Plain numbers go in as text, only the error line as an element: a body
  // within its quota may have 250,000 lines, past what one call takes as
  // arguments (the view failed to open at all), and an element a line was
  // slow at every keystroke.
  const numbers = (from, to) => {
    const run = [];
    for (let n = from; n <= to; n++) run.push(n);
    return run.join("\n");
  };
  const numberLines = (errorLine) => {
    const count = body.value.split("\n").length;
    const marked = Number.isInteger(errorLine) && errorLine >= 1 && errorLine <= count;
    // A trailing blank keeps the last line reachable past a horizontal scrollbar.
    const end = "\n ";
    const mark = marked ? el("span", { class: "error", text: String(errorLine) }) : null;
    if (mark) gutter.replaceChildren(numbers(1, errorLine - 1), mark, numbers(errorLine + 1, count) + end);
    else gutter.replaceChildren(numbers(1, count) + end);
    if (mark) {
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

  // Versions and diffs are read from the database, which can be busy (429,
  // 503) while the editor, read from this node's copy, works: a failure
  // is said in this section only. The newest page comes first and older
  // ones on request: a family or model template keeps every version.
  const versionRow = (v) => el("tr", {},
    el("td", { text: "v" + v.version }),
    el("td", { text: v.updated_by }),
    el("td", { text: new Date(v.updated_at).toISOString() }),
    el("td", {},
      el("button", { type: "button", text: "Diff with current", onclick: async () => {
        const d = await api("GET", "/v1/templates/" + template.id + "/diff?from=" + v.version);
        versionsOut.querySelector(".diff-out").replaceChildren(d.status === 200 ? diffView(d.data.diff)
          : el("p", { class: "status error", text: "Diff not loaded: " + errorText(d) }));
      } }),
      v.version === template.version || !mayEdit(template) ? null : el("button", { type: "button", text: "Roll back to v" + v.version, onclick: async () => {
        const rb = await api("POST", "/v1/templates/" + template.id + "/rollback", { body: { version: v.version }, etag });
        if (rb.status === 200) {
          template = rb.data; etag = rb.etag; body.value = template.body; numberLines(null);
          say(saveStatus, "Rolled back: version " + template.version + " has version " + v.version + "'s text.", "ok");
          await loadVersions();
        } else {
          say(saveStatus, "Rollback refused: " + errorText(rb), "error");
        }
      } })));
  const versionPage = (before) => api("GET", "/v1/templates/" + template.id + "/versions" +
    (before === undefined ? "" : "?before=" + before));
  const loadVersions = async () => {
    const r = await versionPage();
    if (r.status !== 200) {
      return versionsOut.replaceChildren(el("p", { class: "status error", text: "Versions not loaded: " + errorText(r) }));
    }
    const rows = el("tbody", {}, ...r.data.items.map(versionRow));
    const older = el("div", { id: "older-versions" });
    const offerOlder = (next) => {
      if (next === null || next === undefined) return older.replaceChildren();
      older.replaceChildren(el("button", { type: "button", text: "Older versions", onclick: async () => {
        const page = await versionPage(next);
        if (page.status !== 200) {
          return older.replaceChildren(el("p", { class: "status error", text: "Older versions not loaded: " + errorText(page) }));
        }
        rows.append(...page.data.items.map(versionRow));
        offerOlder(page.data.next);
      } }));
    };
    offerOlder(r.data.next);
    versionsOut.replaceChildren(
      el("table", {}, el("thead", {}, el("tr", {}, el("th", { text: "Version" }), el("th", { text: "By" }),
        el("th", { text: "When" }), el("th", { text: "" }))), rows),
      older,
      el("div", { class: "diff-out" }));
  };

  draw(template.family + " " + template.file_pattern + " (" + template.scope + ")",
    el("p", { class: "muted", text: "Version " + template.version + ", applies to " + (template.tenant || template.scope_key || "every " + template.family + " phone") }),
    el("label", { for: "body", text: "Template text" }),
    el("div", { class: "editor" }, gutter, body),
    validation,
    el("div", { class: "row" },
      el("div", {}, el("label", { for: "preview-mac", text: "Preview for phone (MAC)" }), mac),
      el("button", { type: "button", id: "preview-button", text: "Preview", onclick: preview }),
      mayEdit(template) ? el("button", { type: "button", id: "save-button", text: "Save", onclick: save }) : null),
    saveStatus, resyncOffer,
    el("h3", { text: "Preview" }), previewOut,
    el("h3", { text: "Versions" }), versionsOut);
  numberLines(null);
  await loadVersions();
}
