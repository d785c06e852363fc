"""Thumbprint: the design in grey, cropped to its content and shrunk to 24 x 24.

A second verifier beside the local features, for what they cannot handle:
icons of 24-100 px (too few corners survive a re-save or a resize) and flat
shapes with no corners at all.  Cropping to the content makes it blind to a
larger canvas; grey makes it blind to a recolour; taking a light, even, grey page
for white makes it blind to the paper a design was photographed on.  Two pictures
whose thumbprints correlate almost perfectly are the same design.  Stored, never fused.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image

from features.base import l2_normalize

SIDE = 24
# Grey levels above this are page, not design (the decoder puts transparency on white).
PAGE = 245
# A picture whose border is this light, this even and this nearly grey lies on a page
# that is not white (paper in a photo: the benchmarks' photo edit, engine/images/edits.py,
# puts designs on grey 223): its grey is scaled so that the page is white.  Darker or
# coloured borders are the design's own (a flag of stripes, a yellow flag, a dark button)
# and stay as they are.
LIGHT_PAGE = 180
EVEN_PAGE = 12  # grey levels: 90% of the border this close to its median
NEUTRAL_PAGE = 24  # the border's median colour: its largest and smallest channel this close
VERSION = f"thumbprint-{SIDE}-ink-extent-grey-page-v3"


def grid(image: Image.Image) -> np.ndarray:
    """SIDE x SIDE grey picture of the content, letterboxed on white, as uint8."""
    gray = on_white_page(np.asarray(image.convert("L")), image)
    box = ink_box(gray)
    if box is not None:
        top, bottom, left, right = box
        gray = gray[top: bottom + 1, left: right + 1]
    height, width = gray.shape
    side = max(height, width)
    square = np.full((side, side), 255, np.uint8)
    top, left = (side - height) // 2, (side - width) // 2
    square[top: top + height, left: left + width] = gray
    return np.asarray(Image.fromarray(square).resize((SIDE, SIDE), Image.Resampling.BOX)).ravel()


def on_white_page(gray: np.ndarray, image: Image.Image) -> np.ndarray:
    """`gray` with a light, even, grey page that is not white scaled to white (see
    LIGHT_PAGE; `image`, the picture `gray` was made from, tells a grey page from a coloured one);
    unchanged where the border is white, dark, coloured or uneven, or where nothing but
    page would remain (a plain light-grey square is its own design)."""
    band = max(1, min(gray.shape) // 50)
    border = _border(gray, band).astype(np.float32)
    page = float(np.median(border))
    if not LIGHT_PAGE <= page < PAGE or np.percentile(np.abs(border - page), 90) > EVEN_PAGE:
        return gray
    colour = np.median(_border(np.asarray(image.convert("RGB")), band).reshape(-1, 3), axis=0)  # few get here
    if colour.max() - colour.min() > NEUTRAL_PAGE:
        return gray
    scaled = np.minimum(gray.astype(np.float32) * (255.0 / page), 255.0).astype(np.uint8)
    return scaled if (scaled < PAGE).any() else gray


def _border(pixels: np.ndarray, band: int) -> np.ndarray:
    """The outermost `band` rows and columns of a picture, one after the other."""
    rest = pixels.shape[2:]
    return np.concatenate([part.reshape(-1, *rest) for part in
                           (pixels[:band], pixels[-band:], pixels[:, :band], pixels[:, -band:])])


def ink_box(gray: np.ndarray) -> tuple[int, int, int, int] | None:
    """Top, bottom, left, right (inclusive) of the design on its page; None on a blank page.

    The extent holding all but a sliver of the ink: JPEG ringing and stray
    pixels at the edges do not move it."""
    ink = ink_weights(gray)
    if ink.sum() <= 0:
        return None
    top, bottom = _extent(ink.sum(axis=1))
    left, right = _extent(ink.sum(axis=0))
    return top, bottom, left, right


def ink_weights(gray: np.ndarray) -> np.ndarray:
    """How dark each pixel's ink is: its darkness below white, zero on the page."""
    return np.where(gray < PAGE, 255.0 - gray, 0.0)


def _extent(profile: np.ndarray, sliver: float = 0.005) -> tuple[int, int]:
    cumulative = np.cumsum(profile) / profile.sum()
    first = int(np.searchsorted(cumulative, sliver))
    last = int(np.searchsorted(cumulative, 1 - sliver))
    return first, max(first, min(last, len(profile) - 1))


def units(rows: np.ndarray) -> np.ndarray:
    """Mean-centred, unit-length float32 rows: their dot product is the correlation.

    A blank page has no shape to correlate: its row is the constant unit vector
    instead, which every mean-centred row is orthogonal to, so blank designs
    (a transparent export, an empty canvas) are twins of each other and of nothing else."""
    values = rows.reshape(len(rows), -1).astype(np.float32)
    blank = values.min(axis=1) >= PAGE
    values -= values.mean(axis=1, keepdims=True)
    values = l2_normalize(values, floor=1e-6)  # a flat grid stays near zero, not a unit vector of noise
    values[blank] = 1 / np.sqrt(values.shape[1])
    return values


def ink(rows: np.ndarray) -> np.ndarray:
    """How much ink each grid holds: its mean darkness, 0 (blank page) to 255 (solid black).

    Correlation (`units`) ignores contrast; this is what it leaves out."""
    return (255.0 - rows.reshape(len(rows), -1).astype(np.float32)).mean(axis=1)


def mirrored(rows: np.ndarray) -> np.ndarray:
    """The same grids flipped left-right."""
    return np.ascontiguousarray(rows.reshape(len(rows), SIDE, SIDE)[:, :, ::-1].reshape(len(rows), -1))


def views(grid: np.ndarray, mirrors: bool = True) -> np.ndarray:
    """A query's grid as unit rows (`units`), with its mirror image's after it unless not
    `mirrors`: stored rows' best product with them is their correlation as is or mirrored."""
    return units(np.stack([grid, mirrored(grid[None])[0]] if mirrors else [grid]))


class ThumbprintFeatures:
    """Content thumbprints for verification; stored, never fused."""

    name = "thumbprint"
    dim = SIDE * SIDE
    dtype = np.uint8
    fused = False

    def fingerprint(self) -> str:
        return VERSION

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        return np.stack([grid(im) for im in images])
