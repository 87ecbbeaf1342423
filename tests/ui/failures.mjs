// The admin page when requests fail, in Debian's Chromium
// (playwright-core): a part read from the database refused (busy, or a
// file that does not render) is said in that part while the rest of the
// view works; a write answered 202 (committed, not yet in the node's copy)
// is success; a refused token brings back the log-in form and keeps it; a
// slow view never covers a newer one. Failures the test server would not
// give on demand are answered by the browser (page.route); the 202s come
// from real writes whose 201 is rewritten. Called by tests/ui.rs, which
// imports one tenant with one phone (UI_MAC), stores one template
// (UI_TEMPLATE), lists one unknown phone as unassigned (UI_UNCLAIMED_MAC)
// and makes a second token for the test to revoke (UI_DOOMED, id
// UI_DOOMED_ID). Exits non-zero on the first failed step.
import { chromium } from "playwright-core";

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const api = env("UI_API");
const token = env("UI_TOKEN");
const doomed = env("UI_DOOMED");
const doomedId = env("UI_DOOMED_ID");
const templateId = env("UI_TEMPLATE");
const mac = env("UI_MAC");
const unclaimedMac = env("UI_UNCLAIMED_MAC");

const step = (n, what) => console.log(`step ${n}: ${what}`);
const fail = (message) => { throw new Error(message); };
const settle = (page, ms = 500) => page.evaluate((t) => new Promise((resolve) => setTimeout(resolve, t)), ms);
const error = (status, code, message) => ({
  status, contentType: "application/json", body: JSON.stringify({ error: { code, message } }),
});
// A real write, its 201 answered to the page as the 202 of a node whose
// copy has not caught up yet.
const asNotYetShown = (what) => async (route) => {
  if (route.request().method() !== "POST") return route.continue();
  const real = await route.fetch();
  if (real.status() !== 201) fail(`the real write answered ${real.status()}: ${await real.text()}`);
  await route.fulfill({
    status: 202,
    contentType: "application/json",
    body: JSON.stringify({ committed: true, detail: `${what} is written; this node has not caught up with it yet, read it again in a moment` }),
  });
};
let pageError = null;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-dev-shm-usage"],
});
try {
  const page = await (await browser.newContext({ viewport: { width: 1280, height: 1000 } })).newPage();
  page.setDefaultTimeout(10000);
  const cspViolations = [];
  page.on("console", (m) => { if (/Content Security Policy/i.test(m.text())) cspViolations.push(m.text()); });
  page.on("pageerror", (e) => { pageError = pageError || e.message; });
  const checkErrors = () => { if (pageError) fail(`script error on the page: ${pageError}`); };
  const heading = () => page.locator("#main h2").textContent();
  const logIn = async (secret) => {
    await page.getByLabel("API token").fill(secret);
    await page.getByRole("button", { name: "Log in" }).click();
  };

  step(1, "a refused log-in keeps its message");
  await page.goto(`${api}/ui/#/phones`);
  await logIn("not-a-token");
  await page.locator("#login-status", { hasText: "Log-in failed" }).waitFor();
  await settle(page);
  const refused = await page.locator("#login-status").textContent();
  if (!refused.startsWith("Log-in failed")) fail(`the log-in message was wiped: "${refused}"`);
  checkErrors();

  step(2, "logging in returns to the view asked for");
  await logIn(token);
  await page.getByRole("heading", { name: "Phones" }).waitFor();
  checkErrors();

  step(3, "a template's versions refused: the editor works, the versions say why");
  await page.route(/\/v1\/templates\/\d+\/versions$/, (route) => route.fulfill(error(503, "unavailable", "the database is busy")));
  await page.goto(`${api}/ui/#/templates/${templateId}`);
  await page.locator("#versions p.status.error", { hasText: "Versions not loaded: the database is busy" }).waitFor();
  await page.getByLabel("Template text").waitFor();
  await page.getByRole("button", { name: "Save" }).waitFor();
  await page.unroute(/\/v1\/templates\/\d+\/versions$/);
  checkErrors();

  step(4, "a refused diff says why");
  await page.route(/\/v1\/templates\/\d+\/diff\?/, (route) => route.fulfill(error(429, "busy", "too many requests")));
  await page.reload();
  await page.getByRole("button", { name: "Diff with current" }).first().click();
  await page.locator("#versions .diff-out p.status.error", { hasText: "Diff not loaded: too many requests" }).waitFor();
  await page.unroute(/\/v1\/templates\/\d+\/diff\?/);
  checkErrors();

  step(5, "a phone's fetches refused: the phone shows, the fetches say why");
  await page.route(/\/v1\/phones\/[^/]+\/history\?/, (route) => route.fulfill(error(503, "unavailable", "the database is busy")));
  await page.goto(`${api}/ui/#/phones/${mac}`);
  await page.locator("#phone-history.error", { hasText: "Recent fetches not loaded: the database is busy" }).waitFor();
  if (!(await heading()).startsWith("Phone ")) fail(`the phone view shows "${await heading()}"`);
  await page.unroute(/\/v1\/phones\/[^/]+\/history\?/);
  checkErrors();

  step(6, "files that do not render say why");
  await page.route(/\/v1\/phones\/[^/]+\/files$/, (route) => route.fulfill(error(422, "invalid", "yealink {mac}.cfg does not render")));
  await page.getByRole("button", { name: "Preview all files for this phone" }).click();
  await page.locator("#phone-files p.status.error", { hasText: "Files not rendered: yealink {mac}.cfg does not render" }).waitFor();
  await page.unroute(/\/v1\/phones\/[^/]+\/files$/);
  checkErrors();

  step(7, "a new template answered 202 is created, and opens once listed");
  await page.route(/\/v1\/templates$/, asNotYetShown("template {mac}.cfg"));
  await page.goto(`${api}/ui/#/new-template`);
  await page.getByLabel("Shipped default").selectOption({ label: "yealink {mac}.cfg" });
  await page.getByLabel("Scope").selectOption("phone");
  // Spelled with colons: the page finds it by the twelve digits it is stored under.
  await page.getByLabel(/Applies to/).fill(mac.match(/../g).join(":"));
  await page.getByRole("button", { name: "Create" }).click();
  await page.locator("#new-status.ok", { hasText: "not caught up" }).waitFor();
  await page.getByLabel("Template text").waitFor({ timeout: 15000 });
  if (!/\(phone\)$/.test(await heading())) fail(`not the new phone template: "${await heading()}"`);
  await page.unroute(/\/v1\/templates$/);
  checkErrors();

  step(8, "a claim answered 202 is a claim, and the list is read again");
  await page.route(/\/unclaimed\/[^/]+\/claim$/, asNotYetShown(`phone ${unclaimedMac}`));
  await page.goto(`${api}/ui/#/unclaimed`);
  const unassigned = page.getByRole("region", { name: "Unassigned unclaimed phones" });
  const row = unassigned.locator("tr", { hasText: unclaimedMac });
  await row.waitFor();
  await page.locator("#unassigned-tenant").selectOption("acme");
  await row.getByLabel("Name").fill("Reception");
  await row.getByRole("button", { name: `Claim ${unclaimedMac}` }).click();
  await row.locator("p.status.ok", { hasText: "not caught up" }).waitFor();
  await unassigned.getByText(`Claimed ${unclaimedMac} as a phone of acme.`).waitFor();
  if (await row.count()) fail("the claimed phone is still listed");
  await page.unroute(/\/unclaimed\/[^/]+\/claim$/);
  checkErrors();

  step(9, "a slow view does not cover the one opened after it");
  await page.goto(`${api}/ui/#/templates`);
  await page.getByRole("heading", { name: "Templates" }).waitFor();
  const tenantsList = /\/v1\/tenants\?/;
  await page.route(tenantsList, async (route) => {
    await new Promise((resolve) => setTimeout(resolve, 1500));
    await route.continue();
  });
  const slow = page.waitForResponse((r) => tenantsList.test(r.url()));
  await page.evaluate(() => { location.hash = "#/directory"; });
  await page.evaluate(() => { location.hash = "#/phones"; });
  await page.getByRole("heading", { name: "Phones" }).waitFor();
  await (await slow).finished();
  await settle(page);
  if ((await heading()) !== "Phones") fail(`the slow directory covered the phones: "${await heading()}"`);
  await page.unroute(tenantsList);
  checkErrors();

  step(10, "a token revoked while in use: a button's request brings back the log-in form, with why");
  await page.evaluate((t) => sessionStorage.setItem("dialtone-token", t), doomed);
  await page.goto(`${api}/ui/#/phones/${mac}`);
  await page.getByRole("button", { name: "Preview all files for this phone" }).waitFor();
  const revoked = await fetch(`${api}/v1/tokens/${doomedId}`, { method: "DELETE", headers: { Authorization: `Bearer ${token}` } });
  if (!revoked.ok) fail(`the token was not revoked: ${revoked.status}`);
  for (let i = 0; ; i++) {
    const r = await fetch(`${api}/v1/tenants?limit=1`, { headers: { Authorization: `Bearer ${doomed}` } });
    if (r.status === 401) break;
    if (i === 100) fail("the revoked token is still accepted");
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  await page.getByRole("button", { name: "Preview all files for this phone" }).click();
  await page.locator("#login-status", { hasText: "Logged out: " }).waitFor();
  checkErrors();

  step(11, "a view refused on load stops: the log-in form stays, and logging in returns to it");
  await logIn(token);
  await page.getByRole("button", { name: "Preview all files for this phone" }).waitFor();
  await page.evaluate((t) => sessionStorage.setItem("dialtone-token", t), doomed);
  await page.evaluate(() => { location.hash = "#/unclaimed"; });
  await page.locator("#login-status", { hasText: "Logged out: " }).waitFor();
  await settle(page, 1000);
  if ((await heading()) !== "Log in") fail(`the refused view covered the log-in form: "${await heading()}"`);
  if (!(await page.locator("#login-status").textContent()).startsWith("Logged out: ")) fail("the reason was wiped");
  await logIn(token);
  await page.getByRole("heading", { name: "Unclaimed phones" }).waitFor();
  checkErrors();

  step(12, "a node without resync configured: the fleet view neither shows nor polls resyncs");
  const asked = [];
  page.on("request", (r) => asked.push(new URL(r.url()).pathname));
  await page.evaluate(() => { location.hash = "#/fleet"; });
  await page.getByRole("heading", { name: "Fleet" }).waitFor();
  await page.locator("#fleet-status", { hasText: /phones/ }).waitFor();
  await settle(page, 3500);
  if (asked.some((p) => p === "/v1/resyncs")) fail("the fleet view polled resyncs on a node that sends none");
  if (await page.getByRole("heading", { name: "Resyncs" }).count()) fail("the fleet view shows a resyncs table on a node that sends none");
  checkErrors();

  if (cspViolations.length) fail(`CSP violations: ${cspViolations.join("; ")}`);
  console.log("all steps passed");
} finally {
  await browser.close();
}
