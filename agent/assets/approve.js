// credagent approval page: fetch the ceremony's WebAuthn options from the agent, run the
// browser's WebAuthn with them, post the result back. Nothing else runs here.
"use strict";
(function () {
  const id = location.pathname.split("/")[2] || "";
  const $ = (x) => document.getElementById(x);
  const say = (text, cls) => { $("status").textContent = text; $("status").className = cls || ""; };
  const row = (k, v) => {
    const d = document.createElement("div");
    d.className = "row";
    const s = document.createElement("span");
    s.className = "k"; s.textContent = k;
    const t = document.createElement("span");
    t.className = "v"; t.textContent = v;
    d.append(s, t);
    return d;
  };
  let info = null;
  async function load() {
    const r = await fetch("/approve/" + encodeURIComponent(id) + "/options", { cache: "no-store" });
    const body = await r.json();
    if (!r.ok) { $("details").textContent = body.message || "unknown ceremony"; say("Nothing to approve.", "err"); return; }
    info = body;
    const box = $("details");
    box.textContent = "";
    if (info.kind === "approve") {
      $("title").textContent = "Open AWS role " + info.role + "?";
      box.append(row("Role", info.role));
      if (info.role_arn) box.append(row("Role ARN", info.role_arn));
      if (info.sso_account) box.append(row("Account", info.sso_account));
      if (info.sso_permission_set) box.append(row("Permission set", info.sso_permission_set));
      if (info.target) box.append(row("Opens", info.target));
      box.append(row("Session", Math.round(info.session_secs / 60) + " min"), row("Asked by", info.requester));
    } else if (info.kind === "authorize_key_add") {
      $("title").textContent = "Allow adding security key \u201c" + info.name + "\u201d?";
      box.append(row("New key", info.name), row("Touch", "a key you registered before"), row("Asked by", info.requester));
    } else if (info.kind === "seal_key") {
      $("title").textContent = "Seal your sources to the new key \u201c" + info.name + "\u201d";
      box.append(
        row("New key", info.name),
        row("Touch", "the new key " + info.name + " again: its second touch"),
        row("Why", "the key's secret (WebAuthn PRF) wraps your vault for it, so its touch can open your sources. The key is stored only after this touch."),
        row("Asked by", info.requester),
      );
    } else if (info.kind === "confirm") {
      $("title").textContent = "Confirm credagent's settings?";
      box.append(row("Touch", "a key you registered before; it opens no role"), row("Asked by", info.requester));
    } else if (info.kind === "reload") {
      $("title").textContent = "Apply credagent's new settings?";
      box.append(row("Touch", "a key you registered before; it opens no role"));
      for (const change of info.changes || []) box.append(row("Change", change));
      box.append(row("Asked by", info.requester));
    } else if (info.kind === "key_pin") {
      $("title").textContent = "Move your keys' copies of the vault to their PIN?";
      box.append(
        row("Touch", "a key you registered before"),
        row("Note", "this takes a touch without the PIN and one with it, which only credctl can take: run `credctl key pin` in a terminal"),
        row("Asked by", info.requester),
      );
    } else if (info.kind === "allow_program") {
      $("title").textContent = "Let a program use AWS role " + info.role + "?";
      box.append(row("Role", info.role), row("Allows", info.what), row("Touch", "a key you registered before"), row("Asked by", info.requester));
    } else if (info.kind === "authorize_key_remove") {
      $("title").textContent = "Allow removing security key \u201c" + info.name + "\u201d?";
      box.append(row("Key to remove", info.name), row("Touch", "a key you registered before"), row("Asked by", info.requester));
    } else {
      $("title").textContent = "Register security key \u201c" + info.name + "\u201d?";
      box.append(
        row("Key name", info.name),
        row("Next", "a second touch of this key seals your sources to it"),
        row("Asked by", info.requester),
      );
    }
    $("go").disabled = false;
    $("deny").disabled = false;
    $("go").focus();
    // The request expires (a minute after it began) and may end elsewhere (credctl gave up,
    // was interrupted, or another touch answered): say so and take the buttons away.
    const until = Date.now() + 1000 * (info.expires_in_secs || 0);
    const tick = () => {
      if (ended) return;
      const left = Math.max(0, Math.round((until - Date.now()) / 1000));
      $("expiry").textContent = "Expires in " + Math.floor(left / 60) + ":" + String(left % 60).padStart(2, "0");
      if (left === 0) end("This request expired: nothing was opened. Run the command again.");
    };
    tick();
    timer = setInterval(async () => {
      tick();
      if (busy || ended) return;
      try {
        const r = await fetch("/approve/" + encodeURIComponent(id) + "/state", { cache: "no-store" });
        const body = await r.json();
        if (!body.live) end("This request ended before your touch (the command gave up, was interrupted, or was answered elsewhere): nothing was opened here.");
      } catch (e) { /* the agent may be restarting; the expiry still applies */ }
    }, 1000);
  }
  let timer = null, ended = false, busy = false;
  function end(text, cls) {
    ended = true;
    if (timer) clearInterval(timer);
    $("go").disabled = true;
    $("deny").disabled = true;
    $("expiry").textContent = "";
    if (text) say(text, cls || "err");
  }
  const b64url = (buf) => {
    const bytes = new Uint8Array(buf instanceof ArrayBuffer ? buf : buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength));
    let bin = "";
    for (const b of bytes) bin += String.fromCharCode(b);
    return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  };
  // The answer as JSON, with the PRF results (the key's secret that unwraps the vault) in
  // clientExtensionResults.prf, base64url: added from getClientExtensionResults() where a
  // browser's toJSON() leaves them out. They go to the agent only, never to the page's text.
  function answerJSON(cred) {
    const json = cred.toJSON();
    const prf = cred.getClientExtensionResults().prf;
    if (prf) {
      const out = Object.assign({}, (json.clientExtensionResults || {}).prf);
      if (typeof prf.enabled === "boolean" && out.enabled === undefined) out.enabled = prf.enabled;
      if (prf.results && prf.results.first && !(out.results && typeof out.results.first === "string")) {
        out.results = { first: b64url(prf.results.first) };
      }
      json.clientExtensionResults = Object.assign({}, json.clientExtensionResults, { prf: out });
    }
    return json;
  }
  async function deny() {
    busy = true;
    $("go").disabled = true;
    $("deny").disabled = true;
    const r = await fetch("/approve/" + encodeURIComponent(id) + "/deny", { method: "POST" });
    const body = await r.json();
    end(r.ok ? body.message : "Refused: " + (body.message || "the agent gave no reason."), r.ok ? "ok" : "err");
    document.body.dataset.outcome = r.ok ? "denied" : "refused";
  }
  async function go() {
    busy = true;
    $("go").disabled = true;
    $("deny").disabled = true;
    say("Touch your security key…");
    try {
      let cred;
      if (info.kind !== "register") {
        const publicKey = PublicKeyCredential.parseRequestOptionsFromJSON(info.options.publicKey);
        cred = await navigator.credentials.get({ publicKey });
      } else {
        const publicKey = PublicKeyCredential.parseCreationOptionsFromJSON(info.options.publicKey);
        cred = await navigator.credentials.create({ publicKey });
      }
      const r = await fetch("/approve/" + encodeURIComponent(id) + "/finish", {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(answerJSON(cred)),
      });
      const body = await r.json();
      if (r.ok) { say(body.message, "ok"); document.body.dataset.outcome = "approved"; }
      else { say("Refused: " + (body.message || "the agent gave no reason."), "err"); document.body.dataset.outcome = "refused"; }
      ended = true;
      if (timer) clearInterval(timer);
      $("expiry").textContent = "";
    } catch (e) {
      say("Not approved: " + e.message, "err");
      document.body.dataset.outcome = "failed";
      busy = false;
      if (!ended) { $("go").disabled = false; $("deny").disabled = false; }
    }
  }
  $("go").addEventListener("click", go);
  $("deny").addEventListener("click", () => deny().catch((e) => say("Cannot reach the agent: " + e.message, "err")));
  load().catch((e) => say("Cannot reach the agent: " + e.message, "err"));
})();
