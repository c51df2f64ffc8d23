// Starts Swagger UI on /docs (vidgate/api/docs.py). A file of its own rather than an inline script, so the page's
// Content-Security-Policy can allow scripts from this server only.
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "openapi.json", // beside /docs, so the page also works under a path prefix
    dom_id: "#swagger-ui",
    deepLinking: true,
    // Swagger UI would otherwise load a validity badge from validator.swagger.io: nothing leaves this server.
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
});
