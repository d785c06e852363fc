#!/usr/bin/env python3
"""The local-feature lookup of the library-wide duplicate pass, as the library grows.

Reads the ORB codes of a real index (`image.py index` of real designs, such as Debian's
openclipart-png), then adds made-up designs' codes up to each size asked for: real
codes with 16 of their 256 bits flipped.  The lookup's cost is the codes in the lists
it scans, and made-up codes fill the inverted file's lists less evenly than real ones
(FAISS's imbalance factor at 12 million codes about 3.4, where the real codes' is 1.4; with 48
bits flipped 5.0), so past the real codes the times printed are on the high side: the
imbalance factor is printed beside them.  For each size it builds the codes' index as
a snapshot does (engine/index/neighbours.py) and times what the pass asks of it per
design: its 250 strongest points as is and 125 mirrored, 8 neighbours each.  With
--compare it times the inverted file of capped lists too at every size (the index a
snapshot builds below neighbours.VOCABULARY_FROM codes), in the same run.

    python bench/local_lookup.py --cache CACHE --codes 3000000,12000000,36700000 [--compare]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.index.neighbours import (CODE_PROBES, CODE_TRAIN_PER_LIST, EXACT_CODES_BELOW, IN_PROCESS,  # noqa: E402
                                     binary_codes, code_lists)
from engine.index.store import load  # noqa: E402
from engine.match.duplicates import LIBRARY_MIRROR_POINTS, LIBRARY_POINTS  # noqa: E402
from engine.match.localindex import NEIGHBOURS  # noqa: E402
from features.orb import unpack  # noqa: E402

FLIPPED_BITS = 16
QUERY_DESIGNS = 40


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, required=True, help="cache folder holding the real designs' index")
    parser.add_argument("--codes", default="3000000,12000000,36700000", help="library sizes, in codes")
    parser.add_argument("--compare", action="store_true", help="time the inverted file of capped lists too")
    args = parser.parse_args()
    data = load(args.cache / "index.npz")
    rows = data.vectors["orb"]
    owners = np.flatnonzero(data.present["orb"])
    real = np.ascontiguousarray(np.concatenate([unpack(rows[r])[1] for r in owners]))
    per_design = len(real) / len(owners)
    rng = np.random.default_rng(0)
    asked = rng.choice(owners, QUERY_DESIGNS, replace=False)
    mirrored = data.vectors["orb_mirror"]
    queries = np.ascontiguousarray(np.concatenate([unpack(rows[r])[1][:LIBRARY_POINTS] for r in asked]
                                                  + [unpack(mirrored[r])[1][:LIBRARY_MIRROR_POINTS] for r in asked]))
    print(f"{len(real):,} real codes of {len(owners):,} designs ({per_design:.0f} points a design)")
    for size in (int(n) for n in args.codes.split(",")):
        codes = grown(real, size, rng)
        kinds = [("as a snapshot builds it", lambda: IN_PROCESS.codes("orb", np.zeros(1, np.int64),
                                                                        np.array([len(codes)]), codes, ""))]
        if args.compare:
            kinds.append(("inverted file, capped lists", lambda: binary_codes(
                codes, EXACT_CODES_BELOW, code_lists(len(codes)), CODE_TRAIN_PER_LIST, CODE_PROBES,
                vocabulary_from=len(codes) + 1)))
        for kind, build in kinds:
            started = time.perf_counter()
            index = build()
            built = time.perf_counter() - started
            index.search(queries[:LIBRARY_POINTS], NEIGHBOURS)  # first touch of every list
            started = time.perf_counter()
            index.search(queries, NEIGHBOURS)
            each = (time.perf_counter() - started) / QUERY_DESIGNS
            print(f"{len(codes):>12,} codes ({len(codes) / per_design:>9,.0f} designs), {kind}: built in {built:5.1f} s, "
                  f"lookup {1000 * each:7.1f} ms a design, lists' imbalance {imbalance(index):.1f}", flush=True)
            del index
        del codes


def imbalance(index) -> float:
    """FAISS's imbalance factor of the codes' inverted lists (1: all lists alike); 1 for a flat scan."""
    lists = getattr(getattr(index, "_index", getattr(index, "lists", None)), "invlists", None)
    return 1.0 if lists is None else float(lists.imbalance_factor())


def grown(real: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """`size` codes: the real ones first, then real ones with FLIPPED_BITS bits flipped."""
    parts, have = [real[:size]], min(size, len(real))
    while have < size:
        block = real[rng.integers(0, len(real), min(len(real), size - have))]
        bits = np.unpackbits(block, axis=1)
        flips = rng.random(bits.shape) < FLIPPED_BITS / bits.shape[1]
        parts.append(np.packbits(bits ^ flips, axis=1))
        have += len(block)
    return np.ascontiguousarray(np.concatenate(parts))


if __name__ == "__main__":
    main()
