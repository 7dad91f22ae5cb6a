// The recording player on a call's page: speed buttons (1×, 1.5×, 2×) and keyboard control.
// A static file, as every script of the hub (the pages run a strict Content-Security-Policy).
"use strict";
(function () {
  const players = Array.from(document.querySelectorAll("[data-player]"));
  if (!players.length) return;

  function setSpeed(player, rate) {
    const audio = player.querySelector("audio");
    audio.playbackRate = rate;
    audio.defaultPlaybackRate = rate;
    for (const button of player.querySelectorAll("[data-speed]")) {
      button.setAttribute("aria-pressed", String(Number(button.dataset.speed) === rate));
    }
  }

  for (const player of players) {
    for (const button of player.querySelectorAll("[data-speed]")) {
      button.addEventListener("click", () => setSpeed(player, Number(button.dataset.speed)));
    }
  }

  // Comments pinned to a moment: a click seeks the (first) player there.
  const main = players[0].querySelector("audio");
  for (const button of document.querySelectorAll("[data-seek]")) {
    button.addEventListener("click", () => {
      const at = Number(button.dataset.seek);
      if (!Number.isFinite(at)) return;
      main.currentTime = at;
      main.focus();
    });
  }
  // "Use the player's position" fills the comment's moment (m:ss).
  const atNow = document.querySelector("[data-at-now]");
  const atInput = document.querySelector("[data-at-input]");
  if (atNow && atInput) {
    atNow.addEventListener("click", () => {
      const t = Math.floor(main.currentTime || 0);
      atInput.value = `${Math.floor(t / 60)}:${String(t % 60).padStart(2, "0")}`;
    });
  }

  document.addEventListener("keydown", (event) => {
    if (event.altKey || event.ctrlKey || event.metaKey) return;
    const target = event.target;
    if (target instanceof HTMLElement && target.closest("input, textarea, select, [contenteditable]")) return;
    // The player the user last touched, else the first one on the page.
    const player = players.find((p) => p.contains(document.activeElement)) || players[0];
    const audio = player.querySelector("audio");
    const speeds = { "1": 1, "2": 1.5, "3": 2 };
    if (event.key === " " || event.key === "k") {
      if (target instanceof HTMLButtonElement && target !== audio) return; // a button's own space
      event.preventDefault();
      if (audio.paused) audio.play().catch(() => {}); else audio.pause();
    } else if (event.key === "ArrowLeft" || event.key === "j") {
      event.preventDefault();
      audio.currentTime = Math.max(0, audio.currentTime - 5);
    } else if (event.key === "ArrowRight" || event.key === "l") {
      event.preventDefault();
      const end = Number.isFinite(audio.duration) ? audio.duration : audio.currentTime + 5;
      audio.currentTime = Math.min(end, audio.currentTime + 5);
    } else if (event.key in speeds) {
      event.preventDefault();
      setSpeed(player, speeds[event.key]);
    }
  });
})();
