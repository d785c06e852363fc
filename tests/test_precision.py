"""int8 (CLIP dynamic, ResNet50 static) only where it keeps the features and is faster, remembered per weights file."""
import json

import numpy as np
import pytest
import torch

from engine import models
from engine.models import sample
from features import precision
from conftest import make_design


class FakeClock:
    """Time that passes only when a fake network says it worked."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def network(clock: FakeClock, seconds: float, noise: float = 0.0):
    projection = torch.randn(3 * 8 * 8, 16, generator=torch.Generator().manual_seed(1))

    def forward(batch):
        clock.now += seconds * len(batch)
        rows = batch.flatten(1) @ projection
        return rows + noise * torch.randn(rows.shape, generator=torch.Generator().manual_seed(2))
    return forward


BATCH = torch.randn(6, 3, 8, 8, generator=torch.Generator().manual_seed(0))


def test_int8_is_chosen_when_it_keeps_the_vectors_and_runs_faster():
    clock = FakeClock()
    choice = precision.measure(network(clock, 0.040), network(clock, 0.020, noise=0.01), BATCH, clock)
    assert choice.precision == precision.INT8
    assert choice.min_cosine >= precision.MIN_COSINE
    assert choice.fp32_ms == pytest.approx(40) and choice.int8_ms == pytest.approx(20)


def test_int8_that_moves_the_vectors_is_refused_however_fast():
    clock = FakeClock()
    choice = precision.measure(network(clock, 0.040), network(clock, 0.010, noise=3.0), BATCH, clock)
    assert choice.precision == precision.FP32 and choice.min_cosine < precision.MIN_COSINE


def test_int8_that_is_not_faster_is_refused():
    clock = FakeClock()
    choice = precision.measure(network(clock, 0.040), network(clock, 0.039), BATCH, clock)
    assert choice.precision == precision.FP32 and choice.min_cosine > 0.999


def test_clip_measures_once_per_weights_file_and_remembers_it(cfg, weight_files, monkeypatch):
    models.import_file(cfg.models_dir, weight_files["clip"])
    clip = models.load_extractors(cfg.models_dir)[0]["clip"]
    choice = clip.precision()
    memo = json.loads((cfg.models_dir / precision.MEMO).read_text())
    (key, entry), = memo.items()
    assert entry["precision"] == choice.precision and clip.digest in key and torch.__version__.split("+")[0] in key
    assert choice.fp32_ms > 0 and choice.int8_ms > 0
    # Random weights keep their vectors in int8 (the real ones are checked the same way on first use).
    assert choice.min_cosine >= precision.MIN_COSINE
    assert clip.fingerprint().endswith(":int8-dynamic") == (choice.precision == precision.INT8)

    def must_not_measure(*args, **kwargs):
        raise AssertionError("measured again")
    monkeypatch.setattr(precision, "measure", must_not_measure)
    again = models.load_extractors(cfg.models_dir)[0]["clip"]
    assert again.fingerprint() == clip.fingerprint()
    rows = again.embed([make_design(i).convert("RGB") for i in range(2)])
    assert rows.shape == (2, 512) and np.allclose(np.linalg.norm(rows, axis=1), 1, atol=1e-4)


def test_a_forced_choice_is_obeyed_and_changes_the_fingerprint_only_for_int8(cfg, weight_files):
    models.import_file(cfg.models_dir, weight_files["clip"])
    fresh = models.load_extractors(cfg.models_dir)[0]["clip"]
    images = [make_design(i).convert("RGB") for i in range(3)]
    rows, prints = {}, {}
    for chosen in (precision.FP32, precision.INT8):
        fresh.remember(precision.Choice(chosen, 0.999, 50.0, 30.0))
        clip = models.load_extractors(cfg.models_dir)[0]["clip"]
        rows[chosen], prints[chosen] = clip.embed(images), clip.fingerprint()
    # fp32 keeps the fingerprint indexes were built with before precision was chosen.
    assert prints[precision.FP32] == f"{fresh.architecture}:{fresh.digest[:16]}:letterbox-white-224-bicubic-v1"
    assert prints[precision.INT8] != prints[precision.FP32]  # int8 rows are re-extracted, never mixed
    cosines = np.sum(rows[precision.FP32] * rows[precision.INT8], axis=1)
    assert not np.array_equal(rows[precision.FP32], rows[precision.INT8]) and cosines.min() >= precision.MIN_COSINE


def test_an_unreadable_memo_is_measured_again(cfg, weight_files):
    models.import_file(cfg.models_dir, weight_files["clip"])
    (cfg.models_dir / precision.MEMO).write_text("{not json")
    clip = models.load_extractors(cfg.models_dir)[0]["clip"]
    assert clip.precision().fp32_ms > 0  # measured, not taken from the broken file
    assert json.loads((cfg.models_dir / precision.MEMO).read_text())


def test_resnet_takes_static_int8_calibrated_on_other_designs_than_those_that_check_it(cfg, weight_files, monkeypatch):
    calibrated, checked = [], []
    real_static, real_measure = precision.quantize_static, precision.measure

    def spy_static(module, batch):
        calibrated.append(batch.clone())
        return real_static(module, batch)

    def spy_measure(fp32, int8, batch, *args):
        checked.append(batch.clone())
        return real_measure(fp32, int8, batch, *args)
    monkeypatch.setattr(precision, "quantize_static", spy_static)
    monkeypatch.setattr(precision, "measure", spy_measure)
    engine_before = torch.backends.quantized.engine
    models.import_file(cfg.models_dir, weight_files["resnet"])
    resnet = models.load_extractors(cfg.models_dir)[0]["resnet"]
    choice = resnet.precision()
    assert torch.backends.quantized.engine == engine_before  # CLIP's dynamic int8 keeps its kernels
    assert len(calibrated) == 1 and len(checked) == 1
    assert len(calibrated[0]) == len(models.calibration_sample()) > 0
    assert not any(torch.equal(c, k) for c in calibrated[0] for k in checked[0])  # disjoint sets of designs
    # Random weights keep their vectors in int8 (the real ones are checked the same way on first use).
    assert choice.min_cosine >= precision.MIN_COSINE and choice.fp32_ms > 0 and choice.int8_ms > 0
    assert (":int8-static-" in resnet.fingerprint()) == (choice.precision == precision.INT8)
    entry = json.loads((cfg.models_dir / precision.MEMO).read_text())[precision.memo_key("resnet50", resnet.digest)]
    assert entry["precision"] == choice.precision

    # The next start remembers the choice and rebuilds the same int8 network: same vectors.
    monkeypatch.setattr(precision, "measure", lambda *a, **k: pytest.fail("measured again"))
    again = models.load_extractors(cfg.models_dir)[0]["resnet"]
    designs = [make_design(i).convert("RGB") for i in range(3)]
    assert again.fingerprint() == resnet.fingerprint()
    assert np.array_equal(again.embed(designs), resnet.embed(designs))


def test_resnet_without_calibration_designs_runs_in_fp32(cfg, weight_files, monkeypatch):
    monkeypatch.setattr(sample, "calibration_sample", lambda: ())
    models.import_file(cfg.models_dir, weight_files["resnet"])
    resnet = models.load_extractors(cfg.models_dir)[0]["resnet"]
    assert resnet.embed([make_design(1).convert("RGB")]).shape == (1, 2048)
    assert resnet.precision() == precision.ONLY_FP32
    assert resnet.fingerprint() == f"resnet50:{resnet.digest[:16]}:letterbox-white-224-bicubic-v1"


def test_int8_resnet_rows_are_named_by_their_calibration_designs(cfg, weight_files, monkeypatch):
    models.import_file(cfg.models_dir, weight_files["resnet"])
    fresh = models.load_extractors(cfg.models_dir)[0]["resnet"]
    prints = {}
    for chosen in (precision.FP32, precision.INT8):
        fresh.remember(precision.Choice(chosen, 0.999, 40.0, 10.0))
        for designs in ("bundled", "edited"):
            monkeypatch.setattr(sample, "calibration_id", lambda designs=designs: designs)
            prints[chosen, designs] = models.load_extractors(cfg.models_dir)[0]["resnet"].fingerprint()
    # Other calibration designs observe other activation ranges: int8 rows are re-extracted.
    assert prints[precision.INT8, "bundled"] != prints[precision.INT8, "edited"]
    assert prints[precision.FP32, "bundled"] == prints[precision.FP32, "edited"]  # fp32 does not depend on them
