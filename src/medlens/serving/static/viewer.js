// medlens viewer: sign in with a token, send an image to /explain, show it with window/level,
// slices (3D), the prediction and the heatmap. Plain JS, no build step, no external requests.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { token: sessionStorage.getItem("medlens-token") || "", models: [], result: null,
  image: null, heat: null, slice: 0, window: null, recent: [], file: null, asked: 0 };

function decode(payload) {
  const bytes = Uint8Array.from(atob(payload.data), (c) => c.charCodeAt(0));
  return { shape: payload.shape, values: new Float32Array(bytes.buffer) };
}

async function api(path, options = {}) {
  const headers = Object.assign({ Authorization: `Bearer ${state.token}` }, options.headers || {});
  const response = await fetch(path, Object.assign({}, options, { headers }));
  let body = null;
  try { body = await response.json(); } catch (e) { body = { detail: response.statusText }; }
  if (!response.ok) {
    const err = new Error(body.detail || `HTTP ${response.status}`);
    err.status = response.status;
    throw err;
  }
  return body;
}

async function signIn(token) {
  state.token = token.trim();
  try {
    const body = await api("/v1/models");
    state.models = body.models;
    sessionStorage.setItem("medlens-token", state.token);
    $("login-panel").hidden = true;
    $("app").hidden = false;
    $("who").textContent = "signed in";
    $("model").innerHTML = "";
    for (const m of state.models) {
      const option = document.createElement("option");
      option.value = m.name;
      option.textContent = `${m.name} (v${m.version})`;
      $("model").appendChild(option);
    }
    showModelInfo();
  } catch (err) {
    sessionStorage.removeItem("medlens-token");
    $("login-error").textContent = err.status === 401 || err.status === 403
      ? "This token is not accepted." : `Cannot reach the service: ${err.message}`;
  }
}

function showModelInfo() {
  const m = state.models.find((x) => x.name === $("model").value);
  if (!m) return;
  const auc = m.metrics && m.metrics.test && m.metrics.test.auc;
  $("model-info").textContent = `${m.input.spatial_dims}D, ${m.classes.join(" / ")}` +
    (auc ? `; test AUC ${auc.toFixed(3)}` : "") + `; ${m.backend}`;
}

// the file is kept so that choosing another model or heatmap analyses it again
async function analyse(file) {
  state.file = file;
  const asked = ++state.asked;  // only the latest request updates the view
  const model = $("model").value;
  const form = new FormData();
  form.append("file", file, file.name);
  $("status").textContent = `Analysing ${file.name}…`;
  $("status").classList.remove("error");
  try {
    const method = encodeURIComponent($("method").value);
    const body = await api(`/v1/models/${encodeURIComponent(model)}/explain?method=${method}`,
      { method: "POST", body: form });
    body.fileName = file.name;
    state.recent.unshift(body);
    state.recent = state.recent.slice(0, 20);
    renderRecent();
    if (asked !== state.asked) return;
    show(body);
    $("status").textContent = `Done in ${body.timing_ms.total.toFixed(0)} ms.`;
  } catch (err) {
    if (asked !== state.asked) return;
    $("status").textContent = err.status === 503 ? "The service is busy; try again in a moment." : err.message;
    $("status").classList.add("error");
  }
}

function show(body) {
  state.result = body;
  state.image = decode(body.image);
  state.heat = decode(body.heatmap);
  state.window = [body.image.window[0], body.image.window[1]];
  const depth = state.image.shape.length === 3 ? state.image.shape[0] : 1;
  $("slice-control").hidden = depth === 1;
  $("slice").max = String(depth - 1);
  state.slice = depth === 1 ? 0 : peakSlice();
  $("slice").value = String(state.slice);
  $("prediction").textContent = body.prediction;
  $("probability").textContent = body.probability.toFixed(3);
  $("threshold").textContent = typeof body.threshold === "number"
    ? `${body.threshold.toFixed(3)}: ${body.decision_rule}` : "highest probability";
  const typical = $("typicality");
  typical.className = body.unlike_training ? "error small" : "muted small";
  typical.textContent = body.distance_from_training === undefined ? ""
    : body.unlike_training
      ? `Unlike the training images (distance ${body.distance_from_training.toFixed(2)}, ` +
        "above 1): the model may not apply to this image."
      : `Distance from the training images ${body.distance_from_training.toFixed(2)} ` +
        "(flagged above 1; typical about 0.4)";
  $("probabilities").innerHTML = Object.entries(body.calibrated_probabilities)
    .map(([c, v]) => `<tr><td>${escapeHtml(c)}</td><td>${v.toFixed(4)}</td></tr>`).join("");
  const f = body.explanation.faithfulness;
  $("faithfulness").textContent = `${body.explanation.method} for "${body.explanation.class}": ` +
    `deletion ${f.deletion_auc.toFixed(3)} (random ${f.random_deletion_auc.toFixed(3)}), ` +
    `insertion ${f.insertion_auc.toFixed(3)} (random ${f.random_insertion_auc.toFixed(3)})`;
  $("warnings").textContent = body.explanation.warnings.join("; ");
  $("overlay").src = `data:image/png;base64,${body.overlay_png}`;
  draw();
}

