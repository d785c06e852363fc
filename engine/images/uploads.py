"""Adding designs to the collection from the page: checked, renamed, never overwriting."""
from __future__ import annotations

import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from engine.images.decode import UnreadableImage, open_image

UPLOAD_FOLDER = "uploads"
FORMAT_SUFFIX = {"PNG": ".png", "JPEG": ".jpg", "GIF": ".gif", "WEBP": ".webp", "BMP": ".bmp", "TIFF": ".tif"}


@dataclass(frozen=True)
class Added:
    name: str  # as uploaded
    path: str | None  # relative to the images folder, when saved
    error: str | None = None


def add_to_collection(images: Path, name: str, data: bytes, max_pixels: int) -> Added:
    """Save one uploaded design under images/uploads/<date>/ with a generated name."""
    # Content decides, not the extension.  Only the header and the file's structure are
    # checked here: decoding every pixel of a tiny file that declares 100 MP would cost
    # gigabytes per request.  Indexing decodes it within its own bounded pipeline and
    # reports it there if its pixels turn out to be broken.
    try:
        with open_image(data) as image:
            suffix = FORMAT_SUFFIX.get(image.format)
            width, height = image.size
            image.verify()
    except UnreadableImage as exc:
        return Added(name, None, str(exc))
    except Exception as exc:  # verify() raises many types for a damaged file
        return Added(name, None, f"damaged image file: {exc}")
    if suffix is None:
        return Added(name, None, "unsupported image format")
    if width * height > max_pixels:
        return Added(name, None, f"image is {width}x{height}, over the {max_pixels / 1e6:.0f} MP limit")
    folder = images / UPLOAD_FOLDER / time.strftime("%Y-%m-%d")
    folder.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", Path(name).stem)[:40].strip("-") or "design"
    target = folder / f"{stem}-{secrets.token_hex(4)}{suffix}"
    # O_EXCL: an existing file is never overwritten, whatever the race.
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    return Added(name, target.relative_to(images).as_posix())
