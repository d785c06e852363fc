"""Every stored ORB descriptor in one binary FAISS index: candidates by local-feature votes.

The fused vector misses copies whose colours changed or whose framing did
(a recoloured design, a crop, a copy on a larger canvas): colour and global
features move, but the design's corners stay.  Each query descriptor finds
its nearest stored descriptors; the images that own many of them are
candidates, and the (query point, stored point) pairs found this way are the
correspondences the geometric check needs, so no per-candidate matching runs.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import faiss
import numpy as np

from features.orb import DESCRIPTOR_BYTES, unpack

NEIGHBOURS = 8
MAX_HAMMING = 56  # of 256 bits: beyond this two ORB descriptors are unrelated
# k-means on 30 codes per list is plenty for coarse buckets, and keeps start-up short.
TRAIN_PER_LIST = 30


@dataclass
class LocalIndex:
    index: faiss.IndexBinary
    owner: np.ndarray  # image row of each stored descriptor
    point: np.ndarray  # (x, y) of each stored descriptor, analysis pixels

    @classmethod
    def build(cls, rows: np.ndarray, present: np.ndarray) -> "LocalIndex | None":
        """From the stored ORB block; None when no image has local features."""
        descriptors, owners, points = [], [], []
        for row in np.flatnonzero(present):
            xy, desc = unpack(rows[row])
            descriptors.append(desc)
            points.append(xy)
            owners.append(np.full(len(desc), row, dtype=np.int32))
        if not descriptors or not sum(len(d) for d in descriptors):
            return None
        codes = np.ascontiguousarray(np.concatenate(descriptors))
        bits = DESCRIPTOR_BYTES * 8
        lists = int(min(1024, max(1, np.sqrt(len(codes)))))
        if len(codes) < 50_000:
            index: faiss.IndexBinary = faiss.IndexBinaryFlat(bits)
        else:
            index = faiss.IndexBinaryIVF(faiss.IndexBinaryFlat(bits), bits, lists)
            sample = codes[np.random.default_rng(0).permutation(len(codes))[: TRAIN_PER_LIST * lists]]
            index.train(sample)
            index.nprobe = 12
        index.add(codes)
        return cls(index=index, owner=np.concatenate(owners), point=np.concatenate(points))

    def matches(self, descriptors: np.ndarray, xy: np.ndarray) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """For each image row with close descriptors: (query points, stored points) pairs."""
        if not len(descriptors):
            return {}
        distances, ids = self.index.search(np.ascontiguousarray(descriptors), NEIGHBOURS)
        pairs: dict[int, list[tuple[int, int]]] = defaultdict(list)
        for q in range(len(descriptors)):
            taken = set()
            for distance, stored in zip(distances[q], ids[q]):
                if stored < 0 or distance > MAX_HAMMING:
                    continue
                row = int(self.owner[stored])
                if row not in taken:  # one correspondence per query point and image
                    taken.add(row)
                    pairs[row].append((q, int(stored)))
        return {
            row: (xy[[q for q, _ in found]], self.point[[s for _, s in found]])
            for row, found in pairs.items()
        }
