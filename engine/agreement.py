"""Do two pictures agree once aligned?  The check after the geometric one, for pairs.

Local features verify that two pictures share a part.  Designs built on one
template share a part too: a warning sign's triangle, a playing card's border,
a studio's watermark across many designs.  Once the verified transform aligns
a copy with its original, most edges of each picture reappear in the other (a
crop is compared where the two overlap); template siblings each keep drawing
of their own that the other lacks.

The comparison runs on the stored previews (engine/thumbs.py), so it needs no
decode of the originals.
"""
from __future__ import annotations

import cv2
import numpy as np

from engine.decode import analysis_scale

# Share of each picture's edges that must reappear in the other.  On two draws of
# bench/duplicates_peers.py (seeds 5 and 11) 0.6 kept nearly every planted pair
# (recall 0.783 -> 0.783, 0.806 -> 0.789) and lifted precision (0.910 -> 0.920,
# 0.874 -> 0.902); 0.72 looked better on the first draw only.
AGREEMENT = 0.6
# Edge positions may differ by this many preview pixels (resampling, mild perspective).
TOLERANCE = 2
# Canny thresholds low enough for the faint hatching of line art.
EDGE_LOW, EDGE_HIGH = 20, 60


def analysis_to_preview(preview: np.ndarray, width: int, height: int) -> float:
    """Preview pixels per analysis-picture pixel for an original of width x height."""
    return max(preview.shape) * analysis_scale(width, height) / max(width, height)


def edge_agreement(src: np.ndarray, dst: np.ndarray, transform: np.ndarray, src_scale: float,
                   dst_scale: float, mirrored: bool = False) -> float:
    """The smaller share of either picture's edges found in the other, aligned by `transform`.

    `src` and `dst` are grey previews; `transform` (2x3) maps src analysis
    pixels (of its mirror image when `mirrored`) to dst analysis pixels;
    the scales turn analysis pixels into preview pixels.
    """
    if mirrored:
        src = np.ascontiguousarray(src[:, ::-1])
    to_preview = np.array(transform, dtype=np.float64)
    to_preview[:, :2] *= dst_scale / src_scale
    to_preview[:, 2] *= dst_scale
    size = (dst.shape[1], dst.shape[0])
    src_edges = cv2.warpAffine(_edges(src), to_preview, size, flags=cv2.INTER_NEAREST, borderValue=0)
    inside = cv2.warpAffine(np.full(src.shape, 255, np.uint8), to_preview, size, flags=cv2.INTER_NEAREST) > 0
    dst_edges = _edges(dst) * inside  # only where the two overlap: a crop has no edges beyond
    near = np.ones((2 * TOLERANCE + 1, 2 * TOLERANCE + 1), np.uint8)
    shares = []
    for edges, other in ((src_edges, dst_edges), (dst_edges, src_edges)):
        total = int(np.count_nonzero(edges))
        if total:
            shares.append(np.count_nonzero(edges & cv2.dilate(other, near)) / total)
    return min(shares, default=1.0)  # no drawing on either side: nothing contradicts


def _edges(grey: np.ndarray) -> np.ndarray:
    return (cv2.Canny(grey, EDGE_LOW, EDGE_HIGH) > 0).astype(np.uint8)
