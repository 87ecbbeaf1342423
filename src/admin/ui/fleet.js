// The fleet view (#/fleet): one tenant's phones by model and firmware,
// boots per hour, phones not seen lately and phones whose last fetch
// failed, from GET /v1/tenants/{slug}/fleet. Charts are SVG built node by
// node (no markup strings), so tenant data only ever lands in text nodes
// and attributes. Uses el/api/status/say/errorText/tenantPicker from
// app.js; draws through the `draw` its route gives it.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const HOUR_MS = 3600000;

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") node.textContent = v;
    else node.setAttribute(k, String(v));
  }
  for (const child of children.flat()) if (child) node.append(child);
  return node;
}

function when(ms) {
  return ms === null || ms === undefined ? "never" : new Date(ms).toISOString().replace(".000Z", "Z");
}

// Horizontal bars, one per (family, model, firmware), longest first.
function modelChart(models) {
  const rows = [...models].sort((a, b) => b.phones - a.phones);
  if (!rows.length) return el("p", { class: "muted", text: "No phones." });
  const labelWidth = 320, barWidth = 420, rowHeight = 22;
  const max = Math.max(...rows.map((r) => r.phones));
  const height = rows.length * rowHeight + 4;
  const chart = svg("svg", {
    id: "models-chart", class: "chart", role: "img", width: labelWidth + barWidth + 60, height,
    viewBox: `0 0 ${labelWidth + barWidth + 60} ${height}`,
    "aria-label": "Phones by model and firmware",
  });
  rows.forEach((r, i) => {
    const y = i * rowHeight + 2;
    const label = r.family + " " + (r.model || "model unknown") + " · " + (r.firmware || "firmware unknown");
    const width = Math.max(1, Math.round((r.phones / max) * barWidth));
    chart.append(
      svg("text", { x: labelWidth - 6, y: y + 15, class: "label", "text-anchor": "end", text: label }),
      svg("rect", { x: labelWidth, y, width, height: rowHeight - 6, class: "bar" },
        svg("title", { text: label + ": " + r.phones })),
      svg("text", { x: labelWidth + width + 6, y: y + 15, class: "value", text: String(r.phones) }));
  });
  return chart;
}

// One column per hour, the window's start and end and the peak labelled.
function bootsChart(hours) {
  const plotWidth = 720, plotHeight = 160, left = 40, bottom = 22;
  const max = Math.max(1, ...hours.map((h) => h.boots));
  const step = plotWidth / Math.max(1, hours.length);
  const chart = svg("svg", {
    id: "boots-chart", class: "chart", role: "img", width: left + plotWidth + 10, height: plotHeight + bottom + 8,
    viewBox: `0 0 ${left + plotWidth + 10} ${plotHeight + bottom + 8}`,
    "aria-label": "Boots per hour",
  });
  chart.append(
    svg("line", { x1: left, y1: plotHeight + 4, x2: left + plotWidth, y2: plotHeight + 4, class: "axis" }),
    svg("text", { x: left - 4, y: 14, class: "value", "text-anchor": "end", text: String(max) }),
    svg("text", { x: left - 4, y: plotHeight + 4, class: "value", "text-anchor": "end", text: "0" }));
  hours.forEach((h, i) => {
    const height = Math.round((h.boots / max) * (plotHeight - 4));
    chart.append(svg("rect", {
      x: left + i * step + 1, y: plotHeight + 4 - height, width: Math.max(1, step - 2), height, class: "bar",
    }, svg("title", { text: when(h.hour) + ": " + h.boots + " boots" })));
  });
  if (hours.length) {
    chart.append(
      svg("text", { x: left, y: plotHeight + bottom, class: "value", text: when(hours[0].hour) }),
      svg("text", { x: left + plotWidth, y: plotHeight + bottom, class: "value", "text-anchor": "end",
        text: when(hours[hours.length - 1].hour + HOUR_MS) }));
  }
  return chart;
}

function table(id, headings, rows) {
  return el("table", { id }, el("thead", {}, el("tr", {}, headings.map((h) => el("th", { text: h })))),
    el("tbody", {}, rows));
}

function phoneLink(mac) {
  return el("td", {}, el("a", { href: "#/phones/" + encodeURIComponent(mac), text: mac }));
}

async function fleetView(draw) {
  const picker = await tenantPicker("fleet-tenant");
  const tenant = picker.select;
  const days = el("input", { id: "fleet-days", type: "number", min: "1", max: "365", value: "7" });
  const hours = el("select", { id: "fleet-hours" },
    ...[24, 72, 168].map((h) => el("option", { value: String(h), text: h + " hours", selected: h === 72 })));
  const message = status("fleet-status");
  const out = el("div", { id: "fleet" });
  const resyncs = el("div", { id: "resyncs" });
  const ticket = tickets();
  const load = async () => {
    const newest = ticket();
    const slug = encodeURIComponent(tenant.value);
    const r = await api("GET", "/v1/tenants/" + slug + "/fleet?days=" + encodeURIComponent(days.value) +
      "&hours=" + encodeURIComponent(hours.value));
    if (!newest()) return;
    if (r.status !== 200) {
      out.replaceChildren();
      return say(message, "Fleet not loaded: " + errorText(r), "error");
    }
    const f = r.data;
    say(message, f.phones + " phones" + (f.truncated ? "; figures cover the first " + f.examined : ""), "ok");
    out.replaceChildren(
      el("h3", { text: "Phones by model and firmware" }), modelChart(f.models),
      el("h3", { text: "Boots per hour, last " + f.hours + " hours" }), bootsChart(f.boots_per_hour),
      el("h3", { text: "Not seen for " + f.days + (f.days === 1 ? " day" : " days") + " (" + f.not_seen_total + ")" }),
      table("not-seen", ["MAC", "Model", "Last seen"], f.not_seen.map((n) => el("tr", {},
        phoneLink(n.mac), el("td", { text: n.model || "" }), el("td", { text: when(n.last_seen) })))),
      el("h3", { text: "Last fetch failed (" + f.failing_total + ")" }),
      table("failing", ["MAC", "When", "Outcome", "Reason", "Source", "Protocol", "File"], f.failing.map((x) => el("tr", {},
        phoneLink(x.mac), el("td", { text: when(x.at) }), el("td", { text: x.outcome }),
        el("td", { text: x.reason }), el("td", { text: x.source }), el("td", { text: x.protocol }),
        el("td", { text: x.file })))));
    if (resyncOn()) resyncTable(resyncs, tenant.value);
  };
  tenant.addEventListener("change", load);
  days.addEventListener("change", load);
  hours.addEventListener("change", load);
  draw("Fleet",
    el("div", { class: "row" },
      el("div", {}, el("label", { for: "fleet-tenant", text: "Tenant" }), tenant),
      el("div", {}, el("label", { for: "fleet-days", text: "Not seen for (days)" }), days),
      el("div", {}, el("label", { for: "fleet-hours", text: "Boots over" }), hours)),
    picker.note, message, out,
    ...(resyncOn() ? [el("h3", { text: "Resyncs" }), resyncs] : []));
  await load();
}
