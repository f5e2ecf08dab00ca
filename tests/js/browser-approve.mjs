#!/usr/bin/env node
// Drives credagent's browser approval page (http://localhost:PORT/approve/<ceremony>) in headless
// Chromium with a CDP virtual authenticator, for the integration tests.
//
// One long-lived process holds one browser tab and one virtual authenticator, so a credential
// registered by one command is there for the approvals that follow. The authenticator evaluates
// the WebAuthn PRF (CTAP2 hmac-secret) and verifies the user, as sealed sources need: Chromium
// evaluates the PRF only with user verification. {"authenticator": …} replaces it with another. Commands arrive on stdin, one
// JSON object per line, and are run one after another; each gets exactly one JSON line on stdout.
// Diagnostics go to stderr only. EOF on stdin closes the browser and exits 0.
//
// Commands:
//   {"url": "http://localhost:PORT/approve/<id>", "presence": true, "timeout_ms": 15000,
//    "click": true, "click_after_ms": 0, "screenshot": "/optional/after.png",
//    "button": "deny" (click "Deny: this wasn't me" instead), "wait_end": true (with "click":
//    false: wait until the page ends the request by itself, outcome "ended")}
//     Sets automatic presence simulation to `presence` (default true), opens the page, waits for
//     the button #go to be enabled, waits click_after_ms more (a person reading the page),
//     clicks it (unless "click": false) and waits for
//     body[data-outcome]. The whole command, page load included, is bounded by timeout_ms
//     (default 30000). Answers
//       {"outcome": O, "status": S, "title": T, "details": D, "fields": F, "elapsed_ms": N,
//        "options_status": HTTP status of GET …/options or null,
//        "finish_status": HTTP status of POST …/finish or null,
//        "finish_body": parsed JSON body of that response or null,
//        "posted_prf": what the page's POST carried in clientExtensionResults.prf, without the
//                      secret: {"enabled": true|false|null, "first_bytes": N|null}, or null when
//                      it carried no prf (or posted nothing)}
//     where O is the page's own outcome "approved" | "refused" | "failed", or
//       "timeout"      nothing decided within timeout_ms (e.g. presence false: no touch, get() hangs),
//       "unavailable"  the page loaded but has nothing to approve (unknown/answered/expired
//                      ceremony, agent unreachable): the page said so without enabling #go;
//                      or what loaded is not the approval page (e.g. the agent's JSON error
//                      for a non-localhost host name): then "page_text" holds its text,
//       "loaded"       "click": false and the page is ready (button enabled),
//       "error"        the driver could not do its part (navigation failed…); see "error".
//     S, T are the texts (innerText) of #status and h1; D is #details, its rows as
//     "Key: value" lines (e.g. "Role: prod\nSession: 60 min\nAsked by: pid 42 (/usr/bin/aws)"),
//     or its plain text when it has no rows (an error message); null if absent. "fields" holds
//     the same rows as an object ({"Role": "prod", …}) or null.
//     With "screenshot", the page is also captured to that path before answering.
//   {"screenshot": "/path.png"}            capture the current page → {"ok": true, "screenshot": P}
//   {"authenticator": {OPTIONS}}           replaces the virtual authenticator by a new, empty one
//                                          with OPTIONS (CDP VirtualAuthenticatorOptions) over
//                                          the defaults {"protocol": "ctap2", "transport": "usb",
//                                          "hasResidentKey": false, "hasPrf": true,
//                                          "hasUserVerification": true, "isUserVerified": true};
//                                          e.g. {"hasPrf": false} for a key without hmac-secret →
//                                          {"ok": true, "authenticator": ID, "options": {…}}
//   {"ping": true}                         → {"ok": true, "browser": VERSION, "authenticator": ID}
//   {"credentials": true}                  the virtual authenticator's credentials, without keys →
//                                          {"ok": true, "credentials": [{"credentialId", "rpId",
//                                           "signCount", "isResidentCredential", "userHandle"}]}
//                                          (Chromium probes silently before each get(): an
//                                          approval moves signCount by 2, a registration sets 1)
// A line that is not a JSON object, or an unknown command, answers {"outcome": "error", "error": …}.
//
// Environment: CHROMIUM (default /usr/bin/chromium). Never downloads a browser.
//
// Example:
//   printf '%s\n' '{"url":"http://localhost:41234/approve/abc","timeout_ms":15000}' |
//     node tests/js/browser-approve.mjs

