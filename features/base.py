"""What every extractor provides, and the helpers they share."""
from __future__ import annotations

import threading
from typing import Callable, Protocol, Sequence, runtime_checkable

import numpy as np
from PIL import Image

# Both networks see the design letterboxed onto a white 224 px square.
INPUT_SIDE = 224
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

    arrays = [np.asarray(letterbox(im, INPUT_SIDE), dtype=np.float32) / 255.0 for im in images]
    batch = (np.stack(arrays) - mean) / std
    return torch.from_numpy(batch.transpose(0, 3, 1, 2).copy())



class LazyModel:
    """Builds a model on first use, once, even when two threads ask together."""

    def __init__(self, build: Callable[[], object]) -> None:
        self._build = build
        self._model: object | None = None
        self._lock = threading.Lock()

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

    def __init__(self, weights, digest: str, batch_size: int = 32) -> None:
        self.weights = weights
        self.digest = digest
        self.batch_size = batch_size
        self._model = LazyModel(self._build)

    def fingerprint(self) -> str:
        return f"{self.architecture}:{self.digest[:16]}:{PREPROCESS}"

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        import torch

        model = self._model.get()
        rows = []
        with torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                batch = to_batch(images[start : start + self.batch_size], self.mean, self.std)
                rows.append(self._forward(model, batch).float().numpy())
        return l2_normalize(np.concatenate(rows))

    def _build(self):
        raise NotImplementedError

    def _forward(self, model, batch):
        raise NotImplementedError
