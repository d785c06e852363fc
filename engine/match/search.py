"""Rank the collection against one query: FAISS candidates and local-feature candidates,
exact re-scoring under the query's weights, geometric verification, verdicts."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Callable, Iterable, Mapping

import numpy as np
from PIL import Image

from engine.images.decode import analysis_scale
from engine.index.snapshot import Snapshot, cosines
from engine.images.thumbs import grey_preview
from engine.match import turned
from engine.match.agreement import analysis_to_preview
from engine.match.judge import Evidence, Judgement, compares_drawing, drawing_of, judge
from engine.match.verdict import VERDICT_ORDER, confidence, rank_support, verified
from engine.match.verify import NONE, Points, Verification, twin_checks, verify_all, with_twins
from features import thumbprint
from features.fusion import fuse_query, normalize_weights, weighted_score

# FAISS candidates per requested result, before exact re-scoring under the query's weights.
OVERFETCH = 4
# Verified (or locally supported) images added to the candidates even when their fused score is low.
LOCAL_CANDIDATES = 20
# The stored grey preview of an indexed row, or None where there is none.
Previews = Callable[[int], "np.ndarray | None"]
# Fused neighbours fetched however few results are asked for: the verifier reorders them.
MIN_FUSED_CANDIDATES = 50


@dataclass(frozen=True)
class SearchResult:
    path: str
    score: float
    scores: dict[str, float | None]
    verdict: str
    sha256: str
    width: int
    height: int
    row: int
    inliers: int = 0
    box: tuple[int, int, int, int] | None = None
    mirrored: bool = False
    confidence: float = 0.0
    # The verified mapping from the query's analysis picture (512 px) to this design's
    # (3x3, row by row), and the shares of each drawing found in the other once aligned.
    transform: tuple[float, ...] | None = None
    drawing: tuple[float, float] | None = None
    evidence: Evidence | None = field(default=None, repr=False, compare=False)  # what the verdict came from

    def as_dict(self) -> dict:
        return {
            "path": self.path, "score": round(self.score, 6),
            "scores": {k: (None if v is None else round(v, 6)) for k, v in self.scores.items()},
            "verdict": self.verdict, "confidence": round(self.confidence, 6), "inliers": self.inliers,
            "box": list(self.box) if self.box else None, "mirrored": self.mirrored,
            "width": self.width, "height": self.height,
            "transform": [round(v, 6) for v in self.transform] if self.transform else None,
            "drawing": [round(v, 3) for v in self.drawing] if self.drawing else None,
        }


def search(
    snapshot: Snapshot,
    query: Mapping[str, np.ndarray],
    image: Image.Image | None,
    top_k: int,
    weights: Mapping[str, float],
    all_features: tuple[str, ...],
    query_sha256: str | None = None,
    query_size: tuple[int, int] | None = None,
    previews: Previews | None = None,
) -> list[SearchResult]:
    """The top_k images: copies first, then by confidence (fused score and local support).

    `query_size`: the query's own pixel size, for telling the same picture (`exact`)
    from a resized or re-canvassed copy.  `previews`: the stored grey preview of a
    row, for comparing drawings (engine/match/judge.py); without it, points alone decide."""
    features = [n for n in snapshot.features if n in query and weights.get(n, 0) > 0]
    if not features or snapshot.size == 0 or top_k <= 0:
        return []
    shares = normalize_weights(weights, features)
    vector = _query_vector(query, shares, snapshot.data.vectors, snapshot.weights)
    rows = dict.fromkeys(_fused_candidates(snapshot, vector, top_k * OVERFETCH))  # ordered, unique
    asked = _Query(query, shares, all_features, query_sha256, query_size, image)
    checks: dict[int, Verification] = {}
    if image is not None:
        checks = _verify(snapshot, asked)
        if previews is not None and snapshot.thumbprints is not None:
            checks |= _turned_twins(snapshot, image, query, list(rows)[:turned.CANDIDATES], checks, previews)
        supported = (r for r, c in checks.items() if verified(c) or rank_support(c) > 0)
        rows.update(dict.fromkeys(sorted(supported, key=lambda r: -confidence(0.0, checks[r]))[:LOCAL_CANDIDATES]))
    regions = _region_hits(snapshot, query, shares, top_k * OVERFETCH)
    rows.update(dict.fromkeys(regions))
    results = _score(snapshot, asked, np.array(list(rows)), checks, regions, previews)
    results.sort(key=lambda r: (VERDICT_ORDER[r.verdict], -r.confidence))
    return results[:top_k]


def _verify(snapshot: Snapshot, asked: "_Query") -> dict[int, Verification]:
    """Local-feature checks against every image and every region sharing points, plus
    thumbprint twins (of the same colours, unless the query ignores colour)."""
    checks: dict[int, Verification] = {}
    if snapshot.local is not None:
        found = verify_all(Points.of_image(asked.image), snapshot.local, regions=True)
        checks = {row: check for row, check in found.items() if row < snapshot.local.images}
        # A region is checked in its own crop's pixels, at the scale a query of it shows;
        # its image keeps whichever check agrees more, with the region's outline as its box.
        for owner, check in found.items():
            region = owner - snapshot.local.images
            parent = int(snapshot.region_parent[region]) if region >= 0 else -1
            if parent >= 0 and check.inliers > checks.get(parent, NONE).inliers:
                checks[parent] = replace(check, box=tuple(float(v) for v in snapshot.data.regions.boxes[region]),
                                         region=True)
    if snapshot.thumbprints is not None:
        query = {n: asked.vectors[n] for n in asked.shares}  # the features the query weighs
        colours = _stored_colours(snapshot, query)
        twins = twin_checks(asked.grid, snapshot.thumbprints, colours, query.get("hsv"),
                            rows=snapshot.thumbprint_candidates(asked.grid), inks=snapshot.inks)
        checks = with_twins(checks, twins)
    return checks


def _turned_twins(snapshot: Snapshot, image: Image.Image, query, rows: list[int], checks,
                  previews: Previews) -> dict[int, Verification]:
    """Turned twins among the leading candidates that no points verify (engine/match/turned.py),
    to take the place of those candidates' checks."""
    rows = [row for row in rows if not verified(checks.get(row, NONE))]
    if not rows:
        return {}
    entries = snapshot.data.entries
    colours = _stored_colours(snapshot, query)
    return turned.turned_twins(image, rows, previews, lambda row: (entries[row].width, entries[row].height),
                               snapshot.thumbprints, colours, query.get("hsv"), snapshot.inks)


