// A supervisor joins a live call from their own phone: listen, whisper (to the agent) or barge.
(function () {
  "use strict";
  const box = document.querySelector(".supervise[data-call]");
  if (!box) return;
  const status = box.querySelector("[data-spy-status]");
  for (const button of box.querySelectorAll("button[data-spy]")) {
    button.addEventListener("click", async () => {
      status.textContent = "ringing your phone…";
      const answer = await fetch(`/api/v1/calls/${box.dataset.call}/spy`, {
        method: "POST",
        headers: { "content-type": "application/json", "x-csrf-token": document.body.dataset.csrf },
        body: JSON.stringify({ mode: button.dataset.spy }),
      });
      if (answer.ok) {
        status.textContent = "answer your phone to " + button.dataset.spy;
      } else {
        const body = await answer.json().catch(() => ({}));
        status.textContent = (body.error && body.error.message) || "that did not work";
      }
    });
  }
})();
