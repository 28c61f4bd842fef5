// The history page's helpers: times in the browser's zone, the player, the request form's
// zone, and live status (polls /history/status, swaps changed rows, inserts new ones).
// The page is complete without this script; it only saves reloads.
(function () {
  "use strict";

  var root = document.querySelector("[data-history]");
  if (!root || !window.fetch || !window.URLSearchParams) {
    return;
  }
  var since = root.getAttribute("data-since");
  var newer = root.querySelector("[data-newer]");
  var newerText = root.querySelector("[data-newer-text]");
  var signedOut = root.querySelector("[data-signed-out]");
  var announce = root.querySelector("[data-announce]");
  var table = root.querySelector("[data-table]");
  var FAST = 1500;
  var SLOW = 5000;
  var timer = null;
  var stopped = false;
  var zone = window.Intl ? Intl.DateTimeFormat().resolvedOptions().timeZone : "";

  // Times: the server wrote its own zone; show the browser's, keep the server's on hover.

  var formats = {};
  function format(style) {
    if (!window.Intl) {
      return null;
    }
    if (!formats[style]) {
      var options = {
        datetime: { day: "numeric", month: "short", year: "numeric", hour: "2-digit", minute: "2-digit" },
        time: { hour: "2-digit", minute: "2-digit", second: "2-digit" },
        daytime: { day: "numeric", month: "short", hour: "2-digit", minute: "2-digit", second: "2-digit" },
        day: { day: "numeric", month: "short", year: "numeric" },
      }[style];
      formats[style] = new Intl.DateTimeFormat(undefined, options);
    }
    return formats[style];
  }

  function localTimes(scope) {
    Array.prototype.forEach.call(scope.querySelectorAll("time[data-local]"), function (node) {
      var moment = new Date(node.getAttribute("datetime"));
      var fmt = format(node.getAttribute("data-local"));
      if (fmt && !isNaN(moment)) {
        node.textContent = fmt.format(moment);
      }
    });
    Array.prototype.forEach.call(scope.querySelectorAll("[data-range]"), function (range) {
      var first = range.querySelector("time[data-local]");
      var day = range.querySelector("[data-range-day]");
      var fmt = format("day");
      if (first && day && fmt) {
        day.textContent = fmt.format(new Date(first.getAttribute("datetime")));
      }
    });
  }

  function localZoneNotes() {
    var note = document.querySelector("[data-tz-note]");
    if (note && zone) {
      note.textContent =
        "Times are shown in your time zone (" + zone + "); point at a time to see it in the server's (" +
        note.getAttribute("data-server-zone") + ").";
    }
    Array.prototype.forEach.call(root.querySelectorAll("[data-zone]"), function (label) {
      label.textContent = zone ? "(" + zone + ")" : "";
    });
  }

  // The request form: its times are typed in the browser's zone, and its offset goes along.

  function pad(n) {
    return (n < 10 ? "0" : "") + n;
  }

  function inputValue(moment) {
    return (
      moment.getFullYear() + "-" + pad(moment.getMonth() + 1) + "-" + pad(moment.getDate()) +
      "T" + pad(moment.getHours()) + ":" + pad(moment.getMinutes()) + ":" + pad(moment.getSeconds())
    );
  }

  function askForm() {
    var form = root.querySelector("[data-ask]");
    if (!form) {
      return;
    }
    var inputs = form.querySelectorAll("input[type=datetime-local]");
    Array.prototype.forEach.call(inputs, function (input) {
      var moment = new Date(input.getAttribute("data-utc") || "");
      if (!isNaN(moment)) {
        input.value = inputValue(moment);
      }
    });
    form.addEventListener("submit", function () {
      var start = new Date(inputs[0].value);
      if (!isNaN(start)) {
        form.querySelector("[data-offset]").value = String(-start.getTimezoneOffset());
      }
    });
  }

  // A second click on a form's button while the first is on its way does nothing.
  root.addEventListener("submit", function (event) {
    var form = event.target;
    if (form.getAttribute("data-sent")) {
      event.preventDefault();
      return;
    }
    form.setAttribute("data-sent", "1");
    setTimeout(function () {
      form.removeAttribute("data-sent");
    }, 5000);
  });

  // The player: a row under the archive, opened by Play (without script, by its #anchor).

  root.addEventListener("click", function (event) {
    var play = event.target.closest("[data-role=play]");
    var close = event.target.closest("[data-role=close]");
    if (play) {
      event.preventDefault();
      var item = play.closest("[data-item]");
      var row = item && item.querySelector("[data-player]");
      if (!row) {
        return;
      }
      var opening = !row.classList.contains("is-open");
      row.classList.toggle("is-open", opening);
      var video = row.querySelector("video");
      if (opening) {
        video.preload = "auto";
        var started = video.play();
        if (started && started.catch) {
          started.catch(function () {});
        }
        row.scrollIntoView({ block: "nearest" });
      } else {
        video.pause();
      }
    } else if (close) {
      event.preventDefault();
      var player = close.closest("[data-player]");
      player.classList.remove("is-open");
      player.querySelector("video").pause();
      if (window.location.hash) {
        history.replaceState(null, "", window.location.pathname + window.location.search);
      }
    }
  });

  // Filters fold away on a phone unless some are set.
  var filters = root.querySelector("[data-filters]");
  if (filters && window.matchMedia && window.matchMedia("(max-width: 760px)").matches) {
    if (!new URLSearchParams(window.location.search).toString().match(/(camera|status|from|to|user)=/)) {
      filters.open = false;
    }
  }

  // Live status.

  function pendingRows() {
    return Array.prototype.slice.call(root.querySelectorAll("tr[data-pending]"));
  }

  function fragment(html) {
    var box = document.createElement("table");
    box.innerHTML = html;
    return box.querySelector("tbody");
  }

  function setProgress(row, item) {
    var bar = row.querySelector("[data-role=progress] progress");
    var text = row.querySelector("[data-role=percent]");
    if (bar && text) {
      bar.value = item.progress;
      text.textContent = item.progress + "%";
    }
  }

  function update(item) {
    var current = root.querySelector('tbody[data-item="' + item.id + '"]');
    if (!current) {
      return;
    }
    var badge = current.querySelector("[data-role=badge]");
    if (badge && badge.textContent === item.label) {
      setProgress(current, item);
      return;
    }
    var fresh = fragment(item.html);
    if (fresh) {
      localTimes(fresh);
      current.parentNode.replaceChild(fresh, current);
    }
    if (announce) {
      announce.textContent = item.name + ": " + item.label;
    }
  }

  function onFirstPage() {
    var page = new URLSearchParams(window.location.search).get("page");
    return !page || page === "1";
  }

  function insert(added) {
    var list = root.querySelector(".downloads");
    var head = list && list.querySelector("thead");
    if (!head) {
      return;
    }
    added
      .slice()
      .reverse()
      .forEach(function (item) {
        if (root.querySelector('tbody[data-item="' + item.id + '"]')) {
          return;
        }
        var fresh = fragment(item.html);
        if (fresh) {
          localTimes(fresh);
          fresh.classList.add("is-new");
          head.parentNode.insertBefore(fresh, head.nextSibling);
        }
      });
    table.hidden = false;
    var empty = root.querySelector("[data-empty]");
    if (empty) {
      empty.hidden = true;
    }
    if (announce && added.length) {
      announce.textContent = added.length === 1 ? "1 new download." : added.length + " new downloads.";
    }
  }

  function showNewer(count) {
    if (!newer || !count) {
      return;
    }
    newerText.textContent = count === 1 ? "1 new download." : count + " new downloads.";
    newer.hidden = false;
  }

  function schedule() {
    if (stopped) {
      return;
    }
    clearTimeout(timer);
    timer = setTimeout(poll, pendingRows().length ? FAST : SLOW);
  }

  function poll() {
    if (document.hidden) {
      schedule();
      return;
    }
    var params = new URLSearchParams(window.location.search);
    var ids = pendingRows().map(function (row) {
      return row.getAttribute("data-id");
    });
    if (ids.length) {
      params.set("ids", ids.join(","));
    }
    params.set("since", since);
    fetch("/history/status?" + params.toString(), {
      credentials: "same-origin",
      headers: { Accept: "application/json" },
    })
      .then(function (response) {
        if (response.status === 401) {
          stopped = true;
          signedOut.hidden = false;
          return null;
        }
        return response.ok ? response.json() : null;
      })
      .then(function (body) {
        if (!body) {
          return;
        }
        body.data.forEach(update);
        if (onFirstPage()) {
          insert(body.added || []);
          since = body.since || since;
        } else {
          showNewer(body.newer);
        }
      })
      .catch(function () {
        // Offline for a moment: the next poll tries again.
      })
      .then(schedule);
  }

  localTimes(root);
  localZoneNotes();
  askForm();
  document.addEventListener("visibilitychange", function () {
    if (!document.hidden && !stopped) {
      poll();
    }
  });
  schedule();
  if (pendingRows().length) {
    poll();
  }
})();
