#!/usr/bin/env python3
"""Regions benchmark: find a single design inside the sheet it was placed on.

Sheets of 4 openclipart designs on white (2 x 2, random sizes and offsets)
plus single-design distractors form the collection; queries are single
designs from those sheets. Prints sheet recall@1 and the share of hits whose
box has IoU >= 0.5 with the design's true placement, with and without
region entries, and how many region entries the openclipart corpus gets per
image. With CLIP weights present, also text precision@10 by category.

    python bench/regions.py --source /usr/share/openclipart/png [--sheets 100] [--queries 150]
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.edits import designs as openclipart, flatten, signature, twins_of  # noqa: E402
from engine.config import Config  # noqa: E402
from engine import Engine  # noqa: E402
from engine.images.decode import decode  # noqa: E402
from features.regions import propose  # noqa: E402

CELL = 400


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default="/usr/share/openclipart/png")
    parser.add_argument("--sheets", type=int, default=100)
    parser.add_argument("--distractors", type=int, default=600)
    parser.add_argument("--queries", type=int, default=150)
    parser.add_argument("--work", default="bench/out/regions")
    args = parser.parse_args()
    work = Path(args.work)
    designs = openclipart(args.source, seed=9)
    placements = build(work, designs, args)
    queries = random.Random(10).sample(placements, args.queries)
    twinned = identical_elsewhere(work / "collection", queries)
    print(f"{args.sheets} sheets of 4 designs + {args.distractors} single designs; {len(queries)} queries, "
          f"{len(twinned)} of them with an identical design among the single ones (openclipart repeats designs; "
          f"for those the single design is a right answer too)")
    for regions in (False, True):
        engine = Engine(Config(images=work / "collection", cache=work / f"cache-{regions}", regions=regions))
        engine.reindex()
        hits, good_boxes, clear_hits = 0, 0, 0
        for n, query in enumerate(queries):
            top = engine.search_bytes(Path(query["source"]).read_bytes(), 5)  # as uploaded
            if top and top[0].path == query["sheet"]:
                hits += 1
                clear_hits += n not in twinned
                good_boxes += top[0].box is not None and iou(top[0].box, query["box"]) >= 0.5
        entries = len(engine.snapshot.data.regions)
        print(f"regions {'on ' if regions else 'off'}: sheet recall@1 {hits / len(queries):.3f} "
              f"({clear_hits / max(1, len(queries) - len(twinned)):.3f} on the {len(queries) - len(twinned)} "
              f"queries without a twin), boxes with IoU >= 0.5 {good_boxes / max(1, hits):.3f} of hits, "
              f"{entries} region entries for {engine.snapshot.size} images")
        if regions:
            text_benchmark(engine, Path(args.source))
    growth = [len(propose(decode(p.read_bytes()).image)) for p in designs[:1000]]
    print(f"openclipart, 1,000 designs: {np.mean(growth):.2f} region entries per image "
          f"({100 * np.mean(np.array(growth) > 0):.0f}% of images get any; at most {max(growth)})")


def build(work: Path, designs: list[Path], args) -> list[dict]:
    stamp = work / "placements-v2.json"
    if stamp.exists():
        return json.loads(stamp.read_text())
    shutil.rmtree(work, ignore_errors=True)
    folder = work / "collection"
    folder.mkdir(parents=True)
    rng = random.Random(11)
    placements = []
    for s in range(args.sheets):
        sheet = Image.new("RGB", (2 * CELL, 2 * CELL), "white")
        for k, path in enumerate(designs[4 * s: 4 * s + 4]):
            design = flatten(Image.open(path))
            side = rng.randint(int(CELL * 0.55), int(CELL * 0.9))
            design.thumbnail((side, side))
            x = (k % 2) * CELL + rng.randint(10, CELL - design.width - 10)
            y = (k // 2) * CELL + rng.randint(10, CELL - design.height - 10)
            sheet.paste(design, (x, y))
            # The true placement is where the design shows, not its canvas's white margins.
            x0, y0, x1, y1 = ImageOps.invert(design.convert("L")).getbbox() or (0, 0, *design.size)
            placements.append({"sheet": f"sheet_{s:03d}.png", "source": str(path),
                               "box": [x + x0, y + y0, x + x1, y + y1]})
        sheet.save(folder / f"sheet_{s:03d}.png")
    for path in designs[4 * args.sheets: 4 * args.sheets + args.distractors]:
        shutil.copyfile(path, folder / path.name)
    stamp.write_text(json.dumps(placements))
    return placements


def identical_elsewhere(collection: Path, queries: list[dict]) -> set[int]:
    """Queries whose design is also in the collection as a single file (32x32 grey check)."""
    singles = sorted(p for p in collection.iterdir() if not p.name.startswith("sheet_"))
    signatures = np.stack([signature(p) for p in singles])
    return {n for n, q in enumerate(queries) if twins_of(signature(Path(q["source"])), signatures)}


def text_benchmark(engine: Engine, source: Path) -> None:
    """Category folders as text queries: precision@10 (needs CLIP weights)."""
    if "clip" not in engine.snapshot.features:
        print("text benchmark skipped: no CLIP weights")
        return
    categories = sorted(p.name for p in source.iterdir() if p.is_dir())
    scores = []
    for category in categories:
        results = engine.search_text(category.replace("_", " "), 10)
        scores.append(np.mean([category in r.path for r in results]) if results else 0.0)
        print(f"  text '{category}': precision@10 {scores[-1]:.2f}")
    print(f"text precision@10, mean over {len(categories)} categories: {np.mean(scores):.3f}")


def iou(a, b) -> float:
    x0, y0, x1, y1 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0, x1 - x0) * max(0, y1 - y0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0



if __name__ == "__main__":
    main()
