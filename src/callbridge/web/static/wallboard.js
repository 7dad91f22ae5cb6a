// The wallboard: a snapshot over the live WebSocket at every change; waits and pauses tick here.
(function () {
  "use strict";
  const body = document.body;
  const token = body.dataset.token || "";
  const supervisor = body.dataset.supervisor === "yes";
  let snap = null;
  let skew = 0; // server clock minus ours (ms)
  let revoked = false;

  const $ = (sel) => document.querySelector(sel);
  const put = (key, text) => { const el = $(`[data-k="${key}"]`); if (el && el.textContent !== text) el.textContent = text; };

  function since(iso) {
    if (!iso) return 0;
    return Math.max(0, Math.floor((Date.now() + skew - Date.parse(iso)) / 1000));
  }
  function clock(seconds) {
    const h = Math.floor(seconds / 3600), m = Math.floor(seconds / 60) % 60, s = seconds % 60;
    const mm = h ? String(m).padStart(2, "0") : String(m);
    return (h ? h + ":" : "") + mm + ":" + String(s).padStart(2, "0");
  }
  function pct(value) { return value === null || value === undefined ? "–" : Math.round(value * 100) + "%"; }
  function cell(row, text, cls) { const td = document.createElement("td"); td.textContent = text; if (cls) td.className = cls; row.appendChild(td); return td; }

  function render() {
    if (!snap) return;
    put("waiting", String(snap.waiting));
    put("sl", pct(snap.service_level));
    put("abandon", pct(snap.abandon_rate));
    for (const k of ["available", "on_call", "paused", "offline"]) put(k, String(snap.agents[k] || 0));
    const queues = $("#queues");
    queues.replaceChildren();
    for (const q of snap.queues) {
      const tr = document.createElement("tr");
      tr.dataset.queue = q.name;
      cell(tr, q.name);
      cell(tr, String(q.waiting), "n");
      const longest = cell(tr, "", "n");
      longest.dataset.since = q.longest_since || "";
      cell(tr, String(q.answered), "n");
      cell(tr, String(q.abandoned), "n");
      cell(tr, pct(q.service_level), "n");
      queues.appendChild(tr);
    }
    const agents = $("#agents");
    agents.replaceChildren();
    for (const a of snap.agent_list) {
      const li = document.createElement("li");
      li.className = a.status;
      li.dataset.extension = a.extension;
      const dot = document.createElement("span"); dot.className = "dot"; li.appendChild(dot);
      const who = document.createElement("span"); who.className = "who"; who.textContent = (a.name && a.name !== a.extension && !a.name.includes("/") ? a.name + " " : "") + a.extension; li.appendChild(who);
      const what = document.createElement("span"); what.className = "what";
      what.dataset.status = a.status; what.dataset.reason = a.reason || ""; what.dataset.since = a.since;
      li.appendChild(what);
      if (supervisor && a.status !== "offline") {
        const b = document.createElement("button");
        b.type = "button";
        b.textContent = a.status === "paused" ? "Unpause" : "Pause";
        b.addEventListener("click", () => pause(a, a.status !== "paused"));
        li.appendChild(b);
      }
      agents.appendChild(li);
    }
    tick();
    fit("#queues-box", "table.queues");
    fit("#agents-box", "ul.agents");
  }

  const WORDS = { available: "available", on_call: "on a call", paused: "paused", offline: "offline" };
  function tick() {
    if (!snap) return;
    put("longest", snap.longest_since ? clock(since(snap.longest_since)) : "–");
    for (const td of document.querySelectorAll("#queues td[data-since]")) td.textContent = td.dataset.since ? clock(since(td.dataset.since)) : "–";
    for (const el of document.querySelectorAll("#agents .what")) {
      const reason = el.dataset.reason ? " (" + el.dataset.reason + ")" : "";
      el.textContent = WORDS[el.dataset.status] + reason + " " + clock(since(el.dataset.since));
    }
    const tile = $('[data-k="longest"]').parentElement;
    tile.classList.toggle("alert", snap.longest_since ? since(snap.longest_since) >= 60 : false);
    $("#clock").textContent = new Date(Date.now() + skew).toLocaleTimeString();
  }

  // Shrink a list's font until it fits its box: no scrolling, whatever the screen or the team.
  function fit(boxSel, innerSel) {
    const box = $(boxSel), inner = $(innerSel);
    let size = Math.min(window.innerWidth, window.innerHeight) * (innerSel.startsWith("table") ? 0.03 : 0.026);
    inner.style.setProperty("--fit", size + "px");
    while ((inner.scrollHeight > box.clientHeight || inner.scrollWidth > box.clientWidth) && size > 6) {
      size *= 0.9;
      inner.style.setProperty("--fit", size + "px");
    }
  }

  async function pause(agent, paused) {
    let reason = "";
    if (paused) {
      reason = window.prompt("Pause " + agent.extension + ": reason", "supervisor") || "";
    }
    for (const queue of agent.queues) {
      await fetch(`/api/v1/queues/${encodeURIComponent(queue)}/members/${encodeURIComponent(agent.extension)}/pause`, {
        method: "POST",
        headers: { "content-type": "application/json", "x-csrf-token": body.dataset.csrf },
        body: JSON.stringify({ paused, reason, pbx: agent.pbx }),
      });
    }
  }

  function state(text, live) { const el = $("#state"); el.textContent = text; el.classList.toggle("live", live); }
  function showRevoked() { revoked = true; $("#revoked").hidden = false; state("revoked", false); }

  function connect() {
    const proto = location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${proto}://${location.host}/live/wallboard${token ? "?token=" + encodeURIComponent(token) : ""}`);
    ws.onopen = () => state("live", true);
    ws.onmessage = (e) => {
      const data = JSON.parse(e.data);
      for (const m of Array.isArray(data) ? data : [data]) {
        if (m.type === "wallboard") {
          if (snap && m.version < snap.version && m.day === snap.day) continue;
          snap = m;
          skew = Date.parse(m.now) - Date.now();
          render();
          body.dataset.version = String(m.version);
        } else if (m.type === "revoked") {
          showRevoked();
        }
      }
    };
    ws.onclose = (e) => {
      if (revoked || e.code === 4410) { showRevoked(); return; }
      state("reconnecting…", false);
      setTimeout(connect, e.code === 4401 ? 5000 : 1000);
    };
  }

  setInterval(tick, 1000);
  window.addEventListener("resize", render);
  connect();
})();
