"""The engine: everything Lookalike does, behind one front door.

Callers (web/, image.py) use what this module exports: the `Engine`, its
configuration, its errors and the types of its results.  Inside, the work is
grouped by job:

- `images/`  reading designs: decoding (enormous PNGs included), scanning the
  collection, thumbnails, uploads, and cutting out the designs inside a sheet;
- `index/`   the index: what changed, the extraction pipeline, assembling rows,
  the file format, the searchable snapshot and its nearest-neighbour seam, and
  the reindex job;
- `match/`   deciding what is a copy: search, local points, geometric
  verification, twins, drawing agreement, verdicts, duplicate groups;
- `models/`  the networks: weights files, fetching, building the extractors.

Names are loaded on first use, so `import engine.config` stays cheap.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "Engine": "engine.core", "TextSearchUnavailable": "engine.core",
    "Config": "engine.config", "from_environment": "engine.config", "parse_weights": "engine.config",
    "ReindexRunning": "engine.index.job", "ReindexProgress": "engine.index.job",
    "CollectionUnavailable": "engine.index.pipeline", "IndexReport": "engine.index.pipeline",
    "CorruptIndex": "engine.index.store", "StoreError": "engine.index.milvus",
    "UnreadableImage": "engine.images.decode", "Added": "engine.images.uploads",
    "SearchResult": "engine.match.search", "Group": "engine.match.duplicates",
    "CalibrationRunning": "engine.match.calibration_job", "TooSmall": "engine.match.calibration",
    "FetchFailed": "engine.models.download", "ModelsFolderUnwritable": "engine.models.download",
    "DeviceUnavailable": "features.device",
    "atomic_write": "features.files",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value
