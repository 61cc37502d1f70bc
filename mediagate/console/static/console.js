// The console's small shared behaviours; no inline scripts anywhere (the pages' CSP forbids
// them). Page scripts live in static/<page>.js.
(function () {
  "use strict";
  function csrf() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.content : "";
  }
  window.mediagate = { csrf: csrf };
  // htmx's requests carry the session's CSRF token.
  document.addEventListener("htmx:configRequest", function (event) {
    event.detail.headers["X-CSRF-Token"] = csrf();
  });
  document.addEventListener("click", function (event) {
    var target = event.target.closest ? event.target.closest("[data-copy]") : null;
    if (target) {
      var source = document.getElementById(target.getAttribute("data-copy"));
      var text = source ? (source.value || source.textContent) : "";
      if (navigator.clipboard) {
        navigator.clipboard.writeText(text).then(function () { target.textContent = "Copied"; });
      } else if (source && source.select) {
        source.select();
        document.execCommand("copy");
        target.textContent = "Copied";
      }
    }
  });
  // A filter form (GET) leaves its empty fields out of the URL, so a shared link says only
  // what was chosen (the server takes an empty field as no filter all the same).
  document.addEventListener("formdata", function (event) {
    if ((event.target.method || "").toLowerCase() !== "get") {
      return;
    }
    var empty = [];
    event.formData.forEach(function (value, name) {
      if (value === "") {
        empty.push(name);
      }
    });
    empty.forEach(function (name) {
      event.formData.delete(name);
    });
  });
  // A form whose button has data-confirm asks first.
  document.addEventListener("submit", function (event) {
    var button = event.submitter;
    var message = button && button.getAttribute("data-confirm");
    if (message && !window.confirm(message)) {
      event.preventDefault();
    }
  });
})();
