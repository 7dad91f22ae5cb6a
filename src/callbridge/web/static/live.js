// callbridge live desk: one WebSocket per tab, reconnecting by itself; screen pops,
// click-to-call, presence, live calls and missed-call notifications. No dependencies.
"use strict";
(() => {
  const body = document.body;
  const csrf = body.dataset.csrf || "";
  const pops = document.getElementById("pops");
  const dialStatus = document.getElementById("dial-status");
  const liveState = document.getElementById("live-state");
  const ENDED_LINGER_MS = 8000;
  let canDial = false;
  let socket = null;
  let retries = 0;
  let pingTimer = null;
  const seen = new Map(); // card key → {ringingSince, talkingSince}

  // -- helpers ---------------------------------------------------------------------------------
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children) if (c !== null && c !== undefined) node.append(c);
    return node;
  }
  function clock(seconds) {
    const s = Math.max(0, Math.round(seconds));
    const m = Math.floor(s / 60);
    return `${m}:${String(s % 60).padStart(2, "0")}`;
  }
  function setState(text, ok) {
    if (!liveState) return;
    liveState.textContent = text;
    liveState.classList.toggle("on", !!ok);
  }
  async function api(method, url, data) {
    const res = await fetch(url, {
      method,
      headers: { "content-type": "application/json", "x-csrf-token": csrf, accept: "application/json" },
      body: data === undefined ? undefined : JSON.stringify(data),
      credentials: "same-origin",
    });
    let payload = null;
    try { payload = await res.json(); } catch (_) { /* 204 */ }
    if (!res.ok) {
      const message = payload && payload.error && payload.error.message ? payload.error.message : `request failed (${res.status})`;
      throw new Error(message);
    }
    return payload;
  }
  function showDial(state, message) {
    if (!dialStatus) return;
    dialStatus.textContent = message;
    dialStatus.dataset.state = state;
    dialStatus.hidden = false;
    clearTimeout(showDial.timer);
    if (state === "dialing" || state === "failed") {
      showDial.timer = setTimeout(() => { dialStatus.hidden = true; }, state === "failed" ? 15000 : 8000);
    }
  }
  function setUnread(n) {
    for (const node of document.querySelectorAll("[data-unread]")) node.textContent = String(n);
    for (const node of document.querySelectorAll("[data-unread-text]")) node.textContent = `(${n} new)`;
    const bell = document.getElementById("bell");
    if (bell) bell.classList.toggle("has-unread", n > 0);
  }

  // -- screen pop ------------------------------------------------------------------------------
  const STATE_WORDS = { ringing: "Ringing", talking: "On the call", ended: "Call ended" };
  const DIRECTION_WORDS = { inbound: "Incoming call", outbound: "Outgoing call", internal: "Internal call" };

  function cardTitle(card) {
    if (card.state === "ended" && card.disposition && card.disposition !== "answered") {
      return `Missed call (${card.disposition})`;
    }
    return `${DIRECTION_WORDS[card.direction] || "Call"} · ${STATE_WORDS[card.state] || card.state}`;
  }

  function renderCard(card) {
    const times = seen.get(card.key) || {};
    if (card.state === "ringing" && !times.ringingSince) times.ringingSince = Date.now();
    if (card.state === "talking" && !times.talkingSince) times.talkingSince = Date.now();
    seen.set(card.key, times);
    const id = "pop-" + card.key.replace(/[^A-Za-z0-9_-]/g, "_");
    const known = card.contact !== null && card.contact !== undefined;
    const numberLink = card.number
      ? el("a", { class: "dial", href: `tel:${card.number}`, "data-number": card.number, text: card.number })
      : el("span", { text: "unknown number" });
    let timing;
    if (card.state === "ended") {
      timing = el("span", { class: "pop-time", text: card.answered_at
        ? `talked ${clock(card.talk_seconds)} · rang ${clock(card.ring_seconds)}`
        : `rang ${clock(card.ring_seconds)}` });
    } else {
      const since = card.state === "talking" ? times.talkingSince : times.ringingSince;
      timing = el("span", { class: "pop-time", "data-since": String(since || Date.now()), text: "0:00" });
    }
    const actions = el("div", { class: "pop-actions" });
    if (known) {
      actions.append(el("a", { class: "btn", href: `/contacts/${card.contact.id}`, text: "Open contact" }));
    } else if (card.number) {
      const q = new URLSearchParams({ number: card.number });
      if (card.name) q.set("name", card.name);
      actions.append(el("a", { class: "btn", href: `/contacts/new?${q}`, text: "Create contact" }));
    }
    if (card.can_answer) {
      actions.append(el("button", { type: "button", class: "btn", "data-answer": String(card.id), text: "Answer" }));
    }
    if (card.can_hangup && card.id) {
      actions.append(el("button", { type: "button", class: "btn danger-btn", "data-hangup": String(card.id), text: "Hang up" }));
    }
    actions.append(el("button", { type: "button", class: "btn quiet", "data-dismiss": card.key, text: "Dismiss" }));
    const recent = (card.recent || []).map((r) => el("li", {},
      el("a", { href: `/calls/${r.id}`, text: window.callbridgeTime(r.started_at, "minute") }),
      ` ${r.direction || ""} · ${r.disposition}${r.talk_seconds ? " · " + clock(r.talk_seconds) : ""}${r.user ? " · " + r.user : ""}`));
    const node = el("article", {
      class: `pop pop-${card.state}`,
      id,
      "data-key": card.key,
      "data-state": card.state,
      "aria-labelledby": id + "-h",
    },
      el("header", { class: "pop-head" },
        el("span", { class: "pop-kind", text: cardTitle(card) }), " ", timing),
      el("h2", { id: id + "-h", class: "pop-caller", text: known ? card.contact.name : (card.name || card.number || "unknown") }),
      el("p", { class: "pop-number" }, numberLink,
        card.extension ? el("span", { class: "muted", text: ` → ext ${card.extension}` }) : null),
      el("p", { class: "pop-company", text: card.company ? card.company : (known ? "" : "Unknown caller: not in your contacts") }),
      card.tags && card.tags.length ? el("ul", { class: "tags", "aria-label": "Tags" }, ...card.tags.map((t) => el("li", { text: t }))) : null,
      card.owner ? el("p", { class: "pop-owner", text: `Owner: ${card.owner}` }) : null,
      recent.length ? el("details", { class: "pop-recent", open: true },
        el("summary", { text: "Last calls" }), el("ol", {}, ...recent)) : null,
      actions);
    const old = document.getElementById(id);
    if (old) updateInPlace(old, node); else pops.prepend(node);
    if (card.state === "ended") {
      setTimeout(() => {
        const cur = document.getElementById(id);
        if (cur && cur.dataset.state === "ended") { cur.remove(); seen.delete(card.key); }
      }, ENDED_LINGER_MS);
    }
    tick();
  }

  // A card that changes keeps its element: focus (say, on "Hang up"), a closed "Last calls" and
  // anything a screen reader holds on to stay put while the content underneath is renewed.
  function updateInPlace(old, node) {
    const active = old.contains(document.activeElement) ? document.activeElement : null;
    const activeSig = active ? signature(active) : null;
    const recent = old.querySelector("details.pop-recent");
    const recentOpen = recent ? recent.open : null;
    for (const attr of [...old.attributes]) if (!node.hasAttribute(attr.name)) old.removeAttribute(attr.name);
    for (const attr of node.attributes) old.setAttribute(attr.name, attr.value);
    old.replaceChildren(...node.childNodes);
    const nextRecent = old.querySelector("details.pop-recent");
    if (nextRecent && recentOpen !== null) nextRecent.open = recentOpen;
    if (activeSig) {
      for (const candidate of old.querySelectorAll("a, button, summary")) {
        if (signature(candidate) === activeSig) { candidate.focus(); break; }
      }
    }
  }
  function signature(node) {
    return `${node.tagName}|${node.textContent}`;
  }

  function tick() {
    const now = Date.now();
    for (const node of document.querySelectorAll(".pop-time[data-since]")) {
      node.textContent = clock((now - Number(node.dataset.since)) / 1000);
    }
    for (const row of document.querySelectorAll("tr[data-live-call] [data-since]")) {
      row.textContent = clock((now - Number(row.dataset.since)) / 1000);
    }
  }
  setInterval(tick, 1000);

  // -- other messages --------------------------------------------------------------------------
  function onNotification(note, unread) {
    setUnread(unread !== undefined ? unread : Number((document.querySelector("[data-unread]") || {}).textContent || 0) + 1);
    const list = document.getElementById("notes-list");
    if (!list) return;
    const empty = list.querySelector(".empty");
    if (empty) empty.remove();
    const target = note.body && note.body.contact_id ? `/contacts/${note.body.contact_id}` : (note.call_id ? `/calls/${note.call_id}` : "/calls");
    list.prepend(el("li", { class: "note unread", "data-note": String(note.id) },
      el("a", { href: target, "data-note-open": String(note.id), text: note.title }), " ",
      el("time", { class: "muted", datetime: note.created_at, text: window.callbridgeTime(note.created_at, "minute") })));
  }

  function onPresence(msg) {
    const table = document.getElementById("presence");
    if (!table) return;
    const key = `${msg.pbx}/${msg.extension}`;
    let row = table.querySelector(`tr[data-presence="${CSS.escape(key)}"]`);
    if (!row) {
      const empty = table.querySelector("tr.empty");
      if (empty) empty.remove();
      row = el("tr", { "data-presence": key }, el("td", { text: msg.extension }), el("td", { text: "—" }),
        el("td", {}, el("span", { class: "presence-state", "data-state": true })));
      table.tBodies[0].append(row);
    }
    const state = row.querySelector("[data-state]");
    state.className = `presence-state presence-${msg.presence}`;
    state.textContent = msg.presence.replace("_", " ");
  }

  function onLiveCall(call) {
    const table = document.getElementById("live-calls");
    if (!table) return;
    const tbody = table.tBodies[0];
    let row = tbody.querySelector(`tr[data-live-call="${call.id}"]`);
    if (call.complete) {
      if (row) row.remove();
    } else {
      const cells = [
        el("td", {}, el("a", { href: `/calls/${call.id}`, text: call.started_at ? window.callbridgeTime(call.started_at, "time") : "" })),
        el("td", { text: call.direction || "—" }),
        el("td", {}, call.external_number || call.from_number
          ? el("a", { class: "dial", href: `tel:${call.external_number || call.from_number}`, "data-number": call.external_number || call.from_number, text: call.external_number || call.from_number })
          : "—"),
        el("td", { text: call.contact_name || call.company_name || "" }),
        el("td", { "data-state": true, text: call.answered_at ? "talking" : "ringing" }),
        el("td", { text: call.answered_by_extension || "" }),
      ];
      const fresh = el("tr", { "data-live-call": String(call.id) }, ...cells);
      if (row) row.replaceWith(fresh); else tbody.prepend(fresh);
    }
    const empty = tbody.querySelector("tr.empty");
    if (empty) empty.hidden = tbody.querySelectorAll("tr[data-live-call]").length > 0;
  }

  function onMessage(msg) {
    switch (msg.type) {
      case "hello":
        canDial = !!msg.can_dial;
        body.classList.toggle("can-dial", canDial);
        setUnread(msg.unread || 0);
        for (const card of msg.cards || []) renderCard(card);
        break;
      case "card": renderCard(msg.card); break;
      case "notification": onNotification(msg.notification, msg.unread); break;
      case "dial": showDial(msg.state, msg.message); break;
      case "presence": onPresence(msg); break;
      case "live_call": onLiveCall(msg.call); break;
      default: break;
    }
  }

  // -- the socket ------------------------------------------------------------------------------
  function connect() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    socket = new WebSocket(`${scheme}//${location.host}/live/ws`);
    setState("connecting…", false);
    socket.addEventListener("open", () => {
      retries = 0;
      setState("live", true);
      clearInterval(pingTimer);
      pingTimer = setInterval(() => { if (socket.readyState === 1) socket.send("ping"); }, 25000);
    });
    socket.addEventListener("message", (event) => {
      // One frame carries one message, or an array of those queued while the last was sent.
      try {
        const data = JSON.parse(event.data);
        (Array.isArray(data) ? data : [data]).forEach(onMessage);
      } catch (err) { console.error("live message", err); }
    });
    socket.addEventListener("close", (event) => {
      clearInterval(pingTimer);
      if (event.code === 4401) {
        setState("signed out", false);
        setTimeout(connect, 30000);
        return;
      }
      retries += 1;
      const delay = Math.min(10000, 500 * 2 ** Math.min(retries - 1, 5)) * (0.75 + Math.random() * 0.5);
      setState("reconnecting…", false);
      setTimeout(connect, delay);
    });
  }

  // -- clicks ----------------------------------------------------------------------------------
  async function dial(number) {
    showDial("ringing_phone", `Calling ${number}…`);
    try {
      const placed = await api("POST", "/api/v1/calls/originate", { number });
      showDial("dialing", `Your phone ${placed.extension} answered; now calling ${placed.number}`);
    } catch (err) {
      showDial("failed", `Call to ${number} failed: ${err.message}`);
    }
  }

  document.addEventListener("click", async (event) => {
    const target = event.target instanceof Element ? event.target : null;
    if (!target) return;
    const link = target.closest("a.dial[data-number]");
    if (link && canDial) {
      event.preventDefault();
      dial(link.dataset.number);
      return;
    }
    const hang = target.closest("[data-hangup]");
    if (hang) {
      hang.disabled = true;
      try { await api("POST", `/api/v1/calls/${hang.dataset.hangup}/hangup`); }
      catch (err) { showDial("failed", `Could not hang up: ${err.message}`); hang.disabled = false; }
      return;
    }
    const dismiss = target.closest("[data-dismiss]");
    if (dismiss) {
      const card = dismiss.closest(".pop");
      if (card) card.remove();
      return;
    }
    const open = target.closest("[data-note-open]");
    if (open) {
      const item = open.closest("[data-note]");
      if (item && item.classList.contains("unread")) {
        event.preventDefault();
        try { const r = await api("POST", `/api/v1/notifications/${open.dataset.noteOpen}/read`); setUnread(r.unread); }
        catch (_) { /* still open it */ }
        location.href = open.getAttribute("href");
      }
      return;
    }
    if (target.closest("[data-read-all]")) {
      const r = await api("POST", "/api/v1/notifications/read");
      setUnread(r.unread);
      for (const n of document.querySelectorAll(".note.unread")) n.classList.remove("unread");
    }
  });

  document.addEventListener("submit", (event) => {
    const form = event.target;
    if (!(form instanceof HTMLFormElement) || !form.hasAttribute("data-dial-form")) return;
    event.preventDefault();
    const value = new FormData(form).get("number");
    if (value) dial(String(value));
  });

  document.addEventListener("keydown", (event) => {
    // Escape dismisses ended pops; a ringing pop stays until the call moves on.
    if (event.key !== "Escape") return;
    for (const node of document.querySelectorAll(".pop[data-state='ended']")) node.remove();
  });

  if (pops) connect();
})();
