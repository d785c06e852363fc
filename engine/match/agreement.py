"""Do two pictures agree once aligned?  The check after the geometric one, for pairs.

Local features verify that two pictures share a part.  Designs built on one
template share a part too: a warning sign's triangle, a playing card's border,
a studio's watermark across many designs.  Once the verified transform aligns
a copy with its original, most edges of each picture reappear in the other (a
crop is compared where the two overlap); template siblings each keep drawing
of their own that the other lacks.

The comparison runs on the stored previews (engine/images/thumbs.py), so it needs no
decode of the originals.
"""
from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np

from engine.images.decode import analysis_scale
from features.thumbprint import ink_box

# A copy's relation to its original is containment: a crop, a watermark, a
# canvas add drawing on one side only, so nearly all of one picture's edges
# (CONTAINED) reappear in the other, while the other may carry much of its own
# (a watermark's text over a thin design: only AGREEMENT of its edges need be
# found).  Template siblings each keep drawing the other lacks (a sign's own
# pictogram inside the shared triangle).  Both values were chosen on
# bench/duplicates_peers.py: a stricter CONTAINED trades recall for precision one
# pair at a time, and AGREEMENT must stay low enough for a watermark's text that
# outweighs a thin design's own edges (docs/benchmarks.md).
AGREEMENT = 0.25
CONTAINED = 0.95
# Agreement this close on both sides is evidence of its own: it confirms a pair
# whose points alone fall short (SUPPORT_INLIERS up to DUPLICATE_INLIERS); with
# fewer points than that, lookalikes in one style would pass as copies.
CLOSE, CLOSE_CONTAINED = 0.85, 0.95
# Edge positions may differ by this many preview pixels (resampling, mild perspective).
TOLERANCE = 2
# The alignment refinement (see `_refined`) runs on copies this many pixels across at
# most, and stops early: it corrects a few pixels, and it runs for every pair of template
# siblings in the library-wide pass (a sixth of that pass's time on openclipart's 8,121
# designs; 50 iterations cost twice that, full-size previews three times, for at most
# one more copy found on the benchmarks).  It is used only where it keeps this share
# of the overlap the points verified.
REFINE_SIDE = 128
REFINE_ITERATIONS = 20
REFINE_EPSILON = 1e-3
REFINE_BLUR = 5
KEEPS_OVERLAP = 0.9
# Canny thresholds low enough for the faint hatching of line art.
EDGE_LOW, EDGE_HIGH = 20, 60


def analysis_to_preview(preview: np.ndarray, width: int, height: int) -> float:
    """Preview pixels per analysis-picture pixel for an original of width x height."""
    return max(preview.shape) * analysis_scale(width, height) / max(width, height)


class Agreement(NamedTuple):
    """Shares of each picture's edges found in the other: the smaller and the larger."""

    least: float
    most: float

    def shared(self) -> bool:
        """The drawing is shared as a copy shares it, not as a template's siblings do."""
        return self.least >= AGREEMENT and self.most >= CONTAINED

    def close(self) -> bool:
        """The drawings coincide nearly everywhere on both sides."""
        return self.least >= CLOSE and self.most >= CLOSE_CONTAINED


def edge_agreement(src: np.ndarray, dst: np.ndarray, transform: np.ndarray, src_scale: float,
                   dst_scale: float, mirrored: bool = False) -> Agreement:
    """How much of either picture's edges is found in the other, aligned by `transform`.

    `src` and `dst` are grey previews; `transform` (2x3, or 3x3 for a perspective)
    maps src analysis pixels (of its mirror image when `mirrored`) to dst analysis
    pixels; the scales turn analysis pixels into preview pixels.  The two are
    compared where the design is drawn smaller: the other preview is resampled
    into that one's pixels before its edges are found, so detail that the smaller
    one could not show (a copy on a larger canvas, a zoomed crop) is not counted
    as drawing of its own.  Drawings that do not agree as aligned are compared
    once more after the alignment is refined on the pictures (`_refined`), and
    the alignment that agrees better counts.
    """
    if mirrored:
        src = np.ascontiguousarray(src[:, ::-1])
    mapping = np.array(transform, dtype=np.float64)
    if len(mapping) == 2:
        mapping = np.vstack([mapping, [0.0, 0.0, 1.0]])
    to_preview = np.diag([dst_scale, dst_scale, 1.0]) @ mapping @ np.diag([1 / src_scale, 1 / src_scale, 1.0])
    magnification = _magnification(to_preview)
    if magnification > 1:  # src is the smaller drawing: compare in its pixels
        src, dst, to_preview = dst, src, np.linalg.inv(to_preview)
    # The tolerance is the larger drawing's: in the smaller one's pixels it shrinks with it.
    tolerance = max(1, round(TOLERANCE / max(magnification, 1 / magnification)))
    agreement, overlap = _shares(src, dst, to_preview, tolerance)
    if agreement.shared():
        return agreement
    refined = _refined(src, dst, to_preview, overlap)
    if refined is None:
        return agreement
    again, overlap_again = _shares(src, dst, refined, tolerance)
    if np.count_nonzero(overlap_again) < KEEPS_OVERLAP * np.count_nonzero(overlap):
        return agreement  # a new alignment that leaves drawing out of the comparison, not a finer one
    # ECC can settle a few pixels off where the points had it right (resampled fine detail):
    # the alignment that agrees better is the finer one.
    return max(agreement, again, key=lambda a: (a.most, a.least))


