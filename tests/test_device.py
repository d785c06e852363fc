"""Where the networks run: device choice, the lower-precision rule on a GPU, fingerprints."""
import json
import subprocess
import sys

import pytest
import torch

from engine import models
from features import device, precision
from conftest import ROOT, make_design
from test_precision import BATCH, FakeClock, network

NO_GPU = not torch.cuda.is_available()


def test_cpu_is_cpu_and_auto_falls_back_to_it_without_a_gpu():
    assert device.resolve("cpu") == "cpu"
    if NO_GPU:
        assert device.resolve("auto") == "cpu"
    with pytest.raises(ValueError, match="auto, cpu, cuda"):
        device.resolve("tpu")


@pytest.mark.skipif(not NO_GPU, reason="this machine has a GPU")
def test_asking_for_cuda_without_a_gpu_is_a_clear_error(cfg, collection):
    with pytest.raises(device.DeviceUnavailable, match="sees no CUDA device"):
        device.resolve("cuda")
    result = subprocess.run([sys.executable, str(ROOT / "image.py"), "index", "--images", str(cfg.images),
                             "--cache", str(cfg.cache), "--device", "cuda", "--json"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 2 and "sees no CUDA device" in result.stderr and torch.__version__ in result.stderr


def test_fp16_is_chosen_by_the_same_rule_as_int8():
    clock = FakeClock()
    kept = precision.measure(network(clock, 0.040), network(clock, 0.010, noise=0.01), BATCH, clock,
                             lower_name=precision.FP16)
    assert kept.precision == precision.FP16
    moved = precision.measure(network(clock, 0.040), network(clock, 0.010, noise=3.0), BATCH, clock,
                              lower_name=precision.FP16)
    assert moved.precision == precision.FP32


def test_fingerprints_say_which_vectors_may_share_an_index(weight_files):
    from features.resnet import ResnetExtractor

    def fingerprint_in(chosen: str) -> str:
        extractor = ResnetExtractor(weight_files["resnet"], "0" * 64, device="cpu")
        extractor._choice = precision.Choice(chosen, 1.0, 1.0, 1.0)
        return extractor.fingerprint()

    fp32, int8, fp16 = (fingerprint_in(p) for p in (precision.FP32, precision.INT8, precision.FP16))
    assert len({fp32, int8, fp16}) == 3 and fp16.endswith(":fp16") and fp16.startswith(fp32)


def test_health_and_models_status_name_the_device(cfg, collection, with_weights):
    from engine import Engine

    engine = Engine(with_weights.with_overrides(device="cpu"))
    assert engine.status()["device"] == "cpu"
    assert engine.networks.extractors["resnet"].embed([make_design(1).convert("RGB")]).shape == (1, 2048)
    result = subprocess.run([sys.executable, str(ROOT / "image.py"), "models", "status", "--models",
                             str(with_weights.models_dir), "--device", "cpu"], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0 and result.stdout.startswith("device: cpu")


@pytest.mark.skipif(NO_GPU, reason="no GPU on this machine")
def test_on_a_gpu_the_networks_agree_with_the_cpu(with_weights):
    extractors, _ = models.load_extractors(with_weights.models_dir, device="cuda")
    cpu, _ = models.load_extractors(with_weights.models_dir, device="cpu")
    pictures = [make_design(i).convert("RGB") for i in range(4)]
    for name in ("clip", "resnet"):
        on_gpu, on_cpu = extractors[name].embed(pictures), cpu[name].embed(pictures)
        assert (on_gpu * on_cpu).sum(axis=1).min() >= 0.99
    assert json.dumps(extractors["resnet"].precision().reason)
