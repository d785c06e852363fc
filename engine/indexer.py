"""Incremental indexing: find what changed, extract only that, save atomically.

Features belong to a file's bytes (SHA-256), not to its name or its dates: a
file whose size and mtime are as indexed is not read at all; any other file
is hashed, and bytes the index already holds (a touched, renamed, moved or
copied file) take their stored rows without being decoded.  A feature is
extracted only for bytes the index has never seen, or when its fingerprint
(model, weights, preprocessing) differs from the one its stored row was made
with.  Reading, hashing,
decoding, thumbnails and the colour histogram run in worker threads while
the networks run on batches in the calling thread.  The index is saved as a
checkpoint every few hundred images, so an interrupted run resumes there.
"""
from __future__ import annotations

import hashlib
from collections import Counter
import logging
import os
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


class CollectionUnavailable(OSError):
    """The images folder cannot be read: the index on disk is left as it is."""


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


class StillBeingWritten(OSError):
    """The file changed between the scan and the read; it is taken at the next scan."""


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


def _read_whole(root, file: FileInfo) -> bytes:
    """The file's bytes, if they are still the ones the scan saw."""
    data = (root / file.path).read_bytes()
    if len(data) != file.size or (root / file.path).stat().st_mtime_ns != file.mtime_ns:
        raise StillBeingWritten("the file changed while it was read (still being written?); "
                                "it is taken at the next scan")
    return data


def _hash_file(root):
    def hash_one(file: FileInfo) -> tuple[FileInfo, str | None, Exception | str | None]:
        try:
            return file, hashlib.sha256(_read_whole(root, file)).hexdigest(), None
        except StillBeingWritten as exc:
            return file, None, exc
        except OSError as exc:
            return file, None, f"cannot read file: {exc.strerror or exc}"

    return hash_one


