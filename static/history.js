// Live status of the history page: polls /history/status and updates rows in place.
// The page is complete without this script; it only saves a reload.
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
  var FAST = 1500;
  var SLOW = 5000;
  var timer = null;
  var stopped = false;

  function svgIcon(path) {
    var ns = "http://www.w3.org/2000/svg";
    var svg = document.createElementNS(ns, "svg");
    svg.setAttribute("class", "icon");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("aria-hidden", "true");
    var shape = document.createElementNS(ns, "path");
    shape.setAttribute("d", path);
    svg.appendChild(shape);
    return svg;
  }

  function pendingRows() {
    return Array.prototype.slice.call(root.querySelectorAll("tr[data-pending]"));
  }

  function setProgress(cell, item) {
    var box = cell.querySelector("[data-role=progress]");
    if (!item.pending) {
      if (box) {
        box.remove();
      }
      return;
    }
    if (!box) {
      box = document.createElement("span");
      box.className = "progress";
      box.setAttribute("data-role", "progress");
      var bar = document.createElement("progress");
      bar.max = 100;
      bar.setAttribute("aria-label", "Progress of " + item.name);
      var text = document.createElement("span");
      text.className = "progress-text";
      text.setAttribute("data-role", "percent");
      box.appendChild(bar);
      box.appendChild(text);
      cell.appendChild(box);
    }
    box.querySelector("progress").value = item.progress;
    box.querySelector("[data-role=percent]").textContent = item.progress + "%";
  }

  function setMessage(cell, item) {
    var note = cell.querySelector("[data-role=message]");
    if (!item.message) {
      if (note) {
        note.remove();
      }
      return;
    }
    if (!note) {
      note = document.createElement("span");
      note.className = "status-note";
      note.setAttribute("data-role", "message");
      cell.appendChild(note);
    }
    note.textContent = item.message;
  }

  function setAction(cell, item) {
    var link = cell.querySelector("[data-role=download]");
    if (!item.url) {
      if (link) {
        link.remove();
      }
      return;
    }
    if (!link) {
      link = document.createElement("a");
      link.className = "btn btn-primary btn-small";
      link.setAttribute("data-role", "download");
      link.setAttribute("download", "");
      link.appendChild(svgIcon("M12 3v12M7 10l5 5 5-5M4 20h16"));
      var label = document.createElement("span");
      label.textContent = "Download";
      link.appendChild(label);
      cell.appendChild(link);
    }
    link.href = item.url;
  }

  function update(item) {
    var row = root.querySelector('tr[data-id="' + item.id + '"]');
    if (!row || row.getAttribute("data-kind") !== "archive") {
      return;
    }
    var status = row.querySelector("[data-role=status]");
    var badge = status.querySelector("[data-role=badge]");
    var changed = badge.textContent !== item.label;
    badge.className = "badge badge-" + item.status.replace(/ /g, "-");
    badge.textContent = item.label;
    setProgress(status, item);
    setMessage(status, item);
    var left = row.querySelector("[data-role=left]");
    left.textContent = item.time_left || "—";
    left.classList.toggle("is-empty", !item.time_left);
    setAction(row.querySelector("[data-role=action]"), item);
    if (item.pending) {
      row.setAttribute("data-pending", "");
    } else {
      row.removeAttribute("data-pending");
    }
    if (changed && announce) {
      announce.textContent = item.name + ": " + item.label;
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
    params.delete("page");
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
        if (body) {
          body.data.forEach(update);
          showNewer(body.newer);
        }
      })
      .catch(function () {
        // Offline for a moment: the next poll tries again.
      })
      .then(schedule);
  }

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
