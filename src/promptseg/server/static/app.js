// promptseg web page: upload an image once, then prompt it; masks come back as RLE.
"use strict";

const $ = (id) => document.getElementById(id);
const view = $("view");
const ctx = view.getContext("2d");
const COLORS = [[37, 99, 235], [234, 88, 12], [22, 163, 74], [219, 39, 119], [124, 58, 237], [202, 138, 4],
                [8, 145, 178], [220, 38, 38], [101, 163, 13], [71, 85, 105]];

const S = {
  image: null, id: null, name: "", width: 0, height: 0,
  points: [], box: null, history: [],       // prompts
  answer: null, selected: 0,                 // last segment answer: masks (Uint8Array), scores, logits handles
  preview: null, everything: null,           // hover mask; everything-mode records with decoded masks
  drag: null, busy: 0, hoverPending: null, hoverInFlight: false,
};

// Decoding in the browser (onnxruntime-web): the server embeds the image once; the page
// fetches that embedding and decoder.onnx and runs every prompt itself, with no round trip.
const LOCAL = { available: false, model: null, session: null, embedding: null, inputSize: null };
const localOn = () => LOCAL.available && $("local").checked;

function setStatus(text, kind) {
  const el = $("status");
  el.textContent = text;
  el.className = kind || "";
}

async function api(path, options) {
  const res = await fetch(path, options);
  const body = res.headers.get("content-type")?.includes("json") ? await res.json() : await res.text();
  if (!res.ok) {
    const detail = typeof body === "object" ? body.detail : body;
    throw new Error(typeof detail === "string" ? detail : JSON.stringify(detail));
  }
  return body;
}

// Uncompressed COCO RLE (column-major runs, background first) -> row-major 0/1 bytes.
function decodeRle(rle) {
  const [h, w] = rle.size;
  const out = new Uint8Array(h * w);
  let p = 0, value = 0;
  for (const run of rle.counts) {
    if (value) {
      for (let k = p; k < p + run; k++) out[(k % h) * w + Math.floor(k / h)] = 1;
    }
    p += run;
    value ^= 1;
  }
  return out;
}

// ---- loading an image ---------------------------------------------------------------
async function loadFile(file, name) {
  setStatus("Embedding image…", "busy");
  S.busy++;
  try {
    const form = new FormData();
    form.append("file", file, name);
    const info = await api("/v1/images", { method: "POST", body: form });
    const img = new Image();
    img.src = URL.createObjectURL(file);
    await img.decode();
    Object.assign(S, { image: img, id: info.id, name, width: info.width, height: info.height,
                       points: [], box: null, history: [], answer: null, preview: null, everything: null });
    view.width = info.width;
    view.height = info.height;
    $("drop").hidden = true;
    $("stage").hidden = false;
    for (const b of ["everything", "reset", "find"]) $(b).disabled = false;
    setStatus(`Ready: ${name}, ${info.width}×${info.height} (embedded in ${info.seconds.toFixed(2)} s)`, "ready");
    view.dataset.imageId = info.id;
    draw();
  } catch (err) {
    setStatus(`Could not load ${name}: ${err.message}`, "error");
  } finally {
    S.busy--;
  }
}

$("file").addEventListener("change", (e) => { const f = e.target.files[0]; if (f) loadFile(f, f.name); });
$("sample").addEventListener("change", async (e) => {
  const name = e.target.value;
  if (!name) return;
  const blob = await (await fetch(`/v1/samples/${name}`)).blob();
  loadFile(blob, name);
});
for (const target of [$("drop"), $("stage")]) {
  target.addEventListener("dragover", (e) => { e.preventDefault(); $("drop").classList.add("over"); });
  target.addEventListener("dragleave", () => $("drop").classList.remove("over"));
  target.addEventListener("drop", (e) => {
    e.preventDefault();
    $("drop").classList.remove("over");
    const f = e.dataTransfer.files[0];
    if (f) loadFile(f, f.name);
  });
}
api("/v1/models").then(([info]) => {
  LOCAL.model = info;
  $("text-group").hidden = !info.text_prompts;
  $("hq-group").hidden = !info.hq;  // HQ-SAM: one mask per prompt, SAM's plus the HQ token's or that alone
  LOCAL.available = Boolean(info.browser_decoding);
  $("local-group").hidden = !LOCAL.available;
  $("local").checked = LOCAL.available;
  if (info.refine) $("refine").value = info.refine;  // the refinement chosen for the model's weights
});
$("local").addEventListener("change", () => { if (S.points.length || S.box) update(); });
$("refine").addEventListener("change", () => { if (S.points.length || S.box) update(); });
$("hq-only").addEventListener("change", () => { if (S.points.length || S.box) update(); });
api("/v1/samples").then((names) => {
  for (const n of names) $("sample").add(new Option(n, n));
});

