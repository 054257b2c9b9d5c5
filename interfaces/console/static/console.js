// The overview's live updates: each move of the change feed (the console's own stream, which
// carries positions only) reads the summary again 2.5 s later, once the web workers have added
// their intake counts (every 2 s), the moves meanwhile joining that one read; every 15 s
// regardless (refused deliveries make no change). A session that ended sends the page to the
// sign-in.
"use strict";
(function () {
  const summary = document.getElementById("summary");
  if (!summary) return;
  const status = document.getElementById("live-status");
  let due = null;

  function refresh() {
    due = null;
    fetch(summary.dataset.summary, { credentials: "same-origin", redirect: "manual" })
      .then(function (answer) {
        if (answer.type === "opaqueredirect" || answer.status === 401) {
          window.location.assign("/console/sign-in");
          return null;
        }
        return answer.ok ? answer.text() : null;
      })
      .then(function (html) {
        if (html === null) return;
        const open = summary.querySelector("details[open]") !== null;
        summary.innerHTML = html;
        if (open) summary.querySelector("details").open = true;
        status.textContent = "Updated live at " + new Date().toLocaleTimeString() + ".";
      })
      .catch(function () {
        status.textContent = "Live updates paused: the service cannot be reached.";
      });
  }

  function soon() {
    if (due === null) due = setTimeout(refresh, 2500);
  }

  const stream = new EventSource(summary.dataset.live);
  stream.addEventListener("change", soon);
  stream.addEventListener("signed-out", function () {
    stream.close();
    window.location.assign("/console/sign-in");
  });
  setInterval(soon, 15000);
})();
