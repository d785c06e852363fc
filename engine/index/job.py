"""Reindexing as the engine runs it: one run at a time, in the foreground (command
line) or in the background (web), with progress, a timer that re-scans the
collection, and a clean stop at shutdown."""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

from engine.config import Config
from engine.index import store
from engine.index.pipeline import CollectionUnavailable, Indexer, IndexingStopped, IndexReport
from engine.index.published import PublishedIndex
from engine.models.networks import Networks
from features.network import NetworkRefused

log = logging.getLogger(__name__)


class ReindexRunning(RuntimeError):
    """A reindex is already in progress."""


@dataclass
class ReindexProgress:
    running: bool = False
    done: int = 0
    total: int = 0
    current: str = ""
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    report: dict | None = None

    def as_dict(self) -> dict:
        elapsed = ((self.finished_at or time.time()) - self.started_at) if self.started_at else 0.0
        rate = self.done / elapsed if elapsed > 0 else 0.0
        return {
            "running": self.running, "done": self.done, "total": self.total, "current": self.current,
            "percent": round(100.0 * self.done / self.total, 1) if self.total else (100.0 if not self.running else 0.0),
            "images_per_second": round(rate, 2),
            "eta_seconds": round((self.total - self.done) / rate, 1) if rate > 0 and self.running else None,
            "started_at": self.started_at, "finished_at": self.finished_at,
            "error": self.error, "report": self.report,
        }


class ReindexJob:
    def __init__(self, config: Config, networks: Networks, published: PublishedIndex) -> None:
        self.config = config
        self.networks = networks
        self.published = published
        self.progress = ReindexProgress()
        self.progress_listener: Callable[[int, int, str], None] | None = None
        self.finished_listeners: list[Callable[[], None]] = []  # called after each run that finished
        self.collection_problem: str | None = None  # why the last re-scan could not read the images folder
        self._lock = threading.Lock()
        self._idle = threading.Event()  # set whenever no background run is going
        self._idle.set()
        # Set by close(): the re-scan timer stops, a running reindex stops after its batch.
        self._closing = threading.Event()
        self._closing_lock = threading.Lock()  # no run is started once closing is set

    def run(self) -> IndexReport:
        """Index now, on this thread; raises ReindexRunning if a run is going."""
        if not self._lock.acquire(blocking=False):
            raise ReindexRunning("a reindex is already running")
        try:
            return self._index()
        finally:
            self._lock.release()

    def start(self) -> None:
        """Begin a background run; searches keep using the current snapshot meanwhile."""
        with self._closing_lock:
            if self._closing.is_set():
                return
            if not self._lock.acquire(blocking=False):
                raise ReindexRunning("a reindex is already running")
        self._idle.clear()
        self.progress = ReindexProgress(running=True, started_at=time.time())
        threading.Thread(target=self._background, name="reindex", daemon=True).start()

    def keep_up_to_date(self, every_minutes: float) -> None:
        """Index now in the background (a collection unchanged since the last index costs
        a scan), then re-scan every `every_minutes` (0: only now) so that designs added,
        changed or removed while serving are picked up without anyone clicking Reindex."""
        def watch() -> None:
            while True:
                try:
                    self.start()
                except ReindexRunning:
                    pass  # someone else's run picks the changes up
                if every_minutes <= 0 or self._closing.wait(every_minutes * 60):
                    return

        threading.Thread(target=watch, name="rescan", daemon=True).start()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until no background run is going; False if `timeout` passed first."""
        return self._idle.wait(timeout)

    def close(self, timeout: float) -> None:
        """Stop the timer and let a running reindex end after its batch (checkpoint kept)."""
        with self._closing_lock:
            self._closing.set()
        self.wait(timeout)

    def _background(self) -> None:
        try:
            self._index()
        except IndexingStopped:
            log.info("Reindex stopped at shutdown; its checkpoint is kept")
        except CollectionUnavailable as exc:  # reported on the page and in /health; the old snapshot stays
            log.warning("Re-scan skipped: %s", exc)
            self.collection_problem = self.progress.error = str(exc)
        except Exception as exc:  # reported through GET /reindex; the old snapshot stays
            log.exception("Reindex failed")
            self.progress.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.progress.running = False
            self.progress.finished_at = time.time()
            self._lock.release()
            self._idle.set()

    def _index(self) -> IndexReport:
        self.networks.refresh()
        if not self.progress.running:
            self.progress = ReindexProgress(running=True, started_at=time.time())
        while True:
            # From disk, not the snapshot in memory: a run that failed part-way left a
            # checkpoint with more in it, and this run resumes from there.
            previous = store.load_or_empty(self.config.index_file)
            try:
                # No model lock here: inference is thread-safe, and searches must keep answering.
                indexer = Indexer(self.config, self.networks.extractors, stop=self._closing.is_set)
                data, report = indexer.run(previous, self._on_progress)
                break
            except NetworkRefused as refused:  # built only now, lazily: run again without it
                if not self.networks.refuse(refused):
                    raise
        self.collection_problem = None
        self.published.publish(previous, data)
        for listener in self.finished_listeners:
            listener()
        self.progress.report = report.as_dict()
        self.progress.running = False
        self.progress.finished_at = time.time()
        log.info("Indexed %d, unchanged %d, removed %d, skipped %d in %.1fs",
                 report.indexed, report.unchanged, report.removed, len(report.skipped), report.seconds)
        return report

    def _on_progress(self, done: int, total: int, current: str) -> None:
        self.progress.done, self.progress.total, self.progress.current = done, total, current
        if self.progress_listener:
            self.progress_listener(done, total, current)
