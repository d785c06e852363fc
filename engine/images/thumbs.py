"""Small JPEG previews for the results grid, made from the already-decoded picture."""
from __future__ import annotations

import functools
import hashlib
import io
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from features.files import atomic_write

THUMB_SIDE = 256
JPEG_QUALITY = 85


def thumb_path(thumbs_dir: Path, sha256: str) -> Path:
    return thumbs_dir / sha256[:2] / f"{sha256}.jpg"


def write_thumb(thumbs_dir: Path, sha256: str, image: Image.Image) -> None:
    """The preview of a design, unless it has a good one.

    Not fsynced: two fsyncs per preview took about a fifth of a worker's time on a
    16-core machine's disk (docs/benchmarks.md, Devices).  A preview is made again
    from the design, so what a power cut can leave, an empty file, is written anew."""
    target = thumb_path(thumbs_dir, sha256)
    try:
        if target.stat().st_size > 0:
            return
    except OSError:
        pass
    small = _shrunk(image)
    atomic_write(target, lambda out: small.save(out, "JPEG", quality=JPEG_QUALITY), durable=False)


def grey_preview(image: Image.Image) -> np.ndarray:
    """A query's picture as its stored preview would be, in grey: the drawing of a query
    and of an indexed design are then compared on equal terms (engine/match/agreement.py)."""
    buffer = io.BytesIO()
    _shrunk(image).save(buffer, "JPEG", quality=JPEG_QUALITY)
    with Image.open(buffer) as stored:
        return np.asarray(stored.convert("L"))


def read_grey_preview(thumbs_dir: Path, sha256: str) -> np.ndarray | None:
    """An indexed design's stored preview in grey; None where there is none."""
    try:
        with Image.open(thumb_path(thumbs_dir, sha256)) as image:
            return np.asarray(image.convert("L"))
    except OSError:
        return None


def preview_reader(thumbs_dir: Path, sha256_of: Callable[[int], str], kept: int = 512
                   ) -> Callable[[int], np.ndarray | None]:
    """Grey previews by row (`sha256_of(row)` names its bytes), the last `kept` in memory."""
    @functools.lru_cache(maxsize=kept)
    def preview(row: int) -> np.ndarray | None:
        return read_grey_preview(thumbs_dir, sha256_of(row))

    return preview


def _shrunk(image: Image.Image) -> Image.Image:
    small = image.copy()
    # Whole-number shrinking by box averages first (reducing_gap=1): a preview needs no
    # Lanczos over the whole 512 px picture, which took 1.3-4 ms a file against 0.5.
    small.thumbnail((THUMB_SIDE, THUMB_SIDE), Image.Resampling.LANCZOS, reducing_gap=1.0)
    return small


def restore_thumb(images: Path, thumbs_dir: Path, relative: str, sha256: str,
                  decode: Callable[[bytes], Image.Image]) -> Path | None:
    """The preview of an indexed design, made again if it went missing from the cache;
    None when the file no longer holds the indexed bytes.  Raises OSError, UnreadableImage."""
    path = thumb_path(thumbs_dir, sha256)
    if path.is_file():
        return path
    data = (images / relative).read_bytes()
    if hashlib.sha256(data).hexdigest() != sha256:
        return None
    write_thumb(thumbs_dir, sha256, decode(data))
    return path