import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

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
const AUTHENTICATOR = {
  protocol: "ctap2",
  transport: "usb",
  hasResidentKey: false,
  hasPrf: true,
  hasUserVerification: true,
  isUserVerified: true,
  automaticPresenceSimulation: true,
};
const DEFAULT_TIMEOUT_MS = 30000;

/** An error's message without playwright's call log and colours, for the JSON answers. */
const brief = (e) => String(e && e.message ? e.message : e).replace(/\u001b\[[0-9;]*m/g, "").split("\nCall log:")[0].trim();

const log = (...a) => process.stderr.write(`[browser-approve] ${a.join(" ")}\n`);

function reply(obj) {
  return new Promise((resolve) => {
    process.stdout.write(JSON.stringify(obj) + "\n", () => resolve());
  });
}

class Driver {
  browser = null;
  context = null;
  page = null;
  cdp = null;
  authenticatorId = null;
  presence = true;
  /** The options of the virtual authenticator (the defaults, or the last {"authenticator"}). */
  options = { ...AUTHENTICATOR };
  /** Credentials (with private keys) last read from the authenticator, to survive a tab crash. */
  saved = [];
  /** Per-command capture of the agent's answers to the page. */
  capture = null;

  async launch() {
    this.browser = await chromium.launch({
      executablePath: EXECUTABLE,
      headless: true,
      args: ARGS,
      handleSIGINT: false,
      handleSIGTERM: false,
      // playwright gives the browser a fresh temporary profile (user-data-dir) and removes it on close.
    });
    this.browser.on("disconnected", () => {
      if (!this.closing) {
        log("browser disconnected unexpectedly");
        process.exit(3);
      }
    });
    this.context = await this.browser.newContext();
    log(`chromium ${this.browser.version()} at ${EXECUTABLE}`);
    await this.newTab();
  }

  /** Opens the tab and its virtual authenticator (which lives with the tab), restoring credentials. */
  async newTab() {
    const page = await this.context.newPage();
    page.on("console", (m) => log(`page console.${m.type()}: ${m.text()}`));
    page.on("pageerror", (e) => log(`page error: ${e.message}`));
    page.on("requestfailed", (r) => {
      // Navigating away from a hanging ceremony aborts nothing of interest; everything else is.
      log(`request failed: ${r.method()} ${r.url()}: ${r.failure()?.errorText}`);
    });
    page.on("request", (r) => {
      const c = this.capture;
      if (!c || r.method() !== "POST" || !new URL(r.url()).pathname.endsWith("/finish")) return;
      // The shape of the PRF the page posted, never its value.
      let prf = null;
      try {
        const results = (JSON.parse(r.postData() || "null") || {}).clientExtensionResults || {};
        if (results.prf) {
          const first = results.prf.results && results.prf.results.first;
          prf = {
            enabled: typeof results.prf.enabled === "boolean" ? results.prf.enabled : null,
            first_bytes: typeof first === "string" ? Buffer.from(first, "base64url").length : null,
          };
        }
      } catch (e) {
        log(`cannot read the posted answer: ${e.message}`);
      }
      c.posted_prf = prf;
    });
    page.on("response", async (r) => {
      const u = new URL(r.url());
      const c = this.capture;
      if (!c || !u.pathname.startsWith("/approve/")) return;
      if (u.pathname.endsWith("/options")) {
        c.options_status = r.status();
        if (!r.ok()) log(`GET ${u.pathname} -> ${r.status()} ${await r.text().catch(() => "")}`);
      } else if (u.pathname.endsWith("/finish")) {
        c.finish_status = r.status();
        const text = await r.text().catch(() => "");
        try {
          c.finish_body = JSON.parse(text);
        } catch {
          c.finish_body = text;
        }
        log(`POST ${u.pathname} -> ${r.status()} ${text}`);
      }
    });
    page.on("crash", () => {
      // The authenticator died with the tab: the next command opens a new tab and restores it.
      log("tab crashed");
      page.close().catch(() => {});
    });
    const cdp = await this.context.newCDPSession(page);
    await cdp.send("WebAuthn.enable", { enableUI: false });
    const { authenticatorId } = await cdp.send("WebAuthn.addVirtualAuthenticator", {
      options: { ...this.options, automaticPresenceSimulation: this.presence },
    });
    for (const credential of this.saved) {
      await cdp.send("WebAuthn.addCredential", { authenticatorId, credential });
    }
    if (this.saved.length) log(`restored ${this.saved.length} credential(s) into a new tab`);
    this.page = page;
    this.cdp = cdp;
    this.authenticatorId = authenticatorId;
    log(`virtual authenticator ${authenticatorId} ready`);
  }

  async ensureTab() {
    if (!this.page || this.page.isClosed()) {
      log("tab is gone: opening a new one");
      await this.newTab();
    }
  }

  async setPresence(enabled) {
    if (enabled === this.presence) return;
    await this.cdp.send("WebAuthn.setAutomaticPresenceSimulation", {
      authenticatorId: this.authenticatorId,
      enabled,
    });
    this.presence = enabled;
  }

  async snapshotCredentials() {
    try {
      const { credentials } = await this.cdp.send("WebAuthn.getCredentials", {
        authenticatorId: this.authenticatorId,
      });
      this.saved = credentials;
    } catch (e) {
      log(`cannot read credentials: ${e.message}`);
    }
  }

  async texts() {
    return this.page
      .evaluate(() => {
        // innerText: what a person reads (rows of #details come out one per line).
        const t = (sel) => {
          const el = document.querySelector(sel);
          return el ? el.innerText.trim() : null;
        };
        // #details rows are <div class="row"><span class="k">Key</span><span class="v">value</span></div>: "Key: value"
        // lines (innerText would glue key and value together) and as an object.
        const box = document.getElementById("details");
        const rows = box ? [...box.children].filter((d) => d.querySelector(":scope > .k")) : [];
        const fields = {};
        for (const d of rows) {
          const k = d.querySelector(":scope > .k").textContent.trim();
          fields[k] = d.textContent.slice(d.querySelector(":scope > .k").textContent.length).trim();
        }
        return {
          status: t("#status"),
          expiry: t("#expiry"),
          title: t("h1"),
          details: rows.length ? Object.entries(fields).map(([k, v]) => `${k}: ${v}`).join("\n") : t("#details"),
          fields: rows.length ? fields : null,
          outcome: document.body ? document.body.dataset.outcome || null : null,
          // Not the approval page at all (e.g. the agent's JSON error for a wrong host name).
          page_text: document.getElementById("go") ? null : (document.body ? document.body.innerText.slice(0, 500) : ""),
        };
      })
      .catch((e) => ({ status: null, title: null, details: null, fields: null, outcome: null, page_text: null, error: e.message }));
  }

  async approve(cmd) {
    const timeout = Number.isFinite(cmd.timeout_ms) && cmd.timeout_ms > 0 ? cmd.timeout_ms : DEFAULT_TIMEOUT_MS;
    const started = Date.now();
    const left = () => Math.max(1, timeout - (Date.now() - started));
    const capture = { options_status: null, finish_status: null, finish_body: null, posted_prf: null };
    const finish = async (outcome, extra = {}) => {
      const t = await this.texts();
      if (cmd.screenshot) await this.shoot(cmd.screenshot).catch((e) => log(`screenshot: ${e.message}`));
      await this.snapshotCredentials();
      this.capture = null;
      return {
        outcome,
        status: t.status,
        expiry: t.expiry,
        title: t.title,
        details: t.details,
        fields: t.fields,
        elapsed_ms: Date.now() - started,
        ...capture,
        ...(t.page_text !== null ? { page_text: t.page_text } : {}),
        ...extra,
      };
    };

    await this.ensureTab();
    await this.setPresence(cmd.presence !== false);
    this.capture = capture;
    const page = this.page;
    try {
      await page.goto(cmd.url, { waitUntil: "domcontentloaded", timeout: left() });
    } catch (e) {
      return finish(e.name === "TimeoutError" ? "timeout" : "error", { error: `cannot open ${cmd.url}: ${brief(e)}` });
    }

    // Ready (button enabled) or given up (the page said something without enabling the button).
    let ready;
    try {
      ready = await page
        .waitForFunction(
          () => {
            const go = document.getElementById("go");
            if (!go) return "unavailable";
            if (!go.disabled) return "ready";
            const st = document.getElementById("status");
            if (st && st.textContent.trim() !== "") return "unavailable";
            return false;
          },
          null,
          { timeout: left(), polling: 50 },
        )
        .then((h) => h.jsonValue());
    } catch (e) {
      return finish(e.name === "TimeoutError" ? "timeout" : "error", e.name === "TimeoutError" ? {} : { error: brief(e) });
    }
    if (ready === "unavailable") return finish("unavailable");
    if (cmd.click === false && cmd.wait_end) {
      // The page takes its buttons away by itself when the request ends elsewhere or expires.
      try {
        await page.waitForFunction(
          () => document.getElementById("go").disabled && document.getElementById("status").textContent.trim() !== "",
          null,
          { timeout: left(), polling: 100 },
        );
        return finish("ended");
      } catch (e) {
        return finish(e.name === "TimeoutError" ? "timeout" : "error", e.name === "TimeoutError" ? {} : { error: brief(e) });
      }
    }
    if (cmd.click === false) return finish("loaded");

    try {
      const pause = Number(cmd.click_after_ms) || 0;
      if (pause > 0) await page.waitForTimeout(Math.min(pause, left()));
      await page.click(cmd.button === "deny" ? "#deny" : "#go", { timeout: left() });
      const h = await page.waitForSelector("body[data-outcome]", { state: "attached", timeout: left() });
      const outcome = await h.getAttribute("data-outcome");
      // The page sets the outcome right after the agent's answer: let the response handler finish.
      if (capture.finish_status !== null && capture.finish_body === null) await page.waitForTimeout(50);
      return finish(outcome);
    } catch (e) {
      if (e.name === "TimeoutError") return finish("timeout");
      return finish("error", { error: brief(e) });
    }
  }

  async shoot(path) {
    await this.ensureTab();
    await this.page.screenshot({ path, fullPage: true });
    log(`screenshot written to ${path}`);
  }

  async run(cmd) {
    if (cmd === null || typeof cmd !== "object" || Array.isArray(cmd)) {
      return { outcome: "error", error: "each line must be a JSON object" };
    }
    if (typeof cmd.url === "string") return this.approve(cmd);
    if (typeof cmd.screenshot === "string") {
      await this.shoot(cmd.screenshot);
      return { ok: true, screenshot: cmd.screenshot };
    }
    if (cmd.authenticator !== undefined) {
      const extra = cmd.authenticator;
      if (extra === null || typeof extra !== "object" || Array.isArray(extra)) {
        return { outcome: "error", error: '"authenticator" must be an object of CDP VirtualAuthenticatorOptions' };
      }
      await this.ensureTab();
      await this.cdp.send("WebAuthn.removeVirtualAuthenticator", { authenticatorId: this.authenticatorId });
      this.options = { ...AUTHENTICATOR, ...extra };
      const { authenticatorId } = await this.cdp.send("WebAuthn.addVirtualAuthenticator", {
        options: { ...this.options, automaticPresenceSimulation: this.presence },
      });
      this.authenticatorId = authenticatorId;
      this.saved = [];
      log(`virtual authenticator ${authenticatorId} replaced: ${JSON.stringify(this.options)}`);
      return { ok: true, authenticator: authenticatorId, options: this.options };
    }
    if (cmd.ping) {
      await this.ensureTab();
      return { ok: true, browser: this.browser.version(), authenticator: this.authenticatorId };
    }
    if (cmd.credentials) {
      await this.ensureTab();
      await this.snapshotCredentials();
      return {
        ok: true,
        credentials: this.saved.map(({ credentialId, rpId, signCount, isResidentCredential, userHandle }) => ({
          credentialId,
          rpId,
          signCount,
          isResidentCredential,
          userHandle: userHandle ?? null,
        })),
      };
    }
    return { outcome: "error", error: 'unknown command: expected "url", "screenshot", "authenticator", "ping" or "credentials"' };
  }

  async close() {
    this.closing = true;
    if (this.browser) await this.browser.close().catch((e) => log(`close: ${e.message}`));
  }
}

async function main() {
  const driver = new Driver();
  try {
    await driver.launch();
  } catch (e) {
    log(`cannot start chromium (${EXECUTABLE}): ${e.message}`);
    process.exit(2);
  }
  const shutdown = async (sig) => {
    log(`${sig}: closing the browser`);
    await driver.close();
    process.exit(0);
  };
  process.on("SIGTERM", () => shutdown("SIGTERM"));
  process.on("SIGINT", () => shutdown("SIGINT"));

  const rl = createInterface({ input: process.stdin, crlfDelay: Infinity, terminal: false });
  for await (const line of rl) {
    if (line.trim() === "") continue;
    let cmd;
    try {
      cmd = JSON.parse(line);
    } catch (e) {
      await reply({ outcome: "error", error: `not JSON: ${e.message}` });
      continue;
    }
    let out;
    try {
      out = await driver.run(cmd);
    } catch (e) {
      log(`command failed: ${e.stack || e.message}`);
      out = { outcome: "error", error: brief(e) };
    }
    await reply(out);
  }
  log("stdin closed: exiting");
  await driver.close();
  process.exit(0);
}

main();
