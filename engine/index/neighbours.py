"""The one seam between Lookalike and a nearest-neighbour library.

Searches, duplicate groups and the snapshot ask for neighbours through these
two small interfaces: `VectorIndex` (unit float vectors, inner product: the
fused vectors, the regions' and the thumbprints) and `CodeIndex` (binary codes,
Hamming distance: the local-feature descriptors).  FAISS is the one
implementation today; another engine implements the same few methods and is
chosen in the factories at the bottom, without touching the callers.
"""
from __future__ import annotations

from typing import Callable, Iterable, Protocol

import faiss
import numpy as np

# Exact search up to this many rows in the library-wide pass; beyond, n x n costs hours.
EXACT_UP_TO = 20_000
# Lists scanned per query in an approximate vector index (of 4 x sqrt(n)).
VECTOR_PROBES = 16
# Training rows per list: FAISS warns below about 40.
TRAIN_PER_LIST = 40
# A search scans every fused vector while that is at most this many values (1 GB of
# float32: about 45 ms a query on a 2-core machine, 166,000 rows of colour and the bundled
# shape network, 90,000 with CLIP and ResNet50 too); beyond, an inverted file of 8-bit
# codes with SEARCH_PROBES of its sqrt(n) lists scanned per query (bench/scale.py).
EXACT_SCAN_VALUES = 256_000_000
SEARCH_PROBES = 32
# Rows fused and added at a time: never a full fused copy of the index at once.
BLOCK = 8192


class VectorIndex(Protocol):
    def __len__(self) -> int: ...

    def search(self, queries: np.ndarray, k: int, probes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(scores, rows) of each query's k best rows by inner product, best first; -1 past the end.
        `probes`: lists scanned per query where the index has lists (default: its own)."""

    def vectors(self) -> np.ndarray:
        """The stored rows, as a (len, dim) float32 view where the index keeps them whole."""


class CodeIndex(Protocol):
    def search(self, codes: np.ndarray, k: int, probes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(Hamming distances, ids) of each code's k nearest stored codes; -1 past the end.
        `probes`: lists scanned per code where the index has lists (default: its own)."""


class _FaissVectors:
    def __init__(self, index: faiss.Index, keeps_vectors: bool) -> None:
        self._index = index
        self._keeps_vectors = keeps_vectors

    def __len__(self) -> int:
        return self._index.ntotal

    def search(self, queries: np.ndarray, k: int, probes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        return self._index.search(queries, k, params=_probing(self._index, probes))

    def vectors(self) -> np.ndarray:
        if not self._keeps_vectors:
            raise TypeError("this index keeps codes, not the vectors")
        # A view of the flat index's own storage: no second copy of every vector.
        flat = faiss.rev_swig_ptr(self._index.get_xb(), self._index.ntotal * self._index.d)
        return flat.reshape(self._index.ntotal, self._index.d)


class _FaissCodes:
    def __init__(self, index: faiss.IndexBinary) -> None:
        self._index = index

    def search(self, codes: np.ndarray, k: int, probes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        return self._index.search(np.ascontiguousarray(codes), k, params=_probing(self._index, probes))


def _probing(index, probes: int | None):
    """Search parameters scanning `probes` lists, for an index that has lists."""
    has_lists = isinstance(index, (faiss.IndexIVF, faiss.IndexBinaryIVF))
    return faiss.SearchParametersIVF(nprobe=probes) if probes and has_lists else None


def exact_vectors(dim: int, blocks: Iterable[np.ndarray]) -> VectorIndex:
    """Exact inner-product search over rows added block by block (no full copy at once)."""
    index = faiss.IndexFlatIP(max(dim, 1))
    for block in blocks:
        index.add(np.ascontiguousarray(block, dtype=np.float32))
    return _FaissVectors(index, keeps_vectors=True)


def exact_up_to(dim: int) -> int:
    """The most rows of `dim` values a search scans whole."""
    return EXACT_SCAN_VALUES // max(dim, 1)


def search_vectors(dim: int, n: int, rows: Callable[[slice | np.ndarray], np.ndarray],
                   exact_rows: int | None = None) -> VectorIndex:
    """The index searches ask for fused candidates, over `n` rows that `rows(which)` gives
    (a slice, or sorted row numbers).  Exact up to `exact_rows` rows (exact_up_to(dim)
    unless told); beyond, an inverted file of 8-bit scalar codes, a quarter of the vectors'
    memory, whose scores are approximate: the search scores its candidates again from
    the stored vectors."""
    blocks = (rows(slice(start, min(n, start + BLOCK))) for start in range(0, n, BLOCK))
    if n == 0 or n <= (exact_up_to(dim) if exact_rows is None else exact_rows):
        return exact_vectors(dim, blocks)
    lists = int(np.sqrt(n))
    index = faiss.IndexIVFScalarQuantizer(
        faiss.IndexFlatIP(dim), dim, lists, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
    )
    index.train(np.ascontiguousarray(rows(np.sort(np.random.default_rng(0).permutation(n)[: TRAIN_PER_LIST * lists]))))
    for block in blocks:
        index.add(np.ascontiguousarray(block, dtype=np.float32))
    index.nprobe = SEARCH_PROBES
    return _FaissVectors(index, keeps_vectors=False)


def library_vectors(vectors: np.ndarray) -> VectorIndex:
    """For searching a whole library against itself: exact up to EXACT_UP_TO rows, beyond
    an inverted file of 8-bit scalar codes (a quarter of the vectors' memory)."""
    n, dim = vectors.shape
    if n <= EXACT_UP_TO:
        return exact_vectors(dim, [vectors])
    lists = int(4 * np.sqrt(n))
    index = faiss.IndexIVFScalarQuantizer(
        faiss.IndexFlatIP(dim), dim, lists, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
    )
    index.train(vectors[np.random.default_rng(0).permutation(n)[: TRAIN_PER_LIST * lists]])
    index.nprobe = VECTOR_PROBES
    index.add(vectors)
    return _FaissVectors(index, keeps_vectors=False)


def binary_codes(codes: np.ndarray, exact_up_to: int, lists: int, train_per_list: int, probes: int) -> CodeIndex:
    """Hamming search over codes: exact below `exact_up_to` codes, else an inverted file
    of `lists` lists trained on `train_per_list` codes each, scanning `probes` of them."""
    bits = codes.shape[1] * 8
    if len(codes) < exact_up_to:
        index: faiss.IndexBinary = faiss.IndexBinaryFlat(bits)
    else:
        index = faiss.IndexBinaryIVF(faiss.IndexBinaryFlat(bits), bits, lists)
        index.train(codes[np.random.default_rng(0).permutation(len(codes))[: train_per_list * lists]])
        index.nprobe = probes
    index.add(codes)
    return _FaissCodes(index)
