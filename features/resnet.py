"""ResNet50 (torchvision, ImageNet IMAGENET1K_V2): global-average-pooled 2048-d features."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from features.base import PREPROCESS, LazyModel, l2_normalize, to_batch
from features.weights import WeightsSpec

log = logging.getLogger(__name__)

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)

WEIGHTS = WeightsSpec(
    name="resnet",
    filename="resnet50-11ad3fa6.pth",
    url="https://download.pytorch.org/models/resnet50-11ad3fa6.pth",
    sha256="11ad3fa6",
    description="ResNet50 ImageNet IMAGENET1K_V2, 2048-d pooled",
    suffixes=(".pth", ".pt", ".bin"),
)


class ResnetExtractor:
    name = "resnet"
    dim = 2048

    def __init__(self, weights: Path, digest: str, batch_size: int = 32) -> None:
        self.weights = weights
        self.digest = digest
        self.batch_size = batch_size
        self._model = LazyModel(self._build)

    def fingerprint(self) -> str:
        return f"resnet50:{self.digest[:16]}:{PREPROCESS}"

    def _build(self):
        import torch
        import torchvision

        model = torchvision.models.resnet50(weights=None)
        if not WEIGHTS.is_official(self.digest):
            log.warning("ResNet50 weights %s are not the official file (sha256 %s...)", self.weights, self.digest[:12])
        state = torch.load(self.weights, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
        model.fc = torch.nn.Identity()  # keep the pooled features, drop the classifier
        return model.eval().to(memory_format=torch.channels_last)

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        import torch

        model = self._model.get()
        rows = []
        with torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                batch = to_batch(images[start : start + self.batch_size], MEAN, STD)
                rows.append(model(batch.contiguous(memory_format=torch.channels_last)).float().numpy())
        return l2_normalize(np.concatenate(rows))
