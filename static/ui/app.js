// Lookalike search page: drop or pick an image, show ranked results, run a reindex.
"use strict";

const csrf = document.querySelector('meta[name="csrf-token"]').content;
const $ = (id) => document.getElementById(id);
const FEATURES = { clip: "semantic", resnet: "shape", hsv: "colour" };
let lastFile = null;
let queryUrl = null;  // the dropped design, for the compare view
let shownFile = null;

function post(url, body) {
  return fetch(url, { method: "POST", body, headers: { "X-CSRF-Token": csrf }, credentials: "same-origin" });
}

async function search(file) {
  lastFile = file;
  const preview = $("query-preview");
  if (file && file !== shownFile) {
    shownFile = file;
    if (queryUrl) URL.revokeObjectURL(queryUrl);
    queryUrl = URL.createObjectURL(file);
    preview.src = queryUrl;
    preview.hidden = false;
  }
  $("message").textContent = "Searching…";
  const form = new FormData();
  if (file) form.append("image", file);
  const words = $("text").disabled ? "" : $("text").value.trim();
  if (words) {
    form.append("text", words);
    form.append("text_weight", $("text-weight").value);
  }
  form.append("top_k", $("top-k").value);
  form.append("weights", currentWeights());
  const response = await post("/search", form);
  const body = await response.json().catch(() => ({ error: "unexpected answer from the server" }));
  if (!response.ok) {
    $("message").textContent = body.error || `error ${response.status}`;
    $("results").replaceChildren();
    if (response.status === 503) refreshStatus();  // the banner says what is down
    return;
  }
  $("message").textContent = searchNote(body);
  $("networks-loading").hidden = true;  // the search waited for them: they are loaded now
  render(body.results);
  if (body.indexing) watchReindex();  // it searches again when the index is done
}

function searchNote(body) {
  const found = `${body.results.length} results in ${body.elapsed_ms} ms`;
  if (body.indexing) {
    const count = body.indexing.total ? ` (${body.indexing.done} / ${body.indexing.total})` : "";
    return `${found}. The collection is still being indexed${count}: ` +
      `these come from the ${body.searched} designs indexed so far; the search runs again when it is done.`;
  }
  if (!body.searched) return "Nothing is indexed yet: put designs in the collection folder or use Add designs, then Reindex.";
  return found;
}

function currentWeights() {
  const hsv = $("ignore-colour").checked ? 0 : $("w-hsv").value;
  return `clip=${$("w-clip").value},resnet=${$("w-resnet").value},hsv=${hsv}`;
}

// The matched region, in the result's pixels, drawn over its letterboxed thumbnail.
function boxStyle(r) {
  if (!r.box) return "";
  const s = 100 / Math.max(r.width, r.height);
  const padX = (100 - r.width * s) / 2, padY = (100 - r.height * s) / 2;
  const [x0, y0, x1, y1] = r.box;
  return `left:${padX + x0 * s}%;top:${padY + y0 * s}%;width:${(x1 - x0) * s}%;height:${(y1 - y0) * s}%`;
}

function render(results) {
  const cards = results.map((r, i) => {
    // Without the networks, a high colour cosine says little (line art on white is all alike).
    const colourOnly = r.scores.clip == null && r.scores.resnet == null;
    const card = document.createElement("article");
    card.className = `card ${r.verdict}`;
    card.dataset.path = r.path;
    const bars = Object.keys(FEATURES).filter((k) => k in r.scores).map((k) => [k, r.scores[k]])
      .filter(([, v]) => v !== null)
      .map(([k, v]) => `<div class="feature" title="${k} cosine ${v.toFixed(3)}">
          <span>${FEATURES[k] || k}</span><meter min="0" max="1" value="${Math.max(0, v)}"></meter><b>${v.toFixed(2)}</b></div>`)
      .join("");
    card.innerHTML = `
      <a class="thumbwrap" href="${r.image_url}" target="_blank" rel="noopener"><img loading="lazy" src="${r.thumb_url}" data-full="${r.image_url}" alt="">
        ${r.box ? `<span class="box" style="${boxStyle(r)}" title="matched region, ${r.inliers} points${r.mirrored ? ", mirrored" : ""}"></span>` : ""}</a>
      <div class="meta">
        <span class="rank">#${i + 1}</span>
        <span class="verdict">${r.verdict}</span>
        <span class="score" title="confidence: comparable across searches; verified copies score 90% and above">${(100 * r.confidence).toFixed(1)}%</span>
      </div>
      <div class="name" title="${escapeHtml(r.path)}">${escapeHtml(r.path)}</div>
      <div class="bars">${bars}</div>
      ${colourOnly ? `<div class="why">matched by colour and local features only</div>` : ""}
      ${r.inliers ? `<div class="why">${r.inliers} matched points${r.mirrored ? " (mirrored)" : ""}</div>` : ""}
      ${lastFile ? `<button type="button" class="compare-open">Compare</button>` : ""}`;
    const open = card.querySelector(".compare-open");
    if (open) open.addEventListener("click", () => window.lookalikeCompare.openCompare(r, queryUrl));
    return card;
  });
  $("results").replaceChildren(...cards);
}

