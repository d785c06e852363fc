"""What every extractor provides, and the helpers they share."""
from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import numpy as np
from PIL import Image

# Both networks see the design letterboxed onto a white 224 px square.
INPUT_SIDE = 224


@runtime_checkable
class Extractor(Protocol):
    """Turns analysis-size RGB pictures into unit-length float32 rows."""

    name: str
    dim: int

    def fingerprint(self) -> str:
        """Identifies model, weights and preprocessing; a change means re-extraction."""

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        """One L2-normalised float32 row per image."""


def l2_normalize(rows: np.ndarray, floor: float = 1e-12) -> np.ndarray:
    """Scale each row to unit length; all-zero rows stay zero.  `floor`: rows shorter
    than this are divided by it instead (kept short, not blown up from noise)."""
    rows = np.asarray(rows, dtype=np.float32)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.maximum(norms, floor)


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
    return normalise(pixel_batch(images), mean, std)


def pixel_batch(images: Sequence[Image.Image]):
    """The letterboxed pictures as one NHWC uint8 tensor: a quarter of the float batch's
    bytes, which is what a GPU is sent (features/network.py) and normalises itself."""
    import torch  # imported here: importing features must stay cheap

    return torch.from_numpy(np.stack([np.asarray(letterbox(im, INPUT_SIDE)) for im in images]))


def normalise(pixels, mean: np.ndarray, std: np.ndarray):
    """(x / 255 - mean) / std of an NHWC uint8 batch, as NCHW float on the batch's device."""
    import torch

    # Two in-place passes over the float copy: the same in NumPy took 6 ms per image on the
    # thread that feeds the networks, which idle meanwhile.
    batch = pixels.permute(0, 3, 1, 2).float().contiguous()
    shift = torch.tensor(np.asarray(mean, np.float32) * 255, device=pixels.device).view(1, 3, 1, 1)
    scale = torch.tensor(1 / (np.asarray(std, np.float32) * 255), device=pixels.device).view(1, 3, 1, 1)
    return batch.sub_(shift).mul_(scale)
