"""Binary codes filed under a two-level vocabulary: the local-feature lookup of very large libraries.

An inverted file's lists come from k-means, whose cost is lists x training codes, so
their number is capped (neighbours.MAX_CODE_LISTS) and past that each list grows with
the library, and every point's scan with it (270 ms a design at 100,000 designs on a
2-core machine, docs/benchmarks.md).  Here the words come in two levels: k-means makes
about sqrt(words) coarse words, then each coarse word's own codes are split again into
fine words by a k-means of their own (a few thousand codes each: cheap), so the words
grow with the library and a word keeps about CODES_PER_WORD codes.  A point asks its
COARSE_PROBES nearest coarse words for their fine words, and scans the `probes` nearest
of those: about as many codes at a hundred thousand designs as at ten thousand.
"""
from __future__ import annotations

import faiss
import numpy as np

# Codes a fine word holds, on average.
CODES_PER_WORD = 200
# Training codes per fine word, and k-means rounds at each level: the words only have to
# spread the codes about evenly, not be the best centres.
TRAIN_PER_WORD = 10
ROUNDS = 8
# Coarse words scanned for each point's fine words.
COARSE_PROBES = 2
# Fine words scanned per point unless told.  With the words forced on bench/duplicates_peers.py's
# libraries, 16 gave the figures the capped lists give on two draws; 8 lost two planted copies
# of 180 on one of them.
WORD_PROBES = 16


class VocabularyCodes:
    """A CodeIndex (engine/index/neighbours.py) over `codes`, filed by two-level words."""

    def __init__(self, codes: np.ndarray, probes: int = WORD_PROBES, seed: int = 0) -> None:
        codes = np.ascontiguousarray(codes)
        self.bits = codes.shape[1] * 8
        self.probes = probes
        rng = np.random.default_rng(seed)
        words = max(1, len(codes) // CODES_PER_WORD)
        coarse_words = max(1, int(np.sqrt(words)))
        sample = codes[rng.permutation(len(codes))[: words * TRAIN_PER_WORD]]
        coarse_centres = _centres(sample, coarse_words, self.bits)
        self.coarse = _flat(coarse_centres, self.bits)
        home = _nearest(self.coarse, sample)
        self.fine = []
        for word in range(coarse_words):
            members = sample[home == word]
            count = max(1, round(len(members) / TRAIN_PER_WORD))
            centres = _centres(members, count, self.bits) if len(members) > count else members
            if not len(centres):  # a coarse word no training code landed in: one word of its own
                centres = coarse_centres[word:word + 1]
            self.fine.append(_flat(centres, self.bits))
        # Each coarse word's fine words are numbered on from the previous coarse word's.
        sizes = np.array([fine.ntotal for fine in self.fine], np.int64)
        self.first = np.cumsum(sizes) - sizes
        self.words = int(sizes.sum())
        self.lists = faiss.IndexBinaryIVF(faiss.IndexBinaryFlat(self.bits), self.bits, self.words)
        self.lists.is_trained = True  # filed by this class's words, not by the IVF's own quantizer
        self._file(codes)

    def __len__(self) -> int:
        return self.lists.ntotal

    def search(self, codes: np.ndarray, k: int, probes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(Hamming distances, positions) of each code's k nearest stored codes in the
        fine words scanned; -1 past the end."""
        codes = np.ascontiguousarray(codes)
        probes = probes or self.probes
        distances, words = self._words(codes, COARSE_PROBES, probes)
        found = np.empty((len(codes), k), np.int32), np.empty((len(codes), k), np.int64)
        # FAISS's own wrapper reads the lists scanned from the index (shared by concurrent
        # searches); the parameters carry them per call.
        self.lists.search_preassigned_c(len(codes), faiss.swig_ptr(codes), k, faiss.swig_ptr(words),
                                        faiss.swig_ptr(distances), faiss.swig_ptr(found[0]),
                                        faiss.swig_ptr(found[1]), False,
                                        faiss.SearchParametersIVF(nprobe=words.shape[1]))
        return found

    def _file(self, codes: np.ndarray) -> None:
        """Each code into the list of its nearest fine word (within its nearest coarse word)."""
        word = self._words(codes, 1, 1)[1][:, 0]
        order = np.argsort(word, kind="stable")
        bounds = np.searchsorted(word[order], np.arange(self.words + 1))
        positions = order.astype(np.int64)
        for number in np.flatnonzero(np.diff(bounds)):
            # One word's codes at a time: a sorted copy of them all is gigabytes at 100,000 designs.
            these = positions[bounds[number]:bounds[number + 1]]
            filed = np.ascontiguousarray(codes[these])  # held here: FAISS gets only a pointer
            self.lists.invlists.add_entries(int(number), len(these), faiss.swig_ptr(these), faiss.swig_ptr(filed))
        self.lists.ntotal = len(codes)

    def _words(self, codes: np.ndarray, coarse_probes: int, probes: int) -> tuple[np.ndarray, np.ndarray]:
        """(distances, numbers) of each code's `probes` nearest fine words among those of
        its `coarse_probes` nearest coarse words, nearest first; -1 where there are fewer."""
        coarse_probes = min(coarse_probes, self.coarse.ntotal)
        _, homes = self.coarse.search(codes, coarse_probes)
        distances = np.full((len(codes), coarse_probes * probes), np.iinfo(np.int32).max, np.int32)
        numbers = np.full(distances.shape, -1, np.int64)
        for column in range(coarse_probes):
            home = homes[:, column]
            order = np.argsort(home, kind="stable")
            bounds = np.searchsorted(home[order], np.arange(len(self.fine) + 1))
            for word in np.flatnonzero(np.diff(bounds)):
                asking = order[bounds[word]:bounds[word + 1]]
                found = min(probes, self.fine[word].ntotal)
                near, which = self.fine[word].search(codes[asking], found)
                slots = column * probes + np.arange(found)
                distances[asking[:, None], slots] = near
                numbers[asking[:, None], slots] = which + self.first[word]
        nearest = np.argsort(distances, axis=1, kind="stable")[:, :probes]
        return (np.ascontiguousarray(np.take_along_axis(distances, nearest, 1)),
                np.ascontiguousarray(np.take_along_axis(numbers, nearest, 1)))


def _centres(codes: np.ndarray, count: int, bits: int) -> np.ndarray:
    """`count` binary k-means centres of `codes` (FAISS's binary k-means, ROUNDS rounds)."""
    trainer = faiss.IndexBinaryIVF(faiss.IndexBinaryFlat(bits), bits, count)
    trainer.cp.niter = ROUNDS
    trainer.cp.min_points_per_centroid = 1
    trainer.cp.verbose = False
    trainer.train(np.ascontiguousarray(codes))
    return faiss.vector_to_array(faiss.downcast_IndexBinary(trainer.quantizer).xb).reshape(count, bits // 8)


def _flat(centres: np.ndarray, bits: int) -> faiss.IndexBinaryFlat:
    index = faiss.IndexBinaryFlat(bits)
    index.add(np.ascontiguousarray(centres))
    return index


def _nearest(index: faiss.IndexBinaryFlat, codes: np.ndarray) -> np.ndarray:
    return index.search(np.ascontiguousarray(codes), 1)[1][:, 0]
