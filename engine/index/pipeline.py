"""Indexing a collection: extract what changed, save atomically.

What changed is decided by engine/index/changes.py, the index is put together
by engine/index/assemble.py; this runs the work.  Reading, hashing, decoding,
thumbnails and the features cheap enough for it run in workers (threads, or
processes on a machine with many cores: engine/index/worker_processes.py)
while the networks run on batches in the calling thread, JPEGs decoded on the
networks' GPU where they run on one (engine/images/gpu_jpeg.py).  The index is
saved as a checkpoint every few hundred images, so an interrupted run resumes there.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Iterator, Mapping

import numpy as np
from PIL import Image

from engine.config import Config
from engine.images import regions
from engine.images.decode import ANALYSIS_SIDE, UnreadableImage, decode
from engine.images.gpu_jpeg import GpuJpegDecoder
from engine.images.scan import FileInfo
from engine.images.thumbs import write_thumb
from engine.index import store, worker_processes
from engine.index.assemble import assemble
from engine.index.changes import (CollectionUnavailable, RunState, StillBeingWritten, files_to_index,
                                  read_whole)
from engine.index.store import Entry, IndexData
from engine.models.threads import quiet_helper_pools, torch_on_one_thread
from features import registry
from features.base import INPUT_SIDE, Extractor, letterbox
from features.regions import propose

log = logging.getLogger(__name__)
ProgressFn = Callable[[int, int, str], None]
# The features of the designs inside a sheet, by the stage that extracts them.
WORKER_REGION_FEATURES = tuple(f.name for f in registry.FEATURES if f.in_regions and f.in_workers)
NETWORK_REGION_FEATURES = tuple(f.name for f in registry.FEATURES if f.in_regions and not f.in_workers)
__all__ = ["CollectionUnavailable", "IndexReport", "Indexer", "IndexingStopped", "StillBeingWritten"]


@dataclass
class IndexReport:
    indexed: int = 0  # new to the index (a copy of known bytes included, though nothing was extracted)
    unchanged: int = 0  # same bytes at the same path (a touched file included)
    moved: int = 0  # same bytes, new path, old path gone
    removed: int = 0
    extracted: int = 0  # files decoded and run through the extractors
    skipped: list[dict] = field(default_factory=list)
    features: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {
            "indexed": self.indexed, "unchanged": self.unchanged, "moved": self.moved, "removed": self.removed,
            "extracted": self.extracted, "skipped": self.skipped, "features": self.features,
            "seconds": round(self.seconds, 3),
        }


class IndexingStopped(Exception):
    """The run was asked to stop; what was extracted is in the checkpoint."""


@dataclass
class Prepared:
    """A file after the worker stage: its entry, picture and worker-side features."""

    file: FileInfo
    needs: frozenset[str]
    entry: Entry | None = None
    network_input: Image.Image | None = None  # the picture letterboxed to what the networks take
    rows: dict[str, np.ndarray] = field(default_factory=dict)
    region_boxes: list[tuple[int, int, int, int]] = field(default_factory=list)
    region_images: list[Image.Image] = field(default_factory=list)
    region_rows: dict[str, np.ndarray] = field(default_factory=dict)
    error: str | StillBeingWritten | None = None


class Indexer:
    def __init__(self, config: Config, extractors: Mapping[str, Extractor],
                 stop: Callable[[], bool] = lambda: False) -> None:
        """`stop`: asked after every batch; True ends the run (IndexingStopped) at a checkpoint."""
        self.config = config
        self.stop = stop
        self.extractors = dict(extractors)
        self.fingerprints = {name: ex.fingerprint() for name, ex in self.extractors.items()}
        self.checkpoint_every = config.checkpoint_every
        # Files handed to the networks at a time.  A GPU gets its own batches' worth: fed 32 at
        # a time its time went in launching kernels, and the designs' pipeline ran at 64% of
        # what its workers could prepare, against 84% at 128 (docs/benchmarks.md, Devices).
        self.batch_size = max([config.batch_size] + [getattr(e, "batch_size", 0) for e in _on_gpus(self.extractors)])
        self.gpu_jpeg: GpuJpegDecoder | None = None  # set for the length of a run on a GPU

    def run(self, previous: IndexData, progress: ProgressFn | None = None) -> tuple[IndexData, IndexReport]:
        started = time.monotonic()
        quiet_helper_pools()  # the workers are the parallelism: one picture each
        shapes = {name: (ex.dim, getattr(ex, "dtype", np.float32)) for name, ex in self.extractors.items()}
        state = RunState(previous, self.fingerprints, shapes, files_to_index(self.config.images, previous))
        state.recognise_all(self.config.images, self.config.threads)
        work, counts, skipped = state.plan()
        report = IndexReport(indexed=counts["indexed"], unchanged=counts["unchanged"], moved=counts["moved"],
                             removed=counts["removed"], skipped=skipped, features=sorted(self.extractors))
        if progress:
            progress(0, len(work), "")  # the size of the run is known before its first batch
        prepared_files, in_processes = worker_processes.stage(self, len(work))
        with self._jpeg_decoder(bool(work) and not in_processes), torch_on_one_thread(bool(_on_gpus(self.extractors))):
            done = self._extract(prepared_files(work), len(work), state, report, progress)
        if progress:
            progress(done, len(work), "")
        if not work and state.unchanged():
            # Nothing changed: the index on disk stands as it is (an unchanged re-scan
            # of 8,121 files spent 1.4 s assembling and 2.9 s rewriting it).
            report.seconds = time.monotonic() - started
            return previous, report
        data = assemble(state, complete=True)
        data.indexed_at = time.time()
        store.save(data, self.config.index_file)
        report.seconds = time.monotonic() - started
        return data, report

    def jpeg_device(self) -> str | None:
        """The GPU the networks run on, where JPEGs are decoded too; None: the CPU decodes."""
        return _network_gpu(self.extractors) if self.config.gpu_jpeg else None

    @contextlib.contextmanager
    def _jpeg_decoder(self, needed: bool):
        device = self.jpeg_device() if needed else None
        try:
            with GpuJpegDecoder(device, ANALYSIS_SIDE) if device else contextlib.nullcontext() as self.gpu_jpeg:
                yield
        finally:
            self.gpu_jpeg = None  # closed: a picture asked of it would never be answered

    def _extract(self, prepared_files: Iterator[Prepared], total: int, state: RunState, report: IndexReport,
                 progress: ProgressFn | None) -> int:
        """Workers prepare the files, this thread runs the networks batch by batch; a
        checkpoint every few hundred files, and on any way out but the normal one."""
        done = 0
        try:
            batch: list[Prepared] = []
            for prepared in prepared_files:
                batch.append(prepared)
                if len(batch) >= self.batch_size:
                    done += self._finish(batch, state, report)
                    batch = []
                    if progress:
                        progress(done, total, prepared.file.path)
                    if self.stop():
                        raise IndexingStopped("the engine is closing")
                    if state.fresh_since_checkpoint >= self.checkpoint_every:
                        self._checkpoint(state)
            done += self._finish(batch, state, report)
        except BaseException:
            self._checkpoint(state)  # Ctrl-C or a crash: keep what was extracted
            raise
        return done

    def prepare(self, item: tuple[FileInfo, frozenset[str]]) -> Prepared:
        """Worker stage: read once, hash, decode once, thumbnail, cheap features.

        `item`: a file and the features it needs (the networks' are left for `_finish`)."""
        file, needs = item
        prepared = Prepared(file=file, needs=needs)
        try:
            data = read_whole(self.config.images, file)
            digest = hashlib.sha256(data).hexdigest()
            with_regions = "regions" in self.extractors
            decoded = decode(data, max_pixels=self.config.index_max_pixels, keep_full=with_regions,
                             gpu_jpeg=self.gpu_jpeg)
            prepared.entry = Entry(file.path, file.size, file.mtime_ns, digest, decoded.width, decoded.height)
            # Whenever an image is decoded its regions are redone, so they carry every current feature.
            boxes = propose(decoded.image) if with_regions else []
            crops = regions.detailed_crops(data, decoded, boxes, self.config.index_max_pixels)
            decoded = replace(decoded, full=None)  # let the full-size picture go early
            for name in needs & registry.IN_WORKERS:
                prepared.rows[name] = self.extractors[name].embed([decoded.image])[0]
            prepared.region_boxes, prepared.region_images = boxes, crops
            if needs - registry.IN_WORKERS:  # here, in parallel, not on the thread that feeds the networks
                prepared.network_input = letterbox(decoded.image, INPUT_SIDE)
            for name in _present(WORKER_REGION_FEATURES, self.extractors) if crops else ():
                # Local points of each design on its own: on a busy sheet the whole picture's
                # strongest points crowd onto one design, at a fraction of a query's scale.
                prepared.region_rows[name] = self.extractors[name].embed(crops)
            _thumbnail(self.config, file, digest, decoded.image)
        except UnreadableImage as exc:
            prepared.error = str(exc)
        except StillBeingWritten as exc:
            prepared.error = exc
        except OSError as exc:
            prepared.error = f"cannot read file: {exc.strerror or exc}"
        except Exception as exc:  # one strange file must never stop the whole run
            log.exception("Unexpected failure on %s", file.path)
            prepared.error = f"unexpected error: {type(exc).__name__}: {exc}"
        return prepared

    def _finish(self, batch: list[Prepared], state: RunState, report: IndexReport) -> int:
        """Main-thread stage: run the networks on the batch and record the rows."""
        good = [p for p in batch if p.error is None]
        for p in batch:
            if p.error is not None:
                log.warning("Skipped %s: %s", p.file.path, p.error)
                report.skipped.append({"path": p.file.path, "reason": str(p.error)})
                state.skip(p.file, str(p.error), remember=not isinstance(p.error, StillBeingWritten))
        for name in set().union(*(p.needs for p in good)) - registry.IN_WORKERS if good else ():
            wanting = [p for p in good if name in p.needs]
            for p, row in zip(wanting, self.extractors[name].embed([p.network_input for p in wanting])):
                p.rows[name] = row
        self._embed_regions(good)
        for p in good:
            state.record(p)
            p.network_input = None
            p.region_images = []
        report.indexed += len(good)
        report.extracted += len(good)
        return len(batch)

    def _embed_regions(self, batch: list[Prepared]) -> None:
        """The region features for every region of the batch (a parent's regions are redone together)."""
        crops = [im for p in batch for im in p.region_images]
        if not crops:
            return
        for name in _present(NETWORK_REGION_FEATURES, self.extractors):
            rows = self.extractors[name].embed(crops)
            start = 0
            for p in batch:
                p.region_rows[name] = rows[start : start + len(p.region_images)]
                start += len(p.region_images)

    def _checkpoint(self, state: RunState) -> None:
        if state.fresh_since_checkpoint:
            store.save(assemble(state, complete=False), self.config.index_file)
            state.fresh_since_checkpoint = 0


def _thumbnail(config: Config, file: FileInfo, sha256: str, image: Image.Image) -> None:
    try:
        write_thumb(config.thumbs_dir, sha256, image)
    except OSError as exc:  # a missing preview is cosmetic; the page falls back to the image
        log.warning("No thumbnail for %s: %s", file.path, exc)


def _on_gpus(extractors: Mapping[str, Extractor]) -> list[Extractor]:
    """The extractors that run on a GPU (the networks, where torch sees one)."""
    return [e for e in extractors.values() if getattr(e, "device", "cpu") != "cpu"]


def _network_gpu(extractors: Mapping[str, Extractor]) -> str | None:
    return next((e.device for e in _on_gpus(extractors)), None)


def _present(names: tuple[str, ...], extractors: Mapping[str, Extractor]) -> tuple[str, ...]:
    return tuple(n for n in names if n in extractors)
