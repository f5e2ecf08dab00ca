#!/usr/bin/env node
// Completes an IAM Identity Center browser (PKCE) sign-in in headless Chromium, for the
// integration tests: opens the authorize URL given as the only argument (the local Identity
// Center's page, tests/py/sso_server.py), clicks its Allow button (#allow), follows the redirect
// to credagent's http://127.0.0.1:PORT/oauth/callback, and prints one JSON line:
//   {"title": <the h1 of the page the browser ended on>, "url": <its origin and path>,
//    "status": <HTTP status of that page>}
// Exits 1 with {"error": ...} if anything fails within 30 s.
//
// Environment: CHROMIUM (default /usr/bin/chromium). Never downloads a browser.

import { chromium } from "playwright-core";

const url = process.argv[2];
const EXECUTABLE = process.env.CHROMIUM || "/usr/bin/chromium";
const ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

async function main() {
  if (!url) throw new Error("usage: sso-login.mjs AUTHORIZE_URL");
  const browser = await chromium.launch({ executablePath: EXECUTABLE, headless: true, args: ARGS });
  try {
    const page = await browser.newPage();
    await page.goto(url, { timeout: 30000 });
    let last = null;
    page.on("response", (r) => {
      if (new URL(r.url()).pathname === "/oauth/callback") last = r.status();
    });
    await Promise.all([
      page.waitForURL((u) => u.pathname === "/oauth/callback", { timeout: 30000 }),
      page.click("#allow"),
    ]);
    await page.waitForLoadState("load");
    const title = await page.textContent("h1");
    const u = new URL(page.url());
    process.stdout.write(JSON.stringify({ title, url: u.origin + u.pathname, status: last }) + "\n");
  } finally {
    await browser.close();
  }
}

main().catch((e) => {
  process.stdout.write(JSON.stringify({ error: String(e && e.message ? e.message : e) }) + "\n");
  process.exit(1);
});
