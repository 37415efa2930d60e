// The billing page works without this script. While a payment is being confirmed
// (#banners has data-poll), it asks tally for the page again every two seconds, for two
// minutes at most, and swaps in the parts that change; tally's answer fulfils the
// Checkout Session when the webhook has not arrived yet.
(function () {
  "use strict";
  var tries = 60;
  function poll() {
    var banners = document.getElementById("banners");
    var url = banners && banners.getAttribute("data-poll");
    if (!url || tries-- <= 0) return;
    setTimeout(function () {
      fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } })
        .then(function (response) {
          if (!response.ok) throw new Error("status " + response.status);
          return response.text();
        })
        .then(function (html) {
          var next = new DOMParser().parseFromString(html, "text/html");
          document.querySelectorAll("[data-live]").forEach(function (part) {
            var fresh = next.getElementById(part.id);
            if (fresh) part.replaceWith(fresh);
          });
        })
        .catch(function () {})
        .then(poll);
    }, 2000);
  }
  poll();
})();
