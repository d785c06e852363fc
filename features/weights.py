"""Where a network's weights file lives and how to recognise the official one."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from features.files import atomic_write


@dataclass(frozen=True)
class WeightsSource:
    """One place a weights file can be downloaded from, and how its bytes are verified.

    `sha256` is the digest the file must have (torchvision publishes only the first
    eight hex digits, in its file name, so a prefix is accepted).  Without one, the
    server must report the file's SHA-256 itself (`reports_sha256`, as the Hugging
    Face Hub does for files it stores in LFS) and the download must match that.
    """

    label: str
    url: str
    suffix: str  # saved as the network's file stem + this suffix
    sha256: str | None = None
    reports_sha256: bool = False

    @property
    def file_name(self) -> str:
        """The name the file has at its source; a mirror holds it under the same name."""
        return self.url.rsplit("/", 1)[-1]

    def accepts(self, digest: str) -> bool:
        return self.sha256 is not None and digest.startswith(self.sha256)


@dataclass(frozen=True)
class WeightsSpec:
    """A network's weights: where they are expected and where they can be fetched from,
    in the order they are tried."""

    name: str
    filename: str
    sources: tuple[WeightsSource, ...]
    description: str
    suffixes: tuple[str, ...]
    # Tensor-name beginnings that mark a state dict as this network's (an unofficial file).
    tensor_prefixes: tuple[str, ...] = ()

    def is_official(self, digest: str) -> bool:
        """Whether the bytes are those of a release pinned by one of the sources."""
        return any(source.accepts(digest) for source in self.sources)

    @property
    def stem(self) -> str:
        return Path(self.filename).stem


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
        try:
            atomic_write(cache_file, json.dumps(known))
        except OSError:
            pass  # a read-only models folder: the file is hashed again next time
    return digest.hexdigest()


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}
