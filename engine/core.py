"""The engine's front door: search, status, reindex, duplicates and the collection's files.

It is made of named parts (the networks, the published index, the reindex job,
the duplicate report) and knows nothing about HTTP; the web layer and the
command line both call it.
"""
from __future__ import annotations

import atexit
import hashlib
import logging
import weakref
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Mapping

from PIL import Image

from engine.config import Config
from engine.images.decode import Decoded, decode
from engine.images.files import CollectionFiles
from engine.index.job import ReindexJob, ReindexProgress
from engine.index.milvus import open_store
from engine.index.pipeline import IndexReport
from engine.index.published import PublishedIndex
from engine.index.snapshot import Snapshot, fused_features
from engine.match.calibration import DEFAULT_SAMPLE, DEFAULT_TARGET, Calibration
from engine.match.calibration_job import CalibrationJob
from engine.match.duplicates import Group, to_csv
from engine.match.report import DuplicateReport
from engine.match.search import SearchResult, search
from engine.models.networks import Networks
from engine.models.threads import quiet_helper_pools
from features import FEATURE_NAMES
from features.base import Extractor, l2_normalize

log = logging.getLogger(__name__)
_LIVE: "weakref.WeakSet[Engine]" = weakref.WeakSet()
# Seconds each background part of a live engine gets to stop at interpreter exit.
EXIT_TIMEOUT = 30


@atexit.register
def _close_live_engines() -> None:
    for engine in list(_LIVE):
        engine.close(timeout=EXIT_TIMEOUT)


class TextSearchUnavailable(RuntimeError):
    """Text search was asked for but CLIP is switched off."""


class Engine:
    def __init__(self, config: Config, extractors: Mapping[str, Extractor] | None = None) -> None:
        self.config = config
        quiet_helper_pools()
        self.networks = Networks(config, extractors)
        self.store = open_store(config)
        self.index = PublishedIndex(config.index_file, lambda: self.networks.fused, config.weights,
                                    lambda snapshot: self.calibration.thresholds(snapshot), self.store)
        self.job = ReindexJob(config, self.networks, self.index)
        self.report = DuplicateReport(config.thumbs_dir)
        self._decoder = ThreadPoolExecutor(max_workers=max(1, config.decode_slots), thread_name_prefix="lookalike-decode")
        self.calibration = CalibrationJob(config, self.networks, self.index, self.report, self.decode_query)
        self.files = CollectionFiles(config, lambda: self.snapshot, self._decoder)
        _LIVE.add(self)

    # -- reading -----------------------------------------------------------
    @property
    def snapshot(self) -> Snapshot:
        return self.index.snapshot

    @property
    def progress(self) -> ReindexProgress:
        return self.job.progress

    def status(self) -> dict:
        # From the index data, not the snapshot: the page must answer while it is being built.
        data = self.index.data
        features, weights = fused_features(data, self.networks.fused, self.config.weights)
        return {
            "images": len(data), "features": list(features), "features_off": self.networks.missing,
            "weights": weights, "last_indexed": data.indexed_at, "index_complete": data.complete,
            "skipped": len(data.skipped), "reindex": self.progress.as_dict(),
            "networks_loading": self.networks.loading, "collection_problem": self.job.collection_problem,
            "device": self.networks.device, "shape_network": self.networks.shape_network,
            "verdicts": self.calibration.note(data, features), "calibration": self.calibration.progress.as_dict(),
            "store": self.store.describe() if self.store else {"kind": "faiss", "problem": None},
        }

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
        query = self.networks.embed(image, tuple(n for n in snap.features if weights.get(n, 0) > 0))
        return search(snap, query, image, top_k, weights, FEATURE_NAMES, sha256, size, self.report.previews(snap))

    def search_text(
        self, text: str, top_k: int, image_data: bytes | None = None, text_weight: float = 0.5
    ) -> list[SearchResult]:
        """Search by words with CLIP's text tower; with an image, refine it ("like this, but red")."""
        snap = self.snapshot
        vector = self.networks.embed_text(text) if "clip" in snap.features else None
        if vector is None:
            raise TextSearchUnavailable(
                "text search needs the CLIP weights: run `python image.py models fetch` or `models import FILE`"
            )
        if image_data is not None:
            image = self.decode_query(image_data).image
            mixed = (1 - text_weight) * self.networks.embed(image, ("clip",))["clip"] + text_weight * vector
            vector = l2_normalize(mixed[None])[0]
        weights = {name: (1.0 if name == "clip" else 0.0) for name in FEATURE_NAMES}
        return search(snap, {"clip": vector}, None, top_k, weights, FEATURE_NAMES)

    def warm_networks(self) -> Future:
        return self.networks.warm()

    # -- duplicates --------------------------------------------------------
    def duplicates(self, threshold: float | None = None) -> list[Group]:
        """Every duplicate group in the current index."""
        return self.report.groups(self.snapshot, threshold)

    def duplicates_csv(self, threshold: float | None = None) -> str:
        return to_csv(self.duplicates(threshold))

    def keep_duplicates_warm(self) -> None:
        """Make the duplicate report now and after every reindex, so its page opens at once."""
        self.job.finished_listeners.append(self.warm_duplicates)
        self.warm_duplicates()

    def warm_duplicates(self) -> None:
        self.report.warm(lambda: self.snapshot)

    # -- calibration -------------------------------------------------------
    def calibrate(self, sample: int = DEFAULT_SAMPLE, target: float = DEFAULT_TARGET,
                  progress: Callable[[int, int], None] | None = None) -> Calibration:
        """Choose the verdicts' thresholds on this collection (engine/match/calibration.py)."""
        return self.calibration.run(sample, target, progress)

    def start_calibration(self, sample: int = DEFAULT_SAMPLE, target: float = DEFAULT_TARGET) -> None:
        self.calibration.start(sample, target)

    def keep_calibrated(self) -> None:
        """Calibrate by itself after an index whose features have no calibration yet."""
        self.job.finished_listeners.append(self.calibration.when_needed)

    # -- indexing ----------------------------------------------------------
    def reindex(self) -> IndexReport:
        """Index synchronously (command line); raises ReindexRunning if one is going."""
        return self.job.run()

    def start_reindex(self) -> None:
        """Begin a background reindex; searches keep using the current snapshot meanwhile."""
        self.job.start()

    def keep_up_to_date(self, every_minutes: float) -> None:
        self.job.keep_up_to_date(every_minutes)

    def wait_for_reindex(self, timeout: float | None = None) -> bool:
        """Block until no background reindex is running; False if `timeout` passed first."""
        return self.job.wait(timeout)

    def on_progress(self, listener: Callable[[int, int, str], None]) -> None:
        self.job.progress_listener = listener

    def close(self, timeout: float = 60.0) -> None:
        """Stop the background work before the process ends: the re-scan timer, a running
        reindex (after its current batch; its checkpoint is kept), the duplicate report and
        the network load.  Native code (torch, FAISS) still running in a daemon thread when
        the interpreter exits aborts the process ("terminate called without an active
        exception"), which turns a clean exit into a crash."""
        self.job.close(timeout)
        self.calibration.close(timeout)
        self.report.close(timeout)
        self.networks.close(timeout)
        self._decoder.shutdown(wait=True, cancel_futures=True)
        if self.store is not None:
            self.store.close()
