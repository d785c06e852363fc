"""Icons too small for local features: thumbprint twins still make a duplicate verdict."""
import io

import pytest
from PIL import Image, ImageDraw

from conftest import sample, weight_free_engine

# Real openclipart designs, shrunk to the 64 px icons studios keep by the thousand.
ICONS = ["arrow01_4.png", "arrow07_1.png", "christmas_tree_mo_01.png", "cloud.png",
         "fall_coloured_leaf_geral_01.png", "red_flower_01.png", "sunwheel_vikingdread_01.png", "fc14.png"]
OUTSIDE = ["arrow12_1.png", "jigsaw_red_01.png", "round_l.png", "olivier_one_bw_jean-vict_01.png"]


def icon(name: str, side: int = 64) -> Image.Image:
    image = sample(name)
    image.thumbnail((side, side))
    return image


def jpeg(image: Image.Image, quality: int = 60) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return out.getvalue()


@pytest.fixture
def engine(cfg):
    return weight_free_engine(cfg, {name: icon(name) for name in ICONS})


@pytest.mark.parametrize("quality", [50, 75])
@pytest.mark.parametrize("name", ICONS)
def test_a_resaved_icon_is_called_a_duplicate(engine, name, quality):
    top = engine.search_bytes(jpeg(icon(name), quality), top_k=3)[0]
    assert top.path == name and top.verdict in ("duplicate", "exact")


def test_an_icon_placed_on_a_larger_canvas_is_called_a_duplicate(engine):
    page = Image.new("RGB", (160, 120), "white")
    page.paste(icon("fc14.png"), (70, 30))
    top = engine.search_bytes(jpeg(page, 90), top_k=3)[0]
    assert top.path == "fc14.png" and top.verdict in ("duplicate", "exact")


def test_plain_shapes_of_other_colours_are_not_twins(cfg):
    # In grey a red disc is any round thing; its colours must agree too.
    def disc(colour):
        image = Image.new("RGB", (64, 64), "white")
        ImageDraw.Draw(image).ellipse((4, 4, 60, 60), fill=colour)
        return image

    engine = weight_free_engine(cfg, {"blue_ball.png": disc((40, 70, 200))}, points=False)
    # A copy either way: this small a disc's JPEG sits at the edge of the 'exact' rule's colours.
    assert engine.search_bytes(jpeg(disc((40, 70, 200)), 90), top_k=1)[0].verdict in ("exact", "duplicate")
    assert engine.search_bytes(jpeg(disc((220, 30, 30)), 90), top_k=1)[0].verdict == "similar"


@pytest.mark.parametrize("name", OUTSIDE)
def test_an_icon_not_in_the_collection_is_never_called_a_duplicate(engine, name):
    results = engine.search_bytes(jpeg(icon(name)), top_k=8)
    assert results and all(r.verdict == "similar" for r in results)


def _ring(shade: int, width: int = 3, size: int = 90) -> Image.Image:
    picture = Image.new("RGB", (size, size), "white")
    ImageDraw.Draw(picture).ellipse((5, 5, size - 6, size - 6), outline=(shade, shade, shade), width=width)
    return picture


def test_a_faint_outline_is_not_the_twin_of_a_bold_one_of_the_same_shape():
    """Correlation ignores contrast: the ink each thumbprint holds must agree too."""
    import numpy as np

    from engine.match.verify import twin_checks
    from features import thumbprint

    bold, resized, faint = _ring(0), _ring(0, width=6, size=180), _ring(200)
    stored = np.stack([thumbprint.grid(bold), thumbprint.grid(faint)])
    units = thumbprint.units(stored)
    assert float(units[0] @ units[1]) > 0.97  # alike as far as correlation can tell
    twins = twin_checks(thumbprint.grid(resized), units, inks=thumbprint.ink(stored))
    assert set(twins) == {0}
    assert set(twin_checks(thumbprint.grid(resized), units)) == {0, 1}  # what the ink rules out


def test_blank_designs_are_copies_of_each_other_and_of_nothing_else(cfg):
    """A wholly transparent export and an empty white canvas show the same (blank) page:
    one design for a search and for the duplicate groups; a drawn design is never their twin."""
    Image.new("RGBA", (500, 500), (0, 0, 0, 0)).save(cfg.images / "transparent_export.png")
    Image.new("RGB", (300, 200), "white").save(cfg.images / "empty_canvas.png")
    engine = weight_free_engine(cfg, {name: icon(name) for name in ICONS[:3]})

    blank = engine.search_bytes(jpeg(Image.new("RGB", (120, 120), "white"), 90), top_k=5)
    copies = {r.path for r in blank if r.verdict in ("duplicate", "exact")}
    assert copies == {"transparent_export.png", "empty_canvas.png"}
    groups = [sorted(g.paths) for g in engine.duplicates()]
    assert ["empty_canvas.png", "transparent_export.png"] in groups
    assert not any(set(g) & set(ICONS) for g in groups)
    drawn = engine.search_bytes(jpeg(icon(ICONS[0]), 75), top_k=5)
    assert drawn[0].path == ICONS[0]
    assert all(r.verdict == "similar" for r in drawn if r.path not in ICONS)
