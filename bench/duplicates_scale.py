#!/usr/bin/env python3
"""Duplicate grouping at scale: 100,000 indexed images (synthetic vectors), time and memory.

Vectors are random unit rows per feature (CLIP 512, ResNet 2048, HSV 256)
with planted copies (a design plus small noise), so the grouping has real
groups to find; recall of the planted pairs is reported with the time.
Content thumbprints (random grids, copies with +-4 grey levels of noise)
are included; ORB points are not: the local-feature check costs ~60 ms per
image on this machine (see docs/benchmarks.md), on top of the figure printed here.

    python bench/duplicates_scale.py [--images 100000] [--planted 2000]
"""
from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.match.duplicates import find_groups  # noqa: E402
from engine.index.snapshot import build_snapshot  # noqa: E402
from engine.index.store import Entry, IndexData  # noqa: E402
from features import DEFAULT_WEIGHTS, l2_normalize, thumbprint  # noqa: E402

DIMS = {"clip": 512, "resnet": 2048, "hsv": 256}


def synthetic(n: int, planted: int, rng: np.random.Generator) -> tuple[IndexData, set[tuple[int, int]]]:
    data = IndexData(entries=[Entry(f"img_{i:06d}.png", 1000, i, f"{i:064x}", 800, 800) for i in range(n)])
    originals = rng.choice(n - planted, planted, replace=False)
    for name, dim in DIMS.items():
        block = np.empty((n, dim), dtype=np.float32)
        for start in range(0, n, 10_000):  # in slices: keeps the peak down
            block[start:start + 10_000] = l2_normalize(rng.standard_normal((min(10_000, n - start), dim), dtype=np.float32))
        copies = block[originals] + 0.15 * rng.standard_normal((planted, dim), dtype=np.float32) / np.sqrt(dim)
        block[n - planted:] = l2_normalize(copies)
        data.vectors[name], data.present[name] = block, np.ones(n, dtype=bool)
        data.fingerprints[name] = "synthetic"
    # Content thumbprints (uint8 grids) ride along: the pass looks for twins among them too.
    grids = rng.integers(0, 256, (n, thumbprint.SIDE ** 2), dtype=np.uint8)
    noise = rng.integers(-4, 5, (planted, thumbprint.SIDE ** 2))
    grids[n - planted:] = np.clip(grids[originals].astype(int) + noise, 0, 255).astype(np.uint8)
    data.vectors["thumbprint"], data.present["thumbprint"] = grids, np.ones(n, dtype=bool)
    data.fingerprints["thumbprint"] = "synthetic"
    truth = {(int(o), n - planted + k) for k, o in enumerate(originals)}
    return data, truth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--planted", type=int, default=2_000)
    args = parser.parse_args()
    data, truth = synthetic(args.images, args.planted, np.random.default_rng(0))
    started = time.perf_counter()
    snapshot = build_snapshot(data, tuple(DIMS), DEFAULT_WEIGHTS)
    built = time.perf_counter()
    groups = find_groups(snapshot)
    finished = time.perf_counter()
    row = {e.path: i for i, e in enumerate(data.entries)}
    found = {tuple(sorted((row[p.a], row[p.b]))) for g in groups for p in g.pairs}
    recall = len({tuple(sorted(t)) for t in truth} & found) / len(truth)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{args.images} images: snapshot {built - started:.1f} s, grouping {finished - built:.1f} s, "
          f"{len(groups)} groups, planted-pair recall {recall:.3f}, peak RSS {peak:.0f} MB")


if __name__ == "__main__":
    main()
