// ovl status page: redraws the device and boot-file tables from /status every 2 seconds and
// filters the devices.
// Everything coming from the server is put in the page as text nodes, never as HTML.
"use strict";
(function () {
  var STAGES = ["dhcp", "tftp", "script", "kernel", "initramfs", "config"];

  function text(v) {
    return v === null || v === undefined ? "" : String(v);
  }

  function cell(tr, value, cls) {
    var td = document.createElement("td");
    if (cls) td.className = cls;
    td.textContent = text(value);
    tr.appendChild(td);
    return td;
  }

  function row(d, known) {
    var boot = d.boot || { state: "none", stages: [], last: null };
    var archive = known ? text(d.archive && d.archive.state) : "unknown device";
    var tr = document.createElement("tr");
    tr.dataset.mac = text(d.mac);
    tr.dataset.state = text(boot.state);
    tr.dataset.archive = archive;
    cell(tr, d.mac, "mac");
    cell(tr, d.hostname);
    cell(tr, d.profile);
    cell(tr, d.ip !== null && d.ip !== undefined ? d.ip : d.lease);
    cell(tr, archive, "archive " + archive);
    cell(tr, d.drift);
    cell(tr, boot.state, "boot " + text(boot.state));
    var progress = cell(tr, "", "progress");
    STAGES.forEach(function (s) {
      var span = document.createElement("span");
      var done = (boot.stages || []).indexOf(s) >= 0;
      span.className = "stage " + (done ? "done" : boot.failed_at === s ? "failed" : "todo");
      span.dataset.stage = s;
      span.textContent = s;
      progress.appendChild(span);
    });
    var last = boot.last;
    cell(tr, last ? text(last.kind) + " " + text(last.file) + " (" + text(last.date) + ")" : "", "last");
    return tr;
  }

  function bootFile(f) {
    var tr = document.createElement("tr");
    var state = f.problem === null || f.problem === undefined ? "ok" : text(f.problem);
    var cls = state === "ok" || state === "missing" ? state : "problem";
    tr.dataset.file = text(f.name);
    tr.dataset.missing = String(Boolean(f.missing));
    cell(tr, f.name, "file");
    cell(tr, f.role);
    cell(tr, f.size);
    cell(tr, f.version);
    cell(tr, state, "bootfile " + cls);
    return tr;
  }

  function applyFilter() {
    var q = document.getElementById("filter").value.trim().toLowerCase();
    var st = document.getElementById("state").value;
    var rows = document.querySelectorAll("#devices tbody tr");
    var shown = 0, booting = 0;
    rows.forEach(function (tr) {
      var match = (!q || tr.textContent.toLowerCase().indexOf(q) >= 0) &&
        (!st || tr.dataset.state === st || (st === "stale" && tr.dataset.archive === "stale"));
      tr.classList.toggle("hidden", !match);
      if (match) shown++;
      if (tr.dataset.state === "booting") booting++;
    });
    document.getElementById("counts").textContent =
      shown + " of " + rows.length + " devices shown, " + booting + " booting now";
  }

  function draw(doc) {
    var tbody = document.querySelector("#devices tbody");
    var fresh = document.createElement("tbody");
    (doc.devices || []).forEach(function (d) { fresh.appendChild(row(d, true)); });
    (doc.other_devices || []).forEach(function (d) { fresh.appendChild(row(d, false)); });
    tbody.parentNode.replaceChild(fresh, tbody);
    var files = document.querySelector("#boot-files tbody");
    var freshFiles = document.createElement("tbody");
    (doc.boot_files || []).forEach(function (f) { freshFiles.appendChild(bootFile(f)); });
    files.parentNode.replaceChild(freshFiles, files);
    var server = doc.server || {};
    document.getElementById("reload-error").textContent = text(server.reload_error);
    document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
    document.body.dataset.generation = text(server.project_generation);
    document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
    applyFilter();
  }

  function refresh() {
    fetch("/status", { cache: "no-store" })
      .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); })
      .then(draw)
      .catch(function (e) { document.getElementById("updated").textContent = "update failed: " + e; })
      .finally(function () { setTimeout(refresh, 2000); });
  }

  document.addEventListener("DOMContentLoaded", function () {
    // ?q=TEXT&state=STATE preset the filter (links, bookmarks).
    var params = new URLSearchParams(window.location.search);
    if (params.has("q")) document.getElementById("filter").value = params.get("q");
    if (params.has("state")) document.getElementById("state").value = params.get("state");
    document.getElementById("filter").addEventListener("input", applyFilter);
    document.getElementById("state").addEventListener("change", applyFilter);
    document.getElementById("filters").addEventListener("submit", function (e) { e.preventDefault(); });
    applyFilter();
    refresh();
  });
})();
