"""What every extractor provides, and the helpers they share."""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Callable, Protocol, Sequence, runtime_checkable

import numpy as np
from PIL import Image

from features import precision

log = logging.getLogger(__name__)

# Both networks see the design letterboxed onto a white 224 px square.
INPUT_SIDE = 224
# Images per network batch on a GPU.
GPU_BATCH = 128
PREPROCESS = "letterbox-white-224-bicubic-v1"


@runtime_checkable
class Extractor(Protocol):
    """Turns analysis-size RGB pictures into unit-length float32 rows."""

    name: str
    dim: int

    def fingerprint(self) -> str:
        """Identifies model, weights and preprocessing; a change means re-extraction."""

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        """One L2-normalised float32 row per image."""


def l2_normalize(rows: np.ndarray) -> np.ndarray:
    """Scale each row to unit length; all-zero rows stay zero."""
    rows = np.asarray(rows, dtype=np.float32)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.maximum(norms, 1e-12)


def letterbox(image: Image.Image, size: int) -> Image.Image:
    """Fit the whole design into a white square instead of centre-cropping it.

    Designs often reach the edges of their canvas; a centre crop would throw
    that away, and a copy placed on a larger canvas would no longer look alike.
    """
    if image.size == (size, size) and image.mode == "RGB":
        return image  # already a network input (the indexer letterboxes in its workers)
    scale = size / max(image.size)
    resized = image.resize(
        (max(1, round(image.width * scale)), max(1, round(image.height * scale))),
        Image.Resampling.BICUBIC,
    )
    square = Image.new("RGB", (size, size), (255, 255, 255))
    square.paste(resized, ((size - resized.width) // 2, (size - resized.height) // 2))
    return square


def to_batch(images: Sequence[Image.Image], mean: np.ndarray, std: np.ndarray):
    """Letterboxed, normalised NCHW float tensor for a torchvision/open_clip model."""
    import torch  # imported here: importing features must stay cheap

    squares = np.stack([np.asarray(letterbox(im, INPUT_SIDE)) for im in images])
    # (x / 255 - mean) / std as two in-place torch passes over the uint8 batch: the same
    # in NumPy took 6 ms per image on the thread that feeds the networks, which idle meanwhile.
    batch = torch.from_numpy(squares).permute(0, 3, 1, 2).float().contiguous()
    shift = torch.from_numpy(np.asarray(mean, np.float32) * 255).view(1, 3, 1, 1)
    scale = torch.from_numpy(1 / (np.asarray(std, np.float32) * 255)).view(1, 3, 1, 1)
    return batch.sub_(shift).mul_(scale)



def _synchronized_clock() -> float:
    """Seconds, once the GPU has finished what it was given (its calls return at once)."""
    import time

    import torch

    torch.cuda.synchronize()
    return time.perf_counter()


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


class NetworkExtractor:
    """What the two networks share: lazy loading, batching, fingerprint, unit rows.

    Subclasses name the architecture and normalisation, build the model from
    the weights file, and say how one batch goes through it.
    """

    name: str
    dim: int
    architecture: str
    mean: np.ndarray
    std: np.ndarray
    offers_int8 = False
    int8_method = "int8-dynamic"  # named in the fingerprint of int8 rows

    def __init__(self, weights, digest: str, batch_size: int = 32,
                 sample: Callable[[], Sequence[Image.Image]] | None = None,
                 calibration: Callable[[], Sequence[Image.Image]] | None = None,
                 calibration_id: Callable[[], str] | None = None, device: str = "cpu") -> None:
        """`sample`: real designs on which a lower precision must prove itself
        (features/precision.py); without one the network stays in fp32.
        `calibration`: other real designs, for an int8 that needs its ranges observed,
        and `calibration_id` names them cheaply (other designs, other int8 vectors).
        `device`: 'cpu', or 'cuda' (features/device.py), where the lower precision
        tried is fp16 and batches are GPU-sized."""
        self.weights = weights
        self.digest = digest
        self.device = device
        # A GPU is fed whole batches at a time; 32 leaves most of a card idle.
        self.batch_size = batch_size if device == "cpu" else max(batch_size, GPU_BATCH)
        self._sample = sample
        self._calibration = calibration
        self._calibration_id = calibration_id
        self._choice: precision.Choice | None = None
        self._model = LazyModel(self._load)

    def fingerprint(self) -> str:
        base = f"{self.architecture}:{self.digest[:16]}:{PREPROCESS}"
        # fp32 keeps one fingerprint on every device (a GPU's fp32 vectors agree with the
        # CPU's to rounding), so earlier indexes stay valid; int8 and fp16 vectors are never
        # mixed with fp32 ones (an exact copy must score ~1).
        chosen = self.precision().precision
        if chosen == precision.FP32:
            return base
        return f"{base}:{self._int8_tag() if chosen == precision.INT8 else chosen}"

    def precision(self) -> precision.Choice:
        """The precision this network runs in: remembered, else measured (building the model).

        A remembered choice needs no model: re-scanning an unchanged collection
        asks every fingerprint and must not load a network to do it."""
        if self._choice is None and not self._tries_int8:
            self._choice = precision.ONLY_FP32
        if self._choice is None:
            self._choice = precision.remembered(self._memo, self._memo_key)
        if self._choice is None:
            self._model.get()
        return self._choice

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        import torch

        model = self._model.get()
        rows = []
        with torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                batch = self._on_device(to_batch(images[start : start + self.batch_size], self.mean, self.std))
                with self._autocast():
                    rows.append(self._forward(model, batch).float().cpu().numpy())
        return l2_normalize(np.concatenate(rows))

    def _on_device(self, batch):
        if self.device == "cpu":
            return batch
        return batch.pin_memory().to(self.device, non_blocking=True)  # pinned: the copy overlaps

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

    def remember(self, choice: precision.Choice) -> None:
        """Record `choice` for these weights, as a measurement does: the next load obeys it."""
        precision.remember(self._memo, self._memo_key, choice)

    @property
    def _memo(self) -> Path:
        return Path(self.weights).parent / precision.MEMO

    @property
    def _memo_key(self) -> str:
        return precision.memo_key(self.architecture, self.digest, self.device)

    @property
    def _tries_int8(self) -> bool:
        return self.offers_int8 and self._sample is not None and self.device == "cpu"

    def _load(self):
        model = self._build()
        if self.device != "cpu":
            return self._load_on_gpu(model)
        if not self._tries_int8:
            self._choice = precision.ONLY_FP32
            return self._fp32(model)
        choice = self._choice or precision.remembered(self._memo, self._memo_key)  # fingerprint() may have read it
        ready = None  # the fp32 model made ready to run, once made
        if choice is None or choice.precision == precision.INT8:  # else no int8 copy is even made
            try:
                quantized = self._quantized(model)
            except Exception as exc:  # any torch without the int8 kernels: fp32 it is
                log.warning("%s: int8 not available (%s); running in fp32", self.name, exc)
                choice = precision.ONLY_FP32
            else:
                if choice is None:  # int8 is measured against fp32 as it would run
                    ready = self._fp32(model)
                    choice = self._measure(ready, quantized)
        log.info("%s runs in %s", self.name, choice.reason)
        self._choice = choice
        if choice.precision == precision.INT8:
            return self._adopt(model, quantized)
        return ready if ready is not None else self._fp32(model)

    def _load_on_gpu(self, model):
        """fp32 on the GPU, or fp16 autocast where it keeps the features (measured like int8)."""
        import torch

        model = self._to_device(model)
        choice = self._choice or precision.remembered(self._memo, self._memo_key)
        if choice is None:
            pictures = list(self._sample())[: max(2, self.batch_size)] if self._sample else []
            if not pictures:
                choice = precision.ONLY_FP32
            else:
                batch = self._on_device(to_batch(pictures, self.mean, self.std))

                def half(b):
                    with torch.autocast(device_type="cuda", dtype=torch.float16):
                        return self._forward(model, b)

                choice = precision.measure(lambda b: self._forward(model, b), half, batch,
                                           clock=_synchronized_clock, lower_name=precision.FP16)
                self.remember(choice)
        log.info("%s runs on %s in %s", self.name, self.device, choice.reason)
        self._choice = choice
        return model

    def _to_device(self, model):
        """The built model moved to the GPU (subclasses whose model is several parts override)."""
        return model.to(self.device)

    def _measure(self, model, quantized) -> precision.Choice:
        pictures = list(self._sample())[: max(2, self.batch_size)]
        if not pictures:
            return precision.ONLY_FP32  # nothing to prove int8 on
        batch = to_batch(pictures, self.mean, self.std)
        choice = precision.measure(lambda b: self._forward(model, b), lambda b: self._forward(quantized, b), batch)
        self.remember(choice)
        return choice

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

    def _adopt(self, model, quantized):
        """The model to keep once the lower precision is chosen."""
        return quantized

    def _forward(self, model, batch):
        raise NotImplementedError
