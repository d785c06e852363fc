"""Lower precision for a network, adopted only where it measures equal and faster.

CLIP's image tower is mostly linear layers (attention and MLP over 50 tokens),
which dynamic int8 quantization runs with integer dot products (VNNI on this
machine's CPU).  ResNet50 is convolutions, whose activations need scales fixed
beforehand: static int8, calibrated on bundled designs other than the ones
that check it.  Measured here (2 cores, random weights):

    ms per image                          batch 1    batch 32
    CLIP ViT-B/32  fp32                      70.5        44.4
                   dynamic int8 (Linear)     45.9        27.6
                   bf16 autocast             246           -    (no native bf16 here)
    ResNet50       fp32 (frozen)             47.2        49.4
                   static int8 (oneDNN)      14.8        10.3    cosine >= 0.9996 on 64 designs
                   static int8 (fbgemm)      25.1        17.9

Whether int8 keeps the features is a property of the weights, which cannot
be downloaded here, so it is not assumed: the first time a weights file is
used, both precisions embed a sample of real designs (the bundled ones), and
int8 is adopted only when every design's vector keeps cosine >= MIN_COSINE
with its fp32 vector and the batch runs at least MIN_SPEEDUP times faster.
The outcome is remembered per weights file, torch version and machine in a JSON
file beside the weights, and is part of the feature's fingerprint: vectors
of the two precisions never share an index.
"""
from __future__ import annotations

import json
import logging
import os
import platform
import threading
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from features.base import l2_normalize, to_batch
from features.files import atomic_write

log = logging.getLogger(__name__)

FP32, INT8, FP16 = "fp32", "int8", "fp16"
MIN_COSINE = 0.99
MIN_SPEEDUP = 1.1
MEMO = "precision.json"


@dataclass(frozen=True)
class Choice:
    precision: str
    min_cosine: float
    fp32_ms: float  # per image, on the sample batch
    int8_ms: float

    @property
    def reason(self) -> str:
        if not self.fp32_ms:
            return "fp32 (no lower precision tried)"
        return (f"{self.precision}: the lower precision's cosine to fp32 >= {self.min_cosine:.4f} on the sample, "
                f"{self.fp32_ms:.1f} -> {self.int8_ms:.1f} ms per image")


ONLY_FP32 = Choice(FP32, 1.0, 0.0, 0.0)


# Quantizing packs weights for the process-wide quantized engine, which a static
# quantization switches for a moment: two networks loading at once (a search and a
# reindex) must not pack one of them for the other's engine.
_ENGINE_LOCK = threading.Lock()


def quantize_linear(module):
    """A copy of `module` whose Linear layers run in dynamic int8."""
    import torch

    with _ENGINE_LOCK, warnings.catch_warnings():  # torch 2.14 announces its successor (torchao) on every call
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(module, {torch.nn.Linear}, dtype=torch.qint8, inplace=False)


def quantize_static(module, calibration):
    """A copy of `module` (a convolutional network) in static int8, its activation
    ranges observed on `calibration` (a batch of real designs).

    Built for oneDNN where torch has it (1.5-1.7x faster than fbgemm here); the packed
    weights carry their backend, so the process-wide engine is put back afterwards and
    CLIP's dynamic int8 keeps the kernels its vectors were made with."""
    import copy

    import torch
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    engines = torch.backends.quantized.supported_engines
    backend = next((name for name in ("onednn", "x86", "fbgemm") if name in engines), None)
    if backend is None:
        raise RuntimeError(f"no int8 convolution backend in this torch (has {engines})")
    with _ENGINE_LOCK, warnings.catch_warnings():  # torch 2.14 announces its successor (torchao) on every call
        previous = torch.backends.quantized.engine
        warnings.simplefilter("ignore")
        try:
            torch.backends.quantized.engine = backend
            prepared = prepare_fx(copy.deepcopy(module).eval(), get_default_qconfig_mapping(backend),
                                  example_inputs=(calibration[:1],))
            with torch.inference_mode():
                prepared(calibration)
            return convert_fx(prepared)
        finally:
            torch.backends.quantized.engine = previous


def measure(fp32: Callable, lower: Callable, batch, clock: Callable[[], float] = time.perf_counter,
            lower_name: str = INT8) -> Choice:
    """Embed `batch` both ways: cosines per row and time per image (best of two runs).

    `lower` is the network in the lower precision (int8 on a CPU, fp16 on a GPU); it is
    chosen only where every row keeps MIN_COSINE with fp32 and it runs MIN_SPEEDUP faster."""
    import torch

    timings = {}
    outputs = {}
    with torch.inference_mode():
        for name, forward in ((FP32, fp32), (lower_name, lower)):
            forward(batch[:1])  # first call allocates and picks kernels
            best = float("inf")
            for _ in range(2):
                started = clock()
                outputs[name] = forward(batch).float().cpu().numpy()  # cpu(): waits for a GPU to finish
                best = min(best, clock() - started)
            timings[name] = 1000 * best / len(batch)
    a, b = (l2_normalize(rows) for rows in outputs.values())
    least = float(np.min(np.sum(a * b, axis=1)))
    faster = timings[FP32] >= MIN_SPEEDUP * timings[lower_name]
    precision = lower_name if least >= MIN_COSINE and faster else FP32
    return Choice(precision, least, timings[FP32], timings[lower_name])


