"""The bundled designs that every network's lower precision is checked (and calibrated) on."""
from __future__ import annotations

import functools
import hashlib
from pathlib import Path

# Real designs on which a lower precision must keep each network's features
# (features/precision.py): copies of the ones shipped as the demo collection, kept
# apart from it, since static/images is the default collection a user fills (a design
# named to sort first became the known-answer design and the shape feature was refused).
# The first SAMPLE_SIZE check int8; the rest calibrate it where it needs calibrating.
SAMPLE_DIR = Path(__file__).resolve().parent / "designs"
SAMPLE_SIZE = 16


def precision_sample() -> tuple:
    """Up to SAMPLE_SIZE bundled designs, decoded as indexing decodes them."""
    return _bundled_designs()[:SAMPLE_SIZE]


def calibration_sample() -> tuple:
    """The other bundled designs: never the ones that then check the int8 network."""
    return _bundled_designs()[SAMPLE_SIZE:]


@functools.lru_cache(maxsize=1)
def calibration_id() -> str:
    """Names the bundled designs, calibration ones included, by their files' bytes,
    without decoding them (a fingerprint is asked for on every re-scan)."""
    digest = hashlib.sha256()
    for path in _bundled_paths():
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def _bundled_paths() -> list[Path]:
    return sorted(SAMPLE_DIR.glob("*.png"))


@functools.lru_cache(maxsize=1)
def _bundled_designs() -> tuple:
    from engine.images.decode import UnreadableImage, decode

    pictures = []
    for path in _bundled_paths():
        try:
            pictures.append(decode(path.read_bytes()).image)
        except (OSError, UnreadableImage):
            continue
    return tuple(pictures)
