"""HSV colour histogram (OpenCV): what colours a design is made of.

Bins: 16 hue x 4 saturation x 4 value = 256.  Hue gets the resolution
because designers tell red from orange; saturation and value only need to
separate greys, pastels and deep colours.  Each pixel is shared between the
two nearest bins of each channel, by how near their centres it lies: with
hard bins a flat colour that sits on a bin edge (an orange of saturation
0.757 against the 0.75 edge) moves wholesale into the next bin when a JPEG
re-encodes it, and a copy's colours stop matching.  The near-white background that
every flattened design sits on is left out when there is a foreground, so
two different designs do not look alike merely for sharing a white page.
Rows are square-rooted before normalising (Hellinger), so the cosine of two
rows is the Bhattacharyya coefficient of the histograms and no single
dominant colour swamps the rest.
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np
from PIL import Image

from features.base import l2_normalize

BINS = (16, 4, 4)
VERSION = "hsv-16x4x4-soft-fg-hellinger-v2"
# The fine histogram the soft bins are spread from: OpenCV counts it in C, and the
# sharing between coarse bins is then a small matrix per channel.  Hue keeps OpenCV's
# own step (2 degrees), so a re-save that shifts a flat red by one step moves a ninth of
# its weight to the next bin, where a grid of 64 hues would move a quarter at once.
FINE = (180, 32, 32)
RANGES = (180, 256, 256)  # OpenCV's 8-bit hue runs 0..179
# A pixel counts as background when it is this close to white.
WHITE_SATURATION = 20
WHITE_VALUE = 235
MIN_FOREGROUND = 0.01


class HsvHistogram:
    name = "hsv"
    dim = BINS[0] * BINS[1] * BINS[2]

    def fingerprint(self) -> str:
        return VERSION

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        return l2_normalize(np.stack([histogram(np.asarray(im)) for im in images]))


def histogram(rgb: np.ndarray) -> np.ndarray:
    """The 256-bin Hellinger-normalised colour histogram of an RGB array."""
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    page = background(hsv)
    mask = None
    if (~page).mean() >= MIN_FOREGROUND:
        mask = (~page).astype(np.uint8)
    fine = cv2.calcHist([hsv], [0, 1, 2], mask, list(FINE), [0, RANGES[0], 0, RANGES[1], 0, RANGES[2]])
    hist = np.einsum("abc,ai,bj,ck->ijk", fine, *_SHARES, optimize=True)
    return np.sqrt(hist.ravel() / max(float(hist.sum()), 1.0)).astype(np.float32)


def shares(fine: int, coarse: int, circular: bool) -> np.ndarray:
    """(fine, coarse): how much of each fine bin goes to each coarse bin, by linear
    interpolation between coarse bin centres taken at the fine bin's centre.  Hue wraps
    round; saturation and value keep what lies beyond the outer centres in the outer bins."""
    position = (np.arange(fine) + 0.5) * coarse / fine - 0.5  # in coarse bins, 0 = first centre
    lower = np.floor(position).astype(int)
    upper_share = position - lower
    if circular:
        lower_bin, upper_bin = lower % coarse, (lower + 1) % coarse
    else:
        lower_bin, upper_bin = np.clip(lower, 0, coarse - 1), np.clip(lower + 1, 0, coarse - 1)
    table = np.zeros((fine, coarse))
    np.add.at(table, (np.arange(fine), lower_bin), 1 - upper_share)
    np.add.at(table, (np.arange(fine), upper_bin), upper_share)
    return table


_SHARES = [shares(f, c, circular=(axis == 0)) for axis, (f, c) in enumerate(zip(FINE, BINS))]


def background(hsv: np.ndarray) -> np.ndarray:
    """Where an HSV picture is near-white page rather than design."""
    return (hsv[..., 1] < WHITE_SATURATION) & (hsv[..., 2] > WHITE_VALUE)
