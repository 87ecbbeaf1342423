// Drives the admin page in Debian's Chromium (headless, through
// playwright-core; no browser download). Called by tests/ui.rs, which
// starts `dialtone serve --demo` and passes what it needs in the
// environment. Exits non-zero on the first failed step; screenshots go to
// UI_ARTIFACTS.
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const api = env("UI_API");              // http://127.0.0.1:PORT
const prov = env("UI_PROVISIONING");    // http://127.0.0.1:PORT
const token = env("UI_TOKEN");          // global admin
const tenantToken = env("UI_TENANT_TOKEN"); // tenant admin of "other"
const readToken = env("UI_READ_TOKEN"); // tenant-read of "other"
const mac = env("UI_MAC");
const artifacts = env("UI_ARTIFACTS");
mkdirSync(artifacts, { recursive: true });

const step = (n, what) => console.log(`step ${n}: ${what}`);
const fail = (message) => { throw new Error(message); };
const phoneFile = async () => (await fetch(`${prov}/${mac}.cfg`)).text();

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-dev-shm-usage"],
});
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 1000 } });
  const page = await context.newPage();
  const cspViolations = [];
  page.on("console", (m) => { if (/Content Security Policy/i.test(m.text())) cspViolations.push(m.text()); });
  page.on("pageerror", (e) => fail(`script error on the page: ${e.message}`));

  step(1, "log in");
  await page.goto(`${api}/ui/`);
  await page.getByLabel("API token").fill(token);
  await page.getByRole("button", { name: "Log in" }).click();
  await page.getByRole("heading", { name: "Templates" }).waitFor();
  if (page.url().includes(token)) fail("the token leaked into the URL");

  step(2, "create a Yealink template from the shipped default, and open it");
  await page.getByRole("link", { name: "New template" }).click();
  await page.getByLabel("Shipped default").selectOption({ label: "yealink {mac}.cfg" });
  await page.getByLabel("Scope").selectOption("tenant");
  await page.getByLabel(/Applies to/).fill("demo");
  await page.getByRole("button", { name: "Create" }).click();
  // Created: the page moves to the new template's editor.
  await page.getByLabel("Template text").waitFor();
  const templateId = page.url().split("/").pop();
  if (!/^\d+$/.test(templateId)) fail(`not on a template's page: ${page.url()}`);
  await page.goto(`${api}/ui/#/templates`);
  await page.locator(`a[href="#/templates/${templateId}"]`).click();
  const editor = page.getByLabel("Template text");
  await editor.waitFor();
  const original = await editor.inputValue();
  await page.screenshot({ path: `${artifacts}/editor.png`, fullPage: true });

  step(3, "introduce a syntax error and see it at its line");
  const lines = original.split("\n");
  const broken = [...lines.slice(0, 2), "{% if %}", ...lines.slice(2)].join("\n");
  await editor.fill(broken);
  await page.locator("#validation.error").waitFor();
  const message = await page.locator("#validation").textContent();
  if (!/^Line 3, column \d+/.test(message)) fail(`validation message does not name line 3: ${message}`);
  if (!(await page.locator(".gutter span.error").textContent()).includes("3")) fail("line 3 is not marked");
  await page.screenshot({ path: `${artifacts}/editor-error.png`, fullPage: true });

  step(4, "fix it and preview for a demo MAC, seeing the diff");
  const marker = `# edited in the browser ${Date.now()}`;
  const fixed = [...lines.slice(0, 2), marker, ...lines.slice(2)].join("\n");
  await editor.fill(fixed);
  await page.locator("#validation.ok").waitFor();
  await page.getByLabel("Preview for phone (MAC)").fill(mac);
  await page.getByRole("button", { name: "Preview", exact: true }).click();
  await page.locator("#preview pre.diff .add", { hasText: marker }).first().waitFor();
  await page.screenshot({ path: `${artifacts}/preview.png`, fullPage: true });
  if ((await phoneFile()).includes(marker)) fail("the preview changed what the phone gets");

  step(5, "save");
  await page.getByRole("button", { name: "Save" }).click();
  await page.locator("#save-status.ok").waitFor();
  const saved = await page.locator("#save-status").textContent();
  const version = Number(/version (\d+)/.exec(saved)[1]);

  step(6, "the phone gets the new bytes over HTTP provisioning");
  let text = "";
  for (let i = 0; i < 100 && !text.includes(marker); i++) {
    text = await phoneFile();
    if (!text.includes(marker)) await new Promise((r) => setTimeout(r, 50));
  }
  if (!text.includes(marker)) fail("the phone never got the saved template");

  step(7, "roll back and get the old bytes");
  await page.getByRole("button", { name: `Roll back to v${version - 1}` }).click();
  await page.locator("#save-status", { hasText: "Rolled back" }).waitFor();
  for (let i = 0; i < 100 && (await phoneFile()).includes(marker); i++) {
    await new Promise((r) => setTimeout(r, 50));
  }
  if ((await phoneFile()).includes(marker)) fail("the phone still gets the edited bytes after the rollback");

  step(8, "the phone view, with every file");
  await page.goto(`${api}/ui/#/phones/${mac}`);
  await page.getByRole("button", { name: "Preview all files for this phone" }).click();
  await page.locator("#phone-files pre.file").first().waitFor();
  await page.screenshot({ path: `${artifacts}/phone.png`, fullPage: true });

  step(9, "a conflict is shown, not overwritten");
  await page.goto(`${api}/ui/#/templates/${templateId}`);
  await editor.waitFor();
  const current = await (await fetch(`${api}/v1/templates/${templateId}`, { headers: { Authorization: `Bearer ${token}` } })).json();
  const behind = await fetch(`${api}/v1/templates/${templateId}`, {
    method: "PUT",
    headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
    body: JSON.stringify({ body: current.body + "\n# changed elsewhere\n" }),
  });
  if (behind.status !== 200) fail(`the concurrent edit failed: ${behind.status}`);
  await editor.fill(current.body + "\n# my edit\n");
  await page.getByRole("button", { name: "Save" }).click();
  await page.locator("#save-status", { hasText: "Conflict" }).waitFor();

  step(10, "the directory: entries, search, and a source test");
  await page.goto(`${api}/ui/#/directory`);
  await page.getByLabel("Tenant").selectOption("demo");
  await page.locator("tbody tr").first().waitFor();
  const everyone = await page.locator("tbody tr").count();
  await page.getByLabel("Search entries").fill("alice");
  await page.waitForFunction((n) => document.querySelectorAll("tbody tr").length < n, everyone);
  // Replies out of order: a slow reply listing every entry, landing after
  // the search's, must not replace it.
  const unfiltered = /\/directory\?q=$/;
  await page.route(unfiltered, async (route) => {
    await new Promise((resolve) => setTimeout(resolve, 1000));
    await route.continue();
  });
  const late = page.waitForResponse((r) => unfiltered.test(r.url()));
  await page.getByLabel("Search entries").fill("");
  await page.getByLabel("Search entries").fill("alice");
  await (await late).finished();
  await page.evaluate(() => new Promise((resolve) => setTimeout(resolve, 300)));
  const shown = await page.locator("tbody tr").count();
  if (shown >= everyone) fail(`a late reply listing every entry replaced the search's: ${shown} of ${everyone} rows`);
  await page.unroute(unfiltered);
  await page.getByRole("button", { name: "Test cnam" }).click();
  await page.locator("#test-cnam", { hasText: " ms" }).waitFor();
  await page.locator("#mirror-ad", { hasText: "Mirror: 0 entries" }).waitFor();
  await page.screenshot({ path: `${artifacts}/directory.png`, fullPage: true });

  step(11, "a tenant's token sees only its own templates and phones");
  const other = await browser.newContext();
  const tenantPage = await other.newPage();
  await tenantPage.goto(`${api}/ui/`);
  await tenantPage.getByLabel("API token").fill(tenantToken);
  await tenantPage.getByRole("button", { name: "Log in" }).click();
  await tenantPage.getByRole("heading", { name: "Templates" }).waitFor();
  await tenantPage.locator("tbody tr").first().waitFor();
  const templateRows = await tenantPage.locator("tbody tr").allTextContents();
  if (templateRows.some((r) => !r.includes("other"))) fail(`another tenant's template is listed: ${templateRows}`);
  await tenantPage.goto(`${api}/ui/#/phones`);
  await tenantPage.getByLabel("Search").waitFor();
  await tenantPage.locator("tbody tr").first().waitFor();
  const phoneRows = await tenantPage.locator("tbody tr").allTextContents();
  if (phoneRows.length === 0 || phoneRows.some((r) => !r.includes("other"))) fail(`phones of another tenant are listed: ${phoneRows}`);
  await tenantPage.screenshot({ path: `${artifacts}/tenant-view.png`, fullPage: true });
  // The tenant admin may edit its own template; a read-only token of the
  // same tenant is offered neither that nor a new template.
  await tenantPage.goto(`${api}/ui/#/templates`);
  await tenantPage.locator("tbody tr a").first().click();
  await tenantPage.locator("#save-button").waitFor();
  const reader = await (await browser.newContext()).newPage();
  await reader.goto(`${api}/ui/`);
  await reader.getByLabel("API token").fill(readToken);
  await reader.getByRole("button", { name: "Log in" }).click();
  await reader.getByRole("heading", { name: "Templates" }).waitFor();
  await reader.locator("tbody tr a").first().waitFor();
  if (await reader.getByRole("link", { name: "New template" }).count()) fail("a read-only token is offered New template");
  await reader.locator("tbody tr a").first().click();
  await reader.locator("#body").waitFor();
  await reader.getByRole("heading", { name: "Versions" }).waitFor();
  if (await reader.locator("#save-button").count()) fail("a read-only token is offered Save");
  if (await reader.getByRole("button", { name: /Roll back/ }).count()) fail("a read-only token is offered a rollback");
  // Who the token is could not be read (busy): everything is offered and
  // the server decides; the next view asks again and hides them.
  await reader.route("**/v1/whoami", (route) => route.fulfill({ status: 503, contentType: "application/json", body: '{"error":{"code":"unavailable","message":"busy"}}' }));
  await reader.goto(`${api}/ui/#/templates`);
  await reader.reload();
  await reader.getByRole("link", { name: "New template" }).waitFor();
  await reader.unroute("**/v1/whoami");
  await reader.goto(`${api}/ui/#/phones`);
  await reader.getByLabel("Search").waitFor();
  await reader.goto(`${api}/ui/#/templates`);
  await reader.locator("tbody tr a").first().waitFor();
  if (await reader.getByRole("link", { name: "New template" }).count()) fail("one failed whoami kept a read-only token offered New template");

  step(12, "seed boot history: good fetches with firmware, and a phone whose file fails to render");
  const fetchAs = (file, agent) => fetch(`${prov}/${file}`, { headers: { "User-Agent": agent } });
  // A phone the steps above have not fetched for: within a minute, the
  // history records one fetch of a file, whatever the User-Agent.
  const poly = "0004f2abcd01";
  for (let i = 0; i < 3; i++) {
    const r = await fetchAs(`${poly}.cfg`, "FileTransport PolycomVVX-VVX_450-UA/6.4.3.1234 Type/Application");
    if (r.status !== 200) fail(`the Poly phone got ${r.status}`);
  }
  const failingMac = "805ec0123456";
  const made = await fetch(`${api}/v1/templates`, {
    method: "POST",
    headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
    body: JSON.stringify({ scope: "phone", mac: failingMac, family: "yealink", file_pattern: "{mac}.cfg", body: "{% if phone.label == \"broken\" %}{{ throw(\"seeded failure\") }}{% endif %}ok = 1\n" }),
  });
  if (made.status !== 201) fail(`the failing template was not created: ${made.status} ${await made.text()}`);
  // The template is checked when saved, so it breaks only once the phone
  // it renders for changes.
  const auth = { Authorization: `Bearer ${token}`, "Content-Type": "application/json" };
  const p = await (await fetch(`${api}/v1/phones/${failingMac}`, { headers: auth })).json();
  const relabelled = await fetch(`${api}/v1/phones/${failingMac}`, {
    method: "PUT",
    headers: auth,
    body: JSON.stringify({ tenant: p.tenant, family: p.family, model: p.model, label: "broken",
      lines: p.lines.map((l) => ({ extension: l.extension, display_name: l.display_name, registrar: l.registrar })) }),
  });
  if (relabelled.status !== 200) fail(`the phone was not relabelled: ${relabelled.status} ${await relabelled.text()}`);
  await fetchAs(`${failingMac}.cfg`, "Yealink SIP-T54W 96.86.0.100 80:5e:c0:12:34:56");
  // History is written in batches: wait until the API sees both phones.
  let fleet = null;
  for (let i = 0; i < 100; i++) {
    fleet = await (await fetch(`${api}/v1/tenants/demo/fleet`, { headers: { Authorization: `Bearer ${token}` } })).json();
    if (fleet.failing.length && fleet.models.some((m) => m.firmware === "6.4.3.1234")) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  if (!fleet.failing.some((f) => f.mac === failingMac)) fail(`no failing phone in the fleet: ${JSON.stringify(fleet)}`);

  step(13, "the fleet view: charts, phones not seen, failing phones and resyncs");
  await page.goto(`${api}/ui/#/fleet`);
  await page.getByLabel("Tenant").selectOption("demo");
  await page.locator("#models-chart rect.bar").first().waitFor();
  const bars = await page.locator("#models-chart text.label").allTextContents();
  if (!bars.some((b) => b.includes("VVX 450") && b.includes("6.4.3.1234"))) fail(`no VVX 450 6.4.3.1234 bar: ${bars}`);
  const tall = await page.locator("#boots-chart rect.bar").evaluateAll((rs) => rs.filter((r) => Number(r.getAttribute("height")) > 0).length);
  if (tall === 0) fail("the boots plot is empty");
  await page.locator("#failing tbody tr", { hasText: failingMac }).waitFor();
  // The reason names the failure's kind and place; a throw's own text
  // (which could carry a line's password) stays in the check and preview.
  const failingReason = await page.locator("#failing tbody tr", { hasText: failingMac }).textContent();
  if (!failingReason.includes("invalid operation")) fail(`the failure's reason is missing: ${failingReason}`);
  if (failingReason.includes("seeded failure")) fail("a throw's message reached the fleet view");
  await page.locator("#not-seen tbody tr").first().waitFor();
  await page.getByLabel("Not seen for (days)").fill("1");
  await page.getByLabel("Not seen for (days)").dispatchEvent("change");
  await page.getByRole("heading", { name: /Not seen for 1 day / }).waitFor();
  await page.locator("#resyncs-status").filter({ hasText: /./ }).or(page.locator("#resync-table tbody tr").first()).first().waitFor();
  await page.screenshot({ path: `${artifacts}/fleet.png`, fullPage: true });

  step(14, "after a save, resync the template's phones, and see the answer");
  await page.goto(`${api}/ui/#/templates/${templateId}`);
  await editor.waitFor();
  await editor.fill((await editor.inputValue()) + "\n# resync me\n");
  await page.getByRole("button", { name: "Save" }).click();
  await page.locator("#save-status.ok").waitFor();
  await page.locator("#affected", { hasText: mac }).waitFor();
  await page.getByRole("button", { name: "Resync affected phones" }).click();
  await page.locator("#resync-result").filter({ hasText: /demo: / }).waitFor();
  const answer = await page.locator("#resync-result").textContent();
  // Of the demo's two Yealink phones, one has a template of its own since
  // step 12: the saved template does not reach it, so it is not told.
  if (!/demo: 1 queued/.test(answer)) fail(`the resyncs were not queued: ${answer}`);
  await page.screenshot({ path: `${artifacts}/resync-offer.png`, fullPage: true });
  await page.goto(`${api}/ui/#/fleet`);
  await page.getByLabel("Tenant").selectOption("demo");
  await page.locator("#resync-table").waitFor();
  await page.locator("#resync-table tbody tr", { hasText: mac }).waitFor();
  // Polled: the proxy's answer shows up without a reload.
  await page.locator("#resync-table tbody tr.resync-answered").first().waitFor();
  await page.screenshot({ path: `${artifacts}/resyncs.png`, fullPage: true });

  step(15, "a tenant's fleet shows only its own phones");
  await tenantPage.goto(`${api}/ui/#/fleet`);
  await tenantPage.locator("#models-chart").waitFor();
  const tenantFleet = await tenantPage.locator("#fleet").textContent();
  if (tenantFleet.includes(mac) || tenantFleet.includes(failingMac)) fail("another tenant's phones are in the fleet view");

  step(16, "a template as long as its quota allows opens in the editor");
  // 131,000 lines: one gutter element a line, passed as one call's
  // arguments, threw past about 125,000 and the view never opened.
  const long = await fetch(`${api}/v1/templates`, {
    method: "POST",
    headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
    body: JSON.stringify({ scope: "tenant", tenant: "demo", family: "poly", file_pattern: "{mac}-phone.cfg", body: "#\n".repeat(131000) }),
  });
  if (long.status !== 201) fail(`the long template was not created: ${long.status} ${await long.text()}`);
  const longId = (await long.json()).id;
  await page.goto(`${api}/ui/#/templates/${longId}`);
  await page.getByLabel("Template text").waitFor({ timeout: 60000 });
  const gutterText = await page.locator(".gutter").textContent();
  if (!gutterText.includes("131001")) fail("the long template's last line is not numbered");
  if (await page.getByText("This view failed").count()) fail("the long template's view failed");

  step(17, "a phone's hardware is replaced: the new MAC gets its lines, the old one nothing");
  await page.goto(`${api}/ui/#/phones/001565bb0001`);
  await page.getByLabel("New MAC").fill("00:15:65:bb:00:99");
  await page.getByRole("button", { name: "Replace" }).click();
  await page.getByRole("heading", { name: "Phone 001565bb0099" }).waitFor();
  if (!(await page.getByText("other desk").count())) fail("the replaced phone's line is not shown");
  await page.getByLabel("New MAC").fill("001565bb0099");
  await page.getByRole("button", { name: "Replace" }).click();
  await page.locator("#replace-status.error").waitFor();
  const swapped = await fetch(`${prov}/001565bb0099.cfg`);
  if (swapped.status !== 200) fail(`the replacement's file: ${swapped.status}`);
  if (!(await swapped.text()).includes("# other")) fail("the replacement is not served its tenant's template");

  step(18, "a phone's recent changes say who changed it");
  await page.goto(`${api}/ui/#/phones/${failingMac}`);
  const changed = page.locator("#phone-changes tr", { hasText: "update" });
  await changed.first().waitFor();
  if (!(await changed.first().textContent()).includes("token:")) fail("the change does not name its token");
  await page.goto(`${api}/ui/#/phones/001565bb0099`);
  await page.getByRole("heading", { name: "Phone 001565bb0099" }).waitFor();
  await page.locator("#phone-changes").waitFor({ state: "attached" });
  if (await page.locator("#phone-changes tr").count()) fail("the replacement shows the old MAC's changes");

  if (cspViolations.length) fail(`CSP violations: ${cspViolations.join("; ")}`);
  console.log("all steps passed");
} finally {
  await browser.close();
}
