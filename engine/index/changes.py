"""What changed in the collection since the last index, file by file.

Features belong to a file's bytes (SHA-256), not to its name or its dates: a
file whose size and mtime are as indexed is not read at all; any other file
is hashed, and bytes the index already holds (a touched, renamed, moved or
copied file) take their stored rows without being decoded.  A feature is
extracted only for bytes the index has never seen, or when its fingerprint
(model, weights, preprocessing) differs from the one its stored row was made
with.
"""
from __future__ import annotations

import hashlib
import logging
import os
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

import numpy as np

from engine.images.scan import FileInfo, scan
from engine.index.parallel import completed_map
from engine.index.store import Entry, IndexData

if TYPE_CHECKING:
    from engine.index.pipeline import Prepared

log = logging.getLogger(__name__)


class CollectionUnavailable(OSError):
    """The images folder cannot be read: the index on disk is left as it is."""


class StillBeingWritten(OSError):
    """The file changed between the scan and the read; it is taken at the next scan."""


def read_whole(root, file: FileInfo) -> bytes:
    """The file's bytes, if they are still the ones the scan saw."""
    data = (root / file.path).read_bytes()
    if len(data) != file.size or (root / file.path).stat().st_mtime_ns != file.mtime_ns:
        raise StillBeingWritten("the file changed while it was read (still being written?); "
                                "it is taken at the next scan")
    return data


def hash_file(root: Path):
    def hash_one(file: FileInfo) -> tuple[FileInfo, str | None, Exception | str | None]:
        try:
            return file, hashlib.sha256(read_whole(root, file)).hexdigest(), None
        except StillBeingWritten as exc:
            return file, None, exc
        except OSError as exc:
            return file, None, f"cannot read file: {exc.strerror or exc}"

    return hash_one


def files_to_index(root: Path, previous: IndexData) -> list[FileInfo]:
    """The files to index now.  A folder that cannot be read keeps what the index knew of
    it: an unmounted share or a permission change must not read as 'every file deleted'."""
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


class RunState:
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

    def recognise_all(self, root: Path, threads: int) -> None:
        """Hash every file whose size or mtime is not as indexed, in `threads` workers; bytes
        the index already holds are recorded as such and never decoded again."""
        if not self.row_of_bytes:
            return  # an empty index holds no bytes to recognise: the workers hash as they extract
        changed = [f for f in self.files if self.stat_changed(f)]
        for file, digest, error in completed_map(hash_file(root), changed, threads, window=4 * threads):
            if error is not None:
                self.skip(file, str(error), remember=not isinstance(error, StillBeingWritten))
            else:
                self.recognise(file, digest)

    def plan(self) -> tuple[list[tuple[FileInfo, frozenset[str]]], Counter, list[dict]]:
        """The files to extract, each with the features it needs, and what the others are:
        counts of 'unchanged', 'indexed' (known bytes under a new name), 'moved', 'removed',
        and the skipped files' reasons under 'skipped'."""
        present = {f.path for f in self.files}
        gone = Counter(e.sha256 for e in self.previous.entries if e.path not in present)
        counts: Counter = Counter()
        for path, entry in self.renamed.items():  # a new name for bytes whose old name is gone
            if path not in self.old_row and gone[entry.sha256] > 0:
                gone[entry.sha256] -= 1
                counts["moved"] += 1
        counts["removed"] = sum(gone.values())
        work, skipped = [], []
        for file in self.files:
            needs = self.needs(file)
            if needs is None:
                skipped.append({"path": file.path, "reason": self.skipped[file.path]["reason"]})
            elif needs:
                work.append((file, frozenset(needs)))
            elif file.path in self.old_row:
                counts["unchanged"] += 1
            else:
                counts["indexed"] += 1
        counts["indexed"] -= counts["moved"]
        return work, counts, skipped
