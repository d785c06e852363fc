"""Regions: a single design finds the sheet it sits on, with its box, one result per sheet."""
import pytest
from PIL import Image, ImageDraw, ImageOps

from engine import Engine
from engine.index import neighbours
from features.regions import MAX_REGIONS, propose
from features.hsv import HsvHistogram
from conftest import SAMPLES, encode, make_design, sample, weight_free_engine
from fakes import CountingExtractor


def sheet_of(seeds, cell=300):
    """Designs side by side on a white sheet; returns it and each design's box."""
    sheet = Image.new("RGB", (cell * 2 + 60, cell * 2 + 60), "white")
    boxes = {}
    for i, seed in enumerate(seeds):
        x, y = 20 + (i % 2) * (cell + 20), 20 + (i // 2) * (cell + 20)
        design = make_design(seed, size=cell)
        sheet.paste(design, (x, y), mask=design.getchannel("A"))
        boxes[seed] = design.getchannel("A").getbbox()
        boxes[seed] = (x + boxes[seed][0], y + boxes[seed][1], x + boxes[seed][2], y + boxes[seed][3])
    return sheet, boxes


def iou(a, b):
    x0, y0, x1, y1 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0, x1 - x0) * max(0, y1 - y0)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_proposals_find_separate_designs_and_skip_single_ones():
    sheet, _ = sheet_of([301, 302, 303, 304])
    assert 4 <= len(propose(sheet.resize((512, 512)))) <= MAX_REGIONS
    single = Image.new("RGB", (300, 300), "white")
    single.paste((200, 30, 30), (50, 50, 250, 250))
    assert propose(single) == []


@pytest.mark.parametrize("library", ["scanned whole", "past a whole scan's size"])
def test_design_on_a_sheet_is_found_with_its_box(cfg, collection, library, monkeypatch):
    if library != "scanned whole":  # images and regions searched through their coded indexes
        monkeypatch.setattr(neighbours, "EXACT_SCAN_VALUES", 1)
    sheet, boxes = sheet_of([301, 302, 303, 304])
    sheet.save(cfg.images / "sheet.png")
    clip, resnet = CountingExtractor("clip"), CountingExtractor("resnet")
    engine = Engine(cfg, extractors={"clip": clip, "resnet": resnet, "hsv": HsvHistogram()})
    engine.reindex()
    try:
        engine.snapshot.region_index.vectors()
        coded = False
    except TypeError:  # an index of codes keeps no vectors
        coded = True
    assert coded == (library != "scanned whole")
    sheet_sha = next(e.sha256 for e in engine.snapshot.data.entries if e.path == "sheet.png")
    regions = engine.snapshot.data.regions.parents.count(sheet_sha)
    assert 4 <= regions <= MAX_REGIONS
    # Regions are embedded with every fused feature, as whole images are.
    images, all_regions = len(engine.snapshot.data), len(engine.snapshot.data.regions)
    assert (clip.embedded, resnet.embedded) == (images + all_regions, images + all_regions)
    design = make_design(301, size=300)
    flat = Image.new("RGB", design.size, "white")
    flat.paste(design, mask=design.getchannel("A"))
    results = engine.search_bytes(encode(flat), top_k=5)
    assert [r.path for r in results].count("sheet.png") == 1  # one result per image
    top = results[0]
    assert top.path == "sheet.png" and iou(top.box, boxes[301]) >= 0.5


