// The API reference page: Swagger UI (vendored, no CDN) over the hub's own OpenAPI document.
// "Try it out" runs with the signed-in session; changes carry the session's CSRF token.
(function () {
  "use strict";
  function start() {
    var body = document.body;
    var csrf = body.dataset.csrf || "";
    window.SwaggerUIBundle({
      url: body.dataset.spec,
      dom_id: "#swagger-ui",
      deepLinking: true,
      tryItOutEnabled: false,
      requestInterceptor: function (request) {
        if (csrf && request.method && request.method.toUpperCase() !== "GET") {
          request.headers["X-CSRF-Token"] = csrf;
        }
        return request;
      },
    });
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
