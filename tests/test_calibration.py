"""Verdict thresholds calibrated on the studio's own collection."""
from __future__ import annotations

import json
import logging
from dataclasses import replace

import pytest

from conftest import make_design
from engine import Engine
from engine.match import calibration
from engine.match.calibration import Trial, choose_thresholds
from engine.match.choosing import choose
from engine.match.calibration_job import BUILT_IN_NOTE
from engine.match.judge import Evidence
from engine.match.verdict import (BUILT_IN, DUPLICATE, DUPLICATE_INLIERS, SIMILAR, Thresholds, nearly_verified,
                                  verdict)
from engine.match.verify import NONE, Verification

SHAPE = frozenset({"resnet"})


def scored(score: float) -> Evidence:
    """A result found by its fused score alone (no local evidence), from a network feature."""
    return Evidence({"resnet": score, "hsv": 0.5}, score, NONE, score_networks=SHAPE)


def synthetic_trials(copy_scores, negative_scores) -> list[Trial]:
    copies = [Trial([scored(s)], [i], i) for i, s in enumerate(copy_scores)]
    negatives = [Trial([scored(s)], [1000 + i], None) for i, s in enumerate(negative_scores)]
    return copies + negatives


def test_the_chosen_threshold_is_the_one_the_collection_calls_for():
    copies = [0.90 + 0.01 * i for i in range(10)]  # 0.90 ... 0.99
    negatives = [0.70 + 0.01 * i for i in range(20)] + [0.93]  # the worst lookalike scores 0.93
    strict = choose_thresholds(synthetic_trials(copies, negatives), 0.0, 30, {})
    assert 0.93 < strict.duplicate_score <= 0.94  # above every negative, no stricter than the copies need
    assert strict.false_alarm_rate == 0 and strict.detection == pytest.approx(0.6)  # 0.94 ... 0.99
    # Allowing one negative in twenty-one to be a false alarm buys the copies down to 0.90.
    lenient = choose_thresholds(synthetic_trials(copies, negatives), 0.05, 30, {})
    assert 0.89 < lenient.duplicate_score <= 0.90 and lenient.detection == 1.0
    assert lenient.false_alarm_rate == pytest.approx(1 / 21)


def test_a_score_rule_that_cannot_meet_the_target_is_left_off():
    tangled = choose_thresholds(synthetic_trials([0.8, 0.85], [0.95, 0.97, 0.99]), 0.01, 5, {})
    assert tangled.duplicate_score is None and tangled.false_alarm_rate == 0 and tangled.detection == 0


def test_calibrated_thresholds_decide_the_verdict():
    score = 0.93
    assert verdict({"resnet": score}, score, NONE, score_networks=SHAPE) == DUPLICATE  # built in: 0.90
    stricter = Thresholds(duplicate_score=0.95, calibrated=True)
    assert verdict({"resnet": score}, score, NONE, score_networks=SHAPE, limits=stricter) == SIMILAR
    assert verdict({"resnet": score}, score, NONE, score_networks=SHAPE,
                   limits=Thresholds(duplicate_score=None, calibrated=True)) == SIMILAR


def test_the_rates_reported_are_measured_on_designs_the_choice_was_made_without():
    # Ten designs whose copies score 0.90; the negatives' worst lookalikes score 0.70, but
    # design 9's scores 0.92.  With design 9 among them, no rule finds a copy without an
    # alarm; the designs judged by a rule chosen without it (designs 4 and 9, one fold of
    # five) are found, and design 9's negative raises the alarm the choice never saw.
    trials = [Trial([scored(0.90)], [d], d, d) for d in range(10)]
    trials += [Trial([scored(0.92 if d == 9 else 0.70)], [1000 + d], None, d) for d in range(10)]
    chosen = choose_thresholds(trials, 0.0, 10, {})
    assert chosen.detection == 0.0 and chosen.false_alarm_rate == 0.0
    detection, false_alarms = choose(trials, 0.0).validated
    assert detection == pytest.approx(0.2) and false_alarms == pytest.approx(0.1)


def pointed(inliers: int) -> Evidence:
    """A result verified by local points alone (a colour-only score, far from any copy's)."""
    return Evidence({"hsv": 0.5}, 0.5, Verification(inliers, (0, 0, 10, 10), False, matches=inliers + 10))


def test_points_shared_by_a_template_raise_the_points_a_copy_needs():
    # Siblings on one template share 40 points; edited copies keep 65 or more.
    copies = [Trial([pointed(65 + i)], [i], i) for i in range(10)]
    siblings = [Trial([pointed(40)], [1000 + i], None) for i in range(10)]
    chosen = choose_thresholds(copies + siblings, 0.0, 20, {})
    assert 40 < chosen.duplicate_points <= 65
    assert chosen.detection == 1.0 and chosen.false_alarm_rate == 0.0
    # The built-in rule (30 points) calls every sibling a copy.
    assert calibration.rates(siblings, BUILT_IN) == (0.0, 1.0)
    assert calibration.rates(copies + siblings, chosen.thresholds) == (1.0, 0.0)


