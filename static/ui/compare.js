// The compare view: the query and a result side by side, and the result warped onto the
// query by the verified mapping, with a slider (or blink) between them and the evidence
// in words.  Geometry: the server's `transform` maps the query's analysis picture (longer
// side at most 512 px; mirrored left-right first when `mirrored`) onto the result's.
"use strict";

const ANALYSIS_SIDE = 512;
const analysisScale = (w, h) => Math.min(1, ANALYSIS_SIDE / Math.max(w, h));

function matMul(a, b) {
  const out = [];
  for (let i = 0; i < 3; i++) for (let j = 0; j < 3; j++) {
    out.push(a[3 * i] * b[j] + a[3 * i + 1] * b[3 + j] + a[3 * i + 2] * b[6 + j]);
  }
  return out;
}

function matInv(m) {
  const [a, b, c, d, e, f, g, h, i] = m;
  const A = e * i - f * h, B = -(d * i - f * g), C = d * h - e * g;
  const det = a * A + b * B + c * C;
  return [A, -(b * i - c * h), b * f - c * e, B, a * i - c * g, -(a * f - c * d), C, -(a * h - b * g), a * e - b * d]
    .map((v) => v / det);
}

const scaling = (s) => [s, 0, 0, 0, s, 0, 0, 0, 1];

// Query pixels -> result pixels (natural sizes), from the analysis-picture mapping.
function queryToResult(r, qw, qh) {
  const qs = analysisScale(qw, qh), rs = analysisScale(r.width, r.height);
  let m = matMul(scaling(1 / rs), matMul(r.transform, scaling(qs)));
  if (r.mirrored) m = matMul(m, [-1, 0, qw, 0, 1, 0, 0, 0, 1]);
  return m;
}

// The CSS matrix3d that draws an element of result pixels through the 3x3 homography h.
function cssHomography(h) {
  const [a, b, c, d, e, f, g, k, l] = h.map((v) => v / h[8]);
  return `matrix3d(${a},${d},0,${g},${b},${e},0,${k},0,0,1,0,${c},${f},0,${l})`;
}

function evidence(r, qw, qh) {
  const words = [];
  if (r.inliers) words.push(`${r.inliers} matching points`);
  if (r.transform && qw) {
    const [a, b, , d, e] = r.transform;  // analysis pixels, after any mirroring
    const turn = Math.round((Math.atan2(d, a) * 180) / Math.PI);
    const scale = Math.sqrt(Math.abs(a * e - b * d)) * analysisScale(qw, qh) / analysisScale(r.width, r.height);
    if (Math.abs(turn) >= 2) words.push(`rotated ${Math.abs(turn)}°`);
    if (Math.abs(scale - 1) >= 0.03) words.push(`${scale.toFixed(2)}x the size`);
  }
  if (r.mirrored) words.push("mirrored");
  if (r.drawing) {
    const [least, most] = r.drawing.map((v) => Math.round(100 * v));
    words.push(`${most}% of one drawing found in the other, ${least}% the other way`);
  }
  if (r.scores && r.scores.hsv != null) words.push(r.scores.hsv >= 0.8 ? "same colours" : "colour differs");
  return words.join("; ") || "no local evidence: ranked by its features' similarity";
}

function openCompare(r, queryUrl) {
  const dialog = document.getElementById("compare");
  const query = dialog.querySelector("#compare-query");
  const result = dialog.querySelector("#compare-result");
  const overlay = dialog.querySelector("#compare-overlay");
  const warped = dialog.querySelector("#compare-warped");
  const outline = dialog.querySelector("#compare-outline");
  dialog.querySelector("#compare-title").textContent = `${r.verdict}: ${r.path}`;
  query.src = queryUrl;
  result.src = r.image_url;
  warped.src = r.image_url;
  outline.hidden = !r.box;
  const place = () => {
    const qw = query.naturalWidth, qh = query.naturalHeight;
    if (!qw || !r.transform) {
      overlay.hidden = true;
      dialog.querySelector("#compare-words").textContent = evidence(r, qw, qh);
      return;
    }
    overlay.hidden = false;
    const toResult = queryToResult(r, qw, qh);
    const shown = overlay.querySelector(".frame").clientWidth / Math.max(qw, qh);
    overlay.querySelector(".frame").style.height = `${qh * shown}px`;
    overlay.querySelector("#compare-base").src = queryUrl;
    warped.style.width = `${r.width}px`;
    warped.style.height = `${r.height}px`;
    warped.style.transform = cssHomography(matMul(scaling(shown), matInv(toResult)));
    dialog.querySelector("#compare-words").textContent = evidence(r, qw, qh);
  };
  if (r.box) {
    const s = 100 / Math.max(r.width, r.height);
    const [x0, y0, x1, y1] = r.box;
    Object.assign(outline.style, {
      left: `${(100 - r.width * s) / 2 + x0 * s}%`, top: `${(100 - r.height * s) / 2 + y0 * s}%`,
      width: `${(x1 - x0) * s}%`, height: `${(y1 - y0) * s}%`,
    });
  }
  dialog.showModal();
  if (query.complete && query.naturalWidth) place(); else query.onload = place;
}

function wireCompare() {
  const dialog = document.getElementById("compare");
  const warped = dialog.querySelector("#compare-warped");
  const mix = dialog.querySelector("#compare-mix");
  let blinking = null;
  mix.addEventListener("input", () => { warped.style.opacity = mix.value; });
  dialog.querySelector("#compare-blink").addEventListener("click", (ev) => {
    if (blinking) {
      clearInterval(blinking);
      blinking = null;
      ev.target.textContent = "Blink";
      warped.style.opacity = mix.value;
      return;
    }
    ev.target.textContent = "Stop";
    blinking = setInterval(() => { warped.style.opacity = warped.style.opacity === "0" ? "1" : "0"; }, 600);
  });
  dialog.querySelector("#compare-close").addEventListener("click", () => dialog.close());
  dialog.addEventListener("close", () => {
    if (blinking) dialog.querySelector("#compare-blink").click();
  });
}

window.lookalikeCompare = { openCompare, wireCompare, queryToResult, evidence };
