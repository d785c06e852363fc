"""ResNet50 (torchvision, ImageNet IMAGENET1K_V2): global-average-pooled 2048-d features."""
from __future__ import annotations

import logging

import numpy as np

from features import precision, torchscript
from features.base import to_batch
from features.network import NetworkExtractor
from features.weights import WeightsSource, WeightsSpec

log = logging.getLogger(__name__)

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)

WEIGHTS = WeightsSpec(
    name="resnet",
    filename="resnet50-11ad3fa6.pth",
    sources=(WeightsSource("torchvision", "https://download.pytorch.org/models/resnet50-11ad3fa6.pth", ".pth",
                           sha256="11ad3fa6"),),
    description="ResNet50 ImageNet IMAGENET1K_V2, 2048-d pooled",
    suffixes=(".pth", ".pt", ".bin"),
    tensor_prefixes=("layer4.", "conv1.", "fc."),
)


class ResnetExtractor(NetworkExtractor):
    name = "resnet"
    description = WEIGHTS.description
    dim = 2048
    architecture = "resnet50"
    mean, std = MEAN, STD
    offers_int8 = True
    int8_method = "int8-static"

    def _build(self):
        import torch
        import torchvision

        model = torchvision.models.resnet50(weights=None)
        if not WEIGHTS.is_official(self.digest):
            log.warning("ResNet50 weights %s are not the official file (sha256 %s...)", self.weights, self.digest[:12])
        state = torch.load(self.weights, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
        model.fc = torch.nn.Identity()  # keep the pooled features, drop the classifier
        return model.eval()

    def _fp32(self, model):
        import torch

        # Frozen, batch norm folds into the convolutions: about 10% faster on a CPU at batch
        # 1 and 32, features equal (cosine > 0.99999).
        return self._frozen(model.to(memory_format=torch.channels_last))

    def _to_device(self, model):
        import torch

        return model.to(self.device, memory_format=torch.channels_last)

    @staticmethod
    def _frozen(model):
        import torch

        with torch.no_grad(), torchscript.one_at_a_time():
            return torch.jit.freeze(torch.jit.script(model))

    def _int8_tag(self) -> str:
        # The activation ranges come from the calibration designs: other designs, other vectors.
        return f"{self.int8_method}-{self._calibration_id()}" if self._calibration_id else self.int8_method

    def _quantized(self, model):
        designs = list(self._calibration()) if self._calibration else []
        if not designs:
            raise ValueError("no calibration designs for static int8")
        quantized = precision.quantize_static(model, to_batch(designs, self.mean, self.std))
        return self._frozen(quantized)  # the same vectors, 1-2 ms less per search (batch of one)

    def _forward(self, model, batch):
        import torch

        return model(batch.contiguous(memory_format=torch.channels_last))
