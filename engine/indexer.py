"""Incremental indexing: find what changed, extract only that, save atomically.

Per file, a feature is (re)extracted only when the file is new, its bytes
changed, or the feature's fingerprint (model, weights, preprocessing)
differs from the one its stored row was made with.  Reading, hashing,
decoding, thumbnails and the colour histogram run in worker threads while
the networks run on batches in the calling thread.  The index is saved as a
checkpoint every few hundred images, so an interrupted run resumes there.
"""
from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Mapping

import numpy as np
from PIL import Image

from engine import store
from engine.config import Config
from engine.decode import UnreadableImage, decode
from engine.parallel import completed_map
from engine.scan import FileInfo, scan
from engine import regions
from engine.store import Entry, IndexData, Regions
from engine.thumbs import write_thumb
from features.base import INPUT_SIDE, Extractor, letterbox

log = logging.getLogger(__name__)

# Extractors cheap enough to run inside the decode workers, in parallel.
WORKER_FEATURES = {"hsv", "orb", "orb_mirror", "thumbprint", "regions"}
# What a region stores: its fused features plus local-feature points for verification.
REGION_FEATURES = set(regions.EMBEDDED_WITH) | {"orb"}
ProgressFn = Callable[[int, int, str], None]


@dataclass
class IndexReport:
    indexed: int = 0
    unchanged: int = 0
    removed: int = 0
    skipped: list[dict] = field(default_factory=list)
    features: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {
            "indexed": self.indexed, "unchanged": self.unchanged, "removed": self.removed,
            "skipped": self.skipped, "features": self.features, "seconds": round(self.seconds, 3),
        }


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
    error: str | None = None


