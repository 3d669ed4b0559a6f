/* SnapAsset web page: submit, watch (SSE, polling as fallback), gallery, history, staff queue.
 * Plain JS, no build step. It speaks only the public JSON API of docs/API.md. */
(function () {
  "use strict";

  var app = document.getElementById("app");
  if (!app) return;

  var FINISHED = ["completed", "failed", "cancelled"];
  var PENDING = ["waiting", "active", "delayed"];
  var POLL_MS = 1000;
  // Live events can be missed (a reconnect, a gap upstream): while a stream is open the
  // page still checks the job now and then, so it never waits forever.
  var SAFETY_CHECK_MS = 10000;
  var STATS_POLL_MS = 3000;
  var isStaff = app.dataset.staff === "true";
  var historyLimit = parseInt(app.dataset.historyLimit, 10) || 20;
  var csrfToken = document.querySelector('meta[name="csrf-token"]').content;

  var $ = function (id) { return document.getElementById(id); };
  var form = $("generate-form");
  var formError = $("form-error");
  var generateButton = $("generate-button");
  var jobPanel = $("job-panel");
  var jobTitle = $("job-title");
  var jobBadge = $("job-badge");
  var jobPrompt = $("job-prompt");
  var jobProgress = $("job-progress");
  var jobPercent = $("job-percent");
  var jobStatus = $("job-status");
  var jobTransport = $("job-transport");
  var cancelButton = $("cancel-button");
  var gallery = $("gallery");
  var galleryGrid = $("gallery-grid");
  var downloadAll = $("download-all");
  var historyList = $("history-list");
  var historyEmpty = $("history-empty");

  // --- HTTP ------------------------------------------------------------------------------

  function api(method, path, body) {
    var options = {
      method: method,
      credentials: "same-origin",
      headers: { Accept: "application/json" },
    };
    if (method !== "GET") options.headers["X-CSRFToken"] = csrfToken;
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    return fetch(path, options).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (data) {
        if (!response.ok) {
          var error = new Error(errorMessage(data, response.status));
          error.status = response.status;
          throw error;
        }
        return data;
      });
    });
  }

  function errorMessage(data, status) {
    var message = (data && data.error) || "Request failed (HTTP " + status + ")";
    var details = data && data.details;
    if (details && typeof details === "object") {
      var parts = Object.keys(details).map(function (field) {
        var value = details[field];
        return field + ": " + (Array.isArray(value) ? value.join(" ") : String(value));
      });
      if (parts.length) message += " (" + parts.join("; ") + ")";
    }
    if (status === 401 || status === 403) message += ". Your session may have ended: reload the page to sign in again.";
    return message;
  }

  // --- Formatting --------------------------------------------------------------------------

  function formatBytes(bytes) {
    if (bytes < 1024) return bytes + " B";
    if (bytes < 1024 * 1024) return (bytes / 1024).toFixed(0) + " KB";
    return (bytes / (1024 * 1024)).toFixed(2) + " MB";
  }

  function formatTime(ms) {
    if (!ms) return "";
    return new Date(ms).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
  }

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (key) {
      if (key === "text") node.textContent = attrs[key];
      else if (key === "className") node.className = attrs[key];
      else node.setAttribute(key, attrs[key]);
    });
    (children || []).forEach(function (child) { if (child) node.appendChild(child); });
    return node;
  }

  // "HH:MM:SS" in the browser's time zone, from an ISO 8601 time.
  function clockTime(iso) {
    var at = new Date(iso);
    if (isNaN(at.getTime())) return "";
    var pad = function (n) { return (n < 10 ? "0" : "") + n; };
    return pad(at.getHours()) + ":" + pad(at.getMinutes()) + ":" + pad(at.getSeconds());
  }

  function stepText(job, platformCount) {
    var pct = job.progress + "%";
    switch (job.status) {
      case "waiting":
        return "Waiting in the queue…";
      case "delayed":
        if (job.delayReason === "provider-slot") {
          return "Waiting for a provider slot" + (job.nextRunAt ? " until " + clockTime(job.nextRunAt) : "") + "…";
        }
        return "A temporary problem; trying again shortly (attempt " + ((job.attemptsMade || 0) + 1) + ")… " + pct;
      case "active":
        if (job.progress < 30) return "Generating the original image… " + pct;
        if (platformCount) {
          var done = Math.round(((job.progress - 30) / 70) * platformCount);
          return "Rendering platform sizes: " + done + " of " + platformCount + " done… " + pct;
        }
        return "Rendering platform sizes… " + pct;
      case "completed":
        return "Done: your images are ready. 100%";
      case "failed":
        return "Failed: " + (job.failedReason || "unknown reason");
      case "cancelled":
        return "Cancelled.";
      default:
        return job.status + " " + pct;
    }
  }

  // --- Watching one job ----------------------------------------------------------------------

  var current = null; // {jobId, platformCount, progress, status, source, timer, safety, closed}

  function stopWatching() {
    if (!current) return;
    current.closed = true;
    if (current.source) current.source.close();
    clearTimeout(current.timer);
    clearInterval(current.safety);
    current = null;
  }

  function showJobPanel(job) {
    jobPanel.hidden = false;
    gallery.hidden = true;
    galleryGrid.textContent = "";
    var data = job.data || {};
    jobPrompt.textContent = data.prompt ? "“" + data.prompt + "”" : "";
    render({
      status: job.status || "waiting", progress: job.progress || 0, attemptsMade: job.attemptsMade,
      failedReason: job.failedReason, nextRunAt: job.nextRunAt, delayReason: job.delayReason,
    });
  }

  function render(update) {
    if (!current) return;
    var status = update.status || current.status;
    var progress = typeof update.progress === "number" ? update.progress : current.progress;
    // Progress never goes down within an attempt; a late event must not move the bar back.
    if (PENDING.indexOf(status) >= 0 && progress < current.progress && status === current.status) progress = current.progress;
    if (status === "completed") progress = 100;
    current.status = status;
    current.progress = progress;
    jobProgress.value = progress;
    jobPercent.textContent = progress + "%";
    jobBadge.textContent = status;
    jobBadge.className = "badge status-" + status;
    jobStatus.textContent = stepText(
      {
        status: status, progress: progress, attemptsMade: update.attemptsMade, failedReason: update.failedReason,
        nextRunAt: update.nextRunAt, delayReason: update.delayReason,
      },
      current.platformCount
    );
    jobPanel.dataset.status = status;
    jobTransport.hidden = FINISHED.indexOf(status) >= 0;
    jobPanel.dataset.progress = String(progress);
    cancelButton.hidden = FINISHED.indexOf(status) >= 0;
    cancelButton.disabled = false;
  }

  function setTransport(kind) {
    if (!current) return;
    current.transport = kind;
    jobPanel.dataset.transport = kind;
    jobTransport.textContent = kind === "sse" ? "Live updates" : "Checking for updates every second";
  }

  function watchJob(job, options) {
    stopWatching();
    var platforms = (job.data && job.data.platforms) || [];
    current = {
      jobId: job.jobId,
      platformCount: platforms.length,
      progress: 0,
      status: job.status || "waiting",
      closed: false,
    };
    showJobPanel(job);
    if (options && options.focus) jobTitle.focus();
    if (FINISHED.indexOf(current.status) >= 0) {
      finish({ status: current.status, progress: job.progress, failedReason: job.failedReason });
      return;
    }
    if ("EventSource" in window) openStream(current);
    else startPolling(current);
  }

  function openStream(watch) {
    setTransport("sse");
    var source = new EventSource("/api/sse/jobs/" + encodeURIComponent(watch.jobId));
    watch.source = source;
    source.onmessage = function (event) {
      if (watch.closed) return;
      var message;
      try { message = JSON.parse(event.data); } catch (e) { return; }
      if (!message || (message.jobId && message.jobId !== watch.jobId)) return;
      if (message.type === "error") { fallBack(watch); return; }
      if (!message.status) return;
      render(message);
      if (message.type === "final" || FINISHED.indexOf(message.status) >= 0) finish(message);
    };
    source.onerror = function () {
      if (watch.closed) return;
      fallBack(watch);
    };
    watch.safety = setInterval(function () { checkOnce(watch); }, SAFETY_CHECK_MS);
  }

  function fallBack(watch) {
    // The stream broke (proxy, server restart, no SSE): keep the page working by polling.
    if (watch.source) { watch.source.close(); watch.source = null; }
    clearInterval(watch.safety);
    startPolling(watch);
  }

  function checkOnce(watch) {
    return api("GET", "/api/jobs/" + encodeURIComponent(watch.jobId)).then(function (job) {
      if (watch.closed) return job;
      render(job);
      if (FINISHED.indexOf(job.status) >= 0) finish(job);
      return job;
    });
  }

  function startPolling(watch) {
    setTransport("polling");
    var tick = function () {
      if (watch.closed) return;
      checkOnce(watch).then(
        function () { if (!watch.closed) watch.timer = setTimeout(tick, POLL_MS); },
        function (error) {
          if (watch.closed) return;
          if (error.status === 404) { jobStatus.textContent = "This job no longer exists."; stopWatching(); return; }
          watch.timer = setTimeout(tick, POLL_MS * 3);
        }
      );
    };
    tick();
  }

  function finish(message) {
    var watch = current;
    if (!watch || watch.finished) return;
    watch.finished = true;
    if (watch.source) { watch.source.close(); watch.source = null; }
    clearInterval(watch.safety);
    clearTimeout(watch.timer);
    render(message);
    loadHistory();
    if (message.status !== "completed") return;
    var result = message.result && message.result.images ? Promise.resolve(message.result)
      : api("GET", "/api/jobs/" + encodeURIComponent(watch.jobId) + "/result").then(function (body) { return body.result; });
    result.then(function (body) {
      if (current !== watch) return;
      showGallery(watch.jobId, body.images || []);
    }, function (error) {
      jobStatus.textContent = "Done, but the images could not be loaded: " + error.message;
    });
  }

  function showGallery(jobId, images) {
    galleryGrid.textContent = "";
    images.forEach(function (image) {
      var extension = image.format === "jpeg" ? "jpg" : image.format;
      var filename = image.platformId + "-" + image.width + "x" + image.height + "." + extension;
      var picture = el("img", {
        src: image.url,
        alt: image.platformName + " image, " + image.width + " by " + image.height + " pixels",
        width: String(image.width),
        height: String(image.height),
      });
      var size = el("p", { className: "tile-size" }, [
        el("span", { text: image.width + " × " + image.height + " px" }),
        el("span", { text: formatBytes(image.fileSize), title: image.fileSize.toLocaleString() + " bytes", "data-bytes": String(image.fileSize) }),
      ]);
      var link = el("a", {
        className: "button small",
        href: image.url,
        download: filename,
        "data-platform": image.platformId,
        text: "Download",
      });
      link.setAttribute("aria-label", "Download " + image.platformName + " (" + image.format.toUpperCase() + ", " + formatBytes(image.fileSize) + ")");
      var figure = el("figure", { className: "tile" }, [
        el("div", { className: "frame" }, [picture]),
        el("figcaption", {}, [el("strong", { text: image.platformName }), size, link]),
      ]);
      galleryGrid.appendChild(el("li", { "data-platform": image.platformId }, [figure]));
    });
    downloadAll.href = "/api/jobs/" + encodeURIComponent(jobId) + "/download.zip";
    gallery.hidden = false;
  }

  // --- Submit and cancel -----------------------------------------------------------------------

  function showFormError(message) {
    formError.textContent = message;
    formError.hidden = !message;
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    showFormError("");
    var prompt = form.elements.prompt.value.trim();
    var platforms = Array.prototype.slice.call(form.querySelectorAll('input[name="platforms"]:checked'))
      .map(function (input) { return input.value; });
    if (!prompt) { showFormError("Please write a prompt."); form.elements.prompt.focus(); return; }
    if (!platforms.length) { showFormError("Choose at least one platform."); return; }
    var body = {
      prompt: prompt,
      platforms: platforms,
      imageType: form.querySelector('input[name="imageType"]:checked').value,
      format: form.elements.format.value,
    };
    if (form.elements.reuse) body.reuse = form.elements.reuse.checked;
    generateButton.disabled = true;
    generateButton.textContent = "Submitting…";
    api("POST", "/api/jobs/generate", body).then(function (accepted) {
      watchJob({ jobId: accepted.jobId, status: "waiting", progress: 0, data: body }, { focus: true });
      loadHistory();
    }, function (error) {
      showFormError(error.message);
    }).then(function () {
      generateButton.disabled = false;
      generateButton.textContent = "Generate images";
    });
  });

  cancelButton.addEventListener("click", function () {
    if (!current) return;
    var watch = current;
    cancelButton.disabled = true;
    api("DELETE", "/api/jobs/" + encodeURIComponent(watch.jobId)).then(function () {
      if (current === watch) finish({ status: "cancelled", progress: watch.progress });
    }, function (error) {
      cancelButton.disabled = false;
      jobStatus.textContent = "Could not cancel: " + error.message;
    });
  });

  // --- History -----------------------------------------------------------------------------------

  var historyLoading = null;
  var historyStale = false;

  function loadHistory() {
    // One request at a time; a change seen meanwhile loads once more when it is answered.
    if (historyLoading) { historyStale = true; return historyLoading; }
    historyLoading = api("GET", "/api/jobs?kind=image-generation&limit=" + historyLimit).then(function (body) {
      renderHistory(body.jobs || []);
      return body.jobs || [];
    }, function (error) {
      historyEmpty.hidden = false;
      historyEmpty.textContent = "Could not load your jobs: " + error.message;
      return [];
    }).then(function (jobs) {
      historyLoading = null;
      if (historyStale) { historyStale = false; loadHistory(); }
      return jobs;
    });
    return historyLoading;
  }

  function renderHistory(jobs) {
    historyList.textContent = "";
    historyEmpty.hidden = jobs.length > 0;
    jobs.forEach(function (job) {
      var data = job.data || {};
      var platforms = data.platforms || [];
      var meta = el("div", { className: "history-meta" }, [
        el("span", { className: "badge status-" + job.status, text: job.status }),
        el("time", { datetime: new Date(job.timestamp).toISOString(), text: formatTime(job.timestamp) }),
        el("span", { className: "muted", text: platforms.length + (platforms.length === 1 ? " platform" : " platforms") }),
        isStaff && data.userId ? el("span", { className: "muted", text: "by " + data.userId }) : null,
      ]);
      var item = el("li", { className: "history-item", "data-job-id": job.jobId, "data-status": job.status }, [
        meta,
        el("p", { className: "history-prompt", text: data.prompt || "(no prompt)" }),
      ]);
      if (job.status === "failed" && job.failedReason) {
        item.appendChild(el("p", { className: "history-reason", text: job.failedReason }));
      }
      var actions = el("div", { className: "actions" });
      var label = job.status === "completed" ? "Show images" : (PENDING.indexOf(job.status) >= 0 ? "Watch" : "Details");
      var open = el("button", { type: "button", className: "button ghost small", text: label });
      open.setAttribute("aria-label", label + ": " + (data.prompt || job.jobId));
      open.addEventListener("click", function () { openJob(job.jobId); });
      actions.appendChild(open);
      if (job.status === "failed" || job.status === "cancelled") {
        var retry = el("button", { type: "button", className: "button small", text: "Retry" });
        retry.setAttribute("aria-label", "Retry: " + (data.prompt || job.jobId));
        retry.addEventListener("click", function () { retryJob(job, retry); });
        actions.appendChild(retry);
      }
      item.appendChild(actions);
      historyList.appendChild(item);
    });
  }

  function openJob(jobId) {
    api("GET", "/api/jobs/" + encodeURIComponent(jobId)).then(function (job) {
      watchJob(job, { focus: true });
    }, function (error) {
      historyEmpty.hidden = false;
      historyEmpty.textContent = error.message;
    });
  }

  function retryJob(job, button) {
    button.disabled = true;
    button.textContent = "Retrying…";
    api("POST", "/api/jobs/" + encodeURIComponent(job.jobId) + "/retry").then(function () {
      watchJob({ jobId: job.jobId, status: "waiting", progress: 0, data: job.data }, { focus: true });
      loadHistory();
    }, function (error) {
      button.disabled = false;
      button.textContent = "Retry";
      var item = button.closest(".history-item");
      if (item) item.appendChild(el("p", { className: "history-reason", role: "alert", text: "Retry failed: " + error.message }));
    });
  }

  $("history-refresh").addEventListener("click", function () { loadHistory(); });

  // --- Staff: the live queue ---------------------------------------------------------------------

  function startQueuePanel() {
    var panel = $("queue-panel");
    if (!panel) return;
    var source = $("queue-source");
    var updated = $("queue-updated");
    var pollTimer = null;

    var lastCounts = null;

    function show(stats) {
      var counts = stats.imageGeneration || {};
      var key = JSON.stringify(counts);
      // Staff's history lists every user's jobs: when the counts move, it has changed too.
      if (lastCounts !== null && key !== lastCounts) loadHistory();
      lastCounts = key;
      Object.keys(counts).forEach(function (name) {
        var cell = panel.querySelector('[data-stat="' + name + '"]');
        if (cell) cell.textContent = String(counts[name]);
      });
      updated.textContent = "Updated " + new Date(stats.timestamp || Date.now()).toLocaleTimeString();
      panel.dataset.updates = String((parseInt(panel.dataset.updates, 10) || 0) + 1);
    }

    function fetchOverview() {
      return api("GET", "/api/jobs/stats/overview").then(show, function () {});
    }

    function poll() {
      source.textContent = "Refreshing every few seconds";
      source.className = "hint";
      panel.dataset.transport = "polling";
      var tick = function () {
        fetchOverview().then(function () { pollTimer = setTimeout(tick, STATS_POLL_MS); });
      };
      tick();
    }

    if (!("EventSource" in window)) { poll(); return; }
    fetchOverview();
    var stream = new EventSource("/api/sse/stats");
    source.textContent = "Live";
    source.className = "live-dot";
    panel.dataset.transport = "sse";
    stream.onmessage = function (event) {
      var message;
      try { message = JSON.parse(event.data); } catch (e) { return; }
      if (message && message.imageGeneration) show(message);
      else fetchOverview(); // a bare "something changed" notice: read the counts
    };
    stream.onerror = function () {
      stream.close();
      if (pollTimer === null) poll();
    };
  }

  // --- Start ----------------------------------------------------------------------------------------

  loadHistory().then(function (jobs) {
    // Coming back to the page while a job runs: pick it up again.
    var running = jobs.filter(function (job) { return PENDING.indexOf(job.status) >= 0; })[0];
    if (running && !current) watchJob(running, { focus: false });
  });
  if (isStaff) startQueuePanel();
})();