// ---- prompts -> masks ----------------------------------------------------------------
function prompts() {
  const body = { mask_format: "rle", multimask_output: S.points.length <= 1 && !S.box };
  if (S.points.length) {
    body.point_coords = S.points.map((p) => [p.x, p.y]);
    body.point_labels = S.points.map((p) => p.label);
  }
  if (S.box) body.box = S.box;
  if ($("hq-only").checked) body.hq_token_only = true;
  body.refine = $("refine").value;  // done on the server, which has the image ("none": off)
  // Like SAM's own demo, every answer comes from the prompts alone (no previous logits as
  // mask input): undo and candidate switching then always mean the same thing.
  return body;
}

async function segment(body) {
  if (localOn() && body.refine === "none") return localSegment(body);
  const res = await api(`/v1/images/${S.id}/segment`, {
    method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body),
  });
  return { masks: res.masks.map(decodeRle), rles: res.masks, scores: res.scores, logits: res.logits,
           best: res.best, seconds: res.seconds };
}

function loadScript(src) {
  return new Promise((resolve, reject) => {
    const el = document.createElement("script");
    el.src = src;
    el.onload = resolve;
    el.onerror = () => reject(new Error(`could not load ${src}`));
    document.head.append(el);
  });
}

async function localSession() {
  if (!LOCAL.session) {
    if (!window.ort) await loadScript("/ort/ort.wasm.min.js");
    ort.env.wasm.wasmPaths = "/ort/";
    ort.env.wasm.numThreads = 1;  // threads need a cross-origin-isolated page
    LOCAL.session = ort.InferenceSession.create("/v1/decoder.onnx", { executionProviders: ["wasm"] })
      .catch((err) => { LOCAL.session = null; throw err; });
  }
  return LOCAL.session;
}

// Every level the decoder reads (SAM: the embedding; SAM 2: also its 4x and 8x levels), fetched
// once per image and named as decoder.onnx's inputs.
async function localEmbedding() {
  if (!LOCAL.embedding || LOCAL.embedding.id !== S.id) {
    const id = S.id, tensors = {};
    let inputSize = null;
    for (const level of LOCAL.model.embedding_levels || ["image_embeddings"]) {
      const res = await fetch(`/v1/images/${id}/embedding?format=raw&level=${level}`);
      if (!res.ok) throw new Error(`could not fetch the embedding (HTTP ${res.status})`);
      const dims = res.headers.get("x-embedding-shape").split(",").map(Number);
      inputSize = res.headers.get("x-input-size").split(",").map(Number);
      tensors[level] = new ort.Tensor("float32", new Float32Array(await res.arrayBuffer()), dims);
    }
    LOCAL.embedding = { id, tensors, inputSize };
  }
  return LOCAL.embedding;
}

// SAM 2 asked for one mask: the single-mask token's answer (0) unless its low-res logits are
// unstable (area above +delta over area above -delta under the threshold), then the candidate
// with the highest predicted IoU, as the server's predictor picks.
function singleMaskToken(low, iou) {
  const fallback = LOCAL.model.single_mask_fallback;
  if (!fallback) return 0;
  const [delta, threshold] = fallback;
  const size = low.length / 4;
  let inner = 0, outer = 0;
  for (let i = 0; i < size; i++) {
    if (low[i] > delta) inner++;
    if (low[i] > -delta) outer++;
  }
  if ((outer > 0 ? inner / outer : 1) >= threshold) return 0;
  let best = 1;
  for (let k = 2; k < 4; k++) if (iou[k] > iou[best]) best = k;
  return best;
}