def remembered(memo: Path, key: str) -> Choice | None:
    """The choice made earlier for `key`, if the memo holds one."""
    try:
        entry = json.loads(memo.read_text()).get(key)
        return Choice(**entry) if isinstance(entry, dict) else None
    except (OSError, ValueError, TypeError):
        return None  # no memo yet, or unreadable: measure again


def remember(memo: Path, key: str, choice: Choice) -> None:
    """Add `choice` to the memo (temp file + rename: a crash leaves the old one)."""
    try:
        known = json.loads(memo.read_text())
        known = known if isinstance(known, dict) else {}
    except (OSError, ValueError):
        known = {}
    known[key] = asdict(choice)
    try:
        atomic_write(memo, json.dumps(known, indent=1, sort_keys=True))
    except OSError as exc:  # a read-only models folder: the choice is measured again next start
        log.warning("could not remember the precision choice in %s: %s", memo, exc)


def memo_key(architecture: str, digest: str, device: str = "cpu") -> str:
    """Weights, torch and machine the choice was measured on.

    Read without importing torch: an unchanged re-scan asks for it and must stay
    quick (importing torch alone took ~3 s here)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        torch_version = version("torch")
    except PackageNotFoundError:
        torch_version = "none"
    machine = f"{platform.machine()}-{os.cpu_count()}cpu"
    if device != "cpu":
        from features.device import describe

        machine = describe(device)
    return f"{architecture}:{digest}:torch-{torch_version}:{machine}"


class ChoosesPrecision:
    """The precision state of a network extractor (features/network.py): remembered for
    its weights file, torch and machine, else measured when the model is first built.

    Expects of the class it is mixed into: `name`, `weights`, `digest`, `device`,
    `batch_size`, `offers_int8`, `mean`, `std`, `_sample`, `_choice`, `_model`, and
    the hooks `_build`, `_fp32`, `_quantized`, `_forward`, `_to_device`, `_device_batch`.
    """

    def precision(self) -> Choice:
        """The precision this network runs in: remembered, else measured (building the model).

        A remembered choice needs no model: re-scanning an unchanged collection
        asks every fingerprint and must not load a network to do it."""
        if self._choice is None and not self._tries_int8:
            self._choice = ONLY_FP32
        if self._choice is None:
            self._choice = remembered(self._memo, self._memo_key)
        if self._choice is None:
            self._model.get()
        return self._choice

    def remember(self, choice: Choice) -> None:
        """Record `choice` for these weights, as a measurement does: the next load obeys it."""
        remember(self._memo, self._memo_key, choice)

    @property
    def _memo(self) -> Path:
        return Path(self.weights).parent / MEMO

    @property
    def _memo_key(self) -> str:
        return memo_key(self.architecture, self.digest, self.device)

    @property
    def _tries_int8(self) -> bool:
        return self.offers_int8 and self._sample is not None and self.device == "cpu"

    def _known_choice(self) -> Choice | None:
        """The precision already settled for these weights, None while it must be measured."""
        if not self._tries_int8:
            return ONLY_FP32
        return self._choice or remembered(self._memo, self._memo_key)

    def _load_built(self):
        """The model built from its weights file, in the precision chosen (measured if need be)."""
        model = self._build()
        if self.device != "cpu":
            return self._load_on_gpu(model)
        if not self._tries_int8:
            self._choice = ONLY_FP32
            return self._fp32(model)
        choice = self._known_choice()  # fingerprint() may have read it
        fp32_model = None  # the fp32 model made ready to run, once made
        if choice is None or choice.precision == INT8:  # else no int8 copy is even made
            try:
                quantized = self._quantized(model)
            except Exception as exc:  # any torch without the int8 kernels: fp32 it is
                log.warning("%s: int8 not available (%s); running in fp32", self.name, exc)
                choice = ONLY_FP32
            else:
                if choice is None:  # int8 is measured against fp32 as it would run
                    fp32_model = self._fp32(model)
                    choice = self._measure(fp32_model, quantized)
        log.info("%s runs in %s", self.name, choice.reason)
        self._choice = choice
        if choice.precision == INT8:
            return quantized  # the fp32 copy is freed
        return fp32_model if fp32_model is not None else self._fp32(model)

    def _load_on_gpu(self, model):
        """fp32 on the GPU, or fp16 autocast where it keeps the features (measured like int8)."""
        import torch

        model = self._to_device(model)
        choice = self._choice or remembered(self._memo, self._memo_key)
        if choice is None:
            pictures = list(self._sample())[: max(2, self.batch_size)] if self._sample else []
            if not pictures:
                choice = ONLY_FP32
            else:
                batch = self._device_batch(pictures)

                def half(b):
                    with torch.autocast(device_type="cuda", dtype=torch.float16):
                        return self._forward(model, b)

                choice = measure(lambda b: self._forward(model, b), half, batch,
                                           clock=_synchronized_clock, lower_name=FP16)
                self.remember(choice)
        log.info("%s runs on %s in %s", self.name, self.device, choice.reason)
        self._choice = choice
        return model

    def _measure(self, model, quantized) -> Choice:
        pictures = list(self._sample())[: max(2, self.batch_size)]
        if not pictures:
            return ONLY_FP32  # nothing to prove int8 on
        batch = to_batch(pictures, self.mean, self.std)
        choice = measure(lambda b: self._forward(model, b), lambda b: self._forward(quantized, b), batch)
        self.remember(choice)
        return choice


def _synchronized_clock() -> float:
    """Seconds, once the GPU has finished what it was given (its calls return at once)."""
    import time

    import torch

    torch.cuda.synchronize()
    return time.perf_counter()
