"""Geometric verification: do the query and a candidate share one region, mapped by
one rotation, uniform scale and shift?

Correspondences come from the local index (each query ORB descriptor's
nearest stored descriptors), for the query as is and mirrored left-right.
A RANSAC similarity transform keeps the correspondences that agree on one
mapping; their number says how much of one picture reappears in the other,
whatever the crop, rotation, scale or canvas, and their extent in the
candidate is the matched region.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np
from PIL import Image

from engine.match.localindex import LocalIndex
from features import thumbprint
from features.orb import detect, detect_mirrored, gray_of, unpack

MIN_MATCHES = 8
RANSAC_PIXELS = 8.0  # reprojection tolerance, in 512 px analysis-picture pixels
# RANSAC stops at this many tries, or once it is this sure of the best model: with a
# third of the matches right, 500 tries find an all-inlier sample many times over.
RANSAC_ITERATIONS = 500
RANSAC_CONFIDENCE = 0.99
# A mapping that shrinks or grows the design more than tenfold is not a copy's.
MIN_SCALE = 0.1


@dataclass(frozen=True)
class Verification:
    inliers: int
    box: tuple[int, int, int, int] | None  # in analysis pixels of the candidate until scaled
    mirrored: bool
    matches: int = 0  # correspondences RANSAC was given; inliers / matches is the agreement
    twin: float = 0.0  # correlation of the two content thumbprints (features/thumbprint.py)
    # The mapping found (query -> candidate), row by row: the 2x3 similarity, or a 3x3
    # mild perspective where one explains more of the points (a photo taken at an angle).
    transform: tuple[float, ...] | None = None
    region: bool = False  # made on a design cut from a sheet: the transform is in the crop's pixels
    turned: bool = False  # a twin found turned (engine/match/turned.py): the transform is its ink's turn

    def matrix(self) -> np.ndarray | None:
        """The mapping as a 2x3 or 3x3 matrix (what engine/match/agreement.py takes)."""
        return None if self.transform is None else np.array(self.transform, dtype=np.float64).reshape(-1, 3)

    def scaled(self, scale: float, size: tuple[int, int]) -> "Verification":
        """The box in the candidate's original pixels."""
        if self.box is None:
            return self
        x0, y0, x1, y1 = (v * scale for v in self.box)
        width, height = size
        box = (max(0, int(x0)), max(0, int(y0)), min(width, int(np.ceil(x1))), min(height, int(np.ceil(y1))))
        return replace(self, box=box)


NONE = Verification(inliers=0, box=None, mirrored=False)


@dataclass(frozen=True)
class Points:
    """One side of a comparison: keypoints, possibly also of the mirrored picture."""

    views: tuple[tuple[bool, np.ndarray, np.ndarray], ...]

    @classmethod
    def of_image(cls, image: Image.Image) -> "Points":
        """A query: as is and mirrored left-right (ORB descriptors are not mirror-invariant)."""
        gray = gray_of(image)
        plain = detect(gray)
        mirrored = detect_mirrored(gray)
        return cls(views=((False, *plain), (True, *mirrored)))

    @classmethod
    def of_row(cls, row: np.ndarray, limit: int | None = None, mirrored_row: np.ndarray | None = None,
               mirrored_limit: int | None = None) -> "Points":
        """An indexed image, from its stored rows (and its mirror image's, when stored), the
        strongest `limit` points of the first and `mirrored_limit` (default: `limit`) of the other."""
        xy, descriptors = unpack(row)
        views = [(False, xy[:limit], descriptors[:limit])]
        if mirrored_row is not None:
            xy, descriptors = unpack(mirrored_row)
            limit = limit if mirrored_limit is None else mirrored_limit
            views.append((True, xy[:limit], descriptors[:limit]))
        return cls(views=tuple(views))


