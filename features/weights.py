"""Where a network's weights file lives and how to recognise the official one."""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class WeightsSpec:
    """One downloadable weights file.

    `sha256` is the official digest; torchvision publishes only its first
    eight hex digits (in the file name), so a prefix is accepted too.
    """

    name: str
    filename: str
    url: str
    sha256: str
    description: str
    suffixes: tuple[str, ...]

    def is_official(self, digest: str) -> bool:
        return digest.startswith(self.sha256)


def file_sha256(path: Path, cache_file: Path | None = None) -> str:
    """SHA-256 of a file, remembered by (size, mtime) so start-up stays fast."""
    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    known = _read_json(cache_file) if cache_file else {}
    if key in known:
        return known[key]
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    if cache_file:
        known[key] = digest.hexdigest()
        tmp = cache_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(known))
        os.replace(tmp, cache_file)
    return digest.hexdigest()


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}
