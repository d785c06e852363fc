"""Calibrating the verdicts' score thresholds on the studio's own collection.

A fixed threshold on a learned score is wrong in both directions: CLIP's cosines
run high between any two designs of one style, a shape network's lower.  So a
sample of the collection's own designs is edited the way copies are (the kinds
in engine/images/edits.py) and searched: each edited copy must find its source
and be called a copy; each negative (another edit of a design, searched with
that design left out) must not call anything a copy.  The thresholds of the
rules that involve a score (the fused score that makes a copy without local
evidence, the cosines that make the same picture, the points that make a copy)
are then chosen (engine/match/choosing.py) so that at most a target share of
negatives raise a false alarm, with the most copies found.  A design with a
near-identical variant in the collection (thumbprints correlating >= SAME_DESIGN,
as is or mirrored) is not used as a negative: its variant is a right answer.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import random
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from engine.images.edits import EDITS
from engine.index.snapshot import Snapshot
from engine.index.store import IndexData
from engine.match.choosing import POINTS_GRID, Chosen, Trial, choose, rates
from engine.match.judge import Evidence
from engine.match.search import Previews, SearchResult, search
from engine.match.verdict import DUPLICATE_INLIERS, EXACT_COSINE, Thresholds
from features import FEATURE_NAMES, registry, thumbprint
from features.files import atomic_write

log = logging.getLogger(__name__)

FILE_NAME = "calibration.json"
DEFAULT_SAMPLE = 300
DEFAULT_TARGET = 0.01
# Below this many designs the measured rates rest on too few queries to choose by.
MIN_DESIGNS = 50
# Thumbprints this alike are one design drawn twice: such a design makes no negative.
SAME_DESIGN = 0.9
RESULTS = 10  # results per query, as the page shows by default and bench/quality.py counts
KINDS = tuple(sorted(EDITS))


class TooSmall(ValueError):
    """The collection holds too few designs to calibrate on."""


class CalibrationStopped(Exception):
    """The run was asked to stop; nothing was written."""


@dataclass(frozen=True)
class Calibration:
    fingerprints: dict[str, str]  # of the features it was measured with
    exact_cosine: float
    duplicate_score: float | None
    designs: int
    copies: int
    negatives: int
    detection: float
    false_alarm_rate: float
    target_false_alarms: float
    made_at: float
    duplicate_points: int = DUPLICATE_INLIERS

    @property
    def thresholds(self) -> Thresholds:
        return Thresholds(self.exact_cosine, self.duplicate_score, self.duplicate_points, calibrated=True)

    def summary(self) -> str:
        return (f"calibrated on {self.designs} of your designs: finds {100 * self.detection:.0f}% of edited copies "
                f"with {100 * self.false_alarm_rate:.1f}% false alarms")

    def as_dict(self) -> dict:
        stored = asdict(self)
        limits = {name: stored.pop(name) for name in ("exact_cosine", "duplicate_score", "duplicate_points")}
        return {**stored, "thresholds": limits, "summary": self.summary()}


def fingerprints_of(snapshot: Snapshot) -> dict[str, str]:
    return fingerprints_for(snapshot.data, snapshot.features)


def fingerprints_for(data: IndexData, features: tuple[str, ...]) -> dict[str, str]:
    """The fingerprints a calibration holds for: the fused features, local points and thumbprints."""
    names = set(features) | ({"orb", "thumbprint"} & set(data.vectors))
    return {n: data.fingerprints.get(n, "") for n in sorted(names)}


def load(path: Path, fingerprints: dict[str, str]) -> Calibration | None:
    """The calibration stored for these features; None (with a log line) for a missing file,
    one made with other features, or one that is not a sound calibration."""
    try:
        stored = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("Ignoring %s: %s", path, exc)
        return None
    try:
        calibration = _parse(stored)
    except (KeyError, TypeError, ValueError) as exc:
        log.warning("Ignoring %s: not a calibration (%s); built-in thresholds apply", path, exc)
        return None
    if calibration.fingerprints != fingerprints:
        log.info("Ignoring %s: made with other features; built-in thresholds apply until calibrated again", path)
        return None
    return calibration


def save(path: Path, calibration: Calibration) -> None:
    atomic_write(path, json.dumps(calibration.as_dict(), indent=1))


def _parse(stored: dict) -> Calibration:
    fields = {k: stored[k] for k in ("fingerprints", "designs", "copies", "negatives", "detection",
                                     "false_alarm_rate", "target_false_alarms", "made_at")}
    limits = stored["thresholds"]
    exact, score = float(limits["exact_cosine"]), limits["duplicate_score"]
    score = None if score is None else float(score)
    points = int(limits.get("duplicate_points", DUPLICATE_INLIERS))  # files from before it was calibrated
    if not DUPLICATE_INLIERS <= points <= max(POINTS_GRID):
        raise ValueError(f"duplicate_points {points} is outside {DUPLICATE_INLIERS}..{max(POINTS_GRID)}")
    if not isinstance(fields["fingerprints"], dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in fields["fingerprints"].items()):
        raise ValueError("fingerprints must map feature names to strings")
    for name, value in (("exact_cosine", exact), ("duplicate_score", score), ("detection", fields["detection"]),
                        ("false_alarm_rate", fields["false_alarm_rate"])):
        if value is not None and not 0 <= float(value) <= 1:
            raise ValueError(f"{name} {value} is outside 0..1")
    return Calibration(exact_cosine=exact, duplicate_score=score, duplicate_points=points, **fields)


def calibrate(snapshot: Snapshot, embed: Callable, read: Callable[[int], Image.Image],
              decode_query: Callable[[bytes], object], previews: Previews, sample: int = DEFAULT_SAMPLE,
              target: float = DEFAULT_TARGET, seed: int = 0, stop: Callable[[], bool] = lambda: False,
              progress: Callable[[int, int], None] | None = None) -> Calibration:
    """Measure on `sample` designs of the snapshot and choose the thresholds.

    `embed(image, names)` gives a picture's features, `read(row)` an indexed design's
    picture, `decode_query(bytes)` a query's; raises TooSmall, CalibrationStopped."""
    if snapshot.size < MIN_DESIGNS:
        raise TooSmall(f"{snapshot.size} designs are too few to calibrate on (at least {MIN_DESIGNS}); "
                       "the built-in thresholds apply")
    rows = sample_rows(snapshot.size, sample, seed)
    trials = run_trials(snapshot, embed, read, decode_query, previews, rows, seed, stop, progress)
    chosen = choose(trials, target)
    detection, rate = chosen.validated  # what designs the choice was not made on show
    return replace(_calibration(chosen, target, len(rows), fingerprints_of(snapshot)),
                   detection=detection, false_alarm_rate=rate)


