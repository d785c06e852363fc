"""One judgement of a pair of designs, for a search result and for the duplicate pass alike.

The verdict rules (engine/match/verdict.py) weigh per-feature cosines, the fused
score and the geometric check.  Where the two pictures' previews can be put
side by side, their drawings decide too (engine/match/agreement.py): points
verified on a template that two designs share (a sign's triangle, a card's
border) do not make them copies unless each contains the other's drawing, and
a few points whose aligned drawings coincide nearly everywhere do.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Mapping, NamedTuple

import numpy as np

from engine.match.agreement import Agreement, analysis_to_preview, content_agreement, edge_agreement
from engine.match.verdict import (BUILT_IN, DUPLICATE, SIMILAR, Thresholds, nearly_verified, support, verdict,
                                  verified)
from engine.match.verify import TWIN_CORRELATION, Verification

# Thumbprints this close (and of as much ink) are one picture at 24 px, to within
# re-encoding noise: their previews are not compared.  Aligning previews by the
# designs' extents fails where the preview shows little ink (a white letter placed
# on a canvas: 0.63 of its edges found); a lower value lets lookalikes past.
CERTAIN_TWIN = 0.999


class Evidence(NamedTuple):
    """What a pair's verdict is reached from (kept with a search result, so that
    calibration can judge it again under other thresholds)."""

    scores: Mapping[str, float]  # per-feature cosines
    score: float  # the fused score
    check: Verification  # local points and twin thumbprints
    same_bytes: bool = False
    same_size: bool = False
    score_networks: frozenset[str] | None = None  # networks whose fused score may make a copy
    drawing: Agreement | None = None  # how far the drawings are shared, where compared


class Judgement(NamedTuple):
    verdict: str
    check: Verification  # as it counted: a template's points are taken back
    by_points: bool  # confirmed by local evidence (points, twins, or points with drawing)
    evidence: Evidence  # what it was reached from

    @property
    def drawing(self) -> Agreement | None:
        """How far the drawings were shared, where compared."""
        return self.evidence.drawing


def drawing_of(check: Verification, src: np.ndarray | None, src_size: tuple[int, int],
               dst: np.ndarray | None, dst_size: tuple[int, int]) -> Agreement | None:
    """How far two grey previews share their drawing, aligned by the check's transform
    (src -> dst; sizes are the originals' pixels).

    Twins not verified by their points as well are aligned by their designs'
    extents.  None where nothing would be decided by it (see `compares_drawing`)
    or a preview is missing."""
    if not compares_drawing(check):
        return None
    if src is None or dst is None:
        return None  # nothing to compare with: the other checks stand
    if check.twin >= TWIN_CORRELATION and not _rests_on_points(check) and not check.turned:
        return content_agreement(src, dst)  # upright twins carry no transform: align the designs' extents
    return edge_agreement(src, dst, check.matrix(), analysis_to_preview(src, *src_size),
                          analysis_to_preview(dst, *dst_size), check.mirrored)


def compares_drawing(check: Verification) -> bool:
    """Whether the drawings could change this pair's verdict: not with too few points and
    no twin (most candidates), a twin beyond doubt, or a check made on a region's crop."""
    if not (verified(check) or support(check) > 0) or check.region:
        return False
    if check.turned:
        return True  # turned by its ink's axis: whether the drawings then coincide is the evidence
    return not (check.twin >= CERTAIN_TWIN and not _rests_on_points(check))  # one picture at 24 px


def judge(evidence: Evidence, limits: Thresholds = BUILT_IN) -> Judgement:
    """The verdict of a pair, with the drawing evidence where it was compared."""
    scores, score, check, same_bytes, same_size, score_networks, drawing = evidence
    if drawing is not None and verified(check) and not drawing.shared():
        # A template's points, or thumbprints alike only at 24 px (stars of 51 and 81 points).
        check = replace(check, inliers=0, transform=None, twin=0.0)
    label = verdict(scores, score, check, same_bytes, same_size, score_networks, limits)
    by_points = verified(check, limits.duplicate_points)
    if label == SIMILAR and drawing is not None and nearly_verified(check, limits.duplicate_points) \
            and drawing.close():
        # Too few points alone, but the aligned drawings coincide: two kinds of evidence.
        label, by_points = DUPLICATE, True
    return Judgement(label, check, by_points, evidence)


def _rests_on_points(check: Verification) -> bool:
    """Whether the local-feature points alone, without the thumbprints, make a verified copy."""
    return check.transform is not None and verified(replace(check, twin=0.0))
