"""Verdicts: exact copy, edited copy (duplicate), or merely similar.

Thresholds are calibrated by bench/quality.py; the figures behind them are
in the README.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from engine.match.verify import MIN_MATCHES, TWIN_CORRELATION, Verification
from features import registry

EXACT = "exact"
DUPLICATE = "duplicate"
SIMILAR = "similar"
VERDICT_ORDER = {EXACT: 0, DUPLICATE: 1, SIMILAR: 2}

# "Same picture" (re-encoded or resized): every active feature this close, and
# when local features were compared, most of the picture verified.
EXACT_COSINE = 0.985
EXACT_INLIERS = 60
EXACT_TWIN = 0.99  # thumbprint correlation, for pictures too small for that many points
# Fingerprint prefixes of networks whose fused score is not trusted to make a copy alone.
UNCALIBRATED_SCORES = ("efficientnet_lite0",)
# An edited copy: this many geometrically consistent local matches, making up
# at least this share of the correspondences found (chance agreements among
# repeated corners are a small share of many) ...
DUPLICATE_INLIERS = 30
MIN_AGREEMENT = 0.3
# ... or a fused score this high without them (recolours, heavy blur).
DUPLICATE_SCORE = 0.90
# Fewer agreeing points than DUPLICATE_INLIERS still rank a result up (see `support`).
SUPPORT_INLIERS = 20
# For ranking alone, agreeing points count from this share of the correspondences: a thin
# star turned on its canvas keeps 23 of 79 among siblings that keep 13 of 68, and those 23
# are what tells it from them.  Chance agreement among repeated corners stays below (9 of 80).
RANK_AGREEMENT = 0.2
# Points short of the points rule that aligned drawings coinciding can make up for
# (engine/match/judge.py): with the built-in rule, 20 to 29.
POINTS_SHORT = DUPLICATE_INLIERS - SUPPORT_INLIERS


@dataclass(frozen=True)
class Thresholds:
    """The score thresholds of the verdict rules: built in, or calibrated on a studio's
    own collection (engine/match/calibration.py)."""

    exact_cosine: float = EXACT_COSINE
    duplicate_score: float | None = DUPLICATE_SCORE  # None: a fused score alone never makes a copy
    # Agreeing points that make a copy.  Collections full of designs on shared templates
    # (icon sets, card decks) call for more: their siblings share 30-80 points.
    duplicate_points: int = DUPLICATE_INLIERS
    calibrated: bool = False  # chosen on this collection: the fused score of any network is trusted


BUILT_IN = Thresholds()


def verdict(scores: Mapping[str, float], score: float, check: Verification, same_bytes: bool = False,
            same_size: bool = False, score_networks: frozenset[str] | None = None,
            limits: Thresholds = BUILT_IN) -> str:
    """Verdict from per-feature cosines, the fused score and the geometric check.

    `exact` means the same picture: identical bytes, or a picture of the same size
    whose every feature agrees and whose points map onto themselves (a lossless
    re-save, a JPEG re-encode).  Rotated, cropped, mirrored, re-canvassed,
    recoloured or resized copies are `duplicate`.  Colour alone never makes a
    copy: unrelated line art shares a palette.  A score-based verdict needs a
    network feature whose fused score is trusted to make one (`score_networks`, by
    default any); otherwise only identical bytes or a geometric verification count.
    `limits`: the score thresholds, built in unless calibrated.
    """
    if same_bytes:
        return EXACT
    close = bool(scores) and min(scores.values()) >= limits.exact_cosine
    networks = bool((set(registry.NETWORKS) if score_networks is None else score_networks) & set(scores))
    points = verified(check, limits.duplicate_points)
    if close and same_size and not check.mirrored and _in_place(check):
        if points and (check.inliers >= EXACT_INLIERS or check.twin >= EXACT_TWIN):
            return EXACT
        if networks and check.matches == 0:
            return EXACT  # no local features to consult: the networks agree
    if points or (networks and limits.duplicate_score is not None and score >= limits.duplicate_score):
        return DUPLICATE
    return SIMILAR


# How far the mapping between two pictures of one size may be from the identity and
# still be 'the same picture': a few hundredths in scale and shear, a few analysis pixels.
IDENTITY_TOLERANCE = 0.02
SHIFT_TOLERANCE = 3.0


def _in_place(check: Verification) -> bool:
    """Whether the points found map onto themselves (no mapping found counts: nothing moved)."""
    matrix = check.matrix()
    if matrix is None:
        return True
    linear_ok = np.abs(matrix[:2, :2] - np.eye(2)).max() <= IDENTITY_TOLERANCE
    shift_ok = np.abs(matrix[:2, 2]).max() <= SHIFT_TOLERANCE
    flat_ok = matrix.shape[0] == 2 or np.abs(matrix[2] - (0.0, 0.0, 1.0)).max() <= 1e-3
    return bool(linear_ok and shift_ok and flat_ok)


def verified(check: Verification, points: int = DUPLICATE_INLIERS) -> bool:
    """Whether the verification alone makes the pair an edited copy: agreeing local
    points (`points` of them, the built-in rule's unless calibrated), or (for icons and
    flat shapes with too few corners) twin thumbprints."""
    if check.twin >= TWIN_CORRELATION or check.inliers >= max(EXACT_INLIERS, points):  # never chance
        return True
    return check.inliers >= points and check.inliers >= MIN_AGREEMENT * check.matches


def nearly_verified(check: Verification, points: int = DUPLICATE_INLIERS) -> bool:
    """A few points short of `points` (POINTS_SHORT at most), as large a share of the
    correspondences: enough where the aligned drawings coincide too."""
    return check.inliers >= points - POINTS_SHORT and check.inliers >= MIN_AGREEMENT * check.matches


# Confidence bands: every verified pair ranks above every unverified one, whatever
# its cosine (unrelated line art on white shares a palette and scores near 1).
VERIFIED_FLOOR = 0.9
# A turned twin's correlation counts half in its confidence (engine/match/turned.py): a design
# drawn again turned (a redo arrow beside an undo arrow) must not outrank the query's own
# original, whose upright thumbprint correlates as closely.
TURNED_TWIN_WEIGHT = 0.5


def confidence(score: float, check: Verification, likeness: float = 0.0) -> float:
    """One number comparable across queries, for ranking pairs from many queries together.

    Verified copies fill [0.9, 1], more agreeing points higher; unverified
    pairs are squeezed below 0.9: half their fused score, half their local
    support (agreeing points, or thumbprints correlating `likeness`, whichever says more).
    """
    if verified(check):
        points = min(1.0, check.inliers / (2 * EXACT_INLIERS))
        twin = max(0.0, check.twin - TWIN_CORRELATION) / (1 - TWIN_CORRELATION)
        if check.turned:  # the turn was inferred from the ink: an upright twin as close ranks first
            twin *= TURNED_TWIN_WEIGHT
        return VERIFIED_FLOOR + (1 - VERIFIED_FLOOR) * max(points, twin)
    support = max(rank_support(check), likeness_support(likeness))
    return VERIFIED_FLOOR * (max(0.0, min(1.0, score)) + support) / 2


# Thumbprints correlating from here up to twins' TWIN_CORRELATION support a pair's rank,
# 0 to 1: a copy short of a twin (resized small, photographed on paper, under a
# watermark) keeps its shape at 24 px better than any other design in its style keeps it.
LIKENESS_FLOOR = 0.6


def likeness_support(likeness: float) -> float:
    """Thumbprint correlation as support for ranking alone; verdicts never use it."""
    return max(0.0, min(1.0, (likeness - LIKENESS_FLOOR) / (TWIN_CORRELATION - LIKENESS_FLOOR)))


def rank_support(check: Verification) -> float:
    """Agreeing points, 0-1, however few, for ranking alone: a thin design under a
    watermark keeps a dozen of its points, while the fused score of any sparse line
    art on white is near 1 and ranks nothing (bench/quality.py's watermark and rotate
    queries).  Verdicts never use it."""
    if check.inliers < MIN_MATCHES or check.inliers < RANK_AGREEMENT * check.matches:
        return 0.0
    return min(1.0, check.inliers / DUPLICATE_INLIERS)


def support(check: Verification) -> float:
    """Local evidence a few points short of a verified copy (`nearly_verified`), 0-1: what
    coinciding drawings may confirm as a copy (engine/match/judge.py), and what makes a
    pair worth judging in the library-wide pass."""
    return rank_support(check) if nearly_verified(check) else 0.0
