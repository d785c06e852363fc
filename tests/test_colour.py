"""The colour histogram: a re-saved copy keeps its colours, different colours stay apart."""
import io

import numpy as np
from PIL import Image, ImageDraw

from conftest import encode
from features.hsv import HsvHistogram


def stripes(*colours) -> Image.Image:
    picture = Image.new("RGB", (480, 240), "white")
    draw = ImageDraw.Draw(picture)
    width = picture.width // len(colours)
    for i, colour in enumerate(colours):
        draw.rectangle((i * width, 0, (i + 1) * width - 1, picture.height - 1), fill=colour)
    return picture


def resaved(picture: Image.Image, quality: int) -> Image.Image:
    return Image.open(io.BytesIO(encode(picture, "JPEG", quality=quality))).convert("RGB")


def cosine(a: Image.Image, b: Image.Image) -> float:
    vectors = HsvHistogram().embed([a, b])
    return float(vectors[0] @ vectors[1])


GREEN, ORANGE = (22, 155, 98), (255, 136, 62)  # the orange's saturation, 0.757, is next to a bin edge


def test_a_jpeg_of_a_flat_colour_next_to_a_bin_edge_keeps_its_colours():
    flag = stripes(GREEN, (255, 255, 255), ORANGE)
    for quality in (95, 85, 75):
        assert cosine(flag, resaved(flag, quality)) > 0.95


def test_colours_a_designer_tells_apart_stay_apart():
    assert cosine(stripes(ORANGE), stripes((200, 20, 30))) < 0.5  # orange and red
    assert cosine(stripes(GREEN), stripes((20, 60, 200))) < 0.5  # green and blue
    assert cosine(stripes(ORANGE), stripes(ORANGE)) > 0.999


def test_a_white_page_does_not_make_two_designs_alike():
    small_orange = Image.new("RGB", (400, 400), "white")
    ImageDraw.Draw(small_orange).ellipse((150, 150, 250, 250), fill=ORANGE)
    small_blue = Image.new("RGB", (400, 400), "white")
    ImageDraw.Draw(small_blue).ellipse((150, 150, 250, 250), fill=(20, 60, 200))
    assert cosine(small_orange, small_blue) < 0.2


def test_a_blank_page_has_a_histogram():
    assert np.isfinite(HsvHistogram().embed([Image.new("RGB", (50, 50), "white")])).all()


def test_a_red_shifted_by_one_step_of_hue_keeps_its_colours():
    """A flag's red, 178 of OpenCV's 180 hue steps, and what a re-save made of it (177)."""
    assert cosine(stripes((235, 0, 19), (30, 90, 50)), stripes((236, 0, 20), (30, 90, 50))) > 0.98