function escapeHtml(text) {
  return text.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

const drop = $("drop");
["dragenter", "dragover"].forEach((e) => drop.addEventListener(e, (ev) => { ev.preventDefault(); drop.classList.add("over"); }));
["dragleave", "drop"].forEach((e) => drop.addEventListener(e, () => drop.classList.remove("over")));
drop.addEventListener("drop", (ev) => {
  ev.preventDefault();
  if (ev.dataTransfer.files.length) search(ev.dataTransfer.files[0]);
});
$("text-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  if ($("text").value.trim()) search(lastFile);
});
$("file").addEventListener("change", (ev) => { if (ev.target.files.length) search(ev.target.files[0]); });
$("top-k").addEventListener("change", () => { if (lastFile || $("text").value.trim()) search(lastFile); });
["w-clip", "w-resnet", "w-hsv", "ignore-colour"].forEach((id) =>
  $(id).addEventListener("change", () => { if (lastFile) search(lastFile); }));

// Start a background job (202, or 409 when one is running already) and watch it.
async function startJob(url, what, watch) {
  const response = await post(url, new FormData());
  if (response.status !== 202 && response.status !== 409) {
    const body = await response.json().catch(() => ({}));
    $("message").textContent = body.error || `${what} failed (${response.status})`;
    return;
  }
  watch();
}
const reindex = () => startJob("/reindex", "reindex", watchReindex);

let watching = false;  // one watcher at a time, however many ways it was started
function watchReindex() {
  if (!watching) watchProgress();
}
async function watchProgress() {
  watching = true;
  $("reindex").disabled = true;
  $("progress").hidden = false;
  const state = await (await fetch("/reindex", { credentials: "same-origin" })).json();
  $("progress-bar").style.width = `${state.percent}%`;
  const rate = state.images_per_second ? `, ${state.images_per_second} img/s` : "";
  const eta = state.eta_seconds != null ? `, about ${Math.ceil(state.eta_seconds)} s left` : "";
  $("progress-text").textContent = `${state.done} / ${state.total}${rate}${eta}`;
  if (state.running) {
    setTimeout(watchProgress, 500);
    return;
  }
  watching = false;
  $("reindex").disabled = false;
  $("progress").classList.add("finished");
  if (state.error) {
    $("progress-text").textContent = `reindex failed: ${state.error}`;
  } else if (state.report) {
    const r = state.report;
    $("progress-text").textContent = `done: ${r.indexed} indexed, ${r.unchanged} unchanged, ${r.removed} removed, ${r.skipped.length} skipped`;
  }
  refreshStatus();
  // The results on the page came from the index as it was before this run.
  if (lastFile || (!$("text").disabled && $("text").value.trim())) search(lastFile);
}

async function refreshStatus() {
  const status = await (await fetch("/health", { credentials: "same-origin" })).json();
  $("status-images").textContent = status.images;
  $("status-features").textContent = status.features.join(", ") || "none";
  $("networks-loading").hidden = !status.networks_loading;
  $("store-problem").hidden = !status.store.problem;
  $("store-problem-text").textContent = status.store.problem || "";
  if (!status.calibration.running) $("status-verdicts").textContent = status.verdicts;
  showTime(status.last_indexed);
}

function showTime(ts) {
  if (ts) $("status-last").textContent = new Date(ts * 1000).toLocaleString();
}

$("reindex").addEventListener("click", reindex);


async function watchCalibration() {
  const state = await (await fetch("/calibrate", { credentials: "same-origin" })).json();
  $("calibrate").disabled = state.running;
  if (state.running) {
    $("status-verdicts").textContent = `calibrating: ${state.done} / ${state.total || "…"} designs`;
    setTimeout(watchCalibration, 1000);
    return;
  }
  $("status-verdicts").textContent = state.error ? `${state.verdicts} (calibration: ${state.error})` : state.verdicts;
}
$("calibrate").addEventListener("click", () => startJob("/calibrate", "calibration", watchCalibration));
$("add-files").addEventListener("change", async (ev) => {
  const form = new FormData();
  for (const file of ev.target.files) form.append("images", file);
  const response = await post("/collection", form);
  const body = await response.json().catch(() => ({}));
  const rejected = (body.rejected || []).map((r) => `${r.name}: ${r.reason}`).join("; ");
  $("message").textContent = `${(body.added || []).length} added` + (rejected ? `, rejected ${rejected}` : "");
  ev.target.value = "";
  if ((body.added || []).length) reindex();
});
// While the networks load after a start, look again every few seconds to take the note down.
async function watchNetworks() {
  await refreshStatus();
  if (!$("networks-loading").hidden) setTimeout(watchNetworks, 3000);
}

showTime(parseFloat($("status-last").dataset.ts));
if (!$("networks-loading").hidden) setTimeout(watchNetworks, 3000);
fetch("/reindex", { credentials: "same-origin" }).then((r) => r.json()).then((s) => { if (s.running) watchReindex(); });
fetch("/calibrate", { credentials: "same-origin" }).then((r) => r.json()).then((s) => { if (s.running) watchCalibration(); });
window.lookalikeCompare.wireCompare();
// Handlers are wired: lets a waiting script (the browser tests) know the page is live.
document.body.dataset.ready = "true";
