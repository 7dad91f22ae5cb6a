// callbridge softphone: a SIP phone in the page (vendored JsSIP, SIP over WebSocket, WebRTC media).
// One registration per user however many tabs: the tab holding the Web Lock owns the SIP user
// agent and the media; the other tabs mirror its state and send it commands over a
// BroadcastChannel. Closing the owner releases the lock and the next tab takes over.
"use strict";
(() => {
  const body = document.body;
  const csrf = body.dataset.csrf || "";
  const panel = document.getElementById("softphone");
  const REGISTER_RETRY_FIRST = 5; // seconds; doubling up to REGISTER_RETRY_MAX
  const REGISTER_RETRY_MAX = 300;
  const STATES = ["unregistered", "registering", "registered", "ringing", "in_call", "on_hold", "error"];
  const CAUSE_WORDS = {
    "Busy": "is busy (486 Busy Here)",
    "Rejected": "declined the call (603 Decline)",
    "Unavailable": "is not available (480 Temporarily Unavailable)",
    "Not Found": "was not found at the PBX (404)",
    "No Answer": "did not answer",
    "Request Timeout": "did not answer in time",
    "Address Incomplete": "is not a complete number (484)",
  };
  const MIC_BLOCKED = "The microphone is blocked or missing: allow microphone access for this site in the browser, then try again.";

  let config = null;
  let leader = false;
  let ua = null;
  let stopping = false;
  let channel = null;
  const sessions = new Map(); // call id → JsSIP RTCSession (leader only)
  const peers = new Map(); // call id → RTCPeerConnection (leader only; read by tests)
  let seq = 0;
  // The shared view of the phone: the leader owns it and broadcasts every change.
  let view = { status: "unregistered", message: "", calls: [], active: null, dtmf_received: "" };

  function api(method, url, data) {
    return fetch(url, {
      method,
      headers: { "content-type": "application/json", "x-csrf-token": csrf, accept: "application/json" },
      body: data === undefined ? undefined : JSON.stringify(data),
      credentials: "same-origin",
    }).then(async (res) => {
      let payload = null;
      try { payload = await res.json(); } catch (_) { /* 204 */ }
      if (!res.ok) {
        const message = payload && payload.error && payload.error.message ? payload.error.message : `request failed (${res.status})`;
        throw new Error(message);
      }
      return payload;
    });
  }

  // -- the state every tab shows -------------------------------------------------------------------
  function overall() {
    if (!config || !config.enabled) return "unregistered";
    const calls = view.calls;
    const active = calls.find((c) => c.id === view.active);
    if (active && active.status === "on_hold") return "on_hold";
    if (active && (active.status === "in_call" || active.status === "calling")) return "in_call";
    if (calls.some((c) => c.status === "ringing")) return "ringing";
    if (calls.some((c) => c.status === "on_hold")) return "on_hold";
    return STATES.includes(view.status) ? view.status : "error";
  }

  function publish() {
    if (leader && channel) channel.postMessage({ type: "view", view });
    render();
  }

  function setStatus(status, message) {
    view.status = status;
    view.message = message || "";
    publish();
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children) if (c !== null && c !== undefined) node.append(c);
    return node;
  }

  const CALL_WORDS = { ringing: "Incoming call", calling: "Calling…", in_call: "On the call", on_hold: "On hold" };

  function callItem(call) {
    const buttons = [];
    const isActive = call.id === view.active;
    if (call.status === "ringing") {
      buttons.push(el("button", { type: "button", class: "btn", "data-sp-answer": call.id, text: "Answer" }));
      buttons.push(el("button", { type: "button", class: "btn danger-btn", "data-sp-decline": call.id, text: "Decline" }));
    } else {
      if (call.status === "on_hold") {
        buttons.push(el("button", { type: "button", class: "btn", [isActive ? "data-sp-resume" : "data-sp-switch"]: call.id, text: isActive ? "Resume" : "Switch to this call" }));
        // Attended transfer: the held caller is put through to the party of the call going on.
        const other = view.calls.find((c) => c.id === view.active && c.id !== call.id && c.status === "in_call");
        if (other) {
          const whom = other.name || other.number || "the other call";
          buttons.push(el("button", { type: "button", class: "btn", "data-sp-attended": call.id, title: `Put this caller through to ${whom} (attended transfer); you leave both calls`, text: `Transfer to ${whom}` }));
        }
      } else if (call.status === "in_call") {
        buttons.push(el("button", { type: "button", class: "btn", "data-sp-hold": call.id, text: "Hold" }));
        buttons.push(el("button", { type: "button", class: "btn", "data-sp-mute": call.id, "aria-pressed": String(!!call.muted), text: call.muted ? "Unmute" : "Mute" }));
        buttons.push(el("button", { type: "button", class: "btn", "data-sp-transfer": call.id, title: "Blind transfer to the number in the box below", text: "Transfer" }));
      }
      buttons.push(el("button", { type: "button", class: "btn danger-btn", "data-sp-hangup": call.id, text: "Hang up" }));
    }
    const who = call.name && call.name !== call.number ? `${call.name} (${call.number})` : call.number;
    return el("li", { class: `sp-call sp-${call.status}${isActive ? " sp-active" : ""}`, "data-sp-call": call.id, "data-sp-call-state": call.status },
      el("span", { class: "sp-call-what", text: `${CALL_WORDS[call.status] || call.status}${call.muted ? " (muted)" : ""}: ` }),
      el("strong", { class: "sp-call-who", text: who || "unknown" }),
      el("span", { class: "sp-call-actions" }, ...buttons));
  }

  function render() {
    const state = overall();
    window.callbridgeSoftphone.state = state;
    if (panel) {
      panel.dataset.softphoneState = state;
      panel.dataset.softphoneRole = leader ? "owner" : "mirror";
      const status = panel.querySelector("[data-sp-status]");
      const words = {
        unregistered: config && config.enabled ? "Not registered" : "No softphone is set up for you; an administrator adds one.",
        registering: "Registering with the PBX…",
        registered: `Ready: ${config ? config.sip_uri : ""}`,
        ringing: "Ringing",
        in_call: "On a call",
        on_hold: "Call on hold",
        error: "Not working",
      }[state];
      status.textContent = words + (leader || !config || !config.enabled ? "" : " (this tab controls the phone of another tab)");
      const error = panel.querySelector("[data-sp-error]");
      error.textContent = view.message;
      error.hidden = !view.message;
      const list = panel.querySelector("[data-sp-calls]");
      list.replaceChildren(...view.calls.map(callItem));
      const inCall = view.calls.some((c) => c.id === view.active && (c.status === "in_call" || c.status === "calling"));
      for (const key of panel.querySelectorAll("[data-sp-dtmf]")) key.disabled = !inCall;
      // Without a softphone the panel only says so (no number box, no keypad).
      const enabled = !!(config && config.enabled);
      panel.querySelector("[data-sp-dial]").hidden = !enabled;
      panel.querySelector("[data-sp-keypad]").hidden = !enabled;
      const dial = panel.querySelector("[data-sp-dial] button");
      dial.disabled = !(state === "registered" || state === "in_call" || state === "on_hold");
      const heard = panel.querySelector("[data-sp-dtmf-received]");
      if (heard) heard.textContent = view.dtmf_received ? `Keys from the other side: ${view.dtmf_received}` : "";
    }
    renderCards();
  }

  // -- the screen pop: a ringing softphone call is a card with an Answer button ---------------------
  function digits(s) { return String(s || "").replace(/[^0-9]/g, ""); }
  function sameNumber(a, b) {
    const x = digits(a), y = digits(b);
    if (!x || !y) return false;
    const n = Math.min(x.length, y.length, 9);
    return x.slice(-n) === y.slice(-n);
  }
  // The hub's card for the same call (the PBX link saw it ring at the user's extension), if any.
  function hubCardFor(call) {
    const list = document.getElementById("pop-list");
    if (!list) return null;
    for (const card of list.querySelectorAll(".pop[data-state='ringing']:not([data-softphone-card])")) {
      const link = card.querySelector("a.dial[data-number]");
      if (link && sameNumber(link.dataset.number, call.number)) return card;
    }
    return null;
  }
  function renderCards() {
    const list = document.getElementById("pop-list");
    if (!list) return;
    const ringing = new Map(view.calls.filter((c) => c.status === "ringing").map((c) => [c.id, c]));
    for (const node of list.querySelectorAll("[data-softphone-card]")) {
      if (!ringing.has(node.dataset.softphoneCard)) node.remove();
    }
    for (const node of list.querySelectorAll("[data-sp-answer]")) {
      if (!ringing.has(node.dataset.spAnswer)) node.remove();
    }
    for (const call of ringing.values()) {
      const hub = hubCardFor(call);
      if (hub) {
        // One card: the hub's (contact, last calls…) gets the softphone's Answer button.
        const own = list.querySelector(`[data-softphone-card="${call.id}"]`);
        if (own) own.remove();
        if (!hub.querySelector(`[data-sp-answer="${call.id}"]`)) {
          hub.querySelector(".pop-actions").prepend(el("button", { type: "button", class: "btn", "data-sp-answer": call.id, text: "Answer" }));
        }
        continue;
      }
      if (list.querySelector(`[data-softphone-card="${call.id}"]`)) continue;
      const id = `pop-sp-${call.id}`;
      const who = call.name && call.name !== call.number ? call.name : call.number;
      list.prepend(el("article", {
        class: "pop pop-ringing", id, "data-softphone-card": call.id, "data-state": "ringing",
        "data-caller": who || "unknown", "aria-labelledby": id + "-h",
      },
        el("header", { class: "pop-head" }, el("span", { class: "pop-kind", text: "Incoming call · Ringing (softphone)" })),
        el("h2", { id: id + "-h", class: "pop-caller", text: who || "unknown caller" }),
        el("p", { class: "pop-number" }, el("a", { class: "dial", href: `tel:${call.number}`, "data-number": call.number, text: call.number })),
        el("div", { class: "pop-actions" },
          el("button", { type: "button", class: "btn", "data-sp-answer": call.id, text: "Answer" }),
          el("button", { type: "button", class: "btn danger-btn", "data-sp-decline": call.id, text: "Decline" }))));
    }
    if (window.callbridgeLayout) window.callbridgeLayout();
  }

  // -- commands: run by the leader, sent to it by the other tabs ------------------------------------
  function command(cmd) {
    if (leader) run(cmd);
    else if (channel) channel.postMessage({ type: "cmd", cmd });
  }

  function pcConfig() {
    return { iceServers: (config && config.ice_servers) || [] };
  }
  // -- the microphone and the speaker: chosen per browser (kept in localStorage), used by the tab
  // that owns the phone. A chosen device that is gone falls back to the browser's default.
  const MIC_KEY = "callbridge-softphone-microphone";
  const SPEAKER_KEY = "callbridge-softphone-speaker";
  function chosen(key) {
    try { return localStorage.getItem(key) || ""; } catch (_) { return ""; }
  }
  function choose(key, value) {
    try {
      if (value) localStorage.setItem(key, value); else localStorage.removeItem(key);
    } catch (_) { /* private mode: this page only */ }
  }
  let microphones = new Set(); // the device ids of the microphones present (see listDevices)
  function media() {
    // "exact": Chromium answers an "ideal" device id with its default device. A chosen
    // microphone that is not plugged in now is left out, so the call still gets sound.
    const mic = chosen(MIC_KEY);
    return { audio: mic && microphones.has(mic) ? { deviceId: { exact: mic } } : true, video: false };
  }
  function applySpeaker() {
    const audio = document.getElementById("sp-audio");
    if (!audio || typeof audio.setSinkId !== "function") return;
    audio.setSinkId(chosen(SPEAKER_KEY)).catch(() => {
      audio.setSinkId("").catch(() => {});
    });
  }
  async function listDevices() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.enumerateDevices) return;
    const devices = await navigator.mediaDevices.enumerateDevices();
    microphones = new Set(devices.filter((d) => d.kind === "audioinput" && d.deviceId).map((d) => d.deviceId));
    const box = panel && panel.querySelector("[data-sp-devices]");
    if (!box) return; // a page without the phone panel: the list above is all the owner tab needs
    const fill = (select, kind, key, fallback) => {
      const current = chosen(key);
      const options = [el("option", { value: "", text: "The browser's default" })];
      devices.filter((d) => d.kind === kind && d.deviceId && d.deviceId !== "default").forEach((d, i) => {
        options.push(el("option", { value: d.deviceId, text: d.label || `${fallback} ${i + 1}` }));
      });
      select.replaceChildren(...options);
      select.value = options.some((o) => o.value === current) ? current : "";
    };
    fill(box.querySelector("[data-sp-mic]"), "audioinput", MIC_KEY, "Microphone");
    const speaker = box.querySelector("[data-sp-speaker]");
    const canChoose = typeof HTMLMediaElement.prototype.setSinkId === "function";
    speaker.disabled = !canChoose;
    fill(speaker, "audiooutput", SPEAKER_KEY, "Speaker");
    const named = devices.some((d) => d.label);
    box.querySelector("[data-sp-devices-note]").textContent = !named
      ? "The devices' names show once the microphone is allowed for this site."
      : canChoose ? "" : "This browser plays calls on its default speaker.";
  }

  function call(id) { return view.calls.find((c) => c.id === id); }
  function update(id, changes) {
    const found = call(id);
    if (found) Object.assign(found, changes);
    publish();
  }

  function run(cmd) {
    const session = sessions.get(cmd.id);
    try {
      switch (cmd.op) {
        case "answer": {
          if (!session) return;
          // Call waiting: answering the second call holds the first.
          for (const [other, s] of sessions) {
            if (other !== cmd.id && s.isEstablished() && !s.isOnHold().local) s.hold();
          }
          view.active = cmd.id;
          session.answer({ mediaConstraints: media(), pcConfig: pcConfig() });
          break;
        }
        case "decline": if (session) session.terminate({ status_code: 603, reason_phrase: "Decline" }); break;
        case "hangup": if (session) session.terminate(); break;
        case "hold": if (session) session.hold(); break;
        case "resume": if (session) { view.active = cmd.id; session.unhold(); } break;
        case "switch": {
          for (const [other, s] of sessions) {
            if (other !== cmd.id && s.isEstablished() && !s.isOnHold().local) s.hold();
          }
          view.active = cmd.id;
          if (session) session.unhold();
          publish();
          break;
        }
        case "mute": {
          if (!session) return;
          if (session.isMuted().audio) session.unmute({ audio: true }); else session.mute({ audio: true });
          update(cmd.id, { muted: session.isMuted().audio });
          break;
        }
        case "dtmf": {
          const active = sessions.get(view.active);
          if (active && active.isEstablished()) active.sendDTMF(cmd.tone, { duration: 160, interToneGap: 80 });
          break;
        }
        case "call": placeCall(cmd.number); break;
        case "transfer": {
          if (!session || !session.isEstablished()) return;
          if (!cmd.number) {
            view.message = "Type the number to transfer to in the Number box, then press Transfer.";
            publish();
            return;
          }
          const to = cmd.number;
          // Blind transfer (REFER): once the far end took it, this leg hangs up.
          session.refer(target(to), {
            eventHandlers: {
              accepted: () => {
                view.message = `The call was transferred to ${to}.`;
                if (!session.isEnded()) session.terminate();
                publish();
              },
              requestFailed: (e) => {
                const r = e && e.response;
                view.message = `The other side refused the transfer${r ? ` (${r.status_code} ${r.reason_phrase})` : ""}.`;
                publish();
              },
              failed: (e) => {
                const code = e && e.status_line ? ` (${e.status_line.status_code} ${e.status_line.reason_phrase})` : "";
                view.message = `The transfer to ${to} failed${code}.`;
                publish();
              },
            },
          });
          view.message = `Transferring the call to ${to}…`;
          publish();
          break;
        }
        case "attended": {
          // The held call (cmd.id) is transferred to the party of the active call: REFER with
          // Replaces, so the held party calls them and takes this tab's place in that call.
          const consult = sessions.get(view.active);
          if (!session || !consult || view.active === cmd.id || !consult.isEstablished()) return;
          const entry = call(view.active);
          const whom = (entry && (entry.name || entry.number)) || "the other call";
          session.refer(consult.remote_identity.uri, {
            replaces: consult,
            eventHandlers: {
              accepted: () => {
                view.message = `The call was put through to ${whom}.`;
                if (!session.isEnded()) session.terminate();
                publish();
              },
              requestFailed: (e) => {
                const r = e && e.response;
                view.message = `The held caller's phone refused the transfer${r ? ` (${r.status_code} ${r.reason_phrase})` : ""}.`;
                publish();
              },
              failed: (e) => {
                const code = e && e.status_line ? ` (${e.status_line.status_code} ${e.status_line.reason_phrase})` : "";
                view.message = `The transfer to ${whom} failed${code}.`;
                publish();
              },
            },
          });
          view.message = `Putting the held call through to ${whom}…`;
          publish();
          break;
        }
        default: break;
      }
    } catch (err) {
      view.message = `The phone could not do that: ${err.message}`;
      publish();
    }
  }

  function target(number) {
    const n = String(number).trim();
    if (/^sips?:/i.test(n)) return n;
    const domain = config.sip_uri.split("@")[1];
    return `sip:${n.replace(/[\s().-]/g, "")}@${domain}`;
  }

  function placeCall(number) {
    if (!ua || !ua.isRegistered()) {
      view.message = "The softphone is not registered; the call was not placed.";
      publish();
      return;
    }
    for (const s of sessions.values()) if (s.isEstablished() && !s.isOnHold().local) s.hold();
    ua.call(target(number), { mediaConstraints: media(), pcConfig: pcConfig() });
  }

  // -- the SIP user agent (leader only) ------------------------------------------------------------
  function track(session, originator) {
    const id = `c${Date.now().toString(36)}${(seq += 1)}`;
    const who = session.remote_identity;
    const entry = {
      id,
      direction: originator === "remote" ? "incoming" : "outgoing",
      number: who && who.uri ? who.uri.user : "",
      name: who && who.display_name ? who.display_name : "",
      status: originator === "remote" && !session.callbridgeReplaces ? "ringing" : "calling",
      muted: false,
      rang_at: Date.now(),
    };
    sessions.set(id, session);
    view.calls.push(entry);
    view.message = "";
    // A second incoming call while on a call waits (call waiting); the active call stays. One
    // that replaces the call going on (an attended transfer) takes its place at once.
    if (originator !== "remote" || !call(view.active) || session.callbridgeReplaces) view.active = id;

    const attach = (pc) => {
      peers.set(id, pc);
      pc.addEventListener("track", (event) => {
        let audio = document.getElementById("sp-audio");
        if (!audio) {
          audio = document.body.appendChild(el("audio", { id: "sp-audio", autoplay: true }));
          applySpeaker();
        }
        const stream = event.streams[0] || new MediaStream([event.track]);
        if (view.active === id || !audio.srcObject) audio.srcObject = stream;
        const played = audio.play();
        if (played && played.catch) played.catch(() => {});
      });
    };
    if (session.connection) attach(session.connection);
    session.on("peerconnection", (e) => attach(e.peerconnection));
    // JsSIP sends its SDP once ICE gathering completes; a slow or unreachable STUN/TURN server
    // would hold a call for seconds: 700 ms after the first candidate it goes with what it has.
    let gathering = null;
    session.on("icecandidate", (e) => {
      if (!gathering) gathering = setTimeout(() => { gathering = null; e.ready(); }, 700);
    });
    session.on("confirmed", () => update(id, { status: "in_call", answered_at: Date.now() }));
    session.on("accepted", () => update(id, { status: "in_call", answered_at: Date.now() }));
    session.on("hold", (e) => { if (e.originator === "local") update(id, { status: "on_hold" }); });
    session.on("unhold", (e) => { if (e.originator === "local") update(id, { status: "in_call" }); });
    // An attended transfer elsewhere: the transferred party's INVITE replaces this call.
    // JsSIP makes a new incoming session for it (marked here, answered at once in track()) and
    // ends this one once the new one is confirmed.
    session.on("replaces", (e) => e.accept((replacing) => { replacing.callbridgeReplaces = true; }));
    // Transferred by the other side (REFER): call the new party from here.
    session.on("refer", (e) => {
      e.accept(() => {}, { mediaConstraints: media(), pcConfig: pcConfig() });
    });
    session.on("newDTMF", (e) => {
      if (e.originator === "remote") { view.dtmf_received += e.dtmf.tone; publish(); }
    });
    const finish = (e, failed) => {
      sessions.delete(id);
      peers.delete(id);
      const gone = call(id);
      view.calls = view.calls.filter((c) => c.id !== id);
      if (view.active === id) view.active = view.calls.length ? view.calls[0].id : null;
      if (failed) view.message = failure(gone, e);
      publish();
    };
    session.on("ended", (e) => finish(e, false));
    session.on("failed", (e) => finish(e, true));
    if (session.callbridgeReplaces) session.answer({ mediaConstraints: media(), pcConfig: pcConfig() });
    publish();
  }

  function failure(gone, e) {
    const who = gone && gone.number ? gone.number : "The other side";
    if (e.cause === "User Denied Media Access") return MIC_BLOCKED;
    if (e.cause === "Canceled" && gone && gone.direction === "incoming") return "";
    if (e.originator === "local") return "";
    const status = e.message && e.message.status_code ? ` (${e.message.status_code} ${e.message.reason_phrase || ""})`.replace(" )", ")") : "";
    if (CAUSE_WORDS[e.cause]) return `${who} ${CAUSE_WORDS[e.cause]}.`;
    if (e.cause === "Canceled") return `${who} hung up before the call was answered.`;
    if (e.cause === "Connection Error") return "The call failed: the connection to the PBX was lost.";
    return `The call with ${who} failed: ${e.cause}${status}.`;
  }

  async function start() {
    setStatus("registering", "");
    let credential;
    try {
      credential = await api("POST", "/api/v1/me/softphone/nonce")
        .then((n) => api("POST", "/api/v1/me/softphone/credential", { nonce: n.nonce }));
    } catch (err) {
      setStatus("error", `Could not fetch your SIP credentials from the hub: ${err.message}`);
      return;
    }
    let socket;
    try {
      socket = new JsSIP.WebSocketInterface(config.ws_url);
    } catch (err) {
      setStatus("error", `The PBX's WebSocket address is not valid: ${err.message}`);
      return;
    }
    ua = new JsSIP.UA({
      sockets: [socket],
      uri: config.sip_uri,
      authorization_user: credential.auth_user,
      password: credential.secret,
      register: true,
      register_expires: 300,
      session_timers: false,
      user_agent: "callbridge softphone (JsSIP)",
      // JsSIP reconnects by itself: 2 s, doubling, never more than 30 s apart.
      connection_recovery_min_interval: 2,
      connection_recovery_max_interval: 30,
    });
    credential = null;
    let everConnected = false;
    ua.on("connecting", () => { if (view.status !== "error") setStatus("registering", view.message); });
    ua.on("connected", () => { everConnected = true; });
    ua.on("disconnected", () => {
      if (stopping) return;
      setStatus("error", everConnected
        ? "The connection to the PBX was lost; reconnecting by itself…"
        : `Cannot reach the PBX at ${config.ws_url}; trying again by itself…`);
    });
    // A registration the PBX refused for a passing reason (busy, restarting: 5xx, 408, 480…) is
    // tried again by itself, 5 s later, doubling up to 5 min; one refused for a wrong user or
    // secret is not (retrying a wrong password looks like guessing it, and PBXs ban for that):
    // the message says so, and a reload after fixing it tries again.
    let retryDelay = REGISTER_RETRY_FIRST;
    let retryTimer = null;
    ua.on("registered", () => {
      retryDelay = REGISTER_RETRY_FIRST;
      setStatus("registered", "");
    });
    ua.on("unregistered", () => { if (!stopping) setStatus("unregistered", ""); });
    ua.on("registrationFailed", (e) => {
      const r = e.response;
      const why = r ? `${r.status_code} ${r.reason_phrase}` : e.cause;
      const refused = e.cause === "Authentication Error" || (r && (r.status_code === 401 || r.status_code === 403));
      if (refused || stopping) {
        setStatus("error", `The PBX refused the registration: ${why} (wrong user or secret?).`);
        return;
      }
      const seconds = retryDelay;
      retryDelay = Math.min(retryDelay * 2, REGISTER_RETRY_MAX);
      setStatus("error", `The PBX refused the registration: ${why}; trying again in ${seconds} s…`);
      clearTimeout(retryTimer);
      retryTimer = setTimeout(() => { if (!stopping && ua) ua.register(); }, seconds * 1000);
    });
    ua.on("newRTCSession", (e) => track(e.session, e.originator));
    ua.start();
  }

  function becomeLeader() {
    leader = true;
    window.callbridgeSoftphone.leader = true;
    start();
    window.addEventListener("pagehide", () => {
      // Unregister on the way out, so the next tab's registration is the only one.
      stopping = true;
      if (ua) { try { ua.stop(); } catch (_) { /* closing anyway */ } }
    });
  }

  // -- tabs ------------------------------------------------------------------------------------------
  function listen() {
    channel = new BroadcastChannel(`callbridge-softphone:${config.sip_uri}`);
    channel.addEventListener("message", (event) => {
      const msg = event.data || {};
      if (msg.type === "view" && !leader) { view = msg.view; render(); }
      else if (msg.type === "hello" && leader) publish();
      else if (msg.type === "cmd" && leader) run(msg.cmd);
    });
    channel.postMessage({ type: "hello" });
  }

  function clickedCommand(target) {
    for (const op of ["answer", "decline", "hangup", "hold", "resume", "switch", "mute", "transfer", "attended"]) {
      const node = target.closest(`[data-sp-${op}]`);
      if (!node) continue;
      const cmd = { op, id: node.getAttribute(`data-sp-${op}`) };
      if (op === "transfer") {
        const box = document.getElementById("sp-number");
        cmd.number = box ? box.value.trim() : "";
      }
      return cmd;
    }
    const key = target.closest("[data-sp-dtmf]");
    if (key) return { op: "dtmf", tone: key.dataset.spDtmf };
    return null;
  }

  document.addEventListener("click", (event) => {
    const target = event.target instanceof Element ? event.target : null;
    if (!target) return;
    const cmd = clickedCommand(target);
    if (!cmd) return;
    event.preventDefault();
    command(cmd);
  });
  document.addEventListener("change", (event) => {
    const target = event.target;
    if (!(target instanceof HTMLSelectElement)) return;
    if (target.hasAttribute("data-sp-mic")) choose(MIC_KEY, target.value);
    else if (target.hasAttribute("data-sp-speaker")) { choose(SPEAKER_KEY, target.value); applySpeaker(); }
  });
  // Another tab of this browser chose a speaker: the owner tab plays calls there from now on.
  window.addEventListener("storage", (event) => { if (event.key === SPEAKER_KEY && leader) applySpeaker(); });
  document.addEventListener("submit", (event) => {
    const form = event.target;
    if (!(form instanceof HTMLFormElement) || !form.hasAttribute("data-sp-dial")) return;
    event.preventDefault();
    const number = String(new FormData(form).get("number") || "").trim();
    if (number) command({ op: "call", number });
  });

  window.callbridgeSoftphone = {
    state: "unregistered",
    leader: false,
    peers,
    // Click-to-call goes through the softphone while it is registered (live.js asks).
    ready: () => ["registered", "in_call", "on_hold"].includes(overall()),
    call: (number) => command({ op: "call", number }),
    config: () => config,
    view: () => view,
    refresh: () => renderCards(),
  };

  async function boot() {
    try {
      config = await api("GET", "/api/v1/me/softphone");
    } catch (err) {
      config = null;
      view.message = `Could not read your softphone settings: ${err.message}`;
      render();
      return;
    }
    render();
    if (!config.enabled) return;
    const devices = panel && panel.querySelector("[data-sp-devices]");
    if (devices) {
      devices.hidden = false;
      devices.addEventListener("toggle", () => { if (devices.open) listDevices().catch(() => {}); });
    }
    if (navigator.mediaDevices && navigator.mediaDevices.addEventListener) {
      navigator.mediaDevices.addEventListener("devicechange", () => listDevices().catch(() => {}));
    }
    listDevices().catch(() => {});
    if (typeof JsSIP === "undefined" || !window.RTCPeerConnection) {
      setStatus("error", "This browser cannot run the softphone (no WebRTC).");
      return;
    }
    if (!navigator.locks || !window.BroadcastChannel) {
      // Without Web Locks every tab would register: only the desk page's tab runs the phone.
      if (panel) becomeLeader();
      return;
    }
    listen();
    // The lock is held for the tab's life: when it closes, the next waiting tab gets it.
    navigator.locks.request(`callbridge-softphone:${config.sip_uri}`, () => new Promise(() => becomeLeader()));
  }
  boot();
})();