def verify_all(points: Points, local: LocalIndex, exclude: int | None = None,
               regions: bool = False, found: list[dict] | None = None) -> dict[int, Verification]:
    """Best verification per image row that shares enough descriptors with `points`;
    with `regions`, regions too (as local.images + region number).  `found`: what
    `local.matches` gives each of the views, when it was asked already (`view_queries`)."""
    if found is None:
        found = local.matches_many(view_queries(points), at_least=MIN_MATCHES)
    best: dict[int, Verification] = {}
    for (mirrored, _, _), matched in zip(points.views, found):
        for row, (src, dst) in matched.items():
            if row == exclude or (row >= local.images and not regions):
                continue
            check = geometric_check(src, dst, mirrored)
            if check.inliers > best.get(row, NONE).inliers:
                best[row] = check
    return best


def view_queries(points: Points) -> list[tuple[np.ndarray, np.ndarray]]:
    """(descriptors, xy) of each view, as the local index is asked for them."""
    return [(descriptors, xy) for _, xy, descriptors in points.views]


# Thumbprints correlating this well are one design, re-saved, resized, recoloured or on
# another canvas; chosen on bench/quality.py (see the README for the figures behind it).
TWIN_CORRELATION = 0.97
# ... when their colours agree this well too: in grey, a plain disc is every round
# thing (a flag's sun, a globe), and a recolour is the local features' job.
TWIN_MIN_COLOUR = 0.5
# ... and when they carry about as much ink: correlation ignores contrast, so a faint
# outline and a bold one of the same shape correlate perfectly (thin stars of 65 and
# 81 points, circles at 80 px), while a copy keeps its ink within 2x.
TWIN_INK_RATIO = 2.0
# ... counted from this much ink (grey levels of mean darkness): below it a grid is a blank
# page, whose ink is re-encoding noise.
TWIN_INK_FLOOR = 1.0


def twin_checks(grid: np.ndarray, thumbprints: np.ndarray, colours: np.ndarray | None = None,
                colour: np.ndarray | None = None, rows: list[int] | None = None,
                inks: np.ndarray | None = None, mirrors: bool = True) -> dict[int, float]:
    """Rows whose stored thumbprint is a twin of `grid` (or, with `mirrors`, of its mirror image).

    `thumbprints` holds unit rows (thumbprint.units), zero where missing; `rows`
    limits the look to those rows.  With the stored colour histograms and the
    query's, twins must share colours too; with the stored rows' ink
    (thumbprint.ink), about as much ink.
    """
    query = thumbprint.views(grid, mirrors)
    if rows is None:  # all of them, without copying the whole block per query
        scores = (thumbprints @ query.T).max(axis=1)
        rows = np.flatnonzero(scores >= TWIN_CORRELATION)
        best = scores[rows]
    else:
        rows = np.asarray(rows, dtype=np.int64)
        best = (thumbprints[rows] @ query.T).max(axis=1)
    keep = best >= TWIN_CORRELATION
    if inks is not None:
        mine, theirs = float(thumbprint.ink(grid[None])[0]), inks[rows]
        keep &= np.maximum(mine, theirs) <= TWIN_INK_RATIO * np.maximum(np.minimum(mine, theirs), TWIN_INK_FLOOR)
    if colours is not None and colour is not None:
        keep &= colours[rows] @ colour.ravel() >= TWIN_MIN_COLOUR
    return {int(row): float(c) for row, c in zip(rows[keep], best[keep])}


def with_twins(checks: dict[int, Verification], twins: dict[int, float]) -> dict[int, Verification]:
    """The geometric checks with each row's thumbprint correlation added."""
    merged = dict(checks)
    for row, correlation in twins.items():
        merged[row] = replace(merged.get(row, NONE), twin=correlation)
    return merged


