"""Duplicate groups over the whole library: planted copies are grouped, nothing else is."""
import json

import pytest
from PIL import Image

from engine import Engine
from features.hsv import HsvHistogram
from features.orb import MirroredOrbFeatures, OrbFeatures
from conftest import flat
from fakes import CountingExtractor


@pytest.fixture
def library(cfg, collection):
    """The collection plus planted copies of two designs."""
    big = flat(collection["design_03.png"]).resize((640, 640))
    big.save(cfg.images / "design_03_large.png")
    flat(collection["design_03.png"]).rotate(12, expand=True, fillcolor="white").save(cfg.images / "design_03_rotated.jpg")
    (cfg.images / "copies").mkdir()
    flat(collection["design_07.png"]).crop((30, 30, 300, 300)).save(cfg.images / "copies" / "design_07_crop.png")
    flat(collection["design_05.png"]).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(cfg.images / "design_05_mirror.png")
    extractors = {"resnet": CountingExtractor(), "hsv": HsvHistogram(), "orb": OrbFeatures(),
                  "orb_mirror": MirroredOrbFeatures()}
    engine = Engine(cfg, extractors=extractors)
    engine.reindex()
    return engine


def test_planted_copies_form_groups_with_a_suggested_keeper(library):
    groups = {frozenset(g.paths): g for g in library.duplicates()}
    three = frozenset({"design_03.png", "design_03_large.png", "design_03_rotated.jpg"})
    two = frozenset({"design_07.png", "copies/design_07_crop.png"})
    mirrored = frozenset({"design_05.png", "design_05_mirror.png"})
    assert three in groups and two in groups and mirrored in groups
    assert groups[three].keep == "design_03_large.png"  # the largest resolution
    assert all(p.verdict in ("exact", "duplicate") for p in groups[three].pairs)
    grouped = {p for g in groups.values() for p in g.paths}
    assert not grouped - three - two - mirrored  # no unrelated design is pulled in


def test_duplicates_command_line_json_and_csv(library, cfg):
    from test_cli import run

    result = run("duplicates", "--images", cfg.images, "--cache", cfg.cache, "--json")
    assert result.returncode == 0, result.stderr
    groups = json.loads(result.stdout.strip().splitlines()[-1])["groups"]
    assert {"paths", "pairs", "keep"} <= set(groups[0])
    assert {"a", "b", "score", "verdict"} <= set(groups[0]["pairs"][0])
    csv = run("duplicates", "--images", cfg.images, "--cache", cfg.cache, "--csv").stdout.splitlines()
    assert csv[0] == "group,path,suggestion" and any("design_03_large.png,keep" in line for line in csv)


def test_any_threshold_filters_the_cached_report_exactly(library):
    from engine.match.duplicates import find_groups

    for threshold in (0.5, 0.8, 0.95):
        cached = {frozenset(g.paths) for g in library.duplicates(threshold)}
        groups = find_groups(library.snapshot, threshold, previews=library.report.previews(library.snapshot))
        fresh = {frozenset(g.paths) for g in groups}
        assert cached == fresh


class UnrelatedVectors:
    """A network feature that sees every picture as unrelated to every other (random rows),
    so no pair is anyone's fused neighbour."""

    name, dim = "clip", 512

    def fingerprint(self) -> str:
        return "random-rows"

    def embed(self, images):
        import numpy as np

        from features import l2_normalize

        rng = np.random.default_rng(len(images))
        return l2_normalize(rng.standard_normal((len(images), self.dim)))


def test_a_resized_icon_is_grouped_by_its_thumbprint_even_when_no_fused_neighbour_leads_to_it(cfg, collection):
    from features.thumbprint import ThumbprintFeatures

    flat(collection["design_04.png"]).resize((120, 120)).save(cfg.images / "design_04_small.png")
    engine = Engine(cfg, extractors={"clip": UnrelatedVectors(), "hsv": HsvHistogram(),
                                     "thumbprint": ThumbprintFeatures()})
    engine.reindex()
    groups = [frozenset(g.paths) for g in engine.duplicates()]
    assert groups == [frozenset({"design_04.png", "design_04_small.png"})]


def test_the_keeper_is_the_original_not_a_copy_on_a_bigger_canvas_nor_an_upload(cfg, collection):
    original = collection["design_06.png"]
    canvas = Image.new("RGBA", (700, 700), (0, 0, 0, 0))
    canvas.paste(original.rotate(20, expand=True), (150, 120))
    canvas.save(cfg.images / "design_06_on_canvas.png")
    (cfg.images / "uploads" / "2026-01-01").mkdir(parents=True)
    flat(collection["design_08.png"]).resize((640, 640)).save(cfg.images / "uploads" / "2026-01-01" / "bigger.png")
    extractors = {"resnet": CountingExtractor(), "hsv": HsvHistogram(), "orb": OrbFeatures(),
                  "orb_mirror": MirroredOrbFeatures()}
    engine = Engine(cfg, extractors=extractors)
    engine.reindex()
    groups = {frozenset(g.paths): g for g in engine.duplicates()}
    canvas_group = groups[frozenset({"design_06.png", "design_06_on_canvas.png"})]
    assert canvas_group.keep == "design_06.png"
    upload_group = groups[frozenset({"design_08.png", "uploads/2026-01-01/bigger.png"})]
    assert upload_group.keep == "design_08.png"
