// callbridge page behaviour that htmx does not cover. Kept small and dependency-free.
"use strict";
document.addEventListener("htmx:responseError", (event) => {
  // Show API errors ({"error": {"message": …}}) instead of failing silently.
  let message = "The request failed.";
  try {
    const body = JSON.parse(event.detail.xhr.responseText);
    if (body && body.error && body.error.message) message = body.error.message;
  } catch (_) { /* not JSON */ }
  const box = document.createElement("p");
  box.className = "error";
  box.setAttribute("role", "alert");
  box.textContent = message;
  document.getElementById("main").prepend(box);
});

// Times on every page are shown in the signed-in user's zone (<body data-time-zone>), in the
// same format the server writes: "2025-03-01 14:05:09 CET"; part "time" gives "14:05:09",
// "minute" drops the seconds. Screen pops and the desk format their times through this.
window.callbridgeTime = function callbridgeTime(value, part) {
  const when = value instanceof Date ? value : new Date(value);
  if (Number.isNaN(when.getTime())) return "";
  const zone = (document.body && document.body.dataset.timeZone) || undefined;
  let parts;
  try {
    parts = new Intl.DateTimeFormat("en-GB", {
      timeZone: zone, year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit",
      minute: "2-digit", second: "2-digit", hourCycle: "h23", timeZoneName: "short",
    }).formatToParts(when);
  } catch (_) { // a zone this browser does not know: its own zone rather than nothing
    return when.toLocaleString();
  }
  const p = Object.fromEntries(parts.map((x) => [x.type, x.value]));
  const clock = `${p.hour}:${p.minute}`;
  if (part === "time") return `${clock}:${p.second}`;
  const day = `${p.year}-${p.month}-${p.day}`;
  return part === "minute" ? `${day} ${clock} ${p.timeZoneName}` : `${day} ${clock}:${p.second} ${p.timeZoneName}`;
};

// Stacked tables on small screens (app.css) show each cell under its column's name: cells the
// server wrote carry data-label; rows a page adds later (the desk's live rows) get it here.
(function labelTableCells() {
  function label(root) {
    for (const table of root.querySelectorAll("main table")) {
      if (!table.tHead) continue;
      const names = Array.from(table.tHead.querySelectorAll("th"), (th) => th.textContent.trim());
      for (const row of table.tBodies.length ? table.tBodies[0].rows : []) {
        Array.from(row.cells).forEach((cell, i) => {
          if (cell.tagName === "TD" && !cell.hasAttribute("data-label") && cell.colSpan === 1 && names[i]) {
            cell.setAttribute("data-label", names[i]);
          }
        });
      }
    }
  }
  function start() {
    label(document);
    const main = document.getElementById("main");
    if (main) new MutationObserver(() => label(document)).observe(main, { childList: true, subtree: true });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