function peakSlice() {
  const [d, h, w] = state.heat.shape;
  let best = 0, bestValue = -Infinity;
  for (let z = 0; z < d; z++) {
    for (let i = z * h * w; i < (z + 1) * h * w; i++) {
      if (state.heat.values[i] > bestValue) { bestValue = state.heat.values[i]; best = z; }
    }
  }
  return best;
}

// inferno-like colour map: black -> purple -> orange -> yellow
function colour(t) {
  const stops = [[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]];
  const x = Math.min(Math.max(t, 0), 1) * (stops.length - 1);
  const i = Math.min(Math.floor(x), stops.length - 2), f = x - i;
  return stops[i].map((a, k) => a + f * (stops[i + 1][k] - a));
}

function draw() {
  if (!state.image) return;
  const shape = state.image.shape;
  const [h, w] = shape.length === 3 ? shape.slice(1) : shape;
  const offset = shape.length === 3 ? state.slice * h * w : 0;
  const canvas = $("canvas");
  canvas.width = w;
  canvas.height = h;
  // physical aspect ratio: rows are spacing[-2] mm apart, columns spacing[-1] mm
  const spacing = state.result.image.spacing || [1, 1];
  const aspect = spacing[spacing.length - 2] / spacing[spacing.length - 1];
  const scale = 512 / Math.max(h * aspect, w);
  canvas.style.width = `${Math.round(w * scale)}px`;
  canvas.style.height = `${Math.round(h * aspect * scale)}px`;
  const ctx = canvas.getContext("2d");
  const pixels = ctx.createImageData(w, h);
  const [low, high] = state.window;
  const opacity = parseFloat($("heatmap-opacity").value);
  let peak = 0;
  for (const v of state.heat.values) peak = Math.max(peak, Math.abs(v));
  for (let i = 0; i < h * w; i++) {
    const grey = 255 * Math.min(Math.max((state.image.values[offset + i] - low) / (high - low), 0), 1);
    const heat = peak > 0 ? Math.max(state.heat.values[offset + i], 0) / peak : 0;
    const [r, g, b] = colour(heat);
    const a = opacity * heat;
    pixels.data[4 * i] = (1 - a) * grey + a * r;
    pixels.data[4 * i + 1] = (1 - a) * grey + a * g;
    pixels.data[4 * i + 2] = (1 - a) * grey + a * b;
    pixels.data[4 * i + 3] = 255;
  }
  ctx.putImageData(pixels, 0, 0);
  $("window-label").textContent = `W ${(high - low).toFixed(1)} / L ${((high + low) / 2).toFixed(1)}`;
  $("slice-label").textContent = shape.length === 3 ? `${state.slice + 1} / ${shape[0]}` : "";
}

function renderRecent() {
  $("recent").innerHTML = "";
  state.recent.forEach((r, k) => {
    const li = document.createElement("li");
    li.textContent = `${r.fileName}: ${r.prediction} ${r.probability.toFixed(2)} ` +
      `(${r.model}, ${r.explanation.method})`;
    li.addEventListener("click", () => show(state.recent[k]));
    $("recent").appendChild(li);
  });
}

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function wire() {
  $("login-form").addEventListener("submit", (e) => { e.preventDefault(); signIn($("token").value); });
  const again = () => { if (state.file) analyse(state.file); };
  $("model").addEventListener("change", () => { showModelInfo(); again(); });
  $("method").addEventListener("change", again);
  $("file").addEventListener("change", () => {
    const file = $("file").files[0];
    $("file").value = "";  // picking the same file again is a change too
    if (file) analyse(file);
  });
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files[0]) analyse(e.dataTransfer.files[0]);
  });
  $("heatmap-opacity").addEventListener("input", draw);
  $("slice").addEventListener("input", () => { state.slice = parseInt($("slice").value, 10); draw(); });
  $("reset-window").addEventListener("click", () => {
    if (state.result) { state.window = state.result.image.window.slice(); draw(); }
  });
  const canvas = $("canvas");
  let dragging = null;
  canvas.addEventListener("mousedown", (e) => { dragging = { x: e.clientX, y: e.clientY, window: state.window.slice() }; });
  window.addEventListener("mouseup", () => { dragging = null; });
  window.addEventListener("mousemove", (e) => {
    if (!dragging || !state.window) return;
    const [low, high] = dragging.window;
    const width = Math.max((high - low) * Math.exp((e.clientX - dragging.x) / 200), 1e-6);
    const level = (high + low) / 2 - ((e.clientY - dragging.y) / 200) * (high - low);
    state.window = [level - width / 2, level + width / 2];
    draw();
  });
  canvas.addEventListener("wheel", (e) => {
    if (!state.image || state.image.shape.length !== 3) return;
    e.preventDefault();
    const depth = state.image.shape[0];
    state.slice = Math.min(Math.max(state.slice + Math.sign(e.deltaY), 0), depth - 1);
    $("slice").value = String(state.slice);
    draw();
  }, { passive: false });
  if (state.token) signIn(state.token);
}

wire();
