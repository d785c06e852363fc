// A preview that fails to load (removed from the cache, say) falls back to the image itself.
"use strict";
document.addEventListener("error", (ev) => {
  const img = ev.target;
  if (img.tagName === "IMG" && img.dataset.full && img.src !== new URL(img.dataset.full, location.href).href) {
    img.src = img.dataset.full;
  }
}, true);
