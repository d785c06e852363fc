#!/usr/bin/env python3
"""Does `image.py calibrate` report what its thresholds then do?  A held-out check.

A collection of openclipart designs is indexed as an install without downloads
indexes it (colour, local features, the bundled EfficientNet-Lite0), then
calibrated as `image.py calibrate --sample S` calibrates it.  Then designs the
calibration never saw (another random draw from the rest of the collection,
edited with other random choices) are measured the same way under the thresholds
it chose.  Printed: the calibration's reported detection and false-alarm rate,
the held-out ones with their 95% intervals, and the differences.

    python bench/calibration_check.py --source /usr/share/openclipart/png [--designs 3000]
        [--sample 300] [--held-out 1000] [--work DIR] [--json]

--work keeps the indexed collection between runs (indexing is most of the first run).
"""
from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

HELD_OUT_SEED = 1_000_003  # edits and draw of the held-out designs: none of the calibration's


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default="/usr/share/openclipart/png", type=Path)
    parser.add_argument("--designs", type=int, default=3000, help="designs in the collection")
    parser.add_argument("--sample", type=int, default=300, help="designs the calibration measures (its default)")
    parser.add_argument("--held-out", type=int, default=1000, help="designs of the held-out measurement")
    parser.add_argument("--target", type=float, default=0.01, help="false alarms the calibration aims at")
    parser.add_argument("--draw", type=int, default=0, help="which random draw of designs and held-out edits")
    parser.add_argument("--work", type=Path, help="folder kept between runs (default: a temporary one)")
    parser.add_argument("--json", action="store_true", help="one JSON object as the last line")
    args = parser.parse_args()

    from engine import Engine
    from engine.config import Config
    from engine.match import calibration

    work = args.work or Path(tempfile.mkdtemp(prefix="lookalike-calibration-"))
    images = collection(args.source, work / "images", args.designs, args.draw)
    engine = Engine(Config(images=images, cache=work / "cache"))
    started = time.perf_counter()
    engine.reindex()
    indexed_s = time.perf_counter() - started
    snapshot = engine.snapshot
    started = time.perf_counter()
    made = engine.calibrate(sample=args.sample, target=args.target)
    calibrate_s = time.perf_counter() - started

    seen = set(calibration.sample_rows(snapshot.size, args.sample, 0))
    unseen = [row for row in range(snapshot.size) if row not in seen]
    held_out_seed = HELD_OUT_SEED + args.draw
    rows = random.Random(held_out_seed).sample(unseen, min(args.held_out, len(unseen)))
    trials = calibration.run_trials(snapshot, engine.networks.embed, engine.calibration.reader(snapshot),
                                    engine.decode_query, engine.report.previews(snapshot), rows, held_out_seed)
    detection, false_alarms = calibration.rates(trials, made.thresholds)
    copies = sum(t.source is not None for t in trials)
    negatives = len(trials) - copies
    engine.close(timeout=10)

    print(f"collection: {snapshot.size} designs ({', '.join(snapshot.features)}), indexed in {indexed_s:.0f} s")
    print(f"calibration on {made.designs} designs ({made.copies} copies, {made.negatives} negatives, {calibrate_s:.0f} s): "
          f"a copy from {made.duplicate_points} agreeing points or fused score {made.duplicate_score}, "
          f"same picture at cosine >= {made.exact_cosine}")
    print(f"  reported:  detection {made.detection:.3f}   false alarms {made.false_alarm_rate:.3f}")
    print(f"  held out on {len(rows)} other designs ({copies} copies, {negatives} negatives):")
    print(f"             detection {detection:.3f} ± {interval(detection, copies):.3f}   "
          f"false alarms {false_alarms:.3f} ± {interval(false_alarms, negatives):.3f}")
    print(f"  difference (reported - held out): detection {100 * (made.detection - detection):+.1f} points, "
          f"false alarms {100 * (made.false_alarm_rate - false_alarms):+.1f} points")
    if args.json:
        print(json.dumps({
            "designs": snapshot.size, "sample": made.designs, "held_out": len(rows),
            "thresholds": made.as_dict()["thresholds"],
            "reported": {"detection": made.detection, "false_alarm_rate": made.false_alarm_rate,
                         "copies": made.copies, "negatives": made.negatives},
            "held_out_rates": {"detection": detection, "false_alarm_rate": false_alarms,
                               "copies": copies, "negatives": negatives},
        }))
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


def collection(source: Path, target: Path, count: int, draw: int) -> Path:
    """`count` designs drawn from `source` (the same ones for the same count and draw), copied once."""
    if target.is_dir() and any(target.iterdir()):
        return target
    target.mkdir(parents=True, exist_ok=True)
    files = sorted(source.rglob("*.png"))
    random.Random(draw).shuffle(files)
    for i, path in enumerate(files[:count]):
        shutil.copyfile(path, target / f"{i:05d}-{path.name}")
    return target


def interval(rate: float, n: int) -> float:
    """Half-width of the 95% normal interval of a rate measured on n trials."""
    return 1.96 * math.sqrt(max(rate * (1 - rate), 1e-9) / max(n, 1))


if __name__ == "__main__":
    main()