def _shares(src: np.ndarray, dst: np.ndarray, to_preview: np.ndarray, tolerance: int
            ) -> tuple[Agreement, np.ndarray]:
    """The agreement of src warped by `to_preview` onto dst, and where the two were compared."""
    size = (dst.shape[1], dst.shape[0])
    warped = cv2.warpPerspective(src, to_preview, size, flags=cv2.INTER_AREA, borderValue=255)
    near = np.ones((2 * tolerance + 1, 2 * tolerance + 1), np.uint8)
    # Only where the two overlap (a crop has no edges beyond), less a band along the
    # overlap's border, where the resampled picture meets the white around it.
    inside = cv2.warpPerspective(np.full(src.shape, 255, np.uint8), to_preview, size, flags=cv2.INTER_NEAREST)
    inside = cv2.erode(inside, near, borderValue=255) > 0
    src_edges = _edges(warped) * inside
    dst_edges = _edges(dst) * inside
    shares = []
    for edges, other in ((src_edges, dst_edges), (dst_edges, src_edges)):
        total = int(np.count_nonzero(edges))
        if total:
            shares.append(np.count_nonzero(edges & cv2.dilate(other, near)) / total)
    if not shares:
        return Agreement(1.0, 1.0), inside  # no drawing on either side: nothing contradicts
    return Agreement(min(shares), max(shares)), inside


def _refined(src: np.ndarray, dst: np.ndarray, to_preview: np.ndarray, overlap: np.ndarray) -> np.ndarray | None:
    """`to_preview` corrected so that the pictures themselves line up (OpenCV's ECC on
    copies at most REFINE_SIDE pixels across); None where it does not converge.

    The verified mapping is fitted to matched points, which may sit on one part of a
    design: a photo's perspective extrapolated from them leaves the rest of the drawing
    a few pixels off, and a copy then looks like a sibling with drawing of its own."""
    src_scale = min(1.0, REFINE_SIDE / max(src.shape))
    dst_scale = min(1.0, REFINE_SIDE / max(dst.shape))
    small_src, small_dst = _shrunk(src, src_scale), _shrunk(dst, dst_scale)
    mask = cv2.resize(overlap.astype(np.uint8), (small_dst.shape[1], small_dst.shape[0]),
                      interpolation=cv2.INTER_NEAREST)
    to_src, to_dst = np.diag([src_scale, src_scale, 1.0]), np.diag([dst_scale, dst_scale, 1.0])
    # ECC's warp takes the template's (dst's) pixels to the input's (src's).
    warp = np.linalg.inv(to_dst @ to_preview @ np.linalg.inv(to_src))
    warp = (warp / warp[2, 2]).astype(np.float32)
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, REFINE_ITERATIONS, REFINE_EPSILON)
    try:
        _, warp = cv2.findTransformECC(small_dst.astype(np.float32), small_src.astype(np.float32), warp,
                                       cv2.MOTION_HOMOGRAPHY, criteria, mask, REFINE_BLUR)
    except cv2.error:  # no convergence, or a picture without contrast
        return None
    return np.linalg.inv(to_dst) @ np.linalg.inv(warp.astype(np.float64)) @ to_src


def _shrunk(grey: np.ndarray, scale: float) -> np.ndarray:
    if scale >= 1:
        return grey
    size = (max(1, round(grey.shape[1] * scale)), max(1, round(grey.shape[0] * scale)))
    return cv2.resize(grey, size, interpolation=cv2.INTER_AREA)


def _magnification(mapping: np.ndarray) -> float:
    """How much a 3x3 mapping enlarges, near the origin of its linear part."""
    return float(np.sqrt(abs(np.linalg.det(mapping[:2, :2]))))


def content_agreement(src: np.ndarray, dst: np.ndarray) -> Agreement:
    """Edge agreement of two previews aligned by their designs' extents, as is or mirrored.

    For twin thumbprints, which carry no transform: the thumbprint is the design
    cropped to its ink, so the same crop-and-scale lines the two previews up."""
    a, flipped, b = ink_box(src), ink_box(src[:, ::-1]), ink_box(dst)
    if a is None or b is None:
        return Agreement(1.0, 1.0)  # a blank page on either side: nothing contradicts
    return max(edge_agreement(src, dst, _box_to_box(box, b), 1.0, 1.0, mirrored)
               for mirrored, box in ((False, a), (True, flipped)))


def _box_to_box(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> np.ndarray:
    """The scale-and-shift taking ink extent `a` onto `b`, centres and longer sides matched."""
    (at, ab, al, ar), (bt, bb, bl, br) = a, b
    scale = max(bb - bt, br - bl, 1) / max(ab - at, ar - al, 1)
    centre_a = np.array([(al + ar) / 2, (at + ab) / 2])
    centre_b = np.array([(bl + br) / 2, (bt + bb) / 2])
    shift = centre_b - scale * centre_a
    return np.array([[scale, 0.0, shift[0]], [0.0, scale, shift[1]]])


def _edges(grey: np.ndarray) -> np.ndarray:
    return (cv2.Canny(grey, EDGE_LOW, EDGE_HIGH) > 0).astype(np.uint8)