class Indexer:
    def __init__(self, config: Config, extractors: Mapping[str, Extractor]) -> None:
        self.config = config
        self.extractors = dict(extractors)
        self.fingerprints = {name: ex.fingerprint() for name, ex in self.extractors.items()}
        self.checkpoint_every = config.checkpoint_every

    def run(self, previous: IndexData, progress: ProgressFn | None = None) -> tuple[IndexData, IndexReport]:
        started = time.monotonic()
        report = IndexReport(features=sorted(self.extractors))
        files = list(scan(self.config.images))
        shapes = {name: (ex.dim, getattr(ex, "dtype", np.float32)) for name, ex in self.extractors.items()}
        state = _RunState(previous, self.fingerprints, shapes, files)
        report.removed = len({e.path for e in previous.entries} - {f.path for f in files})
        work = []
        for file in files:
            needs = state.needs(file)
            if needs is None:
                report.skipped.append({"path": file.path, "reason": previous.skipped[file.path]["reason"]})
            elif needs:
                work.append((file, frozenset(needs)))
            else:
                report.unchanged += 1
        done = 0
        try:
            batch: list[Prepared] = []
            for prepared in completed_map(self.prepare, work, self.config.threads, window=4 * self.config.batch_size):
                batch.append(prepared)
                if len(batch) >= self.config.batch_size:
                    done += self._finish(batch, state, report)
                    batch = []
                    if progress:
                        progress(done, len(work), prepared.file.path)
                    if state.fresh_since_checkpoint >= self.checkpoint_every:
                        self._checkpoint(state)
            done += self._finish(batch, state, report)
        except BaseException:
            self._checkpoint(state)  # Ctrl-C or a crash: keep what was extracted
            raise
        if progress:
            progress(done, len(work), "")
        if not work and state.unchanged():
            # Nothing changed: the index on disk stands as it is (an unchanged re-scan
            # of 8,121 files spent 1.4 s assembling and 2.9 s rewriting it).
            report.seconds = time.monotonic() - started
            return previous, report
        data = state.assemble(complete=True)
        data.indexed_at = time.time()
        store.save(data, self.config.index_file)
        report.seconds = time.monotonic() - started
        return data, report

    def prepare(self, item: tuple[FileInfo, frozenset[str]]) -> Prepared:
        """Worker stage: read once, hash, decode once, thumbnail, cheap features.

        `item`: a file and the features it needs (the networks' are left for `_finish`)."""
        file, needs = item
        prepared = Prepared(file=file, needs=needs)
        try:
            data = (self.config.images / file.path).read_bytes()
            digest = hashlib.sha256(data).hexdigest()
            with_regions = "regions" in self.extractors
            decoded = decode(data, max_pixels=self.config.index_max_pixels, keep_full=with_regions)
            prepared.entry = Entry(file.path, file.size, file.mtime_ns, digest, decoded.width, decoded.height)
            # Whenever an image is decoded its regions are redone, so they carry every current feature.
            boxes = regions.propose(decoded.image) if with_regions else []
            crops = regions.detailed_crops(data, decoded, boxes, self.config.index_max_pixels)
            decoded = replace(decoded, full=None)  # let the full-size picture go early
            for name in needs & WORKER_FEATURES:
                prepared.rows[name] = self.extractors[name].embed([decoded.image])[0]
            prepared.region_boxes, prepared.region_images = boxes, crops
            if needs - WORKER_FEATURES:  # here, in parallel, not on the thread that feeds the networks
                prepared.network_input = letterbox(decoded.image, INPUT_SIDE)
            if crops and "orb" in self.extractors:
                # Points of each design on its own: on a busy sheet the whole picture's
                # strongest points crowd onto one design, at a fraction of a query's scale.
                prepared.region_rows["orb"] = self.extractors["orb"].embed(crops)
            self._thumbnail(file, digest, decoded.image)
        except UnreadableImage as exc:
            prepared.error = str(exc)
        except OSError as exc:
            prepared.error = f"cannot read file: {exc.strerror or exc}"
        except Exception as exc:  # one strange file must never stop the whole run
            log.exception("Unexpected failure on %s", file.path)
            prepared.error = f"unexpected error: {type(exc).__name__}: {exc}"
        return prepared

    def _thumbnail(self, file: FileInfo, sha256: str, image: Image.Image) -> None:
        try:
            write_thumb(self.config.thumbs_dir, sha256, image)
        except OSError as exc:  # a missing preview is cosmetic; the page falls back to the image
            log.warning("No thumbnail for %s: %s", file.path, exc)

    def _finish(self, batch: list[Prepared], state: "_RunState", report: IndexReport) -> int:
        """Main-thread stage: run the networks on the batch and record the rows."""
        good = [p for p in batch if p.error is None]
        for p in batch:
            if p.error is not None:
                log.warning("Skipped %s: %s", p.file.path, p.error)
                report.skipped.append({"path": p.file.path, "reason": p.error})
                state.skip(p.file, p.error)
        for name in set().union(*(p.needs for p in good)) - WORKER_FEATURES if good else ():
            wanting = [p for p in good if name in p.needs]
            for p, row in zip(wanting, self.extractors[name].embed([p.network_input for p in wanting])):
                p.rows[name] = row
        self._embed_regions(good)
        for p in good:
            state.record(p)
            p.network_input = None
            p.region_images = []
        report.indexed += len(good)
        return len(batch)

    def _embed_regions(self, batch: list[Prepared]) -> None:
        """The region features for every region of the batch (a parent's regions are redone together)."""
        crops = [im for p in batch for im in p.region_images]
        if not crops:
            return
        for name in (n for n in regions.EMBEDDED_WITH if n in self.extractors):
            rows = self.extractors[name].embed(crops)
            start = 0
            for p in batch:
                p.region_rows[name] = rows[start : start + len(p.region_images)]
                start += len(p.region_images)

    def _checkpoint(self, state: "_RunState") -> None:
        if state.fresh_since_checkpoint:
            store.save(state.assemble(complete=False), self.config.index_file)
            state.fresh_since_checkpoint = 0


