"""Where the networks run: device choice, the lower-precision rule on a GPU, fingerprints."""
import json
import logging
import subprocess
import sys

import numpy as np
import pytest
import torch

from engine import models
from features import device, precision
from features.network import NetworkExtractor
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


class TinyNetwork(NetworkExtractor):
    """A network small enough for a test, on a stand-in device whose memory runs out
    for batches of `fail_from` pictures or more."""

    name = "tiny"
    dim = 4
    architecture = "tiny"
    mean = np.zeros(3, np.float32)
    std = np.ones(3, np.float32)
    fail_from: int | None = None

    def __init__(self) -> None:
        super().__init__("unused", "0" * 64, batch_size=8)

    def _build(self):
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten(), torch.nn.Linear(48, 4))

    def _on_device(self, batch):
        return batch  # the stand-in device shares the host's memory

    def _forward(self, model, batch):
        on_device = model is self._model.get()
        if on_device and self.device != "cpu" and self.fail_from is not None and len(batch) >= self.fail_from:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return model(batch)


def test_a_device_out_of_memory_is_retried_smaller_then_on_the_cpu(caplog):
    network = TinyNetwork()
    designs = [make_design(i).convert("RGB") for i in range(5)]
    expected = network.embed(designs)
    network.device, network.fail_from = "stand-in GPU", 3  # batches of three or more no longer fit
    caplog.set_level(logging.WARNING)
    assert np.allclose(network.embed(designs), expected, atol=1e-6)
    assert "trying 4" in caplog.text and "trying 2" in caplog.text
    network.fail_from = 1  # not even one picture fits: the CPU takes them
    assert np.allclose(network.embed(designs), expected, atol=1e-5)
    assert "runs on the CPU" in caplog.text


class Watched(TinyNetwork):
    """Records how many pictures it was asked for at a time, and how many CPU threads torch had."""

    def __init__(self) -> None:
        super().__init__()
        self.threads_seen: list[int] = []
        self.batches: list[int] = []

    def _to_device(self, model):
        return model  # the stand-in device shares the host's memory

    def embed(self, images):
        self.threads_seen.append(torch.get_num_threads())
        self.batches.append(len(images))
        return super().embed(images)


def test_an_index_run_feeding_a_gpu_sends_its_batches_and_keeps_torch_on_one_cpu_thread(cfg, collection):
    from engine.index.pipeline import Indexer
    from engine.index.store import IndexData

    torch.set_num_threads(2)
    on_gpu, on_cpu = Watched(), Watched()
    on_gpu.device, on_gpu.batch_size = "stand-in GPU", 2 * cfg.batch_size
    _, report = Indexer(cfg.with_overrides(gpu_jpeg=False), {"tiny": on_gpu}).run(IndexData())
    assert report.indexed == len(collection) and on_gpu.threads_seen and set(on_gpu.threads_seen) == {1}
    assert max(on_gpu.batches) == 2 * cfg.batch_size  # the GPU's batch, not the CPU's
    assert torch.get_num_threads() == 2  # given back: a CPU network afterwards has its cores
    Indexer(cfg.with_overrides(cache=cfg.cache.parent / "cpu"), {"tiny": on_cpu}).run(IndexData())
    assert set(on_cpu.threads_seen) == {2} and max(on_cpu.batches) == cfg.batch_size
