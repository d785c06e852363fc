"""A turned copy of a design with few corners (a flag of stripes, a solid pictogram):
no local points survive the turn, and the upright thumbprint no longer correlates,
but the thumbprint turned by the ink's axis does, and the drawings then coincide."""
import io
import math
from dataclasses import replace

import pytest
from PIL import Image, ImageDraw

from conftest import weight_free_engine
from engine.match import turned


def flag(stripes, size=(360, 240)) -> Image.Image:
    """Horizontal stripes of the given colours and relative heights."""
    picture = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(picture)
    total, top = sum(h for _, h in stripes), 0.0
    for colour, share in stripes:
        height = size[1] * share / total
        draw.rectangle((0, round(top), size[0] - 1, round(top + height) - 1), fill=colour)
        top += height
    return picture


THREE = [((200, 20, 30), 1), ((255, 255, 255), 1), ((10, 10, 10), 1)]  # a tricolour: red, white, black
OTHER = [((200, 20, 30), 1), ((255, 255, 255), 2), ((10, 10, 10), 1)]  # the same colours, a wider middle


def jpeg(picture: Image.Image) -> bytes:
    out = io.BytesIO()
    picture.save(out, "JPEG", quality=85)
    return out.getvalue()


def turned_on_page(picture: Image.Image, degrees: float) -> Image.Image:
    return picture.rotate(degrees, expand=True, fillcolor="white", resample=Image.Resampling.BICUBIC)


@pytest.fixture
def engine(cfg):
    flag(THREE).save(cfg.images / "tricolour.png")
    flag([((20, 60, 180), 1), ((250, 210, 0), 1)]).save(cfg.images / "bicolour.png")
    suitcase = Image.new("RGB", (300, 220), "white")
    draw = ImageDraw.Draw(suitcase)
    draw.rounded_rectangle((10, 60, 290, 210), radius=25, fill="black")
    draw.rounded_rectangle((110, 10, 190, 70), radius=15, outline="black", width=14)
    return weight_free_engine(cfg, {"suitcase.png": suitcase})


@pytest.mark.parametrize("degrees", [-35, 20, 160])
def test_a_turned_flag_is_called_a_copy_of_its_original(engine, degrees):
    results = engine.search_bytes(jpeg(turned_on_page(flag(THREE), degrees)), top_k=3)
    assert results[0].path == "tricolour.png" and results[0].verdict == "duplicate"
    assert all(r.verdict == "similar" for r in results[1:])


@pytest.mark.parametrize("degrees", [-25, 30])
def test_a_turned_pictogram_is_called_a_copy_of_its_original(engine, cfg, degrees):
    suitcase = Image.open(cfg.images / "suitcase.png")
    results = engine.search_bytes(jpeg(turned_on_page(suitcase, degrees)), top_k=3)
    assert results[0].path == "suitcase.png" and results[0].verdict == "duplicate"


@pytest.mark.parametrize("degrees, form", [(90, "PNG"), (-90, "PNG"), (90, "JPEG"), (-90, "JPEG")])
def test_a_tricolour_turned_a_quarter_is_aligned_the_right_way_round(cfg, degrees, form):
    """Green, white, orange: mirrored, it is the same flag turned half round, so the turn
    that is wrong by half a turn also correlates perfectly once its thumbprint is mirrored;
    aligned that way round, the drawings (green onto orange) would not coincide."""
    tricolour = flag([((22, 155, 98), 1), ((255, 255, 255), 1), ((255, 136, 62), 1)], size=(240, 480))
    tricolour = tricolour.rotate(90, expand=True)  # stripes side by side, twice as wide as high
    engine = weight_free_engine(cfg, {"vertical.png": tricolour})
    turned_copy = io.BytesIO()
    # Its orange's saturation (0.757) lies on a colour-bin edge that a JPEG's re-encoding crosses.
    turned_on_page(tricolour, degrees).save(turned_copy, form)
    top = engine.search_bytes(turned_copy.getvalue(), top_k=1)[0]
    assert top.path == "vertical.png" and top.verdict == "duplicate"


def test_without_turning_the_thumbprint_the_turned_flag_is_only_similar(engine, monkeypatch):
    """What the turned twin adds: neither points nor the upright thumbprint find this copy."""
    monkeypatch.setattr(turned, "CANDIDATES", 0)
    results = engine.search_bytes(jpeg(turned_on_page(flag(THREE), 20)), top_k=3)
    assert all(r.verdict == "similar" for r in results)


def test_a_turned_flag_of_other_stripes_is_not_a_copy(engine):
    results = engine.search_bytes(jpeg(turned_on_page(flag(OTHER), 20)), top_k=3)
    assert all(r.verdict == "similar" for r in results)


def starred(x: int, r: float = 14) -> Image.Image:
    """The tricolour with a white star in its red stripe, centred at `x`."""
    picture = flag(THREE)
    points = [(x + r * math.cos(math.pi / 2 + k * 4 * math.pi / 5), 40 - r * math.sin(math.pi / 2 + k * 4 * math.pi / 5))
              for k in range(5)]
    ImageDraw.Draw(picture).polygon(points, fill="white")
    return picture


def test_a_turned_sibling_with_its_own_drawing_is_not_a_copy(cfg):
    """Two flags on one template, each with its star elsewhere: their thumbprints correlate
    like twins', turned or not; turned onto each other, each keeps drawing of its own."""
    engine = weight_free_engine(cfg, {"star_left.png": starred(60)})
    assert engine.search_bytes(jpeg(turned_on_page(starred(60), 20)), top_k=1)[0].verdict == "duplicate"
    assert engine.search_bytes(jpeg(turned_on_page(starred(300), 20)), top_k=1)[0].verdict == "similar"


def test_a_turned_twin_ranks_below_an_upright_one_as_close():
    from engine.match.verdict import confidence
    from engine.match.verify import NONE

    upright = replace(NONE, twin=0.985)
    assert confidence(0.8, upright) > confidence(0.8, replace(upright, turned=True, transform=(1, 0, 0, 0, 1, 0)))


def test_an_upright_copy_outranks_a_design_that_is_its_turned_twin(cfg):
    """The same drawing turned a quarter (an undo arrow beside a redo arrow) is a turned
    twin of the query too; the query's own upright original comes first."""
    arrow = Image.new("RGB", (240, 120), "white")
    ImageDraw.Draw(arrow).polygon([(10, 40), (170, 40), (170, 10), (230, 60), (170, 110), (170, 80), (10, 80)],
                                  fill=(60, 60, 60))
    engine = weight_free_engine(cfg, {"right.png": arrow, "up.png": arrow.rotate(90, expand=True, fillcolor="white")})
    results = engine.search_bytes(jpeg(arrow), top_k=2)
    assert [r.path for r in results] == ["right.png", "up.png"]
    assert results[0].verdict in ("exact", "duplicate")
