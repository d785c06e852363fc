"""The engine: owns extractors, the current snapshot and background reindexing.

It knows nothing about HTTP; the web layer and the command line both call it.
"""
from __future__ import annotations

import atexit
import functools
import hashlib
import logging
import threading
import time
import weakref
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
from PIL import Image

from engine import models, store
from engine.config import Config
from engine.decode import Decoded, UnreadableImage, decode
from engine.indexer import CollectionUnavailable, Indexer, IndexingStopped, IndexReport
from engine.regions import RegionProposals
from engine.search import SearchResult, search
from engine.snapshot import Snapshot, build_snapshot, fused_features
from engine.thumbs import thumb_path, write_thumb
from engine.threads import one_blas_thread
from features import FEATURE_NAMES
from features.base import Extractor

log = logging.getLogger(__name__)
_LIVE: "weakref.WeakSet[Engine]" = weakref.WeakSet()


@atexit.register
def _close_live_engines() -> None:
    for engine in list(_LIVE):
        engine.close(timeout=30)


class ReindexRunning(RuntimeError):
    """A reindex is already in progress."""


class TextSearchUnavailable(RuntimeError):
    """Text search was asked for but CLIP is switched off."""


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
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

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


class Engine:
    def __init__(self, config: Config, extractors: Mapping[str, Extractor] | None = None) -> None:
        self.config = config
        one_blas_thread()
        self._fixed_extractors = extractors is not None
        if extractors is None:
            self.extractors, self.missing = models.load_extractors(config.models_dir, config.batch_size, config.regions,
                                                                  config.device)
            self._warn_missing({})
        else:
            self.extractors, self.missing = dict(extractors), {}
            if config.regions:
                self.extractors["regions"] = RegionProposals()
        # A query's features are computed on this one thread, one query at a time: torch
        # already uses every core, and each thread that calls it gets its own OpenMP team;
        # with one per web server thread, their idle teams spinning slowed searches (p95 up
        # by a quarter on 8,121 designs).  The rest of a search stays on the caller's thread,
        # so concurrent searches still overlap there (all of it on this thread cost a third
        # of the 16-client throughput).
        self._inference = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lookalike-query")
        self._decoder = ThreadPoolExecutor(max_workers=max(1, config.decode_slots), thread_name_prefix="lookalike-decode")
        self._reindex_lock = threading.Lock()
        self._reindex_idle = threading.Event()  # set whenever no reindex is running
        self._reindex_idle.set()
        self._groups_lock = threading.Lock()
        self._pairs_key: Snapshot | None = None  # the snapshot the cached pairs belong to
        self._pairs: list = []
        self.progress = ReindexProgress()
        self.progress_listener: Callable[[int, int, str], None] | None = None
        self.serving = False  # set by the web app: it keeps the duplicate report warm
        self.warm_up: Future | None = None  # the networks loading ahead of the first search
        self.collection_problem: str | None = None  # why the last re-scan could not read the images folder
        # Set by close(): the re-scan timer stops, a running reindex stops after its batch.
        self._closing = threading.Event()
        self._closing_lock = threading.Lock()  # no reindex is started once closing is set
        self._helpers: list[threading.Thread] = []  # background duplicate reports
        _LIVE.add(self)
        # What searches read is built on first use: `image.py index` never searches, and the
        # local-feature index of 8,121 designs takes seconds to build.
        self._data = store.load_or_empty(config.index_file)
        self._built: Snapshot | None = None
        self._snapshot_lock = threading.Lock()

    # -- reading -----------------------------------------------------------
    @property
    def snapshot(self) -> Snapshot:
        built = self._built
        if built is None:
            with self._snapshot_lock:
                if self._built is None:
                    self._built = self._make_snapshot(self._data)
                built = self._built
        return built

    def status(self) -> dict:
        # From the index data, not the snapshot: the page must answer while it is being built.
        data = self._data
        features, weights = fused_features(data, self._active(), self.config.weights)
        return {
            "images": len(data),
            "features": list(features),
            "features_off": self.missing,
            "weights": weights,
            "last_indexed": data.indexed_at,
            "index_complete": data.complete,
            "skipped": len(data.skipped),
            "reindex": self.progress.as_dict(),
            "networks_loading": self.warm_up is not None and not self.warm_up.done(),
            "collection_problem": self.collection_problem,
            "device": self.device,
            "shape_network": getattr(self.extractors.get("resnet"), "description", None),
        }

    @property
    def device(self) -> str:
        """Where the networks run ('cpu' when none is loaded)."""
        return next((getattr(e, "device", "cpu") for e in self.extractors.values() if hasattr(e, "device")), "cpu")

    def decode_query(self, data: bytes) -> Decoded:
        """A query's picture, within the query budget: its declared size is checked before
        any pixel is decoded, and only `decode_slots` threads of their own decode queries,
        so many hostile uploads at the same moment cannot take the machine's memory.  (On
        the web server's own threads, each kept its peak in its own malloc arena: eight
        24 MP GIFs left 3.4 GB resident with two decoding at a time.)"""
        return self._decoder.submit(decode, data, max_pixels=self.config.query_max_pixels,
                                    jpeg_max_pixels=self.config.upload_max_pixels).result()

    def search_bytes(self, data: bytes, top_k: int, weights: Mapping[str, float] | None = None) -> list[SearchResult]:
        """Search with an uploaded or on-disk image's bytes; raises UnreadableImage."""
        decoded = self.decode_query(data)
        return self.search_image(decoded.image, top_k, weights, hashlib.sha256(data).hexdigest(),
                                 (decoded.width, decoded.height))

    def search_image(
        self, image: Image.Image, top_k: int, weights: Mapping[str, float] | None = None, sha256: str | None = None,
        size: tuple[int, int] | None = None,
    ) -> list[SearchResult]:
        snap = self.snapshot
        weights = {**self.config.weights, **(weights or {})}
        # A feature weighted zero costs nothing: its network is not run for this query.
        query = self.embed(image, tuple(n for n in snap.features if weights.get(n, 0) > 0))
        return search(snap, query, image, top_k, weights, FEATURE_NAMES, sha256, size)

    def search_text(
        self, text: str, top_k: int, image_data: bytes | None = None, text_weight: float = 0.5
    ) -> list[SearchResult]:
        """Search by words with CLIP's text tower; with an image, refine it ("like this, but red")."""
        snap = self.snapshot
        clip = self.extractors.get("clip")
        if clip is None or "clip" not in snap.features:
            raise TextSearchUnavailable(
                "text search needs the CLIP weights: run `python image.py models fetch` or `models import FILE`"
            )
        vector = self._inference.submit(clip.embed_text, [text]).result()[0]
        if image_data is not None:
            image = self.decode_query(image_data).image
            mixed = (1 - text_weight) * self.embed(image, ("clip",))["clip"] + text_weight * vector
            vector = mixed / max(float(np.linalg.norm(mixed)), 1e-12)
        weights = {name: (1.0 if name == "clip" else 0.0) for name in FEATURE_NAMES}
        return search(snap, {"clip": vector}, None, top_k, weights, FEATURE_NAMES)

    def embed(self, image: Image.Image, names: tuple[str, ...]) -> dict[str, np.ndarray]:
        def run() -> dict[str, np.ndarray]:
            return {n: self.extractors[n].embed([image])[0] for n in names if n in self.extractors}

        return self._inference.submit(run).result()

    def thumbnail(self, relative: str) -> Path | None:
        """The preview file of an indexed design, made again if it went missing from the
        cache; None when the design is not indexed or its file no longer holds those bytes."""
        snap = self.snapshot
        row = snap.row_of.get(relative)
        if row is None:
            return None
        entry = snap.data.entries[row]
        path = thumb_path(self.config.thumbs_dir, entry.sha256)
        if path.is_file():
            return path
        try:
            data = (self.config.images / entry.path).read_bytes()
            if hashlib.sha256(data).hexdigest() != entry.sha256:
                return None
            decoded = self._decoder.submit(decode, data, max_pixels=self.config.index_max_pixels).result()
            write_thumb(self.config.thumbs_dir, entry.sha256, decoded.image)
        except (OSError, UnreadableImage) as exc:
            log.warning("No preview for %s: %s", relative, exc)
            return None
        return path

    def warm_networks(self) -> Future:
        """Load the networks now, in the background, on the thread that runs queries.

        They load on first use, and the first use is costly: building both and making
        their int8 copies made the first search after a start take 16 s here (the next
        one 0.2 s).  The web app starts this at once, so the first designer to drop an
        image does not wait for it; a search that comes sooner waits for the same load.
        """
        extractors = dict(self.extractors)
        blank = Image.new("RGB", (64, 64), "white")
        future = self._inference.submit(lambda: [extractor.embed([blank]) for extractor in extractors.values()])
        future.add_done_callback(_report_failed_warm_up)
        self.warm_up = future
        return future

    def duplicates(self, threshold: float | None = None) -> list:
        """Every duplicate group in the current index.

        The slow part (neighbours and verification) runs once per snapshot from a
        low floor and is cached; a threshold is then only a filter.
        """
        from engine.duplicates import CANDIDATE_SCORE, FLOOR_SCORE, find_groups, group_pairs

        threshold = CANDIDATE_SCORE if threshold is None else threshold
        snap = self.snapshot
        if threshold < FLOOR_SCORE:
            return find_groups(snap, threshold, previews=self.previews(snap))
        return group_pairs(snap, self._pairs_for(snap), threshold, self.previews(snap))

    def warm_duplicates(self) -> None:
        """Compute the duplicate report in the background, so the page opens at once."""
        thread = threading.Thread(target=lambda: self._pairs_for(self.snapshot), name="duplicates", daemon=True)
        self._helpers = [t for t in self._helpers if t.is_alive()] + [thread]
        thread.start()

    def _pairs_for(self, snap: Snapshot) -> list:
        from engine.duplicates import FLOOR_SCORE, find_pairs

        with self._groups_lock:
            if self._pairs_key is not snap:
                self._pairs = find_pairs(snap, FLOOR_SCORE, previews=self.previews(snap))
                self._pairs_key = snap
            return self._pairs

    def previews(self, snap: Snapshot):
        """Grey previews of the snapshot's rows, read from the thumbnails (a few hundred kept)."""
        @functools.lru_cache(maxsize=512)
        def preview(row: int) -> np.ndarray | None:
            try:
                with Image.open(thumb_path(self.config.thumbs_dir, snap.data.entries[row].sha256)) as image:
                    return np.asarray(image.convert("L"))
            except OSError:
                return None

        return preview

    # -- indexing ----------------------------------------------------------
    def reindex(self) -> IndexReport:
        """Index synchronously (command line); raises ReindexRunning if one is going."""
        if not self._reindex_lock.acquire(blocking=False):
            raise ReindexRunning("a reindex is already running")
        try:
            return self._reindex()
        finally:
            self._reindex_lock.release()

    def start_reindex(self) -> None:
        """Begin a background reindex; searches keep using the current snapshot meanwhile."""
        with self._closing_lock:
            if self._closing.is_set():
                return
            if not self._reindex_lock.acquire(blocking=False):
                raise ReindexRunning("a reindex is already running")
        self._reindex_idle.clear()
        self.progress = ReindexProgress(running=True, started_at=time.time())
        thread = threading.Thread(target=self._background, name="reindex", daemon=True)
        thread.start()

    def _background(self) -> None:
        try:
            self._reindex()
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
            self._reindex_lock.release()
            self._reindex_idle.set()

    def keep_up_to_date(self, every_minutes: float) -> None:
        """Index now in the background (a collection unchanged since the last index costs
        a scan), then re-scan every `every_minutes` (0: only now) so that designs added,
        changed or removed while serving are picked up without anyone clicking Reindex."""
        def watch() -> None:
            while True:
                try:
                    self.start_reindex()
                except ReindexRunning:
                    pass  # someone else's run picks the changes up
                if every_minutes <= 0 or self._closing.wait(every_minutes * 60):
                    return

        threading.Thread(target=watch, name="rescan", daemon=True).start()

    def close(self, timeout: float = 60.0) -> None:
        """Stop the background work before the process ends: the re-scan timer, a running
        reindex (after its current batch; its checkpoint is kept), the duplicate report and
        the network load.  Native code (torch, FAISS) still running in a daemon thread when
        the interpreter exits aborts the process ("terminate called without an active
        exception"), which turns a clean exit into a crash."""
        with self._closing_lock:
            self._closing.set()
        self.wait_for_reindex(timeout)
        for thread in self._helpers:
            thread.join(timeout)
        if self.warm_up is not None:
            wait([self.warm_up], timeout)
        self._inference.shutdown(wait=True, cancel_futures=True)
        self._decoder.shutdown(wait=True, cancel_futures=True)

    def wait_for_reindex(self, timeout: float | None = None) -> bool:
        """Block until no background reindex is running; False if `timeout` passed first."""
        return self._reindex_idle.wait(timeout)

    def _reindex(self) -> IndexReport:
        self._refresh_extractors()
        if not self.progress.running:
            self.progress = ReindexProgress(running=True, started_at=time.time())
        # From disk, not the snapshot in memory: a run that failed part-way left a
        # checkpoint with more in it, and this run resumes from there.
        previous = store.load_or_empty(self.config.index_file)
        # No model lock here: inference is thread-safe, and searches must keep answering.
        data, report = Indexer(self.config, self.extractors, stop=self._closing.is_set).run(previous, self._on_progress)
        self.collection_problem = None
        with self._snapshot_lock:
            current = self._built
            unchanged = data is previous and self._data.indexed_at == data.indexed_at  # the same save
            if not (unchanged and (current is None or set(current.features) <= set(self.extractors))):
                # An unchanged index keeps its snapshot: rebuilding the local-feature index of
                # 8,121 designs takes seconds.  One nobody has read yet stays unbuilt.
                self._data = data
                self._built = None if current is None else self._make_snapshot(data)
        if self.serving:
            self.warm_duplicates()
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

    def _refresh_extractors(self) -> None:
        """Pick up weights that appeared since start-up, keeping models already loaded."""
        if self._fixed_extractors:
            return
        fresh, missing = models.load_extractors(self.config.models_dir, self.config.batch_size, self.config.regions,
                                                self.config.device)
        before, self.missing = self.missing, missing
        self._warn_missing(before)
        for name, extractor in fresh.items():
            current = self.extractors.get(name)
            if current is None or current.fingerprint() != extractor.fingerprint():
                self.extractors[name] = extractor

    def _warn_missing(self, before: Mapping[str, str]) -> None:
        for name, reason in self.missing.items():
            if name not in before:
                log.warning("FEATURE OFF: %s", reason)
        for name in set(before) - set(self.missing):
            log.warning("FEATURE ON: %s weights found; its vectors will be extracted", name)

    def _active(self) -> tuple[str, ...]:
        return tuple(n for n in FEATURE_NAMES if n in self.extractors)

    def _make_snapshot(self, data: store.IndexData) -> Snapshot:
        return build_snapshot(data, self._active(), self.config.weights)


def _report_failed_warm_up(future: Future) -> None:
    # Nothing waits on the warm-up: say why it failed here; a search then retries the load.
    if future.exception() is not None:
        log.warning("Loading the networks ahead of the first search failed: %s", future.exception())