def _stored_colours(snapshot: Snapshot, query) -> np.ndarray | None:
    """The stored colour histograms twins must agree with, unless the query ignores colour."""
    return snapshot.data.vectors["hsv"] if "hsv" in query and "hsv" in snapshot.data.vectors else None


def _region_hits(snapshot: Snapshot, query, shares, k: int) -> dict[int, tuple[float, dict, tuple]]:
    """Best region per parent row: (fused score, per-feature cosines, box in analysis pixels).

    Regions carry the fused features whole images do; the query's weights are
    shared out over those the region index was built with."""
    names = [n for n in snapshot.region_weights if shares.get(n, 0) > 0]
    if snapshot.region_index is None or not names:
        return {}
    region_shares = normalize_weights(shares, names)
    vector = _query_vector(query, region_shares, snapshot.data.regions.vectors, snapshot.region_weights)
    _, hits = snapshot.region_index.search(vector, min(k, len(snapshot.region_index)))
    regions = snapshot.data.regions
    best: dict[int, tuple[float, dict, tuple]] = {}
    for region in hits[0]:
        parent = int(snapshot.region_parent[region]) if region >= 0 else -1
        if parent < 0:
            continue
        cos = {n: float(regions.vectors[n][region] @ query[n].ravel()) for n in region_shares}
        score = weighted_score(cos, region_shares)
        if parent not in best or score > best[parent][0]:
            best[parent] = (score, cos, tuple(regions.boxes[region]))
    return best


def _query_vector(query, shares, stored: Mapping[str, np.ndarray], stored_weights) -> np.ndarray:
    """The query fused like the stored rows (built with `stored_weights`), weighted by `shares`."""
    blocks = {n: query[n] if n in shares else np.zeros(stored[n].shape[1], np.float32) for n in stored_weights}
    vector = fuse_query(
        {n: block.reshape(1, -1) for n, block in blocks.items()},
        {n: shares.get(n, 0.0) for n in stored_weights},
        stored_weights,
    )
    return vector.reshape(1, -1)


def _fused_candidates(snapshot: Snapshot, vector: np.ndarray, k: int) -> Iterable[int]:
    _, rows = snapshot.index.search(vector, min(snapshot.size, max(k, MIN_FUSED_CANDIDATES)))
    return (int(r) for r in rows[0] if r >= 0)


@dataclass(frozen=True)
class _Query:
    vectors: Mapping[str, np.ndarray]
    shares: Mapping[str, float]
    all_features: tuple[str, ...]
    sha256: str | None
    size: tuple[int, int] | None
    image: Image.Image | None  # the decoded picture the points are in

    @cached_property
    def preview(self) -> np.ndarray:
        """Grey, as a stored preview; made only when a drawing is compared."""
        return grey_preview(self.image)

    @cached_property
    def grid(self) -> np.ndarray:
        """Its thumbprint's grid (features/thumbprint.py), made once for twins and for ranking."""
        return thumbprint.grid(self.image)

    @cached_property
    def thumbprints(self) -> np.ndarray | None:
        """Its thumbprint and its mirror image's, as unit rows (thumbprint.views)."""
        if self.image is None:
            return None
        return thumbprint.views(self.grid)


