// The Dihya operator console's only script: plain JavaScript, no library, no build step.
// Every page works without it; it adds copy buttons, the reader's local time beside UTC
// times, the time zone of the audit filter, and live regions: an element with
// `data-live="URL"` is refreshed from URL every second (with its ETag, so an unchanged
// state costs a 304), so changes made elsewhere show without reloading the page.
"use strict";

(function () {
  var POLL_MS = 1000;

  function pad(n) { return (n < 10 ? "0" : "") + n; }

  function localText(date) {
    var offset = -date.getTimezoneOffset();
    var sign = offset >= 0 ? "+" : "-";
    offset = Math.abs(offset);
    return date.getFullYear() + "-" + pad(date.getMonth() + 1) + "-" + pad(date.getDate()) +
      " " + pad(date.getHours()) + ":" + pad(date.getMinutes()) + ":" + pad(date.getSeconds()) +
      " " + sign + pad(Math.floor(offset / 60)) + ":" + pad(offset % 60);
  }

  // `<time datetime="…Z">` gets the reader's local time beside it, once.
  function addLocalTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (el) {
      if (el.dataset.localized) { return; }
      var date = new Date(el.getAttribute("datetime"));
      if (isNaN(date.getTime())) { return; }
      el.dataset.localized = "1";
      var span = document.createElement("span");
      span.className = "local-time";
      span.textContent = " (local " + localText(date) + ")";
      el.after(span);
    });
  }

  // The audit filter's datetime-local fields are in the reader's zone: say which, and
  // send the offset so the server turns them into UTC.
  function setTimeZone() {
    var offset = new Date().getTimezoneOffset();
    document.querySelectorAll("input.tzoffset").forEach(function (el) { el.value = String(offset); });
    var minutes = -offset, sign = minutes >= 0 ? "+" : "-";
    minutes = Math.abs(minutes);
    var label = "(your local time, UTC" + sign + pad(Math.floor(minutes / 60)) + ":" + pad(minutes % 60) + ")";
    document.querySelectorAll(".tz-label").forEach(function (el) { el.textContent = label; });
  }

  function say(text) {
    var note = document.getElementById("live-note");
    if (!note) { return; }
    note.textContent = text;
    note.hidden = false;
  }

  function copyText(text, button) {
    function done(ok) {
      var before = button.textContent;
      button.textContent = ok ? "Copied" : "Select and copy";
      setTimeout(function () { button.textContent = before; }, 1500);
    }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(function () { done(true); }, function () { done(false); });
    } else {
      done(false);
    }
  }

  // One listener for every copy button, those swapped in by a live refresh included.
  document.addEventListener("click", function (event) {
    var button = event.target.closest("button.copy");
    if (!button) { return; }
    var source = button.dataset.copyFrom ? document.getElementById(button.dataset.copyFrom) : null;
    if (source) { source.select(); }
    copyText(source ? source.value : button.dataset.copy || "", button);
  });

  function poll(el) {
    var etag = el.dataset.liveEtag ? '"' + el.dataset.liveEtag + '"' : null;
    var stopped = false;
    function tick() {
      if (stopped) { return; }
      if (document.hidden) { setTimeout(tick, POLL_MS); return; }
      var headers = { "Accept": "application/json" };
      if (etag) { headers["If-None-Match"] = etag; }
      fetch(el.dataset.live, { headers: headers, credentials: "same-origin", cache: "no-store" })
        .then(function (response) {
          if (response.status === 401) {
            stopped = true;
            say("Your session ended: sign in again to see changes.");
            return null;
          }
          if (response.status === 304 || !response.ok) { return null; }
          var fresh = response.headers.get("ETag");
          return response.json().then(function (body) {
            etag = fresh;
            var focused = document.activeElement && el.contains(document.activeElement)
              ? document.activeElement.id : null;
            el.innerHTML = body.html;  // server-rendered, escaped by the template engine
            el.dataset.stateVersion = String(body.state_version);
            addLocalTimes(el);
            if (focused && document.getElementById(focused)) { document.getElementById(focused).focus(); }
            say(el.dataset.liveNote || "Updated just now: a change was made elsewhere.");
          });
        })
        .catch(function () { /* the server restarts or the network blinks: try again */ })
        .then(function () { if (!stopped) { setTimeout(tick, POLL_MS); } });
    }
    tick();
  }

  document.addEventListener("DOMContentLoaded", function () {
    addLocalTimes(document);
    setTimeZone();
    document.querySelectorAll("[data-live]").forEach(poll);
  });
})();
