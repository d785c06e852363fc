"""An immutable, searchable view of the index: its data plus nearest-neighbour indexes.

Searches read one snapshot; a finished reindex swaps in a new one, so a
search never sees half an index.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property
from typing import Mapping

import numpy as np

from engine.index.milvus import key_of
from engine.index.neighbours import BLOCK, IN_PROCESS, NeighbourStore, VectorIndex, exact_up_to, search_vectors
from engine.index.store import IndexData
from engine.match.localindex import LocalIndex
from engine.match.verdict import BUILT_IN, UNCALIBRATED_SCORES, Thresholds
from features import registry, thumbprint
from features.fusion import fuse, normalize_weights

# Thumbprints a query compares itself with, per view, in a library past a whole scan: twins
# correlate >= 0.97 (engine/match/verify.py), far nearer than any other design.
TWIN_CANDIDATES = 64


@dataclass(frozen=True)
class Snapshot:
    data: IndexData
    features: tuple[str, ...]  # features active in the fused index
    weights: Mapping[str, float]  # the weights the fused rows were built with
    index: VectorIndex  # fused vectors of every row
    local: LocalIndex | None = None  # ORB descriptors of every image and region, for verification
    region_index: VectorIndex | None = None  # fused vectors of the regions inside images ...
    region_weights: Mapping[str, float] = field(default_factory=dict)  # ... made of these features
    region_parent: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # image row of each region
    thumbprints: np.ndarray | None = None  # unit content thumbprints, zero rows where missing
    inks: np.ndarray | None = None  # how much ink each thumbprint holds (thumbprint.ink)
    thumbprint_index: VectorIndex | None = None  # of the thumbprints, where too many to scan whole
    thresholds: Thresholds = BUILT_IN  # of the verdict rules: calibrated on this collection, or built in
    in_store: bool = False  # the fused, thumbprint and local lookups are a NeighbourStore's (Milvus)

    @property
    def size(self) -> int:
        return len(self.data)

    @cached_property
    def score_networks(self) -> frozenset[str]:
        """The network features whose fused score may call a pair a copy without local
        evidence (engine/match/verdict.py): not the bundled EfficientNet-Lite0, on which a fused
        score of 0.90 called 8% of clean negatives copies (bench/quality.py)."""
        networks = set(registry.NETWORKS) & set(self.features)
        if self.thresholds.calibrated:  # thresholds measured with these very networks
            return frozenset(networks)
        return frozenset(name for name in networks
                         if not self.data.fingerprints.get(name, "").startswith(UNCALIBRATED_SCORES))

    def region_boxes_of(self, row: int) -> list[tuple]:
        """Boxes (analysis pixels) of the regions found inside image `row`."""
        return [tuple(self.data.regions.boxes[r]) for r in self._regions_by_parent.get(row, ())]

    @cached_property
    def _regions_by_parent(self) -> dict[int, list[int]]:
        by_parent: dict[int, list[int]] = {}
        for region, parent in enumerate(self.region_parent):
            by_parent.setdefault(int(parent), []).append(region)
        return by_parent

    def thumbprint_candidates(self, grid: np.ndarray) -> list[int] | None:
        """Rows whose thumbprints may be twins of `grid`'s, as is or mirrored: None (every
        row) while they are scanned whole, else the nearest in their coded index."""
        if self.thumbprint_index is None:
            return None
        _, rows = self.thumbprint_index.search(thumbprint.views(grid), TWIN_CANDIDATES)
        return sorted({int(r) for r in rows.ravel() if r >= 0})

    def fused_rows(self) -> np.ndarray:
        """Every row's fused vector: the search index's own where it keeps them whole, else fused
        again from the stored features (a large index keeps only codes)."""
        try:
            return self.index.vectors()
        except TypeError:
            fused = np.empty((self.size, sum(self.data.vectors[n].shape[1] for n in self.features)), np.float32)
            for start in range(0, self.size, BLOCK):
                fused[start:start + BLOCK] = _fused_block(self.data, self.features, self.weights,
                                                          slice(start, start + BLOCK))
            return fused

    @cached_property
    def row_of(self) -> dict[str, int]:
        """Row number of each indexed path."""
        return {e.path: i for i, e in enumerate(self.data.entries)}


def fused_features(data: IndexData, active: tuple[str, ...], weights: Mapping[str, float]
                   ) -> tuple[tuple[str, ...], dict[str, float]]:
    """The features a snapshot of `data` fuses, and their normalised weights."""
    features = tuple(n for n in active if n in data.vectors and weights.get(n, 0) > 0)
    if not features:
        features = tuple(n for n in active if n in data.vectors)
    return features, (normalize_weights(weights, features) if features else {})


def build_snapshot(data: IndexData, active: tuple[str, ...], weights: Mapping[str, float],
                   thresholds: Thresholds = BUILT_IN, store: NeighbourStore | None = None) -> Snapshot:
    """Fuse the active features of every row into the search index (exact, or 8-bit codes
    for a very large library: neighbours.search_vectors), or bring `store`'s collections up
    to date with them.  The regions inside sheets are searched in this process either way."""
    features, used = fused_features(data, active, weights)
    dim = sum(data.vectors[n].shape[1] for n in features)
    neighbours = IN_PROCESS if store is None else store
    keys = entry_keys(data) if store is not None else np.zeros(len(data), np.int64)  # FAISS needs none
    rows = lambda which: _fused_block(data, features, used, which)  # noqa: E731
    index = neighbours.vectors("fused", dim, keys, rows, _signature(data, features, used)) if features \
        else search_vectors(dim, 0, rows)
    local = None
    if "orb" in data.vectors:  # regions' points are in their own crop's pixels
        regions = region_keys(data) if store is not None else np.zeros(len(data.regions), np.int64)
        local = LocalIndex.build(data.vectors["orb"], data.present["orb"], data.regions.vectors.get("orb"),
                                 neighbours, np.concatenate([keys, regions]), _fingerprint(data, "orb"))
    region_index, region_weights = _region_index(data, features, used)
    return Snapshot(data=data, features=features, weights=used, index=index, local=local,
                    region_index=region_index, region_weights=region_weights,
                    region_parent=_region_parents(data), thresholds=thresholds, in_store=store is not None,
                    **_thumbprints(data, store, keys))


def entry_keys(data: IndexData) -> np.ndarray:
    """Each row's identity in a store: its path and its bytes."""
    return np.array([key_of(e.path, e.sha256) for e in data.entries], np.int64)


