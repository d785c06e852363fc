"""Twins turned on the canvas: a rotated copy of a design with few corners.

A flag of stripes or a solid pictogram turned by some degrees keeps no local
points that match (its few corners are rounded off by the rotation), and its
thumbprint, made upright, no longer correlates with its original's.  The two
designs' ink says how far one is turned from the other: the axis of its second
moments.  Turned by that much (both ways round: the axis has no head), the
query's thumbprint correlates with its original's as a twin's does, and the
same turn, with the ink's centres and spreads, maps one picture onto the other
for the drawing comparison that follows (engine/match/judge.py).

Only a search's few leading candidates are looked at, on their stored previews.
The query is turned as it is, never mirrored: a copy both mirrored and turned is
left to its points.
"""
from __future__ import annotations

from typing import Callable

import cv2
import numpy as np
from PIL import Image

from engine.match.agreement import analysis_to_preview
from engine.match.verify import Verification, twin_checks
from features import thumbprint

# The fused candidates of a search that are looked at for a turned twin.
CANDIDATES = 5
# Ink this much longer along one axis than across it has an orientation worth trusting;
# a disc, a square or a star has none (and its points or upright thumbprint find it).
ELONGATION = 1.3
# Turns smaller than this are left to the upright thumbprint.
MIN_TURN = 3.0


class Ink:
    """Where a grey picture's ink lies: its centre, the axis it is longest along
    (degrees, image coordinates), how elongated and how spread it is."""

    def __init__(self, grey: np.ndarray) -> None:
        moments = cv2.moments(thumbprint.ink_weights(grey).astype(np.float32))
        self.mass = moments["m00"]
        if self.mass <= 0:
            self.centre, self.angle, self.elongation, self.spread = (0.0, 0.0), 0.0, 1.0, 0.0
            return
        mu20, mu02, mu11 = (moments[k] / self.mass for k in ("mu20", "mu02", "mu11"))
        half_gap = np.sqrt(4 * mu11 ** 2 + (mu20 - mu02) ** 2) / 2
        major, minor = (mu20 + mu02) / 2 + half_gap, (mu20 + mu02) / 2 - half_gap
        self.centre = (moments["m10"] / self.mass, moments["m01"] / self.mass)
        self.angle = float(np.degrees(0.5 * np.arctan2(2 * mu11, mu20 - mu02)))
        self.elongation = float(major / max(minor, 1e-6))
        self.spread = float(np.sqrt(max(mu20 + mu02, 0.0)))

    @property
    def oriented(self) -> bool:
        return self.mass > 0 and self.elongation >= ELONGATION


def turned_twins(image: Image.Image, rows: list[int], preview: Callable[[int], np.ndarray | None],
                 sizes: Callable[[int], tuple[int, int]], thumbprints: np.ndarray,
                 colours: np.ndarray | None, colour: np.ndarray | None,
                 inks: np.ndarray | None) -> dict[int, Verification]:
    """For each of `rows` whose thumbprint the query's, turned by the ink's axes, is a twin
    of: a check with that correlation and the turn as its transform (query analysis
    pixels -> the row's analysis pixels), marked `turned`.  `image` is the query's
    analysis picture; `sizes(row)` the row's original pixels."""
    grey = np.asarray(image.convert("L"))
    mine = Ink(grey)
    if not mine.oriented:
        return {}
    found: dict[int, Verification] = {}
    for row in rows:
        stored = preview(row)
        if stored is None:
            continue
        theirs = Ink(stored)
        if not theirs.oriented:
            continue
        best = None
        for turn in _turns(theirs.angle - mine.angle):
            grid = thumbprint.grid(Image.fromarray(_turned(grey, mine.centre, turn)))
            # As is only: the mirror image of a picture turned one way is the mirrored picture
            # turned the other way, which the turn found here would not align.
            twins = twin_checks(grid, thumbprints, colours, colour, rows=[row], inks=inks, mirrors=False)
            if row in twins and (best is None or twins[row] > best[0]):
                best = (twins[row], turn)
        if best is None:
            continue
        to_analysis = 1 / analysis_to_preview(stored, *sizes(row))
        centre = (theirs.centre[0] * to_analysis, theirs.centre[1] * to_analysis)
        scale = theirs.spread * to_analysis / max(mine.spread, 1e-6)
        found[row] = Verification(inliers=0, box=None, mirrored=False, twin=best[0],
                                  transform=_mapping(mine.centre, centre, best[1], scale), turned=True)
    return found


def _turns(difference: float) -> list[float]:
    """The turns (degrees, as OpenCV's getRotationMatrix2D takes them) that may bring the
    query's axis onto its candidate's; none worth trying when nearly upright already."""
    turns = []
    for base in (-difference, difference):  # image coordinates flip the sense of a turn
        for turn in (base, base + 180.0):
            turn = (turn + 180.0) % 360.0 - 180.0
            if abs(turn) >= MIN_TURN and all(abs(turn - t) > 1e-6 for t in turns):
                turns.append(turn)
    return turns


def _turned(grey: np.ndarray, centre: tuple[float, float], turn: float) -> np.ndarray:
    """The picture turned about its ink's centre on a canvas that holds all of it."""
    height, width = grey.shape
    reach = max(np.hypot(x - centre[0], y - centre[1]) for x in (0, width) for y in (0, height))
    side = 2 * int(np.ceil(reach)) + 2  # the centre may lie anywhere: every corner stays on the canvas
    matrix = cv2.getRotationMatrix2D(centre, turn, 1.0)
    matrix[:, 2] += (side / 2 - centre[0], side / 2 - centre[1])
    return cv2.warpAffine(grey, matrix, (side, side), flags=cv2.INTER_AREA, borderValue=255)


def _mapping(source: tuple[float, float], target: tuple[float, float], turn: float,
             scale: float) -> tuple[float, ...]:
    """The similarity turning about `source` by `turn`, scaling by `scale` and moving it onto
    `target`, as a 2x3 matrix row by row."""
    matrix = cv2.getRotationMatrix2D(source, turn, scale)
    matrix[:, 2] += (target[0] - source[0], target[1] - source[1])
    return tuple(float(v) for v in matrix.ravel())

