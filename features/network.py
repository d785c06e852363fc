"""What the networks share: lazy loading, batching on their device, fingerprints, unit rows.

Which precision each runs in (fp32, int8 on a CPU, fp16 on a GPU) is decided
by features/precision.py; a subclass names its architecture and normalisation,
builds the model from the weights file, and says how one batch goes through it.
"""
from __future__ import annotations

import logging
import threading
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from features import precision
from features.base import l2_normalize, normalise, pixel_batch, to_batch
from features.precision import ChoosesPrecision
from features.ready import KeptBetweenStarts, ReadyNetworks

log = logging.getLogger(__name__)

# Images per network batch on a GPU.
GPU_BATCH = 128
PREPROCESS = "letterbox-white-224-bicubic-v1"


class NetworkRefused(ValueError):
    """A network whose weights load but do not give the vectors recorded for them (its
    package, or the code that prepares its pictures, changed): its feature is switched
    off rather than filled with vectors unlike the ones it was measured with."""

    feature = ""  # the feature it fills, set where the extractor builds its model


class LazyModel:
    """Builds a model on first use, once, even when two threads ask together."""

    def __init__(self, build: Callable[[], object]) -> None:
        self._build = build
        self._model: object | None = None
        self._lock = threading.Lock()

    @property
    def built(self) -> bool:
        return self._model is not None

    def get(self) -> object:
        if self._model is None:
            with self._lock:
                if self._model is None:
                    self._model = self._build()
        return self._model


class NetworkExtractor(KeptBetweenStarts, ChoosesPrecision):
    """What the two networks share: lazy loading, batching, fingerprint, unit rows.

    Subclasses name the architecture and normalisation, build the model from
    the weights file, and say how one batch goes through it.
    """

    name: str
    dim: int
    architecture: str
    mean: np.ndarray
    std: np.ndarray
    preprocess = PREPROCESS
    offers_int8 = False
    int8_method = "int8-dynamic"  # named in the fingerprint of int8 rows

    def __init__(self, weights, digest: str, batch_size: int = 32,
                 sample: Callable[[], Sequence[Image.Image]] | None = None,
                 calibration: Callable[[], Sequence[Image.Image]] | None = None,
                 calibration_id: Callable[[], str] | None = None, device: str = "cpu",
                 ready: ReadyNetworks | None = None) -> None:
        """`sample`: real designs on which a lower precision must prove itself
        (features/precision.py); without one the network stays in fp32.
        `calibration`: other real designs, for an int8 that needs its ranges observed,
        and `calibration_id` names them cheaply (other designs, other int8 vectors).
        `device`: 'cpu', or 'cuda' (features/device.py), where the lower precision
        tried is fp16 and batches are GPU-sized.
        `ready`: where the network, once made ready to run on a CPU, is kept for later
        starts (features/ready.py); without it every start builds it again."""
        self.weights = weights
        self.digest = digest
        self.device = device
        # A GPU is fed whole batches at a time; 32 leaves most of a card idle.
        self.batch_size = batch_size if device == "cpu" else max(batch_size, GPU_BATCH)
        self._sample = sample
        self._calibration = calibration
        self._calibration_id = calibration_id
        self._choice: precision.Choice | None = None
        self._ready = ready if device == "cpu" else None  # a GPU's load is the weights file's read
        self._model = LazyModel(self._naming_refusals(self._load))
        # The last resort on a full GPU.
        self._cpu_model = LazyModel(self._naming_refusals(lambda: self._fp32(self._build())))

    def _naming_refusals(self, build: Callable[[], object]) -> Callable[[], object]:
        """`build`, its NetworkRefused naming this extractor's feature: whoever built it (an
        index run, a query, the warm-up) switches the feature off by that name."""
        def named():
            try:
                return build()
            except NetworkRefused as refused:
                refused.feature = self.name
                raise

        return named

    def fingerprint(self) -> str:
        base = f"{self.architecture}:{self.digest[:16]}:{self.preprocess}"
        # fp32 keeps one fingerprint on every device (a GPU's fp32 vectors agree with the
        # CPU's to rounding), so earlier indexes stay valid; int8 and fp16 vectors are never
        # mixed with fp32 ones (an exact copy must score ~1).
        chosen = self.precision().precision
        if chosen == precision.FP32:
            return base
        return f"{base}:{self._int8_tag() if chosen == precision.INT8 else chosen}"

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Unit rows, batch by batch.  A device that runs out of memory gets the batch again
        in halves, down to one picture, and then that picture runs on the CPU: nothing is lost."""
        import torch

        model = self._model.get()
        rows, start, size = [], 0, self.batch_size
        with torch.inference_mode():
            while start < len(images):
                chunk = images[start : start + size]
                try:
                    rows.append(self._embed_batch(model, chunk))
                except Exception as exc:
                    if not _out_of_memory(exc) or self.device == "cpu":
                        raise
                    _release_device_memory()
                    if size > 1:
                        size = max(1, size // 2)
                        log.warning("%s: out of memory on %s with %d pictures a batch; trying %d",
                                    self.name, self.device, len(chunk), size)
                        continue
                    log.warning("%s: out of memory on %s for one picture; it runs on the CPU", self.name, self.device)
                    rows.append(self._embed_on_cpu(chunk))
                start += len(chunk)
        return l2_normalize(np.concatenate(rows))

    def _embed_batch(self, model, images: Sequence[Image.Image]) -> np.ndarray:
        batch = self._device_batch(images)
        with self._autocast():
            return self._forward(model, batch).float().cpu().numpy()

    def _embed_on_cpu(self, images: Sequence[Image.Image]) -> np.ndarray:
        """The fp32 network on the CPU, built the first time a device cannot take a picture."""
        model = self._cpu_model.get()
        return self._forward(model, to_batch(images, self.mean, self.std)).float().numpy()

    def _device_batch(self, images: Sequence[Image.Image]):
        """The network's input batch on its device.  A GPU is sent the pixels and
        normalises them itself: on the CPU the float conversion cost the one thread that
        feeds the GPU about 1 ms per picture per network, with the GPU idle meanwhile."""
        if self.device == "cpu":
            return to_batch(images, self.mean, self.std)
        return normalise(self._on_device(pixel_batch(images)), self.mean, self.std)

    def _on_device(self, tensor):
        if self.device == "cpu":
            return tensor
        return tensor.pin_memory().to(self.device, non_blocking=True)  # pinned: the copy overlaps

    def _autocast(self):
        import contextlib

        import torch

        if self.device != "cpu" and self._choice is not None and self._choice.precision == precision.FP16:
            return torch.autocast(device_type="cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    @property
    def loaded(self) -> bool:
        """Whether the model is built and ready: the first embed() no longer waits for it."""
        return self._model.built

    def _to_device(self, model):
        """The built model moved to the GPU (subclasses whose model is several parts override)."""
        return model.to(self.device)

    def _build(self):
        raise NotImplementedError

    def _int8_tag(self) -> str:
        """How the int8 rows were made, as far as it changes them."""
        return self.int8_method

    def _fp32(self, model):
        """The built model made ready to run in fp32 (e.g. frozen)."""
        return model

    def _quantized(self, model):
        """The model in int8, for subclasses that offer it (`offers_int8`)."""
        raise NotImplementedError

    def _forward(self, model, batch):
        raise NotImplementedError


def _out_of_memory(exc: Exception) -> bool:
    import torch

    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


def _release_device_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
