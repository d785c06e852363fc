"""The designs inside a sheet, cut out in detail for their own features.

Where they are is decided by features/regions.py (`propose`); this cuts them
from a decode detailed enough that each design keeps its strokes.
"""
from __future__ import annotations

from PIL import Image

from engine.images.decode import Decoded, decode
from features.regions import CROP_SIDE, DETAIL_SIDE


def detailed_crops(data: bytes, decoded: Decoded, boxes: list[tuple[int, int, int, int]],
                   max_pixels: int) -> list[Image.Image]:
    """The designs inside `boxes` (analysis-picture pixels), cut from a more detailed
    picture: on a catalogue page each design spans only a few dozen analysis pixels."""
    if not boxes:
        return []
    image = decoded.image
    # Just enough detail for the largest design to reach CROP_SIDE pixels: more only
    # slows the workers (ORB and the networks' resize work on the crops).
    largest = max(max(x1 - x0, y1 - y0) for x0, y0, x1, y1 in boxes)
    side = min(DETAIL_SIDE, round(max(image.size) * CROP_SIDE / max(largest, 1)))
    if side <= max(image.size):
        return [image.crop(box) for box in boxes]
    detail = decoded.full
    if detail is None or max(detail.size) < side:
        # A JPEG decoded in draft mode or a PNG read in strips: decode again, larger.
        detail = decode(data, max_pixels=max_pixels, side=side).image
    scale = detail.width / image.width
    shrink = side / max(detail.size)
    crops = []
    for box in boxes:
        crop = detail.crop(tuple(round(v * scale) for v in box))
        if shrink < 1:
            crop = crop.resize((max(1, round(crop.width * shrink)), max(1, round(crop.height * shrink))),
                               Image.Resampling.LANCZOS, reducing_gap=3.0)
        crops.append(crop)
    return crops