def test_small_design_on_a_catalogue_page_is_verified_with_its_box(cfg):
    # Four designs of ~220 px on a 2,000 px page: in the 512 px analysis picture each
    # spans ~56 px; their regions are cut from a detailed decode and verified on their
    # own points. Other designs, alone in their files, compete.
    from features.orb import MirroredOrbFeatures, OrbFeatures

    samples = SAMPLES
    on_page = [samples / n for n in ("fall_coloured_leaf_geral_01.png", "clipart_by_nicu_buculei_-_baloon1_04_02.png",
                                     "christmas_tree_mo_01.png", "red_flower_01.png")]
    alone = [samples / n for n in ("cloud.png", "arrow01_4.png", "jigsaw_blue_05.png", "star_37pt16step.png",
                                   "fc14.png", "olivier_one_bw_jean-vict_01.png", "round_l.png", "stared.png")]
    page = Image.new("RGB", (2000, 2000), "white")
    placed = {}
    for i, path in enumerate(on_page):
        design = sample(path.name)
        design.thumbnail((220, 220))
        x, y = 300 + (i % 2) * 1200, 300 + (i // 2) * 1200
        page.paste(design, (x, y))
        ink = ImageOps.invert(design.convert("L")).getbbox()  # the design, not its white margins
        placed[path] = (x + ink[0], y + ink[1], x + ink[2], y + ink[3])
    page.save(cfg.images / "catalogue.png")
    for path in alone:
        (cfg.images / path.name).write_bytes(path.read_bytes())
    engine = Engine(cfg, extractors={"hsv": HsvHistogram(), "orb": OrbFeatures(),
                                     "orb_mirror": MirroredOrbFeatures()})
    engine.reindex()
    for path in on_page:
        top = engine.search_bytes(path.read_bytes(), top_k=1)[0]
        assert top.path == "catalogue.png" and top.verdict in ("duplicate", "exact")
        assert iou(top.box, placed[path]) >= 0.5


def blue_shape(kind: str, size: int = 300) -> Image.Image:
    """One flat blue shape on white: every one of them has the same colours."""
    image = Image.new("RGB", (size, size), "white")
    draw, s, blue = ImageDraw.Draw(image), size, (20, 60, 200)
    if kind == "arrow":
        draw.polygon([(0.1 * s, 0.4 * s), (0.55 * s, 0.4 * s), (0.55 * s, 0.2 * s), (0.9 * s, 0.5 * s),
                      (0.55 * s, 0.8 * s), (0.55 * s, 0.6 * s), (0.1 * s, 0.6 * s)], fill=blue)
    elif kind == "disc":
        draw.ellipse((0.15 * s, 0.15 * s, 0.85 * s, 0.85 * s), fill=blue)
    elif kind == "square":
        draw.rectangle((0.2 * s, 0.2 * s, 0.8 * s, 0.8 * s), fill=blue)
    elif kind == "ring":
        draw.ellipse((0.1 * s, 0.1 * s, 0.9 * s, 0.9 * s), outline=blue, width=int(0.12 * s))
    else:  # cross
        draw.rectangle((0.4 * s, 0.1 * s, 0.6 * s, 0.9 * s), fill=blue)
        draw.rectangle((0.1 * s, 0.4 * s, 0.9 * s, 0.6 * s), fill=blue)
    return image


def test_a_small_copy_finds_its_design_before_sheets_that_only_share_its_colours(cfg):
    # A 36 px copy has too few points to verify and its thumbprint is blurred past a twin's,
    # so its ranking rests on scores.  The sheets' regions share the arrow's colours exactly;
    # scored on colour alone, they would outrank the arrow itself.  Without downloaded weights,
    # the bundled shape network is the feature that tells an arrow from a disc.
    blue_shape("arrow").save(cfg.images / "arrow.png")
    kinds = ["disc", "square", "ring", "cross"]
    for n in range(3):
        sheet = Image.new("RGB", (800, 800), "white")
        for i, kind in enumerate(kinds[n:] + kinds[:n]):
            sheet.paste(blue_shape(kind), (50 + (i % 2) * 400, 50 + (i // 2) * 400))
        sheet.save(cfg.images / f"sheet_{n}.png")
    engine = Engine(cfg)
    engine.reindex()
    assert "resnet" in engine.snapshot.features and len(engine.snapshot.data.regions) >= 12
    small = blue_shape("arrow").resize((36, 36), Image.Resampling.LANCZOS)
    results = engine.search_bytes(encode(small), top_k=4)
    assert results[0].path == "arrow.png"
    assert all(r.scores["resnet"] is not None for r in results)  # the sheets' scores weigh shape too


def test_a_whole_design_found_again_is_not_outlined_by_one_of_its_own_regions(cfg):
    # A flag of a red and a black stripe on white: its stripes are proposed as regions.
    # A copy of the whole flag is verified by its thumbprint (too few corners for points);
    # the match is the whole design, so the compare view must not outline one stripe.
    flag = Image.new("RGB", (360, 240), "white")
    draw = ImageDraw.Draw(flag)
    draw.rectangle((0, 0, 359, 79), fill=(200, 20, 30))
    draw.rectangle((0, 160, 359, 239), fill=(10, 10, 10))
    engine = weight_free_engine(cfg, {"flag.png": flag})
    assert len(engine.snapshot.data.regions) >= 2
    for copy in (flag, flag.rotate(-30, expand=True, fillcolor="white", resample=Image.Resampling.BICUBIC)):
        top = engine.search_bytes(encode(copy, "JPEG"), top_k=1)[0]
        assert top.path == "flag.png" and top.verdict in ("exact", "duplicate")
        assert top.box is None
