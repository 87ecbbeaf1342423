// The admin page's tenant pickers with more tenants than one page of
// /v1/tenants (100 by default), tenants named with their slugs, the
// template and phone routes' address-bar checks, the fleet's resyncs poll
// after the view is left, and the templates list past its first page, in
// Debian's Chromium (playwright-core). Called by tests/ui.rs, which imports the tenants
// (UI_LAST is the last by slug, with one directory entry, one phone and
// one unclaimed phone) and stores one tenant template per tenant. Exits
// non-zero on the first failed step.
import { chromium } from "playwright-core";

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const api = env("UI_API");
const token = env("UI_TOKEN");
const tenants = Number(env("UI_TENANTS"));
const last = env("UI_LAST");
const lastName = env("UI_LAST_NAME");
const lastEntry = env("UI_LAST_ENTRY");
const unclaimedMac = env("UI_UNCLAIMED_MAC");

const step = (n, what) => console.log(`step ${n}: ${what}`);
const fail = (message) => { throw new Error(message); };
const settle = (page) => page.evaluate(() => new Promise((resolve) => setTimeout(resolve, 300)));
let pageError = null;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-dev-shm-usage"],
});
try {
  const page = await (await browser.newContext({ viewport: { width: 1280, height: 1000 } })).newPage();
  page.setDefaultTimeout(15000);
  const cspViolations = [];
  page.on("console", (m) => { if (/Content Security Policy/i.test(m.text())) cspViolations.push(m.text()); });
  page.on("pageerror", (e) => { pageError = pageError || e.message; });
  const checkErrors = () => { if (pageError) fail(`script error on the page: ${pageError}`); };
  // Every admin API request the page makes, in order.
  const requests = [];
  page.on("request", (r) => {
    const path = new URL(r.url()).pathname;
    if (path.startsWith("/v1/")) requests.push(new URL(r.url()).pathname + new URL(r.url()).search);
  });

  step(1, "log in");
  await page.goto(`${api}/ui/`);
  await page.getByLabel("API token").fill(token);
  await page.getByRole("button", { name: "Log in" }).click();
  await page.getByRole("heading", { name: "Templates" }).waitFor();

  step(2, `the directory lists all ${tenants} tenants, and the last one is picked`);
  await page.goto(`${api}/ui/#/directory`);
  await page.locator("#tenant").waitFor();
  await page.getByRole("heading", { name: "Directory" }).waitFor();
  const directoryOptions = await page.locator("#tenant option").count();
  if (directoryOptions !== tenants) fail(`the directory's picker has ${directoryOptions} of ${tenants} tenants`);
  await page.locator("#tenant").selectOption(last);
  await page.locator("tbody tr", { hasText: lastEntry }).waitFor();
  if ((await page.locator("#tenant-note").textContent()) !== "") fail("the whole list is noted as cut");
  checkErrors();

  step(3, "the fleet view picks the last tenant too");
  await page.goto(`${api}/ui/#/fleet`);
  await page.getByRole("heading", { name: "Fleet" }).waitFor();
  const fleetOptions = await page.locator("#fleet-tenant option").count();
  if (fleetOptions !== tenants) fail(`the fleet's picker has ${fleetOptions} of ${tenants} tenants`);
  // A tenant writes its own name: only the slug leading the label keeps a
  // long name from passing for another tenant's.
  const slugLast = await page.locator("#fleet-tenant option").evaluateAll((options) =>
    options.filter((o) => !o.textContent.startsWith(o.value + " ") && o.textContent !== o.value).map((o) => o.textContent));
  if (slugLast.length) fail(`tenants labelled without their slug first: ${slugLast.slice(0, 3).join(", ")}`);
  const resyncsAnswered = page.waitForResponse((r) => new URL(r.url()).pathname === "/v1/resyncs" &&
    new URL(r.url()).searchParams.get("tenant") === last);
  await page.locator("#fleet-tenant").selectOption(last);
  await page.locator("#fleet-status", { hasText: /^1 phones/ }).waitFor();
  await resyncsAnswered;
  checkErrors();

  step("3b", "after leaving the fleet view, its resyncs poll asks for nothing more");
  let before = requests.length;
  await page.goto(`${api}/ui/#/templates`);
  await page.getByRole("heading", { name: "Templates" }).waitFor();
  // The poll runs every 3 s (RESYNC_POLL_MS): wait past its next turn.
  await page.waitForTimeout(4000);
  const polled = requests.slice(before).filter((r) => r.startsWith("/v1/resyncs"));
  if (polled.length) fail(`after leaving the fleet view the page asked for ${polled.join(", ")}`);
  checkErrors();

  step(4, "the unclaimed view loads one tenant's list, not every tenant's");
  await page.goto(`${api}/ui/#/templates`);
  await page.getByRole("heading", { name: "Templates" }).waitFor();
  const perTenant = /^\/v1\/tenants\/[^/]+\/unclaimed$/;
  before = requests.length;
  await page.goto(`${api}/ui/#/unclaimed`);
  await page.getByRole("heading", { name: "Unclaimed phones" }).waitFor();
  await page.locator("section.unclaimed-tenant").first().waitFor();
  await settle(page);
  const loaded = requests.slice(before).filter((r) => perTenant.test(r));
  if (loaded.length > 1) fail(`opening the view asked for ${loaded.length} tenants' lists`);
  const unclaimedOptions = await page.locator("#unclaimed-tenant option").count();
  if (unclaimedOptions !== tenants) fail(`the unclaimed view's picker has ${unclaimedOptions} of ${tenants} tenants`);
  await page.locator("#unclaimed-tenant").selectOption(last);
  // Names repeat among thousands of tenants: the slug says which one.
  const lastSection = page.getByRole("region", { name: `Unclaimed phones of ${last} — ${lastName}` });
  await lastSection.locator("tr", { hasText: unclaimedMac }).waitFor();
  if (!(await lastSection.locator("h3").textContent()).startsWith(`${last} — ${lastName}`)) fail("the section does not name the tenant's slug");
  const claimTargets = await page.locator("#unassigned-tenant option").count();
  if (claimTargets !== tenants) fail(`the unassigned list claims into ${claimTargets} of ${tenants} tenants`);
  checkErrors();

  step(5, "checking every tenant is one request and finds the last tenant's phone");
  await page.locator("#unclaimed-tenant").selectOption({ index: 0 });
  await page.getByRole("region", { name: /^Unclaimed phones of / }).filter({ hasNotText: unclaimedMac }).waitFor();
  await settle(page);
  before = requests.length;
  await page.getByRole("button", { name: "Check every tenant" }).click();
  await page.locator("#unclaimed-scan-status", { hasText: `1 of ${tenants} tenants have unclaimed phones.` }).waitFor();
  const checked = requests.slice(before);
  const lists = checked.filter((r) => perTenant.test(r)).length;
  const counts = checked.filter((r) => r === "/v1/unclaimed/counts").length;
  if (lists !== 0 || counts !== 1) fail(`the check asked for ${lists} tenants' lists and ${counts} counts, not one count`);
  await page.getByRole("button", { name: `${last} — ${lastName}: 1` }).click();
  await lastSection.locator("tr", { hasText: unclaimedMac }).waitFor();
  checkErrors();

  step(6, "a list that never ends is cut after 100 pages, and says so");
  let pages = 0;
  await page.route(/\/v1\/tenants\?/, (route) => {
    pages++;
    route.fulfill({
      contentType: "application/json",
      body: JSON.stringify({ items: [{ slug: `fake-${pages}`, name: `fake ${pages}` }], next: `fake-${pages}` }),
    });
  });
  await page.goto(`${api}/ui/#/templates`);
  await page.getByRole("heading", { name: "Templates" }).waitFor();
  await page.goto(`${api}/ui/#/directory`);
  await page.locator("#tenant-note", { hasText: "Only the first 100 tenants are listed" }).waitFor();
  if (pages !== 100) fail(`the page read ${pages} pages of an endless list`);
  await page.unroute(/\/v1\/tenants\?/);
  checkErrors();

  step(7, "a template address that is not a number, or a phone's that is not a MAC, asks for nothing and leaves the page readable");
  // A fresh document: no poll of an earlier view (the fleet's resyncs)
  // lands among the requests counted here.
  await page.goto(`${api}/ui/#/templates`);
  await page.reload();
  const notAddresses = ["#/templates/..%2Ftenants%2Fx", "#/templates/..%2F..%2Fv1%2Ftokens", "#/templates/%E0%A4%A", "#/templates/%", "#/phones/%zz",
    "#/phones/..", "#/phones/.", "#/phones/..%2F..%2Fv1%2Ftokens", "#/phones/001565cc014", "#/phones/001565cc01499", "#/phones/00 15 65 cc 01 49"];
  for (const hash of notAddresses) {
    await page.goto(`${api}/ui/#/templates`);
    await page.getByRole("heading", { name: "Templates" }).waitFor();
    await settle(page);
    for (const how of ["hashchange", "load"]) {
      before = requests.length;
      if (how === "hashchange") await page.evaluate((h) => { location.hash = h; }, hash);
      else await page.reload();
      await settle(page);
      // A reload asks who the token is (`/v1/whoami`, the same request
      // whatever the address); nothing the address names is asked for.
      const asked = requests.slice(before).filter((r) => !/^\/v1\/templates\/\d+$/.test(r) && r !== "/v1/whoami");
      if (asked.length) fail(`${hash} (${how}) asked for ${asked.join(", ")}`);
      const heading = await page.locator("#main h2").textContent();
      if (!/^(Template|Phone)$/.test(heading)) fail(`${hash} (${how}) shows "${heading}"`);
      if (!(await page.locator("#main p.status.error").textContent()).startsWith("No such")) fail(`${hash} (${how}) explains nothing`);
      checkErrors();
    }
  }
  before = requests.length;
  await page.evaluate(() => { location.hash = "#/templates/999999"; });
  await page.locator("#main p", { hasText: /not found|no template/i }).waitFor();
  const control = requests.slice(before);
  if (control.join() !== "/v1/templates/999999") fail(`a numeric id asked for ${control.join(", ")}`);
  // A MAC the API accepts, however spelled, is asked for as its digits.
  before = requests.length;
  await page.evaluate(() => { location.hash = "#/phones/00:15:65:CC:01:49"; });
  await page.getByRole("heading", { name: "Phone 001565cc0149" }).waitFor();
  await settle(page);
  const phoneControl = requests.slice(before);
  if (phoneControl.join() !== "/v1/phones/001565cc0149,/v1/phones/001565cc0149/history?limit=20,/v1/audit?limit=10&key=001565cc0149") fail(`a MAC asked for ${phoneControl.join(", ")}`);

  checkErrors();

  step(8, `the templates list shows all ${tenants} tenant templates, the last one too; an endless list is cut and says so`);
  await page.goto(`${api}/ui/#/templates`);
  await page.getByRole("heading", { name: "Templates" }).waitFor();
  await page.locator("#main table tbody tr").first().waitFor();
  const answered = page.waitForResponse((r) => new URL(r.url()).pathname === "/v1/templates" && new URL(r.url()).search.startsWith("?scope=tenant"));
  await page.locator("#scope-filter").selectOption("tenant");
  await answered;
  await settle(page);
  const rows = await page.locator("#main table tbody tr").count();
  if (rows !== tenants) fail(`the templates list shows ${rows} of ${tenants} tenant templates`);
  if (!(await page.locator("#main table tbody tr", { hasText: last }).count())) fail(`the templates list has no row for ${last}`);
  if ((await page.locator("#templates-note").textContent()) !== "") fail("the whole templates list is noted as cut");
  let templatePages = 0;
  await page.route(/\/v1\/templates\?/, (route) => {
    templatePages++;
    route.fulfill({
      contentType: "application/json",
      body: JSON.stringify({ items: [{ id: templatePages, scope: "tenant", family: "yealink", file_pattern: "x", version: 1 }], next: String(templatePages) }),
    });
  });
  await page.locator("#scope-filter").selectOption("");
  await page.locator("#templates-note", { hasText: "Only the first 100 templates are listed" }).waitFor();
  if (templatePages !== 100) fail(`the templates list read ${templatePages} pages of an endless list`);
  await page.unroute(/\/v1\/templates\?/);
  checkErrors();

  if (cspViolations.length) fail(`CSP violations: ${cspViolations.join("; ")}`);
  console.log("all steps passed");
} finally {
  await browser.close();
}
