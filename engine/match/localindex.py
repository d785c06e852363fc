"""Every stored ORB descriptor in one binary FAISS index: candidates by local-feature votes.

The fused vector misses copies whose colours changed or whose framing did
(a recoloured design, a crop, a copy on a larger canvas): colour and global
features move, but the design's corners stay.  Each query descriptor finds
its nearest stored descriptors; the images that own many of them are
candidates, and the (query point, stored point) pairs found this way are the
correspondences the geometric check needs, so no per-candidate matching runs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.index.neighbours import IN_PROCESS, CodeIndex, NeighbourStore
from features.orb import unpack

NEIGHBOURS = 8
MAX_HAMMING = 56  # of 256 bits: beyond this two ORB descriptors are unrelated


@dataclass
class LocalIndex:
    index: CodeIndex
    owner: np.ndarray  # owner of each stored descriptor: an image row, or images + a region number
    point: np.ndarray  # (x, y) of each stored descriptor, in its owner's pixels
    images: int = 0  # owners from here up are regions (images + region number)

    @classmethod
    def build(cls, rows: np.ndarray, present: np.ndarray, region_rows: np.ndarray | None = None,
              store: NeighbourStore = IN_PROCESS, keys: np.ndarray | None = None,
              signature: str = "") -> "LocalIndex | None":
        """From the stored ORB block (and the regions', searched in the same pass);
        None when nothing has local features.  `keys`: each owner's identity in `store`
        (image rows, then the regions), `signature`: what the codes are made of."""
        descriptors, owners, points = [], [], []
        region_rows = np.zeros((0, rows.shape[1]), rows.dtype) if region_rows is None else region_rows
        owned = [(int(r), rows[r]) for r in np.flatnonzero(present)]
        owned += [(len(rows) + r, region_rows[r]) for r in range(len(region_rows))]
        for owner, row in owned:
            xy, desc = unpack(row)
            descriptors.append(desc)
            points.append(xy)
            owners.append(np.full(len(desc), owner, dtype=np.int32))
        if not descriptors or not sum(len(d) for d in descriptors):
            return None
        codes = np.ascontiguousarray(np.concatenate(descriptors))
        owner_ids = np.array([owner for owner, _ in owned], np.int64)
        index = store.codes("orb", np.zeros(len(owned), np.int64) if keys is None else keys[owner_ids],
                            np.array([len(d) for d in descriptors]), codes, signature)
        return cls(index=index, owner=np.concatenate(owners), point=np.concatenate(points), images=len(rows))

    def matches(self, descriptors: np.ndarray, xy: np.ndarray,
                at_least: int = 1) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """For each owner with `at_least` close descriptors: (query points, stored points) pairs.

        Each query point gives one correspondence per owner, its nearest stored
        point there; pairs come in query-point order."""
        return self.matches_many([(descriptors, xy)], at_least)[0]

    def matches_many(self, queries: list[tuple[np.ndarray, np.ndarray]],
                     at_least: int = 1) -> list[dict[int, tuple[np.ndarray, np.ndarray]]]:
        """`matches` for many (descriptors, xy) at once, in one search of the index: the
        library-wide pass asks for thousands of pictures' points, and one search per
        picture spent more on starting each search than on comparing codes."""
        sizes = [len(descriptors) for descriptors, _ in queries]
        if not sum(sizes):
            return [{} for _ in queries]
        distances, ids = self.index.search(np.concatenate([d for d, _ in queries if len(d)]), NEIGHBOURS)
        found, start = [], 0
        for (descriptors, xy), size in zip(queries, sizes):
            found.append(self._grouped(distances[start:start + size], ids[start:start + size], xy, at_least))
            start += size
        return found

    def _grouped(self, distances: np.ndarray, ids: np.ndarray, xy: np.ndarray,
                 at_least: int) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        if not len(ids):
            return {}
        queries = np.repeat(np.arange(len(ids), dtype=np.int64), ids.shape[1])
        stored, distances = ids.ravel(), distances.ravel()
        close = (stored >= 0) & (distances <= MAX_HAMMING)
        queries, stored, distances = queries[close], stored[close], distances[close]
        # Nearest first, and among stored points as near as each other the first stored (the
        # stronger keypoint): stores order ties their own way, and a verdict must not
        # depend on which store answered.
        order = np.lexsort((stored, distances, queries))
        queries, stored = queries[order], stored[order]
        owners = self.owner[stored].astype(np.int64)
        # Sorted by (owner, query point); the first of each pair in that order is the one kept.
        _, first = np.unique(owners * len(ids) + queries, return_index=True)
        owners, queries, stored = owners[first], queries[first], stored[first]
        starts = np.flatnonzero(np.r_[True, owners[1:] != owners[:-1]])
        counts = np.diff(np.r_[starts, len(owners)])
        found = {}
        for start, count in zip(starts[counts >= at_least], counts[counts >= at_least]):
            picks = slice(start, start + count)
            found[int(owners[start])] = (xy[queries[picks]], self.point[stored[picks]])
        return found
