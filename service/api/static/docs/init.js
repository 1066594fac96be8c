// Start Swagger UI on this server's OpenAPI document. A file of its own, not an inline script,
// so the page's Content-Security-Policy can forbid inline code. The browser sends the Basic
// credentials it used for this page with the same-origin requests below (spec and "Try it out").
window.addEventListener("load", function () {
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.specUrl,
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    validatorUrl: null,
    tryItOutEnabled: false,
    defaultModelsExpandDepth: 0
  });
});
