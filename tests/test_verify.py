"""Verification: edited copies are geometrically verified, with the matched region boxed."""
import pytest
from PIL import Image

from engine.core import Engine
from features import HsvHistogram
from features.orb import OrbFeatures
from conftest import encode, make_design
from fakes import CountingExtractor


@pytest.fixture
def engine(cfg, collection):
    engine = Engine(cfg, extractors={"resnet": CountingExtractor(), "hsv": HsvHistogram(), "orb": OrbFeatures()})
    engine.reindex()
    return engine


def flat(design: Image.Image) -> Image.Image:
    page = Image.new("RGB", design.size, "white")
    page.paste(design, mask=design.getchannel("A"))
    return page


EDITS = {
    "crop": lambda im: im.crop((40, 40, 300, 300)),
    "rotate": lambda im: im.rotate(15, expand=True, fillcolor="white"),
    "mirror": lambda im: im.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
    "canvas": lambda im: _on_canvas(im),
}


def _on_canvas(im):
    big = Image.new("RGB", (700, 600), "white")
    big.paste(im, (300, 200))
    return big


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_edited_copy_is_verified_as_a_duplicate(engine, collection, edit):
    query = EDITS[edit](flat(collection["design_08.png"]))
    top = engine.search_bytes(encode(query), top_k=5)[0]
    assert top.path == "design_08.png"
    assert top.verdict in ("duplicate", "exact") and top.inliers >= 15
    assert top.mirrored == (edit == "mirror")


def test_box_locates_the_matched_region_in_the_result(engine, collection):
    query = flat(collection["design_09.png"]).crop((0, 0, 200, 200))  # the top-left part
    top = engine.search_bytes(encode(query), top_k=3)[0]
    assert top.path == "design_09.png"
    x0, y0, x1, y1 = top.box
    assert x0 < 60 and y0 < 60 and 120 < x1 <= 215 and 120 < y1 <= 215


def test_a_different_design_is_not_called_a_duplicate(engine, collection, cfg):
    unrelated = flat(make_design(999))
    results = engine.search_bytes(encode(unrelated), top_k=12)
    assert all(r.verdict == "similar" for r in results)


def test_confidence_ranks_every_verified_copy_above_any_unverified_lookalike():
    # Pairs from many queries are ranked together (duplicate report, micro-AP): a
    # palette-twin with cosine 0.99 must not outrank a barely verified copy.
    from engine.verdict import DUPLICATE_INLIERS, confidence
    from engine.verify import Verification

    barely = Verification(inliers=DUPLICATE_INLIERS, box=(0, 0, 1, 1), mirrored=False, matches=DUPLICATE_INLIERS)
    strongly = Verification(inliers=4 * DUPLICATE_INLIERS, box=(0, 0, 1, 1), mirrored=False, matches=100)
    unverified = Verification(inliers=9, box=(0, 0, 1, 1), mirrored=False, matches=80)
    assert confidence(0.2, barely) > confidence(0.99, unverified)
    assert confidence(0.2, strongly) > confidence(0.2, barely)
    assert confidence(0.9, unverified) > confidence(0.5, unverified)
