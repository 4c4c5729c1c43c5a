// The API page (Swagger UI, served from this server): no inline script, so the page's
// Content-Security-Policy can forbid it. "Authorize" takes the token of the runs directory.
"use strict";
window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis], layout: "BaseLayout"});