def _score(snapshot: Snapshot, query: _Query, rows: np.ndarray, checks, regions,
           previews: Previews | None) -> list[SearchResult]:
    """One result per image: its whole-picture score, or its best region's when that is higher."""
    per_feature = cosines(snapshot, {n: query.vectors[n] for n in query.shares}, rows)
    fused = weighted_score(per_feature, query.shares)
    likeness = _likeness(snapshot, query, rows)
    results = []
    for j, row in enumerate(rows):
        entry = snapshot.data.entries[row]
        scores = {n: (float(per_feature[n][j]) if n in per_feature else None) for n in query.all_features}
        score = float(fused[j])
        size = (entry.width, entry.height)
        region = regions.get(int(row))
        by_region = region is not None and region[0] > score  # the result stands for one of its regions
        if by_region:
            score = region[0]
            scores = {n: (region[1][n] if n in region[1] else None) for n in query.all_features}
        active = {n: v for n, v in scores.items() if v is not None}
        judged = _judge(snapshot, query, int(row), active, score, checks.get(int(row), NONE), previews)
        check = judged.check
        # A proposal outlines a whole design; verified points often cover only part of it.  Without
        # points, a region is outlined only where the result stands for it: a whole design found
        # again (a twin) is the match, not one of its stripes.
        outline = _region_around(snapshot, int(row), check.box) if check.box else (region[2] if by_region else None)
        if outline is not None:
            check = replace(check, box=tuple(outline))
        check = check.scaled(analysis_scale(*size), size)
        row_likeness = float(likeness[j])
        if region is not None and previews is not None and not verified(check):
            # An unverified sheet is as alike as the part of it found (verified pairs rank by points).
            row_likeness = max(row_likeness, _region_likeness(snapshot, query, int(row), region[2], previews))
        results.append(SearchResult(
            path=entry.path, score=score, scores=scores, verdict=judged.verdict,
            sha256=entry.sha256, width=entry.width, height=entry.height, row=int(row),
            inliers=check.inliers, box=check.box, mirrored=check.mirrored,
            confidence=confidence(score, check, row_likeness),
            transform=_as_3x3(check), drawing=None if judged.drawing is None else tuple(judged.drawing),
            evidence=judged.evidence,
        ))
    return results


def _likeness(snapshot: Snapshot, query: _Query, rows: np.ndarray) -> np.ndarray:
    """Each row's thumbprint correlation with the query's (as is or mirrored), for ranking;
    0 where either has none."""
    if snapshot.thumbprints is None or query.thumbprints is None or not len(rows):
        return np.zeros(len(rows), np.float32)
    return _correlations(snapshot.thumbprints[rows], query)


def _correlations(units: np.ndarray, query: _Query) -> np.ndarray:
    """Each unit row's correlation with the query's thumbprint, as is or mirrored."""
    return (units @ query.thumbprints.T).max(axis=1)


def _region_likeness(snapshot: Snapshot, query: _Query, row: int, box: tuple, previews: Previews) -> float:
    """The query's thumbprint correlation with one region of a row (`box`, analysis pixels),
    cut from the row's stored preview: regions keep no thumbprints of their own."""
    preview = previews(row)
    if preview is None or query.thumbprints is None:
        return 0.0
    entry = snapshot.data.entries[row]
    scale = analysis_to_preview(preview, entry.width, entry.height)
    x0, y0, x1, y1 = (max(0, int(round(v * scale))) for v in box)
    crop = preview[y0:y1, x0:x1]
    if crop.size == 0:
        return 0.0
    return float(_correlations(thumbprint.units(thumbprint.grid(Image.fromarray(crop))[None]), query)[0])


def _judge(snapshot: Snapshot, query: _Query, row: int, scores, score: float, check: Verification,
           previews: Previews | None) -> Judgement:
    entry = snapshot.data.entries[row]
    size = (entry.width, entry.height)
    drawing = None
    if previews is not None and query.image is not None and compares_drawing(check):
        drawing = drawing_of(check, query.preview, query.image.size, previews(row), size)
    evidence = Evidence(scores, score, check, entry.sha256 == query.sha256, query.size == size,
                        snapshot.score_networks, drawing)
    return judge(evidence, snapshot.thresholds)


def _as_3x3(check: Verification) -> tuple[float, ...] | None:
    """The verified mapping as a 3x3 matrix, row by row; None for none or a region's crop."""
    matrix = check.matrix()
    if matrix is None or check.region:
        return None
    if len(matrix) == 2:
        matrix = np.vstack([matrix, [0.0, 0.0, 1.0]])
    return tuple(float(v) for v in matrix.ravel())


def _region_around(snapshot: Snapshot, row: int, box: tuple) -> tuple | None:
    """The smallest of the image's regions holding the centre of `box` (analysis pixels)."""
    x, y = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    around = [b for b in snapshot.region_boxes_of(row) if b[0] <= x <= b[2] and b[1] <= y <= b[3]]
    return min(around, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]), default=None)
