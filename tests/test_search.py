"""Search: an edited copy of a design finds the original first, with a per-feature breakdown."""

import pytest
from PIL import Image

from engine import Engine
from features.hsv import HsvHistogram
from conftest import encode
from fakes import CountingExtractor


@pytest.fixture
def engine(cfg, collection):
    engine = Engine(cfg, extractors={"resnet": CountingExtractor(), "hsv": HsvHistogram()})
    engine.reindex()
    return engine


def edits(design: Image.Image) -> dict[str, bytes]:
    return {
        "same file": encode(design),
        "re-saved as JPEG": encode(design, "JPEG", quality=80),
        "half size": encode(design.resize((160, 160))),
        "double size": encode(design.resize((640, 640))),
    }


@pytest.mark.parametrize("edit", ["same file", "re-saved as JPEG", "half size", "double size"])
def test_edited_copy_ranks_its_original_first(engine, collection, edit):
    results = engine.search_bytes(edits(collection["design_05.png"])[edit], top_k=5)
    assert results[0].path == "design_05.png"
    assert results[0].score > results[1].score
    assert set(results[0].scores) == {"clip", "resnet", "hsv"}
    assert results[0].scores["clip"] is None  # no CLIP weights here: reported as absent


def test_same_bytes_are_an_exact_copy(engine, collection):
    top = engine.search_bytes(encode(collection["design_03.png"]), top_k=3)
    assert top[0].verdict == "exact" and top[1].verdict != "exact"


def test_weights_change_the_ranking_without_reindexing(engine, collection):
    query = encode(collection["design_07.png"])
    colour_only = engine.search_bytes(query, top_k=12, weights={"clip": 0, "resnet": 0, "hsv": 1})
    assert all(r.score == pytest.approx(r.scores["hsv"], abs=1e-5) for r in colour_only)
    shape_only = engine.search_bytes(query, top_k=12, weights={"clip": 0, "resnet": 1, "hsv": 0})
    assert all(r.score == pytest.approx(r.scores["resnet"], abs=1e-5) for r in shape_only)


def test_scores_are_sorted_and_top_k_respected(engine, collection):
    results = engine.search_bytes(encode(collection["design_01.png"]), top_k=4)
    assert len(results) == 4
    assert [r.score for r in results] == sorted((r.score for r in results), reverse=True)


def test_exact_means_the_same_picture_and_an_edited_copy_is_a_duplicate(cfg, collection):
    from features.orb import MirroredOrbFeatures, OrbFeatures

    engine = Engine(cfg, extractors={"resnet": CountingExtractor(), "hsv": HsvHistogram(), "orb": OrbFeatures(),
                                     "orb_mirror": MirroredOrbFeatures()})
    engine.reindex()
    design = collection["design_04.png"]
    resaved = encode(design, compress_level=1)  # other bytes, the same pixels
    assert resaved != (engine.config.images / "design_04.png").read_bytes()
    assert engine.search_bytes(resaved, top_k=1)[0].verdict == "exact"
    canvas = Image.new("RGBA", (520, 520), (0, 0, 0, 0))
    canvas.paste(design.rotate(20, expand=True), (60, 50))
    found = engine.search_bytes(encode(canvas), top_k=3)
    assert found[0].path == "design_04.png" and found[0].verdict == "duplicate"
    smaller = engine.search_bytes(encode(design.resize((300, 300))), top_k=1)[0]
    assert smaller.path == "design_04.png" and smaller.verdict == "duplicate"


def test_a_fused_score_alone_makes_a_copy_only_for_a_network_trusted_with_it():
    from engine.match.verdict import verdict
    from engine.match.verify import NONE

    scores = {"resnet": 0.95, "hsv": 0.97}
    assert verdict(scores, 0.96, NONE) == "duplicate"
    # The bundled EfficientNet-Lite0: its 0.96 is a lookalike as often as a copy.
    assert verdict(scores, 0.96, NONE, score_networks=frozenset()) == "similar"


def test_the_bundled_shape_network_is_not_trusted_with_score_only_copies(cfg, collection):
    engine = Engine(cfg)  # no downloaded weights: EfficientNet-Lite0 provides shape
    engine.reindex()
    assert "resnet" in engine.snapshot.features and engine.snapshot.score_networks == frozenset()
