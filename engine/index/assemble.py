"""Assembling the index of a run: for every file, fresh rows where it was extracted,
else its still-valid old rows (matched by the bytes' hash), feature by feature;
and the regions of each image the same way."""
from __future__ import annotations

import numpy as np

from engine.index.changes import RunState
from engine.index.store import Entry, IndexData, Regions
from features import registry


def assemble(state: RunState, complete: bool) -> IndexData:
    """The index as of now: fresh rows, else still-valid old rows, per feature."""
    prev = state.previous
    names = sorted(set(state.fingerprints) | set(prev.vectors))
    entries, sources = [], []
    for file in state.files:
        if file.path in state.fresh:
            entry, rows = state.fresh[file.path]
            entries.append(entry)
            sources.append((state.source_row(file.path), rows, entry))
        elif file.path in state.renamed:
            entry = state.renamed[file.path]
            entries.append(entry)
            sources.append((state.row_of_bytes[entry.sha256], {}, entry))
        elif file.path in state.old_row and file.path not in state.skipped and not state.stat_changed(file):
            row = state.old_row[file.path]
            entries.append(prev.entries[row])
            sources.append((row, {}, prev.entries[row]))
    data = IndexData(entries=entries, skipped=state.skipped, complete=complete, indexed_at=prev.indexed_at)
    for name in names:
        block = np.zeros((len(entries), state.shapes[name][0]), dtype=state.shapes[name][1])
        has = np.zeros(len(entries), dtype=bool)
        for i, (row, rows, entry) in enumerate(sources):
            if name in rows:
                block[i], has[i] = rows[name], True
            elif row is not None and name in prev.vectors and prev.present[name][row] \
                    and prev.entries[row].sha256 == entry.sha256 and _still_valid(state, name, row):
                block[i], has[i] = prev.vectors[name][row], True
        data.vectors[name], data.present[name] = block, has
        data.fingerprints[name] = state.fingerprints.get(name, prev.fingerprints.get(name, ""))
    data.regions = _regions(state, entries)
    return data


def _regions(state: RunState, entries: list[Entry]) -> Regions:
    """Fresh regions of re-extracted images, old regions of the others (matched by content hash)."""
    old = state.previous.regions
    old_by_parent: dict[str, list[int]] = {}
    for i, parent in enumerate(old.parents):
        old_by_parent.setdefault(parent, []).append(i)
    names = sorted(registry.IN_REGIONS & (set(state.fingerprints) | set(old.vectors)))
    parents, boxes, blocks = [], [], {n: [] for n in names}
    for sha in dict.fromkeys(e.sha256 for e in entries):
        if sha in state.fresh_regions:
            fresh_boxes, rows = state.fresh_regions[sha]
            parents += [sha] * len(fresh_boxes)
            boxes.append(fresh_boxes)
            for n in names:
                blocks[n].append(rows.get(n, np.zeros((len(fresh_boxes), state.shapes[n][0]), state.shapes[n][1])))
        elif sha in old_by_parent:
            picks = old_by_parent[sha]
            parents += [sha] * len(picks)
            boxes.append(old.boxes[picks])
            for n in names:
                missing = np.zeros((len(picks), state.shapes[n][0]), state.shapes[n][1])
                blocks[n].append(old.vectors[n][picks] if n in old.vectors else missing)
    return Regions(
        parents=parents,
        boxes=np.concatenate(boxes) if boxes else np.zeros((0, 4), np.float32),
        vectors={n: (np.concatenate(b) if b else np.zeros((0, state.shapes[n][0]), state.shapes[n][1]))
                 for n, b in blocks.items()},
    )


def _still_valid(state: RunState, name: str, row: int) -> bool:
    # A feature that is switched off today keeps its old rows for when it returns.
    return name not in state.fingerprints or state.valid(name, row)
