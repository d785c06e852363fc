"""The one seam between Lookalike and a nearest-neighbour library.

Searches, duplicate groups and the snapshot ask for neighbours through these
two small interfaces: `VectorIndex` (unit float vectors, inner product: the
fused vectors, the regions' and the thumbprints) and `CodeIndex` (binary codes,
Hamming distance: the local-feature descriptors).  FAISS in this process is
the default, built by the factories at the bottom; a `NeighbourStore` (Milvus:
engine/index/milvus.py) answers the same interfaces from its own collections.
"""
from __future__ import annotations

from typing import Callable, Iterable, Protocol

import faiss
import numpy as np

from engine.index.vocabulary import VocabularyCodes

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
# Binary codes (ORB descriptors): below EXACT_CODES_BELOW an exact scan is as fast as an
# inverted file's and needs no training; beyond, lists of about CODES_PER_LIST codes keep a
# point's scan short, k-means on CODE_TRAIN_PER_LIST codes per list is plenty for coarse
# buckets (and keeps start-up short), and CODE_PROBES lists are scanned per point: a search
# (400 points of each view) and the library-wide duplicate pass (250, 125 mirrored) alike.
# At 6, bench/quality.py gives the figures it gives at 12, and bench/duplicates_peers.py's
# pairs move by one or two either way on its four draws; the scan takes 60% as long.
EXACT_CODES_BELOW = 50_000
CODES_PER_LIST = 640
MAX_CODE_LISTS = 2048
CODE_TRAIN_PER_LIST = 30
CODE_PROBES = 6
# Past this many codes (about 16,000 designs) the lists would keep growing with the
# library, and with them every point's scan: codes are filed under a two-level vocabulary
# instead, whose words grow with it (engine/index/vocabulary.py; bench/local_lookup.py).
VOCABULARY_FROM = 6_000_000


class VectorIndex(Protocol):
    def __len__(self) -> int: ...

    def search(self, queries: np.ndarray, k: int, probes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(scores, rows) of each query's k best rows by inner product, best first; -1 past the end.
        `probes`: lists scanned per query where the index has lists (default: its own)."""

    def above(self, queries: np.ndarray, min_score: float, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Like `search`, but only rows scoring more than `min_score`: a range query."""

    def vectors(self) -> np.ndarray:
        """The stored rows, as a (len, dim) float32 view where the index keeps them whole."""


class CodeIndex(Protocol):
    def search(self, codes: np.ndarray, k: int, probes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(Hamming distances, ids) of each code's k nearest stored codes; -1 past the end.
        `probes`: lists scanned per code where the index has lists (default: its own)."""


class NeighbourStore(Protocol):
    """Collections kept outside this process, brought up to date with the index's rows."""

    def vectors(self, name: str, dim: int, keys: np.ndarray, rows: Callable, signature: str,
                present: np.ndarray | None = None) -> VectorIndex:
        """Row i is `rows` of i, keyed keys[i] (its identity), left out where not `present`;
        `signature` names what the vectors are made of.  Searches answer row numbers."""

    def codes(self, name: str, keys: np.ndarray, counts: np.ndarray, codes: np.ndarray,
              signature: str) -> CodeIndex:
        """Owner i (keyed keys[i]) holds the next counts[i] codes.  Searches answer positions."""


class _FaissVectors:
    def __init__(self, index: faiss.Index, keeps_vectors: bool) -> None:
        self._index = index
        self._keeps_vectors = keeps_vectors

    def __len__(self) -> int:
        return self._index.ntotal

    def search(self, queries: np.ndarray, k: int, probes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        return self._index.search(queries, k, params=_probing(self._index, probes))

    def above(self, queries: np.ndarray, min_score: float, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        scores = np.full((len(queries), k), -np.inf, np.float32)
        rows = np.full((len(queries), k), -1, np.int64)
        # FAISS keeps scores >= its radius; "more than" as Milvus's range search means.
        limits, found_scores, found_rows = self._index.range_search(queries, np.nextafter(np.float32(min_score), 2))
        for i in range(len(queries)):
            these = slice(limits[i], limits[i + 1])
            best = np.argsort(-found_scores[these], kind="stable")[:k]
            scores[i, :len(best)], rows[i, :len(best)] = found_scores[these][best], found_rows[these][best]
        return scores, rows

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


class _PresentRows:
    """An index of some rows only, answering the rows' own numbers."""

    def __init__(self, index: VectorIndex, rows: np.ndarray) -> None:
        self._index, self._rows = index, rows

    def __len__(self) -> int:
        return len(self._index)

    def search(self, queries: np.ndarray, k: int, probes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        scores, at = self._index.search(queries, k, probes)
        return scores, np.where(at >= 0, self._rows[np.maximum(at, 0)], -1)

    def above(self, queries: np.ndarray, min_score: float, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores, at = self._index.above(queries, min_score, k)
        return scores, np.where(at >= 0, self._rows[np.maximum(at, 0)], -1)

    def vectors(self) -> np.ndarray:
        raise TypeError("this index keeps some rows only")


class FaissStore:
    """The NeighbourStore of this process: indexes built from the rows at each snapshot,
    gone with it (so keys and signatures, which name rows kept elsewhere, are not needed)."""

    def vectors(self, name: str, dim: int, keys: np.ndarray, rows: Callable, signature: str,
                present: np.ndarray | None = None) -> VectorIndex:
        if present is None or present.all():
            return search_vectors(dim, len(keys), rows)
        kept = np.flatnonzero(present)
        return _PresentRows(search_vectors(dim, len(kept), lambda which: rows(kept[which])), kept)

    def codes(self, name: str, keys: np.ndarray, counts: np.ndarray, codes: np.ndarray,
              signature: str) -> CodeIndex:
        return binary_codes(codes, EXACT_CODES_BELOW, code_lists(len(codes)), CODE_TRAIN_PER_LIST, CODE_PROBES)


IN_PROCESS = FaissStore()


def code_lists(n: int) -> int:
    """Lists of an inverted file of `n` binary codes."""
    return int(min(MAX_CODE_LISTS, max(1, n // CODES_PER_LIST)))


def binary_codes(codes: np.ndarray, exact_up_to: int, lists: int, train_per_list: int, probes: int,
                 vocabulary_from: int | None = None) -> CodeIndex:
    """Hamming search over codes: exact below `exact_up_to` codes, else an inverted file
    of `lists` lists trained on `train_per_list` codes each, scanning `probes` of them;
    from `vocabulary_from` codes (VOCABULARY_FROM unless told), lists that grow with the
    codes (a two-level vocabulary)."""
    bits = codes.shape[1] * 8
    if len(codes) >= max(exact_up_to, VOCABULARY_FROM if vocabulary_from is None else vocabulary_from):
        return VocabularyCodes(codes)
    if len(codes) < exact_up_to:
        index: faiss.IndexBinary = faiss.IndexBinaryFlat(bits)
    else:
        index = faiss.IndexBinaryIVF(faiss.IndexBinaryFlat(bits), bits, lists)
        index.train(codes[np.random.default_rng(0).permutation(len(codes))[: train_per_list * lists]])
        index.nprobe = probes
    index.add(codes)
    return _FaissCodes(index)
