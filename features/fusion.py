"""Weighted fusion of per-feature unit vectors into one searchable vector.

Each block is scaled by sqrt(w_i / sum w), so for two fused vectors built
with the same weights the inner product is the weighted mean of the
per-feature cosines.  A query may use other weights than the index was
built with: its blocks are scaled by (q_i / sum q) / sqrt(w_i / sum w),
which makes the inner product against the stored vectors the weighted mean
under the query's weights, without re-indexing.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np



def normalize_weights(weights: Mapping[str, float], names: Sequence[str]) -> dict[str, float]:
    """Weights of the given features, summing to one."""
    chosen = {name: max(0.0, float(weights.get(name, 0.0))) for name in names}
    total = sum(chosen.values())
    if total <= 0:
        raise ValueError("at least one active feature needs a positive weight")
    return {name: value / total for name, value in chosen.items()}


def fuse(blocks: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> np.ndarray:
    """Concatenate sqrt(w)-scaled blocks: rows of unit length when every block is."""
    names = list(blocks)
    shares = normalize_weights(weights, names)
    return np.ascontiguousarray(
        np.concatenate([np.sqrt(shares[n]) * blocks[n] for n in names], axis=1), dtype=np.float32
    )


def fuse_query(
    blocks: Mapping[str, np.ndarray],
    query_weights: Mapping[str, float],
    index_weights: Mapping[str, float],
) -> np.ndarray:
    """Query vector whose inner product with index rows is the query-weighted mean cosine."""
    names = list(blocks)
    wanted = normalize_weights(query_weights, names)
    stored = normalize_weights(index_weights, names)
    return np.ascontiguousarray(
        np.concatenate([wanted[n] / np.sqrt(stored[n]) * blocks[n] for n in names], axis=1),
        dtype=np.float32,
    )


def weighted_score(scores: Mapping[str, float | np.ndarray], weights: Mapping[str, float]) -> float | np.ndarray:
    """Weighted mean of per-feature cosines (numbers, or arrays of them): what a fused
    inner product equals."""
    shares = normalize_weights(weights, list(scores))
    return sum(shares[n] * scores[n] for n in scores)
