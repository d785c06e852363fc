"""Calibration as the engine runs it: from the command line, from the page, or by itself
after an index whose features have no calibration yet; one run at a time."""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

from PIL import Image

from engine.config import Config
from engine.images.decode import Decoded, decode
from engine.index.published import PublishedIndex
from engine.index.snapshot import Snapshot
from engine.index.store import IndexData
from engine.match import calibration
from engine.match.calibration import Calibration, CalibrationStopped, TooSmall
from engine.match.report import DuplicateReport
from engine.match.verdict import BUILT_IN, Thresholds
from engine.models.networks import Networks

log = logging.getLogger(__name__)
BUILT_IN_NOTE = "built-in thresholds, not calibrated on this collection"


class CalibrationRunning(RuntimeError):
    """A calibration is already in progress."""


@dataclass
class CalibrationProgress:
    running: bool = False
    done: int = 0
    total: int = 0
    error: str | None = None
    started_at: float | None = None

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class CalibrationJob:
    def __init__(self, config: Config, networks: Networks, index: PublishedIndex, report: DuplicateReport,
                 decode_query: Callable[[bytes], Decoded]) -> None:
        self.config = config
        self.path = config.cache / calibration.FILE_NAME
        self.networks = networks
        self.index = index
        self.report = report
        self.decode_query = decode_query
        self.progress = CalibrationProgress()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._read: tuple[tuple, Calibration | None] = ((), None)  # (file version and features, what it held)

    def current(self, snapshot: Snapshot) -> Calibration | None:
        """The calibration made for this snapshot's features, if any."""
        return self._load(calibration.fingerprints_of(snapshot))

    def thresholds(self, snapshot: Snapshot) -> Thresholds:
        found = self.current(snapshot)
        return BUILT_IN if found is None else found.thresholds

    def note(self, data: IndexData, features: tuple[str, ...]) -> str:
        """Where the verdicts' thresholds come from, in words (without building a snapshot)."""
        found = self._load(calibration.fingerprints_for(data, features))
        return BUILT_IN_NOTE if found is None else found.summary()

    def run(self, sample: int = calibration.DEFAULT_SAMPLE, target: float = calibration.DEFAULT_TARGET,
            progress: Callable[[int, int], None] | None = None) -> Calibration:
        """Calibrate now, on this thread, and make the verdicts use it; raises TooSmall,
        CalibrationRunning, CalibrationStopped."""
        if not self._lock.acquire(blocking=False):
            raise CalibrationRunning("a calibration is already running")
        try:
            return self._calibrate(sample, target, progress)
        finally:
            self._lock.release()

    def start(self, sample: int = calibration.DEFAULT_SAMPLE, target: float = calibration.DEFAULT_TARGET) -> None:
        """Calibrate in the background; searches keep their current thresholds meanwhile."""
        if not self._lock.acquire(blocking=False):
            raise CalibrationRunning("a calibration is already running")
        self.progress = CalibrationProgress(running=True, started_at=time.time())

        def work() -> None:
            try:
                self._calibrate(sample, target, self._on_progress)
            except (TooSmall, CalibrationStopped) as exc:
                self.progress.error = str(exc)
                log.info("Calibration: %s", exc)
            except Exception as exc:  # reported through GET /calibrate; the thresholds stay as they were
                log.exception("Calibration failed")
                self.progress.error = f"{type(exc).__name__}: {exc}"
            finally:
                self.progress.running = False
                self._lock.release()

        self._thread = threading.Thread(target=work, name="calibration", daemon=True)
        self._thread.start()

    def when_needed(self) -> None:
        """Calibrate in the background if the index's features have no calibration yet and
        the collection is large enough (called after each finished reindex)."""
        if len(self.index.data) < calibration.MIN_DESIGNS or self._stop.is_set():
            return  # too small (or closing): no snapshot is built only to find that out
        if self.current(self.index.snapshot) is None:
            try:
                self.start()
            except CalibrationRunning:
                pass

    def wait(self, timeout: float | None = None) -> bool:
        """Block until no background calibration is running; False if `timeout` passed first."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return thread is None or not thread.is_alive()

    def close(self, timeout: float) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def reader(self, snapshot) -> Callable[[int], Image.Image]:
        """The picture of an indexed design, by row, as the calibration edits it."""
        def read(row: int) -> Image.Image:
            data = (self.config.images / snapshot.data.entries[row].path).read_bytes()
            return decode(data, max_pixels=self.config.index_max_pixels).image

        return read

    def _calibrate(self, sample: int, target: float, progress) -> Calibration:
        snapshot = self.index.snapshot
        made = calibration.calibrate(snapshot, self.networks.embed, self.reader(snapshot), self.decode_query,
                                     self.report.previews(snapshot), sample, target, stop=self._stop.is_set,
                                     progress=progress)
        calibration.save(self.path, made)
        self.index.recalibrated()
        log.info("Verdicts %s", made.summary())
        return made

    def _load(self, fingerprints: dict[str, str]) -> Calibration | None:
        """The stored calibration for these features, read again only when the file or the
        features change: the page asks on every status, and a bad file is reported once."""
        try:
            stat = self.path.stat()
            version = (stat.st_mtime_ns, stat.st_size, tuple(sorted(fingerprints.items())))
        except OSError:
            return None
        if self._read[0] != version:
            self._read = (version, calibration.load(self.path, fingerprints))
        return self._read[1]

    def _on_progress(self, done: int, total: int) -> None:
        self.progress.done, self.progress.total = done, total