def sample_rows(size: int, sample: int, seed: int) -> list[int]:
    """The rows a calibration with this seed measures on."""
    return random.Random(seed).sample(range(size), min(sample, size))


def run_trials(snapshot: Snapshot, embed: Callable, read: Callable[[int], Image.Image],
               decode_query: Callable[[bytes], object], previews: Previews, rows: list[int], seed: int,
               stop: Callable[[], bool] = lambda: False,
               progress: Callable[[int, int], None] | None = None) -> list[Trial]:
    """For each design of `rows`: an edited copy searched (it must find the design), and,
    unless the design has a variant in the collection, another edit searched with the
    design left out (it must find no copy).  Edits are chosen by `seed`."""
    variants = _with_variants(snapshot)
    networks = frozenset(set(registry.NETWORKS) & set(snapshot.features))
    trials: list[Trial] = []
    for n, row in enumerate(rows):
        if stop():
            raise CalibrationStopped("calibration stopped")
        try:
            design = read(row)
        except Exception as exc:  # an unreadable design is left out of the sample
            log.info("Calibration leaves out %s: %s", snapshot.data.entries[row].path, exc)
            continue
        copy = _search(snapshot, embed, decode_query, previews, _edited(design, KINDS[n % len(KINDS)], seed + n))
        trials.append(Trial([_trusting(r.evidence, networks) for r in copy], [r.row for r in copy], row, row))
        if row not in variants:
            kind = KINDS[(n + len(KINDS) // 2) % len(KINDS)]
            found = _search(snapshot, embed, decode_query, previews, _edited(design, kind, seed + 10_000 + n),
                            exclude=row)
            trials.append(Trial([_trusting(r.evidence, networks) for r in found], [r.row for r in found], None, row))
        if progress:
            progress(n + 1, len(rows))
    return trials


def _search(snapshot, embed, decode_query, previews, data: bytes, exclude: int | None = None) -> list[SearchResult]:
    decoded = decode_query(data)
    query = embed(decoded.image, snapshot.features)
    results = search(snapshot, query, decoded.image, RESULTS + 1, {n: snapshot.weights.get(n, 0) for n in FEATURE_NAMES},
                     FEATURE_NAMES, hashlib.sha256(data).hexdigest(), (decoded.width, decoded.height), previews)
    if exclude is not None:  # the source left out, and any file holding the same bytes
        source = snapshot.data.entries[exclude].sha256
        results = [r for r in results if r.sha256 != source]
    return results[:RESULTS]


def _edited(design: Image.Image, kind: str, seed: int) -> bytes:
    edited = EDITS[kind](design.convert("RGB"), random.Random(seed))
    out = io.BytesIO()
    edited.convert("RGB").save(out, "PNG")
    return out.getvalue()


def _trusting(evidence: Evidence, networks: frozenset[str]) -> Evidence:
    """The evidence with every network's fused score allowed to make a copy: calibration
    is what decides whether, and from which score, it may."""
    return evidence._replace(score_networks=networks)


def _with_variants(snapshot: Snapshot) -> set[int]:
    """Rows whose thumbprint (as is or mirrored) correlates >= SAME_DESIGN with another row's."""
    if snapshot.thumbprints is None:
        return set()
    units = snapshot.thumbprints
    flipped = thumbprint.units(thumbprint.mirrored(snapshot.data.vectors["thumbprint"]))
    found: set[int] = set()
    for start in range(0, len(units), 1024):
        block = slice(start, start + 1024)
        alike = np.maximum(units[block] @ units.T, flipped[block] @ units.T)
        np.fill_diagonal(alike[:, start:start + 1024], 0)
        found.update(int(start + i) for i in np.flatnonzero((alike >= SAME_DESIGN).any(axis=1)))
    return found


def choose_thresholds(trials: list[Trial], target: float, designs: int, fingerprints: dict[str, str]) -> Calibration:
    """The calibration `trials` call for (engine/match/choosing.py), with their own rates."""
    return _calibration(choose(trials, target), target, designs, fingerprints)


def _calibration(chosen: Chosen, target: float, designs: int, fingerprints: dict[str, str]) -> Calibration:
    return Calibration(fingerprints=fingerprints, exact_cosine=chosen.exact_cosine,
                       duplicate_score=chosen.duplicate_score, duplicate_points=chosen.duplicate_points,
                       designs=designs, copies=chosen.copies, negatives=chosen.negatives, detection=chosen.detection,
                       false_alarm_rate=chosen.false_alarm_rate, target_false_alarms=target, made_at=time.time())


__all__ = ["CalibrationStopped", "Calibration", "DEFAULT_SAMPLE", "DEFAULT_TARGET", "EXACT_COSINE", "FILE_NAME",
           "MIN_DESIGNS", "TooSmall", "Trial", "calibrate", "choose_thresholds", "fingerprints_for", "fingerprints_of",
           "load", "rates", "run_trials", "sample_rows", "save"]