def test_a_calibrated_points_rule_decides_the_verdict_and_what_drawings_can_make_up_for():
    forty = Verification(40, (0, 0, 10, 10), False, matches=50)
    assert verdict({"hsv": 0.5}, 0.5, forty) == DUPLICATE  # built in: 30 points
    assert verdict({"hsv": 0.5}, 0.5, forty, limits=Thresholds(duplicate_points=50, calibrated=True)) == SIMILAR
    assert nearly_verified(forty, 50) and not nearly_verified(forty, 60)  # 10 points short at most
    assert nearly_verified(replace(forty, inliers=20), DUPLICATE_INLIERS)  # the built-in 20 to 29


def test_a_calibration_stored_before_points_were_calibrated_still_loads(cfg):
    made = choose_thresholds(synthetic_trials([0.95], [0.5]), 0.0, 60, {"hsv": "v1"})
    stored = made.as_dict()
    del stored["thresholds"]["duplicate_points"]
    path = cfg.cache / "calibration.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(stored))
    assert calibration.load(path, {"hsv": "v1"}).thresholds.duplicate_points == DUPLICATE_INLIERS


def write_designs(cfg, count: int) -> None:
    for seed in range(count):
        make_design(seed).save(cfg.images / f"design_{seed:03d}.png")


def test_calibrate_from_the_command_line_with_random_weight_networks(with_weights, capsys):
    """The plumbing end to end: index, edited copies searched, thresholds stored and used."""
    import image

    write_designs(with_weights, calibration.MIN_DESIGNS)
    assert image.main(["calibrate", "--images", str(with_weights.images), "--cache", str(with_weights.cache),
                       "--models", str(with_weights.models_dir), "--sample", "12", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"designs", "copies", "negatives", "detection", "false_alarm_rate", "thresholds"} <= set(summary)
    assert summary["designs"] == 12 and summary["copies"] == 12 and 0 < summary["negatives"] <= 12
    assert 0 <= summary["detection"] <= 1 and 0 <= summary["false_alarm_rate"] <= 1
    stored = json.loads((with_weights.cache / calibration.FILE_NAME).read_text())
    assert {"clip", "resnet", "hsv", "orb"} <= set(stored["fingerprints"])
    engine = Engine(with_weights)
    assert engine.snapshot.thresholds.calibrated
    assert engine.snapshot.thresholds.duplicate_score == summary["thresholds"]["duplicate_score"]
    assert engine.status()["verdicts"].startswith("calibrated on 12 of your designs")


def test_a_small_collection_keeps_the_built_in_thresholds_and_says_so(cfg, collection, capsys):
    import image

    assert image.main(["calibrate", "--images", str(cfg.images), "--cache", str(cfg.cache)]) == 1
    assert "too few to calibrate" in capsys.readouterr().err
    engine = Engine(cfg)
    assert engine.snapshot.thresholds == BUILT_IN and engine.status()["verdicts"] == BUILT_IN_NOTE


@pytest.mark.parametrize("damage", [
    lambda stored: stored["thresholds"].update(duplicate_score=3.0),  # outside 0..1
    lambda stored: stored.pop("detection"),  # a key missing
    lambda stored: stored["fingerprints"].update(hsv="hsv-another-version"),  # made with other features
])
def test_a_calibration_for_other_features_or_edited_into_nonsense_is_ignored(cfg, damage, caplog):
    write_designs(cfg, calibration.MIN_DESIGNS)
    engine = Engine(cfg)
    engine.reindex()
    engine.calibrate(sample=6)
    path = cfg.cache / calibration.FILE_NAME
    stored = json.loads(path.read_text())
    damage(stored)
    path.write_text(json.dumps(stored))
    caplog.set_level(logging.INFO)
    again = Engine(cfg)
    assert again.snapshot.thresholds == BUILT_IN
    assert "Ignoring" in caplog.text and again.status()["verdicts"] == BUILT_IN_NOTE


def test_calibration_stops_when_asked_and_writes_nothing(cfg):
    write_designs(cfg, calibration.MIN_DESIGNS)
    engine = Engine(cfg)
    engine.reindex()
    asked = []

    def progress(done: int, total: int) -> None:
        asked.append(done)
        engine.calibration._stop.set()  # as closing the engine does

    with pytest.raises(calibration.CalibrationStopped):
        engine.calibrate(sample=20, progress=progress)
    assert asked == [1] and not (cfg.cache / calibration.FILE_NAME).exists()


def test_an_index_with_new_features_is_calibrated_by_itself(cfg):
    from features import registry

    write_designs(cfg, calibration.MIN_DESIGNS)
    engine = Engine(cfg, extractors={n: registry.build(n) for n in ("hsv", "orb", "orb_mirror", "thumbprint")})
    engine.keep_calibrated()
    engine.reindex()
    assert engine.calibration.wait(600)
    assert engine.snapshot.thresholds.calibrated
    assert engine.status()["verdicts"].startswith(f"calibrated on {calibration.MIN_DESIGNS} of your designs")
    made = (cfg.cache / calibration.FILE_NAME).stat().st_mtime_ns
    engine.reindex()  # the same features: calibrated already, nothing is run again
    assert engine.calibration.wait(600) and (cfg.cache / calibration.FILE_NAME).stat().st_mtime_ns == made
