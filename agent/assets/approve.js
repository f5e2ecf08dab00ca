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
      if (info.target) box.append(row("Opens", info.target));
      box.append(row("Session", Math.round(info.session_secs / 60) + " min"), row("Asked by", info.requester));
    } else if (info.kind === "authorize_key_add") {
      $("title").textContent = "Allow adding security key \u201c" + info.name + "\u201d?";
      box.append(row("New key", info.name), row("Touch", "a key you registered before"), row("Asked by", info.requester));
    } else if (info.kind === "authorize_key_remove") {
      $("title").textContent = "Allow removing security key \u201c" + info.name + "\u201d?";
      box.append(row("Key to remove", info.name), row("Touch", "a key you registered before"), row("Asked by", info.requester));
    } else {
      $("title").textContent = "Register security key \u201c" + info.name + "\u201d?";
      box.append(row("Key name", info.name), row("Asked by", info.requester));
    }
    $("go").disabled = false;
    $("go").focus();
  }
  async function go() {
    $("go").disabled = true;
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
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(cred.toJSON()),
      });
      const body = await r.json();
      if (r.ok) { say(body.message, "ok"); document.body.dataset.outcome = "approved"; }
      else { say(body.message || "Refused.", "err"); document.body.dataset.outcome = "refused"; }
    } catch (e) {
      say("Not approved: " + e.message, "err");
      document.body.dataset.outcome = "failed";
      $("go").disabled = false;
    }
  }
  $("go").addEventListener("click", go);
  load().catch((e) => say("Cannot reach the agent: " + e.message, "err"));
})();