class _RunState:
    """What is known during a run: the previous index plus rows made so far."""

    def __init__(
        self,
        previous: IndexData,
        fingerprints: Mapping[str, str],
        shapes: Mapping[str, tuple[int, type]],
        files: list[FileInfo],
    ) -> None:
        self.previous = previous
        self.fingerprints = dict(fingerprints)
        # (columns, dtype) of every feature block, old ones included.
        self.shapes = {**{n: (v.shape[1], v.dtype) for n, v in previous.vectors.items()}, **shapes}
        self.files = files
        self.old_row = {e.path: i for i, e in enumerate(previous.entries)}
        self.fresh: dict[str, tuple[Entry, dict[str, np.ndarray]]] = {}
        self.skipped: dict[str, dict] = {}
        self.fresh_regions: dict[str, tuple[np.ndarray, dict[str, np.ndarray]]] = {}
        self.fresh_since_checkpoint = 0

    def valid(self, name: str, row: int) -> bool:
        """Whether the stored row of feature `name` was made by today's extractor."""
        prev = self.previous
        return prev.fingerprints.get(name) == self.fingerprints[name] and bool(prev.present[name][row])

    def unchanged(self) -> bool:
        """With nothing to extract: whether the saved index already says all there is to say
        (no file gone, no skipped file gone, every feature made by today's extractor)."""
        prev = self.previous
        return (prev.complete and prev.indexed_at is not None
                and set(self.old_row) | set(prev.skipped) == {f.path for f in self.files}
                and all(prev.fingerprints.get(n) == f for n, f in self.fingerprints.items()))

    def needs(self, file: FileInfo) -> set[str] | None:
        """Features to extract for a file; None when it is a known-bad unchanged file."""
        bad = self.previous.skipped.get(file.path)
        if bad and bad["size"] == file.size and bad["mtime_ns"] == file.mtime_ns:
            self.skipped[file.path] = bad
            return None
        row = self.old_row.get(file.path)
        if row is None:
            return set(self.fingerprints)
        old = self.previous.entries[row]
        if (old.size, old.mtime_ns) != (file.size, file.mtime_ns):
            return set(self.fingerprints)
        return {name for name in self.fingerprints if not self.valid(name, row)}

    def skip(self, file: FileInfo, reason: str) -> None:
        self.skipped[file.path] = {"size": file.size, "mtime_ns": file.mtime_ns, "reason": reason}

    def record(self, prepared: Prepared) -> None:
        self.fresh[prepared.file.path] = (prepared.entry, prepared.rows)
        boxes = np.array(prepared.region_boxes, dtype=np.float32).reshape(-1, 4)
        self.fresh_regions[prepared.entry.sha256] = (boxes, prepared.region_rows)
        self.fresh_since_checkpoint += 1

    def assemble(self, complete: bool) -> IndexData:
        """The index as of now: fresh rows, else still-valid old rows, per feature."""
        prev = self.previous
        names = sorted(set(self.fingerprints) | set(prev.vectors))
        entries, sources = [], []
        for file in self.files:
            if file.path in self.fresh:
                entry, rows = self.fresh[file.path]
                entries.append(entry)
                sources.append((self.old_row.get(file.path), rows, entry))
            elif file.path in self.old_row and file.path not in self.skipped:
                row = self.old_row[file.path]
                entries.append(prev.entries[row])
                sources.append((row, {}, prev.entries[row]))
        data = IndexData(entries=entries, skipped=self.skipped, complete=complete, indexed_at=prev.indexed_at)
        for name in names:
            block = np.zeros((len(entries), self.shapes[name][0]), dtype=self.shapes[name][1])
            has = np.zeros(len(entries), dtype=bool)
            for i, (row, rows, entry) in enumerate(sources):
                if name in rows:
                    block[i], has[i] = rows[name], True
                elif row is not None and name in prev.vectors and prev.present[name][row] \
                        and prev.entries[row].sha256 == entry.sha256 and self._still_valid(name, row):
                    block[i], has[i] = prev.vectors[name][row], True
            data.vectors[name], data.present[name] = block, has
            data.fingerprints[name] = self.fingerprints.get(name, prev.fingerprints.get(name, ""))
        data.regions = self._assemble_regions(entries)
        return data

    def _assemble_regions(self, entries: list[Entry]) -> Regions:
        """Fresh regions of re-extracted images, old regions of the others (matched by content hash)."""
        old = self.previous.regions
        old_by_parent: dict[str, list[int]] = {}
        for i, parent in enumerate(old.parents):
            old_by_parent.setdefault(parent, []).append(i)
        names = sorted(REGION_FEATURES & (set(self.fingerprints) | set(old.vectors)))
        parents, boxes, blocks = [], [], {n: [] for n in names}
        for sha in dict.fromkeys(e.sha256 for e in entries):
            if sha in self.fresh_regions:
                fresh_boxes, rows = self.fresh_regions[sha]
                parents += [sha] * len(fresh_boxes)
                boxes.append(fresh_boxes)
                for n in names:
                    blocks[n].append(rows.get(n, np.zeros((len(fresh_boxes), self.shapes[n][0]), self.shapes[n][1])))
            elif sha in old_by_parent:
                picks = old_by_parent[sha]
                parents += [sha] * len(picks)
                boxes.append(old.boxes[picks])
                for n in names:
                    missing = np.zeros((len(picks), self.shapes[n][0]), self.shapes[n][1])
                    blocks[n].append(old.vectors[n][picks] if n in old.vectors else missing)
        return Regions(
            parents=parents,
            boxes=np.concatenate(boxes) if boxes else np.zeros((0, 4), np.float32),
            vectors={n: (np.concatenate(b) if b else np.zeros((0, self.shapes[n][0]), self.shapes[n][1]))
                     for n, b in blocks.items()},
        )

    def _still_valid(self, name: str, row: int) -> bool:
        # A feature that is switched off today keeps its old rows for when it returns.
        return name not in self.fingerprints or self.valid(name, row)

