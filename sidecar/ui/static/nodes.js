// Calls the helpers Kratos names in a node's onclickTrigger / onloadTrigger (WebAuthn, passkeys).
// Inline handlers are forbidden by the page's CSP, so the templates carry only the helper's name.
"use strict";
(function () {
  var allowed = /^ory[A-Za-z]+$/;
  function call(name) {
    var fn = allowed.test(name || "") ? window[name] : undefined;
    if (typeof fn === "function") {
      fn();
      return true;
    }
    return false;
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-onclick-trigger]").forEach(function (el) {
      el.addEventListener("click", function (event) {
        if (call(el.getAttribute("data-onclick-trigger"))) {
          event.preventDefault();
        }
      });
    });
    // Helper scripts load async; wait for the page so that they are defined.
    window.addEventListener("load", function () {
      document.querySelectorAll("[data-onload-trigger]").forEach(function (el) {
        call(el.getAttribute("data-onload-trigger"));
      });
    });
  });
})();