class Indexer:
    def __init__(self, config: Config, extractors: Mapping[str, Extractor],
                 stop: Callable[[], bool] = lambda: False) -> None:
        """`stop`: asked after every batch; True ends the run (IndexingStopped) at a checkpoint."""
        self.config = config
        self.stop = stop
        self.extractors = dict(extractors)
        self.fingerprints = {name: ex.fingerprint() for name, ex in self.extractors.items()}
        self.checkpoint_every = config.checkpoint_every

    def run(self, previous: IndexData, progress: ProgressFn | None = None) -> tuple[IndexData, IndexReport]:
        started = time.monotonic()
        report = IndexReport(features=sorted(self.extractors))
        files = self._scan(previous)
        shapes = {name: (ex.dim, getattr(ex, "dtype", np.float32)) for name, ex in self.extractors.items()}
        state = _RunState(previous, self.fingerprints, shapes, files)
        self._recognise(state, report)
        present = {f.path for f in files}
        gone = Counter(e.sha256 for e in previous.entries if e.path not in present)
        for path, entry in state.renamed.items():  # a new name for bytes whose old name is gone
            if path not in state.old_row and gone[entry.sha256] > 0:
                gone[entry.sha256] -= 1
                report.moved += 1
        report.removed = sum(gone.values())
        work = []
        for file in files:
            needs = state.needs(file)
            if needs is None:
                report.skipped.append({"path": file.path, "reason": state.skipped[file.path]["reason"]})
            elif needs:
                work.append((file, frozenset(needs)))
            elif file.path in state.old_row:
                report.unchanged += 1
            else:
                report.indexed += 1
        report.indexed -= report.moved
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
                    if self.stop():
                        raise IndexingStopped("the engine is closing")
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

    def _scan(self, previous: IndexData) -> list[FileInfo]:
        """The files to index now.  A folder that cannot be read keeps what the index knew of
        it: an unmounted share or a permission change must not read as 'every file deleted'."""
        root = self.config.images
        if not root.is_dir() or not os.access(root, os.R_OK | os.X_OK):
            raise CollectionUnavailable("the images folder cannot be read (missing, unmounted or no permission)")
        unreadable: list[str] = []
        files = list(scan(root, unreadable))
        if unreadable:
            log.warning("Cannot read %d folder(s) in the collection, e.g. %s; their designs stay indexed",
                        len(unreadable), unreadable[0])
            seen = {f.path for f in files}
            files += [FileInfo(e.path, e.size, e.mtime_ns) for e in previous.entries
                      if e.path not in seen and any(e.path.startswith(folder + "/") for folder in unreadable)]
        return files

    def _recognise(self, state: "_RunState", report: IndexReport) -> None:
        """Hash every file whose size or mtime is not as indexed, in the workers; bytes the
        index already holds are recorded as such and never decoded again."""
        if not state.row_of_bytes:
            return  # an empty index holds no bytes to recognise: the workers hash as they extract
        changed = [f for f in state.files if state.stat_changed(f)]
        for file, digest, error in completed_map(_hash_file(self.config.images), changed, self.config.threads,
                                                 window=4 * self.config.threads):
            if error is not None:
                state.skip(file, str(error), remember=not isinstance(error, StillBeingWritten))
            else:
                state.recognise(file, digest)

    def prepare(self, item: tuple[FileInfo, frozenset[str]]) -> Prepared:
        """Worker stage: read once, hash, decode once, thumbnail, cheap features.

        `item`: a file and the features it needs (the networks' are left for `_finish`)."""
        file, needs = item
        prepared = Prepared(file=file, needs=needs)
        try:
            data = _read_whole(self.config.images, file)
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
        except StillBeingWritten as exc:
            prepared.error = exc
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
                report.skipped.append({"path": p.file.path, "reason": str(p.error)})
                state.skip(p.file, str(p.error), remember=not isinstance(p.error, StillBeingWritten))
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
        report.extracted += len(good)
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
        self.row_of_bytes = {e.sha256: i for i, e in enumerate(previous.entries)}
        # Files whose bytes the index holds under an old row, with their entry as they are now.
        self.renamed: dict[str, Entry] = {}
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
        return (prev.complete and prev.indexed_at is not None and not self.renamed
                and set(self.old_row) | set(prev.skipped) == {f.path for f in self.files}
                and all(prev.fingerprints.get(n) == f for n, f in self.fingerprints.items()))

    def stat_changed(self, file: FileInfo) -> bool:
        """Whether the file must be hashed: not indexed under this name with this size and mtime
        (and not a known-bad file left as it was)."""
        bad = self.previous.skipped.get(file.path)
        if bad and (bad["size"], bad["mtime_ns"]) == (file.size, file.mtime_ns):
            return False
        row = self.old_row.get(file.path)
        return row is None or (self.previous.entries[row].size, self.previous.entries[row].mtime_ns) != (
            file.size, file.mtime_ns)

    def recognise(self, file: FileInfo, sha256: str) -> None:
        """Hashed bytes that the index already holds keep their rows under the file's name now."""
        row = self.row_of_bytes.get(sha256)
        if row is not None:
            old = self.previous.entries[row]
            self.renamed[file.path] = Entry(file.path, file.size, file.mtime_ns, sha256, old.width, old.height)

    def needs(self, file: FileInfo) -> set[str] | None:
        """Features to extract for a file; None when it is skipped (known bad, or unreadable now)."""
        if file.path in self.skipped:
            return None
        bad = self.previous.skipped.get(file.path)
        if bad and bad["size"] == file.size and bad["mtime_ns"] == file.mtime_ns:
            self.skipped[file.path] = bad
            return None
        if file.path in self.renamed:
            row = self.source_row(file.path)
        elif self.stat_changed(file):
            return set(self.fingerprints)  # bytes the index has never seen
        else:
            row = self.old_row[file.path]
        return {name for name in self.fingerprints if not self.valid(name, row)}

    def source_row(self, path: str) -> int | None:
        """The old row that holds this file's bytes, if any (assemble checks the hash)."""
        if path in self.renamed:
            return self.row_of_bytes[self.renamed[path].sha256]
        return self.old_row.get(path)

    def skip(self, file: FileInfo, reason: str, remember: bool = True) -> None:
        """A file left out of this run; `remember`: not retried until its size or mtime change."""
        self.skipped[file.path] = {"size": file.size if remember else -1, "mtime_ns": file.mtime_ns, "reason": reason}

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
                sources.append((self.source_row(file.path), rows, entry))
            elif file.path in self.renamed:
                entry = self.renamed[file.path]
                entries.append(entry)
                sources.append((self.row_of_bytes[entry.sha256], {}, entry))
            elif file.path in self.old_row and file.path not in self.skipped and not self.stat_changed(file):
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

