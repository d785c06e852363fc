"""Fusion: the fused inner product is the weighted mean of per-feature cosines."""
import numpy as np
import pytest

from features import l2_normalize
from features.fusion import fuse, fuse_query, weighted_score

rng = np.random.default_rng(7)


def blocks(n):
    return {"clip": l2_normalize(rng.normal(size=(n, 8))), "resnet": l2_normalize(rng.normal(size=(n, 16))),
            "hsv": l2_normalize(rng.random((n, 4)))}


def test_fused_inner_product_is_weighted_mean_of_cosines():
    a, b = blocks(1), blocks(1)
    weights = {"clip": 0.5, "resnet": 0.3, "hsv": 0.2}
    cos = {n: float(a[n][0] @ b[n][0]) for n in a}
    assert float(fuse(a, weights)[0] @ fuse(b, weights)[0]) == pytest.approx(weighted_score(cos, weights), abs=1e-6)
    assert np.linalg.norm(fuse(a, weights)[0]) == pytest.approx(1.0, abs=1e-6)


def test_query_weights_apply_without_rebuilding_the_index():
    stored, query = blocks(5), blocks(1)
    index_weights = {"clip": 0.5, "resnet": 0.3, "hsv": 0.2}
    query_weights = {"clip": 0.1, "resnet": 0.0, "hsv": 0.9}
    scores = fuse(stored, index_weights) @ fuse_query(query, query_weights, index_weights)[0]
    for row in range(5):
        cos = {n: float(stored[n][row] @ query[n][0]) for n in stored}
        assert scores[row] == pytest.approx(weighted_score(cos, query_weights), abs=1e-5)


def test_all_zero_weights_are_rejected():
    with pytest.raises(ValueError):
        fuse(blocks(1), {"clip": 0, "resnet": 0, "hsv": 0})
