"""Verdicts: exact copy, near-duplicate, or merely similar."""
from __future__ import annotations

from typing import Mapping

EXACT = "exact"
DUPLICATE = "duplicate"
SIMILAR = "similar"

# Every active feature must agree this closely for "same picture": re-encoding
# and resizing move cosines by well under 1%.
EXACT_COSINE = 0.985
# Fused score above which an image counts as an edited copy.
DUPLICATE_SCORE = 0.90


def verdict(scores: Mapping[str, float | None], score: float, same_bytes: bool = False) -> str:
    present = [v for v in scores.values() if v is not None]
    if same_bytes or (present and min(present) >= EXACT_COSINE):
        return EXACT
    if score >= DUPLICATE_SCORE:
        return DUPLICATE
    return SIMILAR
