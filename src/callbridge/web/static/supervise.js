// A supervisor joins a live call from their own phone: listen, whisper (to the agent) or barge.
// The buttons sit in an element with data-spy-call (the call page; each row of the live calls,
// which live.js adds and replaces as calls change): one listener for all of them.
(function () {
  "use strict";
  document.addEventListener("click", async (event) => {
    const button = event.target instanceof Element ? event.target.closest("button[data-spy]") : null;
    const box = button && button.closest("[data-spy-call]");
    if (!box) return;
    const status = box.querySelector("[data-spy-status]");
    const say = (text) => { if (status) status.textContent = text; };
    say("ringing your phone…");
    const answer = await fetch(`/api/v1/calls/${box.dataset.spyCall}/spy`, {
      method: "POST",
      headers: { "content-type": "application/json", "x-csrf-token": document.body.dataset.csrf },
      body: JSON.stringify({ mode: button.dataset.spy }),
    });
    if (answer.ok) {
      say("answer your phone to " + button.dataset.spy);
    } else {
      const body = await answer.json().catch(() => ({}));
      say((body.error && body.error.message) || "that did not work");
    }
  });
})();