def region_keys(data: IndexData) -> np.ndarray:
    """Each region's identity in a store: the image it is in, and where."""
    return np.array([key_of("region", sha, *map(repr, box.tolist()))
                     for sha, box in zip(data.regions.parents, data.regions.boxes)], np.int64)


def _signature(data: IndexData, features, weights) -> str:
    """What a store's fused vectors are made of: the features' fingerprints and weights."""
    made_of = ";".join(f"{n}={data.fingerprints.get(n, '')}*{weights[n]:.6f}" for n in features)
    return hashlib.sha256(made_of.encode()).hexdigest()[:16]


def _fingerprint(data: IndexData, feature: str) -> str:
    """A store's signature of one feature's vectors."""
    return hashlib.sha256(data.fingerprints.get(feature, "").encode()).hexdigest()[:16]


def _fused_block(data: IndexData, features, weights, which) -> np.ndarray:
    return fuse({n: data.vectors[n][which] for n in features}, weights)


def _thumbprints(data: IndexData, store: NeighbourStore | None = None, keys: np.ndarray | None = None) -> dict:
    """Unit thumbprints (zero rows where missing) and each one's ink, where stored; their
    index where a store holds them or there are too many to scan whole."""
    if "thumbprint" not in data.vectors:
        return {}
    grids, present = data.vectors["thumbprint"], data.present["thumbprint"]
    units, inks = np.empty(grids.shape, np.float32), np.empty(len(grids), np.float32)
    for start in range(0, len(grids), BLOCK):  # block by block: no float temporaries of them all
        block = slice(start, start + BLOCK)
        units[block] = thumbprint.units(grids[block]) * present[block, None]
        inks[block] = thumbprint.ink(grids[block])
    found = {"thumbprints": units, "inks": inks}
    # A store keeps them always; this process only where a query's scan of them all would
    # outlast its search.
    if store is not None or len(units) > exact_up_to(units.shape[1]):
        found["thumbprint_index"] = (store or IN_PROCESS).vectors(
            "thumbprints", units.shape[1], keys, lambda which: units[which], _fingerprint(data, "thumbprint"), present)
    return found


def _region_parents(data: IndexData) -> np.ndarray:
    """Row of the image each region belongs to (-1 for none)."""
    row_of_sha: dict[str, int] = {}
    for i, entry in enumerate(data.entries):
        row_of_sha.setdefault(entry.sha256, i)
    return np.array([row_of_sha.get(sha, -1) for sha in data.regions.parents], dtype=np.int64)


def _region_index(data: IndexData, features, weights) -> tuple[VectorIndex | None, dict[str, float]]:
    """Fused vectors of the regions over the active features regions are embedded with."""
    vectors = data.regions.vectors
    names = [n for n in features if n in registry.REGION_FUSED and n in vectors and weights.get(n, 0) > 0]
    if not len(data.regions) or not names:
        return None, {}
    shares = normalize_weights(weights, names)
    dim = sum(vectors[n].shape[1] for n in names)
    # Scored again from the stored vectors by the search (search._region_hits), as the images are.
    index = search_vectors(dim, len(data.regions), lambda which: fuse({n: vectors[n][which] for n in names}, shares))
    return index, shares


def cosines(snapshot: Snapshot, query: Mapping[str, np.ndarray], rows: np.ndarray) -> dict[str, np.ndarray]:
    """Per-feature cosine of the query with each given row (0 where a row lacks the feature)."""
    return {
        name: snapshot.data.vectors[name][rows] @ query[name].ravel()
        for name in snapshot.features
        if name in query
    }