// The same prompt -> masks as the server's /segment: coordinates scaled into the model's input
// frame, a box as two corner points (labels 2, 3), a padding point when there is no box (SAM 2:
// the box's corners first, and always a padding point); three candidates for a lone click, else
// the single-mask output.
async function localSegment(body) {
  const t0 = performance.now();
  const session = await localSession();
  const emb = await localEmbedding();
  const [ih, iw] = emb.inputSize;
  const sx = iw / S.width, sy = ih / S.height;
  const sam2 = LOCAL.model.family === "sam2";
  const coords = [], labels = [];
  if (body.box && sam2) {
    const [x0, y0, x1, y1] = body.box;
    coords.push(x0 * sx, y0 * sy, x1 * sx, y1 * sy);
    labels.push(2, 3);
  }
  (body.point_coords || []).forEach(([x, y], i) => { coords.push(x * sx, y * sy); labels.push(body.point_labels[i]); });
  if (body.box && !sam2) {
    const [x0, y0, x1, y1] = body.box;
    coords.push(x0 * sx, y0 * sy, x1 * sx, y1 * sy);
    labels.push(2, 3);
  } else {
    coords.push(0, 0);
    labels.push(-1);
  }
  const [mh, mw] = LOCAL.model.mask_input_size;
  const out = await session.run({
    ...emb.tensors,
    point_coords: new ort.Tensor("float32", Float32Array.from(coords), [1, labels.length, 2]),
    point_labels: new ort.Tensor("float32", Float32Array.from(labels), [1, labels.length]),
    mask_input: new ort.Tensor("float32", new Float32Array(mh * mw), [1, 1, mh, mw]),
    has_mask_input: new ort.Tensor("float32", new Float32Array([0]), [1]),
    orig_im_size: new ort.Tensor("float32", new Float32Array([S.height, S.width]), [2]),
  });
  const logits = out.masks.data, iou = out.iou_predictions.data;
  const n = S.width * S.height, threshold = LOCAL.model.mask_threshold;
  const picks = body.multimask_output ? [1, 2, 3] : [sam2 ? singleMaskToken(out.low_res_masks.data, iou) : 0];
  const masks = picks.map((k) => {
    const m = new Uint8Array(n);
    for (let i = 0, o = k * n; i < n; i++) m[i] = logits[o + i] > threshold ? 1 : 0;
    return m;
  });
  const scores = picks.map((k) => iou[k]);
  const best = scores.indexOf(Math.max(...scores));
  // RLE (for the JSON download) is encoded when asked for: it is not needed to draw
  return { masks, rles: null, scores, logits: null, best, seconds: (performance.now() - t0) / 1000, local: true };
}

// Row-major 0/1 bytes -> uncompressed COCO RLE (column-major runs, background first).
function encodeRle(mask) {
  const h = S.height, w = S.width, counts = [];
  let value = 0, run = 0;
  for (let x = 0; x < w; x++) {
    for (let y = 0; y < h; y++) {
      if (mask[y * w + x] !== value) { counts.push(run); run = 0; value ^= 1; }
      run++;
    }
  }
  counts.push(run);
  return { size: [h, w], counts };
}

async function update() {
  S.preview = null;
  if (!S.points.length && !S.box) {
    S.answer = null;
    renderCandidates();
    draw();
    return;
  }
  setStatus("Segmenting…", "busy");
  try {
    const t0 = performance.now();
    const ans = await segment(prompts());
    S.answer = ans;
    S.selected = ans.best;
    const where = ans.local ? "decoded in this browser" : "round trip";
    setStatus(`${ans.masks.length} mask${ans.masks.length > 1 ? "s" : ""}, best score ${ans.scores[ans.best].toFixed(3)}`
              + ` · ${Math.round(performance.now() - t0)} ms ${where}`, "ready");
    view.dataset.decoder = ans.local ? "browser" : "server";
    view.dataset.masks = String((Number(view.dataset.masks) || 0) + 1);
  } catch (err) {
    setStatus(err.message, "error");
  }
  renderCandidates();
  draw();
}

