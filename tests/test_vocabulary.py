"""The two-level vocabulary that files a very large library's local-feature codes."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from engine.index import neighbours
from engine.index.vocabulary import VocabularyCodes
from engine.match.localindex import LocalIndex
from features.orb import pack


def clustered_codes(rng: np.random.Generator, n: int, centres: int = 300) -> np.ndarray:
    """Codes with the structure ORB's have: many near each of a few hundred patterns."""
    patterns = rng.integers(0, 2, (centres, 256), dtype=np.uint8)
    bits = patterns[rng.integers(0, centres, n)] ^ (rng.random((n, 256)) < 0.15).astype(np.uint8)
    return np.packbits(bits, axis=1)


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.unpackbits(a ^ b, axis=-1).sum(axis=-1)


def test_a_slightly_changed_code_finds_the_stored_one_and_every_distance_is_true():
    rng = np.random.default_rng(3)
    codes = clustered_codes(rng, 60_000)
    index = VocabularyCodes(codes)
    assert index.words > 100 and len(index) == len(codes)  # words grow with the codes
    asked = rng.choice(len(codes), 400, replace=False)
    queries = codes[asked].copy()
    flips = rng.integers(0, 256, (400, 6))
    bits = np.unpackbits(queries, axis=1)
    np.put_along_axis(bits, flips, 1 - np.take_along_axis(bits, flips, 1), 1)
    queries = np.packbits(bits, axis=1)
    distances, ids = index.search(queries, 4)
    assert (ids[:, 0] == asked).mean() >= 0.9
    found = ids >= 0
    assert (hamming(codes[ids[found]], np.repeat(queries, 4, axis=0).reshape(400, 4, 32)[found])
            == distances[found]).all()
    assert (np.diff(np.where(found, distances, np.iinfo(np.int32).max), axis=1) >= 0).all()  # nearest first


def test_scanning_more_words_finds_more_of_the_true_nearest():
    rng = np.random.default_rng(4)
    codes = clustered_codes(rng, 40_000)
    queries = clustered_codes(np.random.default_rng(4), 300)  # the same patterns, other codes
    index = VocabularyCodes(codes)
    _, truth = neighbours.binary_codes(codes, 10**9, 1, 1, 1).search(queries, 8)  # FAISS's exact scan

    def recall(probes: int) -> float:
        _, ids = index.search(queries, 8, probes)
        return np.mean([len(set(a) & set(b)) / 8 for a, b in zip(ids.tolist(), truth.tolist())])

    assert recall(2) < recall(8) < recall(32)


def test_a_copys_points_find_their_design_when_the_library_is_filed_by_words(monkeypatch):
    monkeypatch.setattr(neighbours, "VOCABULARY_FROM", 10_000)
    monkeypatch.setattr(neighbours, "EXACT_CODES_BELOW", 10_000)
    rng = np.random.default_rng(5)
    designs = [clustered_codes(rng, 250) for _ in range(60)]
    points = [rng.integers(0, 512, (250, 2)).astype(np.float32) for _ in designs]
    rows = np.stack([pack(xy, codes) for xy, codes in zip(points, designs)])
    local = LocalIndex.build(rows, np.ones(len(rows), bool))
    assert isinstance(local.index, VocabularyCodes)
    # Design 17 turned 90 degrees: the same descriptors at moved points.
    turned = np.stack([512 - points[17][:, 1], points[17][:, 0]], axis=1)
    matched = local.matches(designs[17], turned, at_least=8)
    asked, stored = matched[17]
    assert max(matched, key=lambda owner: len(matched[owner][0])) == 17 and len(asked) >= 240
    # Each correspondence pairs a turned point with where that point was drawn.
    assert (stored == np.stack([asked[:, 1], 512 - asked[:, 0]], axis=1)).all(axis=1).mean() >= 0.95


def test_searches_scanning_different_numbers_of_words_at_once_answer_as_each_alone():
    rng = np.random.default_rng(6)
    codes = clustered_codes(rng, 30_000)
    queries = clustered_codes(np.random.default_rng(6), 200)
    index = VocabularyCodes(codes)
    alone = {probes: index.search(queries, 8, probes) for probes in (2, 32)}
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda probes: (probes, index.search(queries, 8, probes)), [2, 32] * 8))
    for probes, (distances, ids) in answers:
        assert (distances == alone[probes][0]).all() and (ids == alone[probes][1]).all()
