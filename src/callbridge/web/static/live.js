// callbridge live desk: one WebSocket per tab, reconnecting by itself; screen pops,
// click-to-call, presence, live calls and missed-call notifications. No dependencies.
"use strict";
(() => {
  const body = document.body;
  const csrf = body.dataset.csrf || "";
  const popsBox = document.getElementById("pops");
  const pops = document.getElementById("pop-list");
  const popsBar = document.getElementById("pops-bar");
  const dialStatus = document.getElementById("dial-status");
  const liveState = document.getElementById("live-state");
  const ENDED_LINGER_MS = 8000;
  let canDial = false;
  let socket = null;
  let retries = 0;
  let pingTimer = null;
  let alerts = { ring_sound: false, desktop_notifications: false };
  const seen = new Set(); // card keys this page has shown (a new one expands the pops)
  const notified = new Map(); // card key → its desktop Notification
  const DISMISSED_KEY = "callbridge.dismissed";
  const DISMISSED_FOR_MS = 12 * 3600 * 1000;

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
  // All times the live desk shows go through this one helper (so a later time-zone or format
  // setting changes them in one place). Durations count on the server's clock: "skew" is how
  // far this browser's clock is from the hub's, learnt from each hello.
  // Dates and clock times come from app.js's callbridgeTime (the user's zone, the pages' format).
  const zoned = window.callbridgeTime;
  const when = {
    skew: 0,
    now() { return Date.now() - this.skew; },
    duration(seconds) {
      const s = Math.max(0, Math.round(seconds));
      const h = Math.floor(s / 3600);
      const m = Math.floor((s % 3600) / 60);
      const mm = h ? String(m).padStart(2, "0") : String(m);
      return `${h ? h + ":" : ""}${mm}:${String(s % 60).padStart(2, "0")}`;
    },
    since(iso) { return this.duration((this.now() - Date.parse(iso)) / 1000); },
    time(iso) { return zoned(iso, "time"); },
    dateTime(iso) { return zoned(iso, "minute"); },
  };
  window.callbridgeWhen = when;
  const clock = (seconds) => when.duration(seconds);
  function formatTimes(root) {
    for (const node of (root || document).querySelectorAll("time[data-format][datetime]")) {
      const iso = node.getAttribute("datetime");
      node.textContent = node.dataset.format === "time" ? when.time(iso) : when.dateTime(iso);
    }
  }
  function dismissed() {
    try {
      const all = JSON.parse(localStorage.getItem(DISMISSED_KEY) || "{}");
      const now = Date.now();
      for (const [k, at] of Object.entries(all)) if (now - at > DISMISSED_FOR_MS) delete all[k];
      return all;
    } catch (_) { return {}; }
  }
  function dismiss(key) {
    const all = dismissed();
    all[key] = Date.now();
    try { localStorage.setItem(DISMISSED_KEY, JSON.stringify(all)); } catch (_) { /* private mode */ }
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

  function cardCaller(card) {
    if (card.colleague) return card.colleague.name || `ext ${card.colleague.extension}`;
    return card.contact ? card.contact.name : (card.name || card.number_display || card.number || "unknown");
  }

  function renderCard(card) {
    const id = "pop-" + card.key.replace(/[^A-Za-z0-9_-]/g, "_");
    if (dismissed()[card.key]) {
      // Dismissed stays dismissed, whatever the call does next (and after a reload).
      const gone = document.getElementById(id);
      if (gone) gone.remove();
      layout();
      return;
    }
    const fresh = !seen.has(card.key);
    seen.add(card.key);
    const known = card.contact !== null && card.contact !== undefined;
    const colleague = card.colleague || null;
    let numberLine;
    if (colleague) {
      numberLine = el("p", { class: "pop-number" },
        el("a", { class: "dial", href: `tel:${colleague.extension}`, "data-number": colleague.extension, text: `ext ${colleague.extension}` }),
        el("span", { class: "muted", text: " · a colleague" }));
    } else {
      numberLine = el("p", { class: "pop-number" }, card.number
        ? el("a", { class: "dial", href: `tel:${card.number}`, "data-number": card.number, text: card.number_display || card.number })
        : el("span", { text: "unknown number" }),
      card.extension ? el("span", { class: "muted", text: ` → ext ${card.extension}` }) : null);
    }
    let timing;
    if (card.state === "ended") {
      timing = el("span", { class: "pop-time", text: card.answered_at
        ? `talked ${clock(card.talk_seconds)} · rang ${clock(card.ring_seconds)}`
        : `rang ${clock(card.ring_seconds)}` });
    } else {
      // Counts from the call's start (ringing) or its answer (talking), not from this page load.
      const since = (card.state === "talking" && card.answered_at) || card.started_at || card.sent_at;
      timing = el("span", { class: "pop-time", "data-since": since, text: since ? when.since(since) : "0:00" });
    }
    const actions = el("div", { class: "pop-actions" });
    if (known) {
      actions.append(el("a", { class: "btn", href: `/contacts/${card.contact.id}`, text: "Open contact" }));
      for (const ext of card.external || []) {
        const label = ext.kind === "odoo" ? "Odoo" : "ERPNext";
        actions.append(el("a", { class: "btn", href: ext.url, target: "_blank", rel: "noopener", text: `Open in ${label}` }));
      }
    } else if (card.number && !colleague) {
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
    // A past call with a stored recording offers a player (the hub's own audio URL, served with
    // Range; only calls this user may see are listed, and the audio checks that again).
    const recent = (card.recent || []).map((r) => el("li", {},
      el("a", { href: `/calls/${r.id}`, text: when.dateTime(r.started_at) }),
      ` ${r.direction || ""} · ${r.disposition}${r.talk_seconds ? " · " + clock(r.talk_seconds) : ""}${r.user ? " · " + r.user : ""}`,
      r.audio_url ? el("audio", {
        class: "pop-audio", controls: true, preload: "none", src: r.audio_url,
        "data-audio": r.audio_url, "aria-label": `Recording of the call of ${when.dateTime(r.started_at)}`,
      }) : null));
    let company = card.company || "";
    if (!company && !known) company = colleague ? "" : "Unknown caller: not in your contacts";
    const node = el("article", {
      class: `pop pop-${card.state}`,
      id,
      "data-key": card.key,
      "data-state": card.state,
      "data-caller": colleague && colleague.name ? `${colleague.name} (ext ${colleague.extension})` : cardCaller(card),
      "aria-labelledby": id + "-h",
    },
      el("header", { class: "pop-head" },
        el("span", { class: "pop-kind", text: cardTitle(card) }), " ", timing),
      el("h2", { id: id + "-h", class: "pop-caller", text: cardCaller(card) }),
      numberLine,
      company ? el("p", { class: "pop-company", text: company }) : null,
      card.tags && card.tags.length ? el("ul", { class: "tags", "aria-label": "Tags" }, ...card.tags.map((t) => el("li", { text: t }))) : null,
      card.owner ? el("p", { class: "pop-owner", text: `Owner: ${card.owner}` }) : null,
      card.owed_since ? el("p", { class: "pop-owed", "data-owed": card.owed_since,
        text: `You owe them a call since ${when.time(card.owed_since).replace(/:\d\d$/, "")}` }) : null,
      recent.length ? el("details", { class: "pop-recent", open: wide.matches },
        el("summary", { text: "Last calls" }), el("ol", {}, ...recent)) : null,
      actions);
    if (card.id && !colleague) node.append(noteForm(card));
    const old = document.getElementById(id);
    if (old) updateInPlace(old, node); else pops.prepend(node);
    if (fresh && card.state !== "ended") expand(true);
    if (card.state === "ended") {
      setTimeout(() => {
        const cur = document.getElementById(id);
        // An open note form keeps the card until the user dismisses it: the note is written after the call.
        if (cur && cur.dataset.state === "ended" && !cur.querySelector(".pop-note[open]")) { cur.remove(); layout(); }
      }, ENDED_LINGER_MS);
    }
    notify(card, fresh);
    layout();
    tick();
    // A call ringing at the softphone too: the card gets its Answer button (softphone.js).
    if (window.callbridgeSoftphone) window.callbridgeSoftphone.refresh();
  }

  // -- a note and a call type, written from the pop while the call runs or after it ------------
  let callTypes = [];
  function typeOptions(select) {
    const chosen = select.value;
    select.replaceChildren(el("option", { value: "", text: "Call type…" }),
      ...callTypes.map((t) => el("option", { value: t, text: t })));
    select.value = chosen;
  }
  if (popsBox) {
    api("GET", "/api/v1/call-types").then((page) => {
      callTypes = (page.items || []).map((t) => t.name);
      for (const select of document.querySelectorAll(".pop-note select")) typeOptions(select);
    }).catch(() => {});
  }
  function noteForm(card) {
    const select = el("select", { name: "call_type", "aria-label": "Call type" });
    typeOptions(select);
    const status = el("span", { class: "muted", role: "status" });
    const form = el("form", { class: "pop-note-form", "data-call": String(card.id) },
      el("textarea", { name: "note", rows: "2", maxlength: "10000", "aria-label": "Note", placeholder: "What is the call about?" }),
      select,
      el("button", { type: "submit", class: "btn", text: "Save note" }),
      status);
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const data = new FormData(form);
      try {
        await api("PATCH", `/api/v1/calls/${form.dataset.call}`, { note: String(data.get("note") || ""), call_type: String(data.get("call_type") || "") });
        status.textContent = "Saved.";
      } catch (err) { status.textContent = `Not saved: ${err.message}`; }
    });
    return el("details", { class: "pop-note" }, el("summary", { text: "Note & type" }), form);
  }

  // -- the pops' place on the page ---------------------------------------------------------------
  const wide = window.matchMedia("(min-width: 1000px)");
  function expand(open) {
    if (!popsBox) return;
    popsBox.classList.toggle("collapsed", !open);
    popsBar.setAttribute("aria-expanded", String(open));
    document.getElementById("pops-toggle").textContent = open ? "Hide" : "Show";
    layout();
  }
  function layout() {
    if (!popsBox) return;
    const cards = [...pops.querySelectorAll(".pop")];
    popsBox.hidden = cards.length === 0;
    body.classList.toggle("has-pops", cards.length > 0);
    if (cards.length) {
      const first = cards[0];
      const word = { ringing: "ringing", talking: "on the call", ended: "ended" }[first.dataset.state] || "";
      const time = first.querySelector(".pop-time");
      const more = cards.length > 1 ? ` (+${cards.length - 1} more)` : "";
      document.getElementById("pops-summary").textContent =
        `${first.dataset.caller} · ${word}${time && first.dataset.state !== "ended" ? " " + time.textContent : ""}${more}`;
    }
    // On a narrow screen the bar sits over the bottom of the page: give the page that much room.
    const h = cards.length && !wide.matches ? popsBox.getBoundingClientRect().height : 0;
    document.documentElement.style.setProperty("--pops-h", `${Math.ceil(h)}px`);
    alertRing();
  }
  if (popsBox && window.ResizeObserver) new ResizeObserver(() => {
    const h = !popsBox.hidden && !wide.matches ? popsBox.getBoundingClientRect().height : 0;
    document.documentElement.style.setProperty("--pops-h", `${Math.ceil(h)}px`);
  }).observe(popsBox);
  wide.addEventListener("change", layout);
  window.callbridgeLayout = layout;

  // -- alerts: ring sound and desktop notification, each opted into on the Account page ----------
  let ringAudio = null;
  let ringTimer = null;
  let ringRelease = null;
  function playRing() {
    if (!ringAudio) ringAudio = new Audio("/static/ring.wav");
    ringAudio.currentTime = 0;
    const played = ringAudio.play();
    // Before the first click in a page the browser may refuse to play: the card still shows.
    if (played && played.catch) played.catch(() => {});
  }
  function startRing() {
    ringTimer = setInterval(playRing, 3000);
    playRing();
  }
  function stopRing() {
    clearInterval(ringTimer);
    ringTimer = null;
    if (ringAudio) ringAudio.pause();
    if (ringRelease) { ringRelease(); ringRelease = null; }
  }
  function alertRing() {
    const ringing = alerts.ring_sound && pops && pops.querySelector(".pop[data-state='ringing']");
    if (!ringing) { if (ringTimer || ringRelease) stopRing(); return; }
    if (ringTimer || ringRelease) return;
    if (navigator.locks) {
      // One tab of the browser rings, not every open one.
      ringRelease = () => {};
      navigator.locks.request("callbridge-ring", { ifAvailable: true }, (lock) => {
        if (!lock || !ringRelease) { ringRelease = null; return undefined; }
        startRing();
        return new Promise((resolve) => { ringRelease = resolve; });
      });
    } else {
      startRing();
    }
  }
  function notify(card, fresh) {
    const open = notified.get(card.key);
    if (card.state !== "ringing") {
      if (open) { open.close(); notified.delete(card.key); }
      return;
    }
    if (!fresh || open || !alerts.desktop_notifications || !("Notification" in window)) return;
    if (Notification.permission !== "granted") return;
    const where = card.colleague ? "a colleague" : (card.company || card.number || "");
    const note = new Notification(`${cardTitle(card)}: ${cardCaller(card)}`, { body: where, tag: card.key });
    note.onclick = () => { window.focus(); note.close(); };
    notified.set(card.key, note);
  }

  // A card that changes keeps its element: focus (say, on "Hang up"), a closed "Last calls" and
  // anything a screen reader holds on to stay put while the content underneath is renewed.
  function updateInPlace(old, node) {
    const active = old.contains(document.activeElement) ? document.activeElement : null;
    const activeSig = active ? signature(active) : null;
    const recent = old.querySelector("details.pop-recent");
    const recentOpen = recent ? recent.open : null;
    // A recording being played in "Last calls" keeps playing: its element moves to the new card.
    for (const audio of node.querySelectorAll("audio[data-audio]")) {
      const playing = [...old.querySelectorAll("audio[data-audio]")].find((a) => a.dataset.audio === audio.dataset.audio);
      if (playing) audio.replaceWith(playing);
    }
    for (const attr of [...old.attributes]) if (!node.hasAttribute(attr.name)) old.removeAttribute(attr.name);
    for (const attr of node.attributes) old.setAttribute(attr.name, attr.value);
    // The note form stays as it is (what the user is typing, the focus in it): the rest is renewed.
    const keep = old.querySelector(":scope > .pop-note");
    const incoming = [...node.childNodes].filter((n) => !(keep && n.classList && n.classList.contains("pop-note")));
    for (const child of [...old.childNodes]) if (child !== keep) child.remove();
    if (keep) for (const n of incoming) old.insertBefore(n, keep); else old.append(...incoming);
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
    for (const node of document.querySelectorAll(".pop-time[data-since], #live-calls [data-since]")) {
      node.textContent = when.since(node.dataset.since);
    }
    if (popsBox && !popsBox.hidden) {
      const first = pops.querySelector(".pop");
      const time = first && first.dataset.state !== "ended" ? first.querySelector(".pop-time") : null;
      const summary = document.getElementById("pops-summary");
      if (time) summary.textContent = summary.textContent.replace(/\d+(:\d\d)+/, time.textContent);
    }
  }
  setInterval(tick, 1000);

  // -- follow-ups: the desk's "My follow-ups", reloaded from the hub when a task changes --------
  const followups = document.getElementById("followups");
  let followupsLoading = null;
  async function reloadFollowups() {
    if (!followups) return;
    if (followupsLoading) { followupsLoading.again = true; return; }
    followupsLoading = { again: false };
    try {
      const res = await fetch("/desk/follow-ups", { credentials: "same-origin", headers: { accept: "text/html" } });
      if (res.ok) { followups.innerHTML = await res.text(); formatTimes(followups); }
    } catch (_) { /* the next message or minute tries again */ }
    const again = followupsLoading.again;
    followupsLoading = null;
    if (again) reloadFollowups();
  }
  if (followups) setInterval(reloadFollowups, 60000); // ages move on
  function onTask(msg) {
    reloadFollowups();
    if (msg.change !== "created") return;
    // A new call owed: the same opt-in alerts as a ringing phone, once.
    if (alerts.ring_sound) { playRing(); setTimeout(() => { if (!ringTimer && ringAudio) ringAudio.pause(); }, 2500); }
    if (alerts.desktop_notifications && "Notification" in window && Notification.permission === "granted") {
      const note = new Notification(msg.title, { body: "A call to return", tag: `task-${msg.task.id}` });
      note.onclick = () => { window.focus(); note.close(); };
    }
  }

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
      el("time", { class: "muted", datetime: note.created_at, "data-format": "datetime", text: when.dateTime(note.created_at) })));
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

  // One side of a live call, as the page shows it: the outside party is a click-to-call link,
  // an extension is the colleague it belongs to, our own numbers are plain text.
  function liveParty(call, number, colleagues) {
    if (!number) return "—";
    if (number === call.external_number) {
      return el("a", { class: "dial", href: `tel:${number}`, "data-number": number, text: number });
    }
    const name = colleagues[`${call.pbx}/${number}`];
    if (name) return el("a", { class: "dial", href: `tel:${number}`, "data-number": number, text: `${name} (ext ${number})` });
    if (/^\d{1,6}$/.test(number)) return el("span", { class: "ext", text: `ext ${number}` });
    return el("span", { class: "our-number", title: "one of your numbers", text: number });
  }

  function onLiveCall(call) {
    const table = document.getElementById("live-calls");
    if (!table) return;
    const tbody = table.tBodies[0];
    let colleagues = {};
    try { colleagues = JSON.parse(table.dataset.colleagues || "{}"); } catch (_) { /* none */ }
    let row = tbody.querySelector(`tr[data-live-call="${call.id}"]`);
    if (call.complete) {
      if (row) row.remove();
    } else {
      const started = call.started_at;
      const party = call.direction === "outbound" ? call.to_number : call.from_number;
      const cells = [
        el("td", {}, el("a", { href: `/calls/${call.id}` },
          started ? el("time", { datetime: started, "data-format": "time", text: when.time(started) }) : "")),
        el("td", { class: "duration", "data-since": started || null, text: started ? when.since(started) : "" }),
        el("td", { text: call.direction || "—" }),
        el("td", {}, liveParty(call, party, colleagues)),
        el("td", { text: call.contact_name || call.company_name || "" }),
        el("td", { "data-state": true, text: call.answered_at ? "talking" : "ringing" }),
        el("td", {}, call.answered_by_extension ? liveParty(call, call.answered_by_extension, colleagues) : ""),
      ];
      let spyPbxes = [];
      try { spyPbxes = JSON.parse(table.dataset.spyPbxes || "[]"); } catch (_) { /* none */ }
      if (spyPbxes.length) {
        // Listen / whisper / barge (supervise.js handles the clicks), as on the call's page.
        if (spyPbxes.includes(call.pbx)) {
          const before = row && row.querySelector("[data-spy-status]");
          cells.push(el("td", { class: "supervise", "data-spy-call": String(call.id) },
            ...["listen", "whisper", "barge"].map((mode) => el("button",
              { type: "button", class: "button", "data-spy": mode, text: mode[0].toUpperCase() + mode.slice(1) })),
            el("span", { class: "muted", "data-spy-status": true, role: "status", text: before ? before.textContent : "" })));
        } else {
          cells.push(el("td", {}));
        }
      }
      const fresh = el("tr", { "data-live-call": String(call.id) }, ...cells);
      if (row) row.replaceWith(fresh); else tbody.prepend(fresh);
    }
    const empty = tbody.querySelector("tr.empty");
    if (empty) empty.hidden = tbody.querySelectorAll("tr[data-live-call]").length > 0;
  }

  function onMessage(msg) {
    switch (msg.type) {
      case "hello":
        if (msg.now) when.skew = Date.now() - Date.parse(msg.now);
        alerts = msg.alerts || alerts;
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
      case "task": onTask(msg); break;
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
  function softphoneReady() {
    return !!(window.callbridgeSoftphone && window.callbridgeSoftphone.ready());
  }

  async function dial(number) {
    if (softphoneReady()) {
      // Click-to-call through the phone in the page rather than ringing a desk phone first.
      showDial("dialing", `Calling ${number} from the softphone…`);
      window.callbridgeSoftphone.call(number);
      return;
    }
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
    if (link && (canDial || softphoneReady())) {
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
    const dismissButton = target.closest("[data-dismiss]");
    if (dismissButton) {
      const card = dismissButton.closest(".pop");
      dismiss(dismissButton.dataset.dismiss);
      const next = card && (card.nextElementSibling || card.previousElementSibling);
      if (card) card.remove();
      const open = notified.get(dismissButton.dataset.dismiss);
      if (open) { open.close(); notified.delete(dismissButton.dataset.dismiss); }
      layout();
      // The keyboard user stays in the pops (the next card) or goes back to the page.
      const focusTo = next ? next.querySelector("button, a") : document.getElementById("main");
      if (focusTo) focusTo.focus();
      return;
    }
    if (target.closest("#pops-bar")) {
      expand(popsBox.classList.contains("collapsed"));
      return;
    }
    if (target.closest("[data-ring-test]")) {
      playRing();
      setTimeout(() => { if (!ringTimer && ringAudio) ringAudio.pause(); }, 1500);
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
    const done = target.closest("[data-task-done]");
    const snooze = target.closest("[data-task-snooze]");
    if (done || snooze) {
      const id = (done || snooze).dataset.taskDone || (done || snooze).dataset.taskSnooze;
      const change = done ? { status: "done" } : { snooze_until: new Date(when.now() + 3600 * 1000).toISOString() };
      try { await api("PATCH", `/api/v1/tasks/${id}`, change); } catch (err) { window.alert(err.message); }
      reloadFollowups();
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
    layout();
  });

  // A card dismissed in another tab of this browser goes away here too.
  window.addEventListener("storage", (event) => {
    if (event.key !== DISMISSED_KEY) return;
    const all = dismissed();
    for (const node of document.querySelectorAll(".pop[data-key]")) if (all[node.dataset.key]) node.remove();
    layout();
  });

  // Account page: a desktop notification needs the browser's permission, asked on the click.
  const notifyBox = document.querySelector("[data-notify-permission]");
  const notifyState = document.getElementById("notify-state");
  function showPermission() {
    if (!notifyState) return;
    if (!("Notification" in window)) { notifyState.textContent = "This browser cannot show desktop notifications."; return; }
    notifyState.textContent = {
      granted: "The browser allows notifications from this hub.",
      denied: "The browser blocks notifications from this hub: allow them in its site settings.",
      default: "The browser will ask you to allow notifications.",
    }[Notification.permission] || "";
  }
  if (notifyBox) {
    showPermission();
    notifyBox.addEventListener("change", async () => {
      if (notifyBox.checked && "Notification" in window && Notification.permission === "default") {
        try { await Notification.requestPermission(); } catch (_) { /* old browsers: callback form */ }
      }
      showPermission();
    });
  }

  formatTimes();
  if (pops) connect();
})();
