// The unclaimed view in Debian's Chromium (playwright-core), called by
// tests/unclaimed.rs once an unknown phone has been listed: log in, open
// the view, claim the phone with a line. Exits non-zero on the first
// failed step; the screenshot goes to UI_ARTIFACTS.
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const api = env("UI_API");
const token = env("UI_TOKEN");
const mac = env("UI_MAC");
const artifacts = env("UI_ARTIFACTS");
mkdirSync(artifacts, { recursive: true });
const fail = (message) => { throw new Error(message); };

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-dev-shm-usage"],
});
try {
  const page = await (await browser.newContext({ viewport: { width: 1400, height: 900 } })).newPage();
  const cspViolations = [];
  page.on("console", (m) => { if (/Content Security Policy/i.test(m.text())) cspViolations.push(m.text()); });
  page.on("pageerror", (e) => fail(`script error on the page: ${e.message}`));

  await page.goto(`${api}/ui/`);
  await page.getByLabel("API token").fill(token);
  await page.getByRole("button", { name: "Log in" }).click();
  await page.getByRole("heading", { name: "Templates" }).waitFor();
  await page.getByRole("link", { name: "Unclaimed" }).click();
  await page.getByRole("heading", { name: "Unclaimed phones" }).waitFor();
  const section = page.getByRole("region", { name: "Unclaimed phones of Acme" });
  const row = section.locator("tr", { hasText: mac });
  if (!(await row.textContent()).includes("T46U")) fail("the model is not shown");
  await page.screenshot({ path: `${artifacts}/unclaimed.png`, fullPage: true });
  await row.getByLabel("Name").fill("Lobby");
  await row.getByLabel("Extension").fill("201");
  await row.getByLabel("Registrar").fill("sip.example.net");
  await row.getByRole("button", { name: `Claim ${mac}` }).click();
  await page.getByText(`Claimed ${mac} as a phone of acme.`).waitFor();
  if (await section.locator("tr", { hasText: mac }).count()) fail("the claimed phone is still listed");
  await page.screenshot({ path: `${artifacts}/unclaimed-claimed.png`, fullPage: true });
  if (cspViolations.length) fail(`CSP violations: ${cspViolations.join("; ")}`);
  console.log("claimed in the browser");
} finally {
  await browser.close();
}
