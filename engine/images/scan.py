"""Walk the images folder: which design files exist, with size and mtime."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff"}
# Folders Lookalike itself writes into the images folder; never indexed.
IGNORED_DIRS = {".lookalike-quarantine"}


@dataclass(frozen=True)
class FileInfo:
    path: str  # relative, '/' separators
    size: int
    mtime_ns: int


def scan(root: Path, unreadable: list[str] | None = None) -> Iterator[FileInfo]:
    """Every image file under root, skipping hidden files and links that leave root.

    Folders that cannot be listed are appended to `unreadable` (relative paths)."""
    root = root.resolve()
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            if unreadable is not None:
                unreadable.append(folder.relative_to(root).as_posix())
            continue
        for entry in sorted(entries, key=lambda e: e.name):
            if entry.name.startswith("."):
                continue  # .DS_Store, ._resource forks, hidden folders
            if entry.is_symlink() and not _inside(Path(entry.path), root):
                continue
            if entry.is_dir():
                if entry.name not in IGNORED_DIRS:
                    stack.append(Path(entry.path))
            elif entry.is_file() and Path(entry.name).suffix.lower() in IMAGE_SUFFIXES:
                stat = entry.stat()
                rel = Path(entry.path).relative_to(root).as_posix()
                yield FileInfo(rel, stat.st_size, stat.st_mtime_ns)


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root)
        return True
    except (ValueError, OSError):
        return False


def collection_image(root: Path, relative: str) -> Path | None:
    """`relative` as the scanner would index it: an image file under root, none of its
    parts hidden; None for anything else (an .svg, .html or dotfile is never served)."""
    parts = relative.replace("\\", "/").split("/")
    if any(part.startswith(".") for part in parts) or Path(relative).suffix.lower() not in IMAGE_SUFFIXES:
        return None
    return resolve_inside(root, relative)


def resolve_inside(root: Path, relative: str) -> Path | None:
    """The real path of `relative` under root, or None if it escapes or is not a file."""
    if not relative or "\x00" in relative or Path(relative).is_absolute() or relative.startswith(("/", "\\")):
        return None
    root = root.resolve()
    candidate = (root / relative).resolve()
    if not _inside(candidate, root) or not candidate.is_file():
        return None
    return candidate


def served_image(root: Path, relative: str) -> tuple[Path, str] | None:
    """The collection's image at `relative` and the MIME type its own header declares;
    None for anything that is not an image file inside the collection."""
    from engine.images.decode import image_mimetype

    path = collection_image(root, relative)
    mimetype = image_mimetype(path) if path is not None else None
    return None if mimetype is None else (path, mimetype)
