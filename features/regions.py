"""Region proposals: the separate designs on a sheet, collage or multi-item PNG.

The flattened picture's foreground (anything not near-white) is dilated so
the strokes of one design join, then split into connected components.  An
image gets regions only when it holds two or more sizeable components; tiny
fragments are dropped and the count is capped, so regions add at most
MAX_REGIONS entries to an image and none to a single design.
"""
from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

from features.hsv import background

MAX_REGIONS = 8
# Regions are cut from a decode of up to this longer side (the analysis picture is 512) ...
DETAIL_SIDE = 2048
# ... sized so the largest design on the sheet spans about this many pixels.
CROP_SIDE = 384
MIN_AREA = 0.004  # of the picture: smaller components are fragments, not designs
MIN_SIDE = 16  # pixels of the analysis picture
VERSION = f"regions-cc-{MAX_REGIONS}-detail{DETAIL_SIDE}-crop{CROP_SIDE}-min04-orb-v5"


def propose(image: Image.Image) -> list[tuple[int, int, int, int]]:
    """Boxes (x0, y0, x1, y1) in the picture's pixels, largest first; [] for a single design."""
    hsv = cv2.cvtColor(np.asarray(image), cv2.COLOR_RGB2HSV)
    foreground = ~background(hsv)
    height, width = foreground.shape
    if foreground.mean() < 0.01:
        return []
    gap = max(3, int(0.03 * max(height, width)))  # strokes of one design are closer than this
    joined = cv2.dilate(foreground.astype(np.uint8), np.ones((gap, gap), np.uint8))
    count, _, stats, _ = cv2.connectedComponentsWithStats(joined, connectivity=8)
    boxes = []
    for x, y, w, h, area in stats[1:count]:
        if area >= MIN_AREA * height * width and w >= MIN_SIDE and h >= MIN_SIDE:
            pad = gap // 2  # undo the dilation's growth
            boxes.append((area, (x + pad, y + pad, min(width, x + w - pad), min(height, y + h - pad))))
    if len(boxes) < 2:
        return []
    boxes.sort(key=lambda item: -item[0])
    return [box for _, box in boxes[:MAX_REGIONS]]


class RegionProposals:
    """A pseudo-feature with no columns: its fingerprint decides when proposals are redone.

    Listed among the extractors, it makes an indexing pass decode every image
    whose regions were made by another version (or never made), while the
    image's own features stay as they are.
    """

    name = "regions"
    dim = 0

    def fingerprint(self) -> str:
        """The proposals' version and the features regions carry: a region made before a
        feature was carried lacks its vector, so regions are redone when the list changes."""
        from features.registry import IN_REGIONS  # the registry lists this class: imported late

        return f"{VERSION}:{'+'.join(sorted(IN_REGIONS))}"

    def embed(self, images) -> np.ndarray:
        return np.zeros((len(images), 0), dtype=np.float32)