def geometric_check(src: np.ndarray, dst: np.ndarray, mirrored: bool = False) -> Verification:
    """Inliers of one mapping from src to dst points, and their box in dst: a similarity,
    or a mild perspective where one explains more of the points (a photo at an angle)."""
    if len(src) < MIN_MATCHES or _distinct(dst) < MIN_MATCHES:  # never enough inliers: no RANSAC
        return NONE
    # 4 degrees of freedom first: chance matches on repeated corners rarely agree on one.
    transform, mask = cv2.estimateAffinePartial2D(
        src, dst, method=cv2.RANSAC, ransacReprojThreshold=RANSAC_PIXELS, maxIters=RANSAC_ITERATIONS, confidence=RANSAC_CONFIDENCE
    )
    if transform is None or not _plausible(transform):
        return NONE
    kept = dst[mask.ravel().astype(bool)]
    inliers = _distinct(kept)
    if inliers < MIN_MATCHES:
        return NONE
    perspective = _perspective(src, dst, transform, inliers)
    if perspective is not None:
        transform, kept, inliers = perspective
    x0, y0 = kept.min(axis=0)
    x1, y1 = kept.max(axis=0)
    box = (float(x0), float(y0), float(x1), float(y1))
    return Verification(inliers=inliers, box=box, mirrored=mirrored, matches=len(src),
                        transform=tuple(float(v) for v in transform.ravel()))


def _distinct(points: np.ndarray) -> int:
    """How many different stored points: several query points landing on one is not agreement."""
    return len({tuple(p) for p in points.round().astype(int).tolist()})


# How far a perspective mapping may move the corners of the matched area away from where
# the similarity puts them, as a share of that area's longer side: a photo at an angle
# moves them by up to a tenth or so; more is a chance fit of 8 degrees of freedom.
MAX_PERSPECTIVE = 0.2
# The perspective is sought only where the similarity already keeps this many points: on
# every candidate a homography's RANSAC took 4 ms (most of the library pass), and chance
# matches rarely agree on 16 points.
PERSPECTIVE_FROM = 16
# Inside the matched area a mild perspective moves points no farther from the similarity
# than it moves the area's corners; this margin over MAX_PERSPECTIVE covers the rounding of
# that argument (a projective map is not linear between its corners).
NEAR_SIMILARITY = 1.5


def _perspective(src: np.ndarray, dst: np.ndarray, similarity: np.ndarray,
                 inliers: int) -> tuple[np.ndarray, np.ndarray, int] | None:
    """A mild homography (3x3), the dst points it keeps and how many distinct ones,
    where it keeps more than the similarity's `inliers`.

    A photo's perspective leaves only part of the design within the similarity's
    tolerance, and the drawing check after it (edges within two preview pixels,
    engine/match/agreement.py) fails where the rest is misaligned."""
    if inliers < PERSPECTIVE_FROM:
        return None
    (x0, y0), (x1, y1) = src.min(axis=0), src.max(axis=0)
    corners = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)
    by_similarity = corners @ similarity[:, :2].T + similarity[:, 2]
    side = float(np.ptp(by_similarity, axis=0).max())
    # A mapping this check accepts puts no point much farther from where the similarity
    # puts it than it puts the corners, so matches beyond that can never be its inliers:
    # left out, they no longer drown the right ones, and RANSAC is sure of its model in a
    # few dozen tries instead of running all of them (the library pass's candidates are
    # mostly full of chance matches).
    reach = NEAR_SIMILARITY * MAX_PERSPECTIVE * side + RANSAC_PIXELS
    near = np.linalg.norm(src @ similarity[:, :2].T + similarity[:, 2] - dst, axis=1) <= reach
    if _distinct(dst[near]) <= inliers:
        return None
    src, dst = src[near], dst[near]
    homography, mask = cv2.findHomography(src, dst, cv2.RANSAC, RANSAC_PIXELS, maxIters=RANSAC_ITERATIONS, confidence=RANSAC_CONFIDENCE)
    if homography is None:
        return None
    kept = dst[mask.ravel().astype(bool)]
    count = _distinct(kept)
    if count <= inliers:
        return None
    by_homography = cv2.perspectiveTransform(corners[None], homography)[0]
    if not np.isfinite(by_homography).all() or np.abs(by_homography - by_similarity).max() > MAX_PERSPECTIVE * side:
        return None
    return homography, kept, count


def _plausible(transform: np.ndarray) -> bool:
    """Reject degenerate mappings: the picture shrunk or blown up beyond any real edit."""
    scale = float(np.sqrt(abs(np.linalg.det(transform[:, :2]))))
    return MIN_SCALE < scale < 1 / MIN_SCALE