function renderCandidates() {
  const box = $("candidates");
  box.replaceChildren();
  const ans = S.answer;
  if (ans) {
    ans.scores.forEach((score, i) => {
      const b = document.createElement("button");
      b.textContent = `Mask ${i + 1} · ${score.toFixed(2)}`;
      b.className = i === S.selected ? "on" : "";
      b.dataset.index = i;
      b.addEventListener("click", () => { S.selected = i; renderCandidates(); draw(); });
      box.append(b);
    });
  }
  $("undo").disabled = !S.history.length;
  $("download-png").disabled = !(ans || S.everything);
  $("download-json").disabled = !(ans || S.everything);
}

function pushPrompt(change) {
  S.history.push({ points: S.points.slice(), box: S.box });
  change();
  S.everything = null;
  update();
}

function toImage(e) {
  const r = view.getBoundingClientRect();
  const x = Math.min(S.width, Math.max(0, (e.clientX - r.left) / r.width * S.width));
  const y = Math.min(S.height, Math.max(0, (e.clientY - r.top) / r.height * S.height));
  return { x, y };
}

view.addEventListener("contextmenu", (e) => e.preventDefault());
view.addEventListener("mousedown", (e) => {
  if (!S.id) return;
  S.drag = { start: toImage(e), now: toImage(e), button: e.button, shift: e.shiftKey };
});
view.addEventListener("mousemove", (e) => {
  if (!S.id) return;
  const p = toImage(e);
  if (S.drag) {
    S.drag.now = p;
    draw();
    return;
  }
  if (!S.points.length && !S.box && !S.everything) hover(p);
});
window.addEventListener("mouseup", (e) => {
  const d = S.drag;
  S.drag = null;
  if (!d || !S.id) return;
  const end = toImage(e);
  const scale = view.getBoundingClientRect().width / S.width;
  const far = Math.hypot(end.x - d.start.x, end.y - d.start.y) * scale > 6;
  if (far && d.button === 0) {
    const box = [Math.min(d.start.x, end.x), Math.min(d.start.y, end.y), Math.max(d.start.x, end.x), Math.max(d.start.y, end.y)];
    view.dataset.box = box.join(",");
    pushPrompt(() => { S.box = box; });
  } else if (e.target === view) {
    const label = d.button === 2 || d.shift ? 0 : 1;
    pushPrompt(() => S.points.push({ x: d.start.x, y: d.start.y, label }));
  }
});

// Hover preview: at most one request in flight; the latest position wins.
async function hover(p) {
  S.hoverPending = p;
  if (S.hoverInFlight) return;
  S.hoverInFlight = true;
  try {
    while (S.hoverPending) {
      const q = S.hoverPending;
      S.hoverPending = null;
      const ans = await segment({ point_coords: [[q.x, q.y]], point_labels: [1], multimask_output: true,
                                  mask_format: "rle", refine: "none" });  // previews stay unrefined
      if (!S.points.length && !S.box && !S.everything) {
        S.preview = ans.masks[ans.best];
        draw();
      }
    }
  } catch (err) {
    /* a failed preview is not worth a message */
  } finally {
    S.hoverInFlight = false;
  }
}
view.addEventListener("mouseleave", () => { S.hoverPending = null; S.preview = null; draw(); });

