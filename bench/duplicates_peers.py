#!/usr/bin/env python3
"""Duplicate groups side by side: Lookalike, Debian's findimagedupes, imagededup's PHash.

One folder of openclipart designs with planted edited copies (the edit kinds
of the quality benchmark, one per copy). Each tool lists duplicate pairs; the
figures count pairs that involve a planted copy: recall = planted pairs found
/ planted pairs; precision = correct pairs / pairs found that involve a copy
(the designs' own duplicates inside openclipart are left out of both counts).

    python bench/duplicates_peers.py --source /usr/share/openclipart/png [--designs 1000] [--copies 180] [--seed 5]
"""
from __future__ import annotations

import argparse
import itertools
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.edits import EDITS, apply, designs as openclipart, signature, twins_of  # noqa: E402
from engine.config import Config  # noqa: E402
from engine import Engine  # noqa: E402



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default="/usr/share/openclipart/png")
    parser.add_argument("--designs", type=int, default=1000)
    parser.add_argument("--copies", type=int, default=180)
    parser.add_argument("--work", default="bench/out/duplicates")
    parser.add_argument("--seed", type=int, default=5, help="another seed draws other designs and copies "
                        "(thresholds were chosen on the default one)")
    args = parser.parse_args()
    folder, truth = build(args, Path(args.work))
    print(f"{len(list(folder.iterdir()))} files, {len(truth)} planted copies ({', '.join(sorted(EDITS))})")
    same = identical_designs(folder, set(truth.values()))
    print(f"{sum(len(v) > 1 for v in same.values())} planted originals have an identical twin in the library")
    for name, finder in (("lookalike", lookalike), ("findimagedupes", findimagedupes), ("imagededup PHash", phash)):
        started = time.perf_counter()
        try:
            pairs = finder(folder, Path(args.work))
        except (FileNotFoundError, ImportError) as exc:
            print(f"{name:18s} not available: {exc}")
            continue
        precision, recall = score(pairs, truth, same)
        print(f"{name:18s} pair precision {precision:.3f}  pair recall {recall:.3f}  "
              f"({len(pairs)} pairs, {time.perf_counter() - started:.0f} s)")


def build(args, work: Path) -> tuple[Path, dict[str, str]]:
    designs = openclipart(args.source, seed=args.seed)[: args.designs]
    folder = work / "library"
    shutil.rmtree(work, ignore_errors=True)
    folder.mkdir(parents=True)
    for i, path in enumerate(designs):
        shutil.copyfile(path, folder / f"{i:05d}_{path.name}")
    truth = {}
    rng = random.Random(args.seed + 1)
    for n, index in enumerate(rng.sample(range(len(designs)), args.copies)):
        kind = sorted(EDITS)[n % len(EDITS)]
        name = f"copy_{n:04d}_{kind}.png"
        apply(kind, Image.open(designs[index]), seed=20_000 + 1000 * (args.seed - 5) + n).convert("RGB").save(folder / name)
        truth[name] = f"{index:05d}_{designs[index].name}"
    return folder, truth



def score(pairs: set[frozenset[str]], truth: dict[str, str], same: dict[str, set[str]]) -> tuple[float, float]:
    """Precision over pairs involving a planted copy, recall over the planted pairs.

    A pair is also correct when it joins a copy to a design identical to its
    original (openclipart holds many designs twice: `same`, from a
    method-independent 32x32 check) or to another copy of the same design.
    """
    planted = {frozenset((copy, original)) for copy, original in truth.items()}
    involving = {p for p in pairs if p & truth.keys()}

    def design(name: str) -> set[str]:
        return same.get(truth.get(name, name), {truth.get(name, name)})

    correct = {p for p in involving if len(p) == 2 and not set.isdisjoint(*(design(n) for n in p))}
    return len(correct) / max(1, len(involving)), len(involving & planted) / len(planted)


def identical_designs(folder: Path, originals: set[str]) -> dict[str, set[str]]:
    """For each planted original, the library designs identical to it (itself included)."""
    names = sorted(p.name for p in folder.iterdir() if not p.name.startswith("copy_"))
    signatures = np.stack([signature(folder / n) for n in names])
    index = {n: i for i, n in enumerate(names)}
    return {o: {names[i] for i in twins_of(signatures[index[o]], signatures)} | {o} for o in originals}


def lookalike(folder: Path, work: Path) -> set[frozenset[str]]:
    engine = Engine(Config(images=folder, cache=work / "cache"))
    engine.reindex()
    return {frozenset((p.a, p.b)) for g in engine.duplicates() for p in g.pairs}


def findimagedupes(folder: Path, work: Path) -> set[frozenset[str]]:
    """Debian's findimagedupes at its default 90% threshold; one group per output line."""
    result = subprocess.run(["findimagedupes", "-q", "-R", str(folder)], capture_output=True, text=True, check=True)
    pairs = set()
    for line in result.stdout.splitlines():
        names = [Path(p).name for p in line.split()]
        pairs |= {frozenset(pair) for pair in itertools.combinations(names, 2)}
    return pairs


def phash(folder: Path, work: Path) -> set[frozenset[str]]:
    """imagededup's find_duplicates with PHash at its default Hamming threshold of 10."""
    from imagededup.methods import PHash

    found = PHash(verbose=False).find_duplicates(image_dir=str(folder), max_distance_threshold=10)
    return {frozenset((a, b)) for a, dups in found.items() for b in dups}


if __name__ == "__main__":
    main()
