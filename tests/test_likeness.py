"""Copies short of twins: a design shrunk small or photographed on paper keeps its shape at
24 px better than its look-alikes keep it, and ranks its original first."""
import numpy as np
import pytest
from PIL import Image

from conftest import encode, sample, weight_free_engine
from features import thumbprint

# Six star polygons from openclipart, one style: alike to a network and to local points.
STARS = ["star_37pt16step.png", "star_41pt14step.png", "star_43pt15step.png", "star_45pt16step.png",
         "star_47pt18step.png", "star_49pt16step.png"]


def correlation(a: Image.Image, b: Image.Image) -> float:
    rows = thumbprint.units(np.stack([thumbprint.grid(a), thumbprint.grid(b)]))
    return float(rows[0] @ rows[1])


@pytest.mark.parametrize("name", ["cloud.png", "arrow07_1.png", "red_flower_01.png"])
def test_a_design_on_grey_paper_has_the_thumbprint_of_the_design_on_white(name):
    picture = sample(name)
    paper = Image.new("RGB", (picture.width + 60, picture.height + 60), (214, 212, 205))
    paper.paste(picture.convert("RGB"), (30, 30), mask=picture.convert("L").point(lambda v: 255 if v < 245 else 0))
    assert correlation(paper, picture) >= 0.95


def test_a_yellow_flag_on_a_larger_canvas_is_still_a_twin_of_itself(cfg):
    # Yellow is light in grey: a coloured page is the design's own, never taken for paper.
    flag = Image.new("RGB", (300, 200), (255, 221, 0))
    for top in (60, 90, 120):
        flag.paste((218, 37, 29), (0, top, 300, top + 14))
    engine = weight_free_engine(cfg, {"yellow_flag.png": flag}, points=False)
    canvas = Image.new("RGB", (520, 400), "white")
    canvas.paste(flag, (110, 100))
    top = engine.search_bytes(encode(canvas), top_k=1)[0]
    assert top.path == "yellow_flag.png" and top.verdict == "duplicate"


def test_a_plain_light_grey_design_keeps_its_own_thumbprint():
    square = Image.new("RGB", (120, 120), (200, 200, 200))
    assert thumbprint.grid(square).max() < thumbprint.PAGE  # its grey is its ink, not a page


@pytest.fixture
def stars(cfg):
    return weight_free_engine(cfg, {name: sample(name) for name in STARS})


@pytest.mark.parametrize("name", STARS)
def test_a_star_shrunk_small_ranks_its_original_first_among_its_lookalikes(stars, name):
    picture = sample(name)
    small = picture.resize((picture.width * 3 // 5, picture.height * 3 // 5), Image.Resampling.BICUBIC)
    results = stars.search_bytes(encode(small), top_k=len(STARS))
    assert results[0].path == name


def test_a_star_shrunk_small_finds_the_sheet_it_sits_on_before_single_lookalikes(cfg):
    sheet = Image.new("RGB", (560, 560), "white")
    for i, name in enumerate(["star_41pt14step.png", "cloud.png", "red_flower_01.png", "arrow07_1.png"]):
        part = sample(name).resize((240, 240), Image.Resampling.BICUBIC)
        sheet.paste(part, (20 + (i % 2) * 280, 20 + (i // 2) * 280))
    lookalikes = {name: sample(name).resize((240, 240), Image.Resampling.BICUBIC)
                  for name in STARS if name != "star_41pt14step.png"}
    engine = weight_free_engine(cfg, {"sheet.png": sheet, **lookalikes})
    small = sample("star_41pt14step.png").resize((80, 80), Image.Resampling.BICUBIC)  # a third: no points
    assert engine.search_bytes(encode(small), top_k=len(STARS))[0].path == "sheet.png"
