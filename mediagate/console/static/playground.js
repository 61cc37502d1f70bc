// The Playground: builds the form's choices from the catalog facts the page carries
// (#playground-data), shows the server's estimate, and sends the real /v1 request with the
// session's cookie, the CSRF token and the key to act with (X-Mediagate-Key).
(function () {
  "use strict";
  var data, form, model, keySelect, result, errorBox, statusBox, estimateBox, button;
  var estimateTimer = null;
  var estimateSeq = 0;

  function $(id) { return document.getElementById(id); }

  function csrf() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.content : "";
  }

  function facts() { return data.models[model.value] || { kind: "image", sizes: [] }; }

  function fill(select, values, chosen) {
    while (select.firstChild) { select.removeChild(select.firstChild); }
    values.forEach(function (value) {
      var option = document.createElement("option");
      option.value = String(value);
      option.textContent = String(value);
      if (chosen !== undefined && String(value) === String(chosen)) { option.selected = true; }
      select.appendChild(option);
    });
  }

  function show(id, visible) {
    var node = $(id);
    if (node) { node.hidden = !visible; }
  }

  function buildStyles(styles) {
    var box = $("styles");
    while (box.firstChild) { box.removeChild(box.firstChild); }
    Object.keys(styles || {}).forEach(function (name) {
      var field = document.createElement("div");
      field.className = "field";
      var label = document.createElement("label");
      label.htmlFor = "style-" + name;
      var words = name.replace(/_/g, " ");
      label.textContent = words.charAt(0).toUpperCase() + words.slice(1);
      var select = document.createElement("select");
      select.id = "style-" + name;
      select.name = name;
      select.setAttribute("data-option", name);
      fill(select, [""].concat(styles[name]));
      select.options[0].textContent = "(none)";
      field.appendChild(label);
      field.appendChild(select);
      box.appendChild(field);
    });
  }

  function rebuild() {
    var f = facts();
    var image = f.kind === "image";
    fill($("size"), f.sizes || [], f.default_size);
    show("size-field", (f.sizes || []).length > 0);
    fill($("quality"), f.qualities || []);
    show("quality-field", image && (f.qualities || []).length > 0);
    fill($("output_format"), f.output_formats || []);
    show("output_format-field", image && (f.output_formats || []).length > 0);
    $("n").max = String(f.max_n || 1);
    if (Number($("n").value) > (f.max_n || 1)) { $("n").value = "1"; }
    show("n-field", image);
    fill($("seconds"), f.seconds || [], f.default_seconds);
    show("seconds-field", !image);
    show("reference-field", !image && !!f.reference);
    buildStyles(image ? {} : f.styles);
    $("prompt").maxLength = f.max_prompt_chars || 32000;
    estimate();
  }

  function headers() {
    var h = { "X-CSRF-Token": csrf() };
    if (!data.open && keySelect && keySelect.value) { h["X-Mediagate-Key"] = keySelect.value; }
    return h;
  }

  function setError(message) {
    errorBox.textContent = message || "";
    errorBox.hidden = !message;
  }

  function errorOf(response) {
    return response.json().then(function (body) {
      return (body && body.error && body.error.message) || ("HTTP " + response.status);
    }, function () { return "HTTP " + response.status; });
  }

  function estimate() {
    if (estimateTimer) { clearTimeout(estimateTimer); }
    estimateTimer = setTimeout(function () {
      var f = facts();
      var q = new URLSearchParams({ model: model.value });
      q.set("prompt_chars", String(Math.max(1, $("prompt").value.length)));
      if (!$("size-field").hidden && $("size").value) { q.set("size", $("size").value); }
      if (f.kind === "image") {
        q.set("n", $("n").value || "1");
        if (!$("quality-field").hidden && $("quality").value) { q.set("quality", $("quality").value); }
      } else if ($("seconds").value) {
        q.set("seconds", $("seconds").value);
      }
      var seq = ++estimateSeq;
      fetch(data.estimate_url + "?" + q.toString(), { credentials: "same-origin" })
        .then(function (response) {
          if (!response.ok) { return errorOf(response).then(function (m) { throw new Error(m); }); }
          return response.json();
        })
        .then(function (body) {
          if (seq !== estimateSeq) { return; }
          estimateBox.textContent = body.estimate_usd === null || body.estimate_usd === undefined
            ? "No price for this choice"
            : "Estimated cost: at most $" + Number(body.estimate_usd).toFixed(4);
        }, function (err) {
          if (seq === estimateSeq) { estimateBox.textContent = "Estimate: " + err.message; }
        });
    }, 250);
  }

  function showImages(body) {
    (body.data || []).forEach(function (item, i) {
      var img = document.createElement("img");
      var fmt = body.output_format || $("output_format").value || "png";
      img.src = item.b64_json ? "data:image/" + (fmt === "jpg" ? "jpeg" : fmt) + ";base64," + item.b64_json : item.url;
      img.alt = "Generated image " + (i + 1) + " for: " + $("prompt").value.slice(0, 120);
      result.appendChild(img);
    });
  }

  function contentUrl(id, key) {
    var url = data.content_url.replace("{id}", encodeURIComponent(id));
    return key ? url + "?key=" + encodeURIComponent(key) : url;
  }

  function pollVideo(video, key) {
    var state = video.status;
    statusBox.textContent = "Video " + video.id + ": " + state + (video.progress !== undefined ? " (" + video.progress + "%)" : "");
    if (state === "completed") {
      var player = document.createElement("video");
      player.controls = true;
      player.preload = "metadata";
      player.src = contentUrl(video.id, key);
      result.appendChild(player);
      button.disabled = false;
      return;
    }
    if (state === "failed") {
      setError((video.error && video.error.message) || "The video failed.");
      button.disabled = false;
      return;
    }
    setTimeout(function () {
      fetch("/v1/videos/" + encodeURIComponent(video.id), { credentials: "same-origin", headers: headers() })
        .then(function (response) {
          if (!response.ok) { return errorOf(response).then(function (m) { throw new Error(m); }); }
          return response.json();
        })
        .then(function (next) { pollVideo(next, key); }, function (err) {
          setError(err.message);
          button.disabled = false;
        });
    }, 1000);
  }

  function submit(event) {
    event.preventDefault();
    setError("");
    while (result.firstChild) { result.removeChild(result.firstChild); }
    var f = facts();
    var prompt = $("prompt").value;
    if (!prompt.trim()) { setError("Write a prompt first."); return; }
    if (!data.open && !(keySelect && keySelect.value)) { setError("There is no key to act with."); return; }
    var key = data.open ? "" : keySelect.value;
    var h = headers();
    var init = { method: "POST", credentials: "same-origin", headers: h };
    var url;
    if (f.kind === "image") {
      url = "/v1/images/generations";
      // b64_json: shown inline (the page's CSP allows data: images, not other sites').
      var body = { model: model.value, prompt: prompt, n: Number($("n").value || "1"), response_format: "b64_json" };
      if (!$("size-field").hidden && $("size").value) { body.size = $("size").value; }
      if (!$("quality-field").hidden && $("quality").value) { body.quality = $("quality").value; }
      if (!$("output_format-field").hidden && $("output_format").value) { body.output_format = $("output_format").value; }
      h["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    } else {
      url = "/v1/videos";
      var fields = { model: model.value, prompt: prompt };
      if (!$("size-field").hidden && $("size").value) { fields.size = $("size").value; }
      if ($("seconds").value) { fields.seconds = $("seconds").value; }
      document.querySelectorAll("#styles select").forEach(function (select) {
        if (select.value) { fields[select.getAttribute("data-option")] = select.value; }
      });
      var file = $("input_reference");
      if (!$("reference-field").hidden && file.files && file.files.length) {
        var multipart = new FormData();
        Object.keys(fields).forEach(function (name) { multipart.append(name, fields[name]); });
        multipart.append("input_reference", file.files[0]);
        init.body = multipart; // the browser sets the multipart Content-Type and boundary
      } else {
        h["Content-Type"] = "application/json";
        init.body = JSON.stringify(fields);
      }
    }
    button.disabled = true;
    statusBox.textContent = "Generating…";
    fetch(url, init)
      .then(function (response) {
        if (!response.ok) { return errorOf(response).then(function (m) { throw new Error(m); }); }
        return response.json();
      })
      .then(function (answer) {
        if (f.kind === "image") {
          statusBox.textContent = "Done.";
          showImages(answer);
          button.disabled = false;
        } else {
          pollVideo(answer, key);
        }
      }, function (err) {
        statusBox.textContent = "";
        setError(err.message);
        button.disabled = false;
      });
  }

  function start() {
    var block = $("playground-data");
    form = $("playground");
    if (!block || !form) { return; }
    data = JSON.parse(block.textContent);
    model = $("model");
    keySelect = $("key");
    result = $("result");
    errorBox = $("error");
    statusBox = $("status");
    estimateBox = $("estimate");
    button = $("generate");
    model.addEventListener("change", rebuild);
    ["size", "quality", "n", "seconds"].forEach(function (id) {
      $(id).addEventListener("change", estimate);
    });
    $("prompt").addEventListener("input", estimate);
    form.addEventListener("submit", submit);
    rebuild();
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
