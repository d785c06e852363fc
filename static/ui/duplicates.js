// Duplicates view: groups of copies side by side, with pair verdicts and a threshold control.
"use strict";

const $ = (id) => document.getElementById(id);
const escapeHtml = (text) => text.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
const encodePath = (path) => path.split("/").map(encodeURIComponent).join("/");

async function load() {
  const threshold = $("threshold").value;
  $("threshold-value").textContent = Number(threshold).toFixed(2);
  $("download-csv").href = `/duplicates.csv?threshold=${threshold}`;
  $("download-json").href = `/duplicates?threshold=${threshold}`;
  $("summary").textContent = "Finding duplicate groups…";
  const started = performance.now();
  const response = await fetch(`/duplicates?threshold=${threshold}`, { credentials: "same-origin" });
  const body = await response.json();
  if (!response.ok) {
    $("summary").textContent = body.error || `error ${response.status}`;
    return;
  }
  render(body.groups);
  const images = body.groups.reduce((n, g) => n + g.paths.length, 0);
  $("summary").textContent = `${body.groups.length} groups, ${images} images (${Math.round(performance.now() - started)} ms)`;
}

function render(groups) {
  const sections = groups.map((group, i) => {
    const section = document.createElement("article");
    section.className = "group";
    const tiles = group.paths.map((path) => `
      <figure class="${path === group.keep ? "keep" : ""}">
        <a href="/image/${encodePath(path)}" target="_blank" rel="noopener"><img loading="lazy" src="/thumb/${encodePath(path)}" data-full="/image/${encodePath(path)}" alt=""></a>
        <figcaption title="${escapeHtml(path)}">${path === group.keep ? "<b>keep</b> " : ""}${escapeHtml(path)}</figcaption>
      </figure>`).join("");
    const pairs = group.pairs.map((p) => `
      <li><span class="verdict ${p.verdict}">${p.verdict}</span> ${(100 * p.score).toFixed(1)}%
        ${p.inliers ? `· ${p.inliers} matched points` : ""} · ${escapeHtml(p.a)} ↔ ${escapeHtml(p.b)}</li>`).join("");
    section.innerHTML = `<h2>Group ${i + 1} <small>${group.paths.length} images</small></h2>
      <div class="tiles">${tiles}</div><ul class="pairs">${pairs}</ul>`;
    return section;
  });
  $("groups").replaceChildren(...sections);
}

let timer = null;
$("threshold").addEventListener("input", () => {
  $("threshold-value").textContent = Number($("threshold").value).toFixed(2);
  clearTimeout(timer);
  timer = setTimeout(load, 400);
});
load();
