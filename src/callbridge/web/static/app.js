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
