"""The on-disk index: metadata, per-feature vectors and the FAISS index, in one file.

The user asked for a pickle cache; a pickle can run code when loaded, so the
index is a NumPy .npz read with allow_pickle=False instead: plain arrays plus
one JSON document, a format that cannot execute anything.  Every write goes
to a temporary file that is fsynced and renamed over the old one, so a crash
at any moment leaves either the old index or the new one, never half of each.
A file that fails any check is set aside and rebuilt from the images.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from features.files import atomic_write

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1


class CorruptIndex(ValueError):
    """The index file is unreadable or inconsistent."""


@dataclass(frozen=True)
class Entry:
    """One indexed image: where it is and which bytes it held when indexed."""

    path: str  # relative to the images folder, '/' separators
    size: int
    mtime_ns: int
    sha256: str
    width: int
    height: int


@dataclass
class Regions:
    """Separate designs inside indexed images, each embedded like a whole image."""

    parents: list[str] = field(default_factory=list)  # sha256 of the image each region is in
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))  # analysis pixels
    vectors: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.parents)


@dataclass
class IndexData:
    """Everything the index knows.  Row i of every vector block belongs to entries[i]."""

    entries: list[Entry] = field(default_factory=list)
    vectors: dict[str, np.ndarray] = field(default_factory=dict)
    present: dict[str, np.ndarray] = field(default_factory=dict)
    fingerprints: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, dict] = field(default_factory=dict)
    indexed_at: float | None = None
    complete: bool = True
    regions: Regions = field(default_factory=Regions)

    def __len__(self) -> int:
        return len(self.entries)

    def validate(self) -> None:
        n = len(self.entries)
        for name, block in self.vectors.items():
            if block.ndim != 2 or block.shape[0] != n or block.dtype not in (np.float32, np.uint8):
                raise CorruptIndex(f"vector block {name!r} has shape {block.shape}, {block.dtype}")
            if self.present.get(name) is None or self.present[name].shape != (n,):
                raise CorruptIndex(f"presence mask for {name!r} is missing or the wrong size")
            if block.dtype == np.float32 and not np.isfinite(block).all():
                raise CorruptIndex(f"vector block {name!r} holds non-finite values")
        m = len(self.regions)
        if self.regions.boxes.shape != (m, 4) or any(v.shape[0] != m for v in self.regions.vectors.values()):
            raise CorruptIndex("region blocks do not match the region list")


def save(data: IndexData, path: Path) -> None:
    """Write atomically: temporary file, fsync, rename, fsync the folder."""
    data.validate()
    meta = {
        "schema": SCHEMA_VERSION,
        "entries": [asdict(e) for e in data.entries],
        "fingerprints": data.fingerprints,
        "skipped": data.skipped,
        "indexed_at": data.indexed_at,
        "complete": data.complete,
        "region_parents": data.regions.parents,
    }
    arrays = {"meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)}
    for name, block in data.vectors.items():
        arrays[f"vec_{name}"] = block
        arrays[f"has_{name}"] = data.present[name]
    arrays["reg_box"] = data.regions.boxes.astype(np.float32)
    for name, block in data.regions.vectors.items():
        arrays[f"reg_vec_{name}"] = block
    arrays["digest"] = np.frombuffer(_digest(arrays).encode(), dtype=np.uint8)
    atomic_write(path, lambda out: np.savez(out, **arrays))


def load(path: Path) -> IndexData:
    """Read and verify the index; raises CorruptIndex on anything unexpected."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
        stored = arrays.pop("digest").tobytes().decode()
        if stored != _digest(arrays):
            raise CorruptIndex("checksum mismatch: the file was changed or damaged")
        meta = json.loads(arrays.pop("meta").tobytes().decode())
        if meta.get("schema") != SCHEMA_VERSION:
            raise CorruptIndex(f"schema {meta.get('schema')} is not {SCHEMA_VERSION}")
        data = IndexData(
            entries=[Entry(**e) for e in meta["entries"]],
            vectors={k[4:]: v for k, v in arrays.items() if k.startswith("vec_") and not k.startswith("reg_")},
            present={k[4:]: v.astype(bool) for k, v in arrays.items() if k.startswith("has_")},
            fingerprints=dict(meta["fingerprints"]),
            skipped=dict(meta.get("skipped", {})),
            indexed_at=meta.get("indexed_at"),
            complete=bool(meta.get("complete", True)),
            regions=Regions(
                parents=list(meta.get("region_parents", [])),
                boxes=arrays.get("reg_box", np.zeros((0, 4), np.float32)),
                vectors={k[8:]: v for k, v in arrays.items() if k.startswith("reg_vec_")},
            ),
        )
    except CorruptIndex:
        raise
    except Exception as exc:  # zip, JSON, key or type errors all mean "not our file"
        raise CorruptIndex(f"unreadable index: {exc}") from exc
    data.validate()
    return data


def load_or_empty(path: Path) -> IndexData:
    """The stored index; a missing one is empty, a corrupt one is set aside and rebuilt."""
    if not path.exists():
        return IndexData()
    try:
        return load(path)
    except CorruptIndex as exc:
        aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
        os.replace(path, aside)
        log.error("Index %s is corrupt (%s); moved to %s and rebuilding from the images", path, exc, aside)
        return IndexData()


def _digest(arrays: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for key in sorted(arrays):
        digest.update(key.encode())
        digest.update(str(arrays[key].dtype).encode() + str(arrays[key].shape).encode())
        digest.update(np.ascontiguousarray(arrays[key]).tobytes())
    return digest.hexdigest()

