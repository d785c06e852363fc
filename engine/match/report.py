"""The duplicate report of the whole library, kept for the snapshot it was made from.

The slow part (neighbours and verification) runs once per snapshot from a low
floor and is cached; a threshold is then only a filter.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Callable

import numpy as np

from engine.images.thumbs import preview_reader
from engine.index.milvus import StoreError
from engine.index.snapshot import Snapshot
from engine.match.duplicates import CANDIDATE_SCORE, FLOOR_SCORE, Group, find_groups, find_pairs, group_pairs

log = logging.getLogger(__name__)


class DuplicateReport:
    def __init__(self, thumbs_dir: Path) -> None:
        self.thumbs_dir = thumbs_dir
        self._lock = threading.Lock()
        self._made_from: Snapshot | None = None  # the snapshot the cached pairs belong to
        self._pairs: list = []
        self._helpers: list[threading.Thread] = []
        self._previews: tuple[Snapshot | None, Callable] = (None, lambda row: None)

    def groups(self, snap: Snapshot, threshold: float | None = None) -> list[Group]:
        """Every duplicate group in `snap` at `threshold` (default: the candidate score)."""
        threshold = CANDIDATE_SCORE if threshold is None else threshold
        if threshold < FLOOR_SCORE:
            return find_groups(snap, threshold, previews=self.previews(snap))
        return group_pairs(snap, self._pairs_for(snap), threshold, self.previews(snap))

    def warm(self, snapshot: Callable[[], Snapshot]) -> None:
        """Make the report in the background, so the page opens at once."""
        def make() -> None:
            try:
                self._pairs_for(snapshot())
            except StoreError as exc:  # the page and /health say so; the report is made when asked
                log.warning("The duplicate report waits for the vector store: %s", exc)

        thread = threading.Thread(target=make, name="duplicates", daemon=True)
        self._helpers = [t for t in self._helpers if t.is_alive()] + [thread]
        thread.start()

    def close(self, timeout: float) -> None:
        for thread in self._helpers:
            thread.join(timeout)

    def previews(self, snap: Snapshot) -> Callable[[int], np.ndarray | None]:
        """Grey previews of the snapshot's rows, read from the thumbnails (a few hundred kept,
        shared by the searches, the report and calibration on the same snapshot)."""
        made_for, reader = self._previews
        if made_for is not snap:
            reader = preview_reader(self.thumbs_dir, lambda row: snap.data.entries[row].sha256)
            self._previews = (snap, reader)
        return reader

    def _pairs_for(self, snap: Snapshot) -> list:
        with self._lock:
            if self._made_from is not snap:
                self._pairs = find_pairs(snap, FLOOR_SCORE, previews=self.previews(snap))
                self._made_from = snap
            return self._pairs
