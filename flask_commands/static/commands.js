// Flask-Commands: the little behaviour its macros need, as listeners, so that pages need no
// inline handlers and no 'unsafe-eval' in their Content-Security-Policy. htmx_script() and
// commands_script() include it; it works with htmx 4 (and htmx 2's event names).
(() => {
  "use strict";

  // A live-validated field (render_field marks it data-commands-live) sends no validation while
  // its form is being submitted: a click on the submit button blurs the field, and that change
  // must not cost a second request.
  function dropValidationDuringSubmit(event) {
    const field = event.target;
    if (!(field instanceof Element) || !field.hasAttribute("data-commands-live")) return;
    if (field.form && field.form.classList.contains("htmx-request")) event.preventDefault();
  }

  document.addEventListener("htmx:before:request", dropValidationDuringSubmit); // htmx 4
  document.addEventListener("htmx:beforeRequest", dropValidationDuringSubmit); // htmx 2
})();