$("undo").addEventListener("click", () => {
  const prev = S.history.pop();
  if (!prev) return;
  S.points = prev.points;
  S.box = prev.box;
  S.answer = null;
  update();
});
$("reset").addEventListener("click", () => {
  Object.assign(S, { points: [], box: null, history: [], answer: null, preview: null, everything: null });
  renderCandidates();
  draw();
  setStatus("Prompts cleared.", "ready");
});
$("everything").addEventListener("click", async () => {
  setStatus("Finding every object…", "busy");
  $("everything").disabled = true;
  try {
    const res = await api(`/v1/images/${S.id}/everything`, {
      method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify({ points_per_side: 16, mask_format: "rle" }),
    });
    Object.assign(S, { points: [], box: null, history: [], answer: null, preview: null });
    S.everything = res.records.map((r) => ({ ...r, mask: decodeRle(r.segmentation) }));
    setStatus(`${S.everything.length} masks in ${res.seconds.toFixed(1)} s`, "ready");
  } catch (err) {
    setStatus(err.message, "error");
  }
  $("everything").disabled = false;
  renderCandidates();
  draw();
});

// Text prompt: the server's detector finds the class names' boxes, the model segments each;
// drawn like everything mode's masks, each with its label and score.
$("text-group").addEventListener("submit", async (e) => {
  e.preventDefault();
  const text = $("text").value.trim();
  if (!text || !S.id) return;
  setStatus(`Finding ${text}…`, "busy");
  $("find").disabled = true;
  try {
    const res = await api(`/v1/images/${S.id}/text`, {
      method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify({ text, mask_format: "rle" }),
    });
    Object.assign(S, { points: [], box: null, history: [], answer: null, preview: null });
    S.everything = res.objects.map((r) => ({ ...r, mask: decodeRle(r.segmentation) }));
    const counts = {};
    for (const r of res.objects) counts[r.label] = (counts[r.label] || 0) + 1;
    const found = Object.entries(counts).map(([k, n]) => `${n} ${k}`).join(", ") || `no ${res.classes.join(", ")}`;
    setStatus(`Found ${found} in ${res.seconds.toFixed(1)} s`, "ready");
  } catch (err) {
    setStatus(err.message, "error");
  }
  $("find").disabled = false;
  renderCandidates();
  draw();
});

// ---- drawing -------------------------------------------------------------------------
function paint(masks) {
  if (!masks.length) return;
  const img = ctx.getImageData(0, 0, S.width, S.height);
  const px = img.data;
  masks.forEach(({ mask, color, alpha }) => {
    for (let i = 0; i < mask.length; i++) {
      if (!mask[i]) continue;
      const o = 4 * i;
      px[o] = px[o] * (1 - alpha) + color[0] * alpha;
      px[o + 1] = px[o + 1] * (1 - alpha) + color[1] * alpha;
      px[o + 2] = px[o + 2] * (1 - alpha) + color[2] * alpha;
    }
  });
  ctx.putImageData(img, 0, 0);
}

function draw() {
  if (!S.image) return;
  ctx.drawImage(S.image, 0, 0, S.width, S.height);
  const layers = [];
  if (S.everything) S.everything.forEach((r, i) => layers.push({ mask: r.mask, color: COLORS[i % COLORS.length], alpha: 0.45 }));
  if (S.answer) layers.push({ mask: S.answer.masks[S.selected], color: COLORS[0], alpha: 0.5 });
  if (S.preview) layers.push({ mask: S.preview, color: COLORS[0], alpha: 0.35 });
  paint(layers);
  const unit = Math.max(S.width, S.height) / 100;
  const boxes = S.box ? [S.box] : [];
  if (S.drag && Math.hypot(S.drag.now.x - S.drag.start.x, S.drag.now.y - S.drag.start.y) > unit) {
    const a = S.drag.start, b = S.drag.now;
    boxes.push([Math.min(a.x, b.x), Math.min(a.y, b.y), Math.max(a.x, b.x), Math.max(a.y, b.y)]);
  }
  if (S.everything) drawLabels(S.everything, unit);
  ctx.lineWidth = Math.max(2, unit / 3);
  ctx.strokeStyle = "#22c55e";
  for (const [x0, y0, x1, y1] of boxes) ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
  for (const p of S.points) {
    ctx.beginPath();
    ctx.arc(p.x, p.y, Math.max(4, unit), 0, 2 * Math.PI);
    ctx.fillStyle = p.label ? "#22c55e" : "#ef4444";
    ctx.fill();
    ctx.strokeStyle = "#fff";
    ctx.stroke();
  }
}

