"""The fused-vector index searches ask: exact for a studio's collection, 8-bit codes in an
inverted file for a very large one, with scores that come from the stored vectors either way."""
import numpy as np
import pytest

from engine import Engine
from engine.index import neighbours
from features import l2_normalize
from features.hsv import HsvHistogram
from features.thumbprint import ThumbprintFeatures
from conftest import encode
from fakes import CountingExtractor


def clustered(n: int, dim: int, rng) -> np.ndarray:
    """Unit rows around a few hundred centres: neighbours that mean something."""
    centres = l2_normalize(rng.standard_normal((300, dim), dtype=np.float32))
    spread = l2_normalize(rng.standard_normal((n, dim), dtype=np.float32))
    return l2_normalize(centres[rng.integers(0, 300, n)] + 0.3 * spread)


def test_a_large_index_keeps_codes_and_finds_what_exact_search_finds():
    rng = np.random.default_rng(3)
    vectors = clustered(20_000, 64, rng)
    queries = l2_normalize(vectors[:200] + 0.1 * l2_normalize(rng.standard_normal((200, 64), dtype=np.float32)))
    exact = neighbours.search_vectors(64, len(vectors), lambda which: vectors[which])
    coded = neighbours.search_vectors(64, len(vectors), lambda which: vectors[which], exact_rows=10_000)
    assert exact.vectors().shape == vectors.shape
    with pytest.raises(TypeError):
        coded.vectors()  # codes only: a quarter of the memory
    _, truth = exact.search(queries, 10)
    _, found = coded.search(queries, 10)
    recall = np.mean([len(set(t) & set(f)) / 10 for t, f in zip(truth, found)])
    assert recall >= 0.9
    assert (found[:, 0] == np.arange(200)).mean() >= 0.95  # each query's own source, found first


def test_search_and_duplicate_groups_on_an_index_past_the_exact_size(cfg, collection, monkeypatch):
    monkeypatch.setattr(neighbours, "EXACT_SCAN_VALUES", 1)  # the 13 designs count as a very large library
    collection["copy_of_05.png"] = collection["design_05.png"].resize((160, 160))
    collection["copy_of_05.png"].save(cfg.images / "copy_of_05.png")
    engine = Engine(cfg, extractors={"resnet": CountingExtractor(), "hsv": HsvHistogram(),
                                     "thumbprint": ThumbprintFeatures()})
    engine.reindex()
    snapshot = engine.snapshot
    with pytest.raises(TypeError):
        snapshot.index.vectors()  # the coded index is the one in use
    # Thumbprints too are looked up in a coded index, and a resized copy's twin is among them.
    grid = snapshot.data.vectors["thumbprint"][snapshot.row_of["copy_of_05.png"]]
    candidates = snapshot.thumbprint_candidates(grid)
    assert candidates is not None and snapshot.row_of["design_05.png"] in candidates
    results = engine.search_bytes(encode(collection["design_05.png"]), top_k=3)
    assert results[0].path == "design_05.png" and results[0].verdict == "exact"
    assert results[0].score == pytest.approx(1.0, abs=1e-5)  # scored from the stored vectors, not the codes
    groups = engine.duplicates()
    assert any({"design_05.png", "copy_of_05.png"} <= set(g.paths) for g in groups)
