"""Verification: edited copies are geometrically verified, with the matched region boxed."""
import cv2
import numpy as np
import pytest
from PIL import Image

from engine import Engine
from engine.match.verdict import confidence
from engine.match.verify import Verification, geometric_check
from features.hsv import HsvHistogram
from features.orb import OrbFeatures
from conftest import encode, flat, make_design
from fakes import CountingExtractor


@pytest.fixture
def engine(cfg, collection):
    engine = Engine(cfg, extractors={"resnet": CountingExtractor(), "hsv": HsvHistogram(), "orb": OrbFeatures()})
    engine.reindex()
    return engine


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
    from engine.match.verdict import DUPLICATE_INLIERS, confidence
    from engine.match.verify import Verification

    barely = Verification(inliers=DUPLICATE_INLIERS, box=(0, 0, 1, 1), mirrored=False, matches=DUPLICATE_INLIERS)
    strongly = Verification(inliers=4 * DUPLICATE_INLIERS, box=(0, 0, 1, 1), mirrored=False, matches=100)
    unverified = Verification(inliers=9, box=(0, 0, 1, 1), mirrored=False, matches=80)
    assert confidence(0.2, barely) > confidence(0.99, unverified)
    assert confidence(0.2, strongly) > confidence(0.2, barely)
    assert confidence(0.9, unverified) > confidence(0.5, unverified)


def test_a_few_agreeing_points_outrank_a_lookalike_of_sparse_line_art():
    """A thin design under a watermark keeps a dozen of its points; any sparse drawing on
    white scores near 1 on colour and shape.  The points rank it first, without making
    it a copy; chance agreement (a small share of many matches) ranks nothing."""
    from engine.match.verdict import SIMILAR, confidence, verdict
    from engine.match.verify import NONE, Verification

    kept = Verification(inliers=12, box=(0, 0, 1, 1), mirrored=False, matches=30)
    chance = Verification(inliers=9, box=(0, 0, 1, 1), mirrored=False, matches=80)
    assert confidence(0.85, kept) > confidence(0.997, NONE)
    assert confidence(0.85, chance) < confidence(0.997, NONE)
    assert verdict({"hsv": 0.85}, 0.85, kept) == SIMILAR


def test_more_agreeing_points_rank_a_copy_above_its_siblings():
    """A rotated thin star among stars that differ only in their number of points: all score
    about alike, and the copy's own points, though under a third of its matches, tell it
    from its siblings (bench/quality.py, seed 2's rotated star_38pt15step)."""
    own = Verification(inliers=23, box=(0, 0, 1, 1), mirrored=False, matches=79)
    sibling = Verification(inliers=13, box=(0, 0, 1, 1), mirrored=False, matches=68)
    assert confidence(0.971, own) > confidence(0.978, sibling)


def _correspondences(mapping: np.ndarray, seed: int = 0, points: int = 80, outliers: int = 40):
    """Points of a 512 px picture and where `mapping` (3x3) takes them, plus chance matches."""
    rng = np.random.default_rng(seed)
    src = rng.uniform(20, 490, (points + outliers, 2)).astype(np.float32)
    dst = cv2.perspectiveTransform(src[None], mapping)[0] + rng.normal(0, 0.7, src.shape).astype(np.float32)
    dst[points:] = rng.uniform(0, 512, (outliers, 2))
    return src, dst


def test_a_photo_at_an_angle_is_aligned_by_its_perspective_and_keeps_its_points():
    corners = np.float32([[0, 0], [512, 0], [512, 512], [0, 512]])
    photo = cv2.getPerspectiveTransform(corners, np.float32([[40, 20], [480, 50], [500, 470], [15, 495]]))
    check = geometric_check(*_correspondences(photo))
    assert len(check.transform) == 9  # the 3x3 perspective, not the similarity
    assert check.inliers >= 75  # of 80 true matches; a similarity keeps far fewer within 8 px


def test_a_photo_at_an_angle_is_aligned_among_many_chance_matches():
    """A busy candidate: a dozen chance matches for each right one (repeated corners, shared
    frames).  The perspective is still found, every time, not by luck of the draw."""
    corners = np.float32([[0, 0], [512, 0], [512, 512], [0, 512]])
    photo = cv2.getPerspectiveTransform(corners, np.float32([[40, 20], [480, 50], [500, 470], [15, 495]]))
    for seed in range(6):
        check = geometric_check(*_correspondences(photo, seed=seed, outliers=1000))
        assert len(check.transform) == 9, seed
        assert check.inliers >= 75, seed


def test_plain_edits_keep_the_similarity_and_wild_perspectives_are_refused():
    angle = np.deg2rad(20)
    similarity = np.array([[0.8 * np.cos(angle), -0.8 * np.sin(angle), 60],
                           [0.8 * np.sin(angle), 0.8 * np.cos(angle), 30], [0, 0, 1]])
    assert len(geometric_check(*_correspondences(similarity)).transform) == 6
    corners = np.float32([[0, 0], [512, 0], [512, 512], [0, 512]])
    wild = cv2.getPerspectiveTransform(corners, np.float32([[200, 0], [300, 0], [512, 512], [0, 512]]))
    wild_check = geometric_check(*_correspondences(wild))
    assert wild_check.transform is None or len(wild_check.transform) == 6  # no photo bends a square so


def test_the_local_index_answers_many_pictures_at_once_as_it_answers_each(engine, collection):
    """The library-wide pass asks for many pictures' points in one search: same answers."""
    from engine.match.verify import MIN_MATCHES, Points, view_queries

    local = engine.snapshot.local
    pictures = [flat(collection[name]) for name in ("design_01.png", "design_04.png", "design_07.png")]
    queries = [q for picture in pictures for q in view_queries(Points.of_image(picture))]
    queries.insert(2, (np.zeros((0, 32), np.uint8), np.zeros((0, 2), np.float32)))  # a view with no points
    together = local.matches_many(queries, at_least=MIN_MATCHES)
    assert len(together) == len(queries) and together[2] == {}
    assert any(together)  # each design finds itself in the index
    for (descriptors, xy), answer in zip(queries, together):
        alone = local.matches(descriptors, xy, at_least=MIN_MATCHES)
        assert sorted(alone) == sorted(answer)
        for row in alone:
            assert all(np.array_equal(a, b) for a, b in zip(alone[row], answer[row]))
