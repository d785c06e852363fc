"""HSV colour histogram (OpenCV): what colours a design is made of.

Bins: 16 hue x 4 saturation x 4 value = 256.  Hue gets the resolution
because designers tell red from orange; saturation and value only need to
separate greys, pastels and deep colours.  The near-white background that
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
VERSION = "hsv-16x4x4-fg-hellinger-v1"
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
    hist = cv2.calcHist([hsv], [0, 1, 2], mask, list(BINS), [0, 180, 0, 256, 0, 256])
    return np.sqrt(hist.ravel() / max(float(hist.sum()), 1.0))


def background(hsv: np.ndarray) -> np.ndarray:
    """Where an HSV picture is near-white page rather than design."""
    return (hsv[..., 1] < WHITE_SATURATION) & (hsv[..., 2] > WHITE_VALUE)
