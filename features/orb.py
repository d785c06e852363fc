"""ORB local features, packed into one fixed-size uint8 row per image.

Not part of the fused vector: they feed the geometric verification that
tells an edited copy (cropped, rotated, mirrored, photographed at an angle)
from a design that merely looks alike.  Packing them as a fixed-size row
lets them ride the same incremental index as the other features.

Row layout: MAX_POINTS x 32 descriptor bytes, then MAX_POINTS x (x, y) as
uint16 in analysis-picture pixels (little-endian), then the point count (uint16).
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np
from PIL import Image

MAX_POINTS = 400
DESCRIPTOR_BYTES = 32
VERSION = f"orb-{MAX_POINTS}-fast5-min384-sorted-v3"
ROW_BYTES = MAX_POINTS * DESCRIPTOR_BYTES + MAX_POINTS * 4 + 2


def detect(gray: np.ndarray, max_points: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """Keypoint coordinates (N x 2 float32) and ORB descriptors (N x 32 uint8)."""
    # A low FAST threshold: flat-colour clip art has few strong corners.
    orb = cv2.ORB_create(nfeatures=max_points, fastThreshold=5, edgeThreshold=15, patchSize=15)
    scale = max(1.0, MIN_SIDE / max(gray.shape))
    if scale > 1:
        gray = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    points, descriptors = orb.detectAndCompute(gray, None)
    if descriptors is None or not points:
        return np.zeros((0, 2), np.float32), np.zeros((0, DESCRIPTOR_BYTES), np.uint8)
    # Strongest first, so a caller that needs fewer points can take a prefix.
    order = np.argsort([-p.response for p in points], kind="stable")[:max_points]
    xy = np.array([points[i].pt for i in order], dtype=np.float32) / scale
    return xy, descriptors[order]


def detect_mirrored(gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Points of the picture mirrored left-right (ORB descriptors are not mirror-invariant)."""
    return detect(np.ascontiguousarray(gray[:, ::-1]))


# Small designs are enlarged to this side before detection: ORB's patches need room.
MIN_SIDE = 384


def gray_of(image: Image.Image) -> np.ndarray:
    """Grey analysis picture; keypoints stay in its pixel coordinates (see `detect`)."""
    return cv2.cvtColor(np.asarray(image), cv2.COLOR_RGB2GRAY)


def pack(xy: np.ndarray, descriptors: np.ndarray) -> np.ndarray:
    n = len(xy)
    row = np.zeros(ROW_BYTES, dtype=np.uint8)
    row[: n * DESCRIPTOR_BYTES] = descriptors.ravel()
    coords = np.clip(np.round(xy), 0, 65535).astype("<u2")
    start = MAX_POINTS * DESCRIPTOR_BYTES
    row[start : start + n * 4] = coords.view(np.uint8).ravel()
    row[-2:] = np.array([n], dtype="<u2").view(np.uint8)
    return row


def unpack(row: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = int(row[-2:].view("<u2")[0])
    descriptors = row[: n * DESCRIPTOR_BYTES].reshape(n, DESCRIPTOR_BYTES)
    start = MAX_POINTS * DESCRIPTOR_BYTES
    xy = row[start : start + n * 4].view("<u2").reshape(n, 2).astype(np.float32)
    return xy, descriptors


class OrbFeatures:
    """Local features for verification; stored, never fused."""

    name = "orb"
    dim = ROW_BYTES
    dtype = np.uint8
    fused = False

    def fingerprint(self) -> str:
        return VERSION

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        return np.stack([pack(*detect(gray_of(im))) for im in images])


class MirroredOrbFeatures(OrbFeatures):
    """ORB points of the picture mirrored left-right: lets a stored image act as a query
    that also finds mirrored copies (the library-wide duplicate pass)."""

    name = "orb_mirror"

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        return np.stack([pack(*detect_mirrored(gray_of(im))) for im in images])