// A text prompt's answers: each box outlined in its mask's colour, with a tag "label 0.87".
function drawLabels(records, unit) {
  ctx.font = `${Math.max(12, Math.round(unit * 2))}px system-ui, sans-serif`;
  ctx.textBaseline = "top";
  records.forEach((r, i) => {
    if (!r.label) return;
    const [x0, y0, x1, y1] = r.box;
    const color = `rgb(${COLORS[i % COLORS.length].join(",")})`;
    ctx.lineWidth = Math.max(2, unit / 4);
    ctx.strokeStyle = color;
    ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
    const tag = `${r.label} ${r.score.toFixed(2)}`;
    const w = ctx.measureText(tag).width + 8, h = Math.max(12, Math.round(unit * 2)) + 6;
    const ty = Math.max(0, y0 - h), tx = Math.max(0, Math.min(x0, S.width - w));
    ctx.fillStyle = color;
    ctx.fillRect(tx, ty, w, h);
    ctx.fillStyle = "#fff";
    ctx.fillText(tag, tx + 4, ty + 3);
  });
}

// ---- downloads -----------------------------------------------------------------------
function save(blob, filename) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = filename;
  document.body.append(a);
  a.click();
  a.remove();
}
const stem = () => S.name.replace(/\.[^.]+$/, "") || "image";

$("download-png").addEventListener("click", () => {
  const masks = S.answer ? [S.answer.masks[S.selected]] : S.everything.map((r) => r.mask);
  const c = document.createElement("canvas");
  c.width = S.width;
  c.height = S.height;
  const g = c.getContext("2d");
  const img = g.createImageData(S.width, S.height);
  for (let i = 0; i < S.width * S.height; i++) {
    const on = masks.some((m) => m[i]);
    img.data[4 * i] = img.data[4 * i + 1] = img.data[4 * i + 2] = on ? 255 : 0;
    img.data[4 * i + 3] = 255;
  }
  g.putImageData(img, 0, 0);
  c.toBlob((blob) => save(blob, `${stem()}_mask.png`), "image/png");
});

$("download-json").addEventListener("click", () => {
  // SA-1B layout: one image record and its annotations (uncompressed COCO RLE masks)
  const bbox = (m) => {
    let x0 = S.width, y0 = S.height, x1 = -1, y1 = -1;
    for (let i = 0; i < m.length; i++) {
      if (!m[i]) continue;
      const x = i % S.width, y = Math.floor(i / S.width);
      x0 = Math.min(x0, x); y0 = Math.min(y0, y); x1 = Math.max(x1, x); y1 = Math.max(y1, y);
    }
    return x1 < 0 ? [0, 0, 0, 0] : [x0, y0, x1 - x0 + 1, y1 - y0 + 1];
  };
  let annotations;
  if (S.answer) {
    const i = S.selected, m = S.answer.masks[i];
    annotations = [{ id: 1, segmentation: S.answer.rles ? S.answer.rles[i] : encodeRle(m), area: m.reduce((a, v) => a + v, 0), bbox: bbox(m),
                     predicted_iou: S.answer.scores[i],
                     point_coords: S.points.map((p) => [p.x, p.y]), point_labels: S.points.map((p) => p.label),
                     box: S.box }];
  } else {
    annotations = S.everything.map((r, i) => ({ id: i + 1, segmentation: r.segmentation, area: r.area, bbox: r.bbox,
      predicted_iou: r.predicted_iou, stability_score: r.stability_score, point_coords: r.point_coords, crop_box: r.crop_box,
      label: r.label, category_id: r.category_id, score: r.score, box: r.box }));
  }
  const doc = { image: { image_id: 1, file_name: S.name, width: S.width, height: S.height }, annotations };
  save(new Blob([JSON.stringify(doc)], { type: "application/json" }), `${stem()}.json`);
});
