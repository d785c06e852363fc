"""The index that searches read: the data last saved, and the snapshot built from it.

The snapshot is built on first use (`image.py index` never searches, and the
local-feature index of 8,121 designs takes seconds to build) and swapped whole
when a reindex saves new data, so a search never sees half an index.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import replace
from pathlib import Path
from typing import Callable, Mapping

from engine.index import store
from engine.index.milvus import StoreError
from engine.index.neighbours import NeighbourStore
from engine.index.snapshot import Snapshot, build_snapshot
from engine.index.store import IndexData
from engine.match.verdict import BUILT_IN, Thresholds

log = logging.getLogger(__name__)


class PublishedIndex:
    def __init__(self, index_file: Path, fused: Callable[[], tuple[str, ...]], weights: Mapping[str, float],
                 thresholds: Callable[[Snapshot], Thresholds] = lambda snapshot: BUILT_IN,
                 neighbours: NeighbourStore | None = None) -> None:
        """`fused`: the fused features that have an extractor now (they change as weights appear);
        `thresholds`: the verdicts' thresholds for a snapshot (calibrated for its features, or built in);
        `neighbours`: the store that answers the lookups (Milvus), or None for FAISS here."""
        self._neighbours = neighbours
        self._fused = fused
        self._weights = weights
        self._thresholds = thresholds
        self._data = store.load_or_empty(index_file)
        self._built: Snapshot | None = None
        self._lock = threading.Lock()

    @property
    def data(self) -> IndexData:
        """What the index holds, without building anything (the page answers from it)."""
        return self._data

    @property
    def snapshot(self) -> Snapshot:
        built = self._built
        if built is None:
            with self._lock:
                if self._built is None:
                    self._built = self._build(self._data)
                built = self._built
        return built

    def publish(self, previous: IndexData, data: IndexData) -> None:
        """Make `data`, which a reindex made from `previous`, what searches read."""
        with self._lock:
            current = self._built
            unchanged = data is previous and self._data.indexed_at == data.indexed_at  # the same save
            if not (unchanged and (current is None or set(current.features) <= set(self._fused()))):
                # An unchanged index keeps its snapshot: rebuilding the local-feature index of
                # 8,121 designs takes seconds.  One nobody has read yet stays unbuilt.
                self._data = data
                self._built = None
                if current is not None:
                    try:
                        self._built = self._build(data)
                    except StoreError as exc:  # the data is saved; the next search tries again
                        log.error("The new index is saved, but its neighbours store is not up to date: %s", exc)

    def recalibrated(self) -> None:
        """Take up thresholds calibrated since the snapshot was built (nothing is rebuilt)."""
        with self._lock:
            if self._built is not None:
                self._built = replace(self._built, thresholds=self._thresholds(self._built))

    def _build(self, data: IndexData) -> Snapshot:
        snapshot = build_snapshot(data, self._fused(), self._weights, store=self._neighbours)
        return replace(snapshot, thresholds=self._thresholds(snapshot))
