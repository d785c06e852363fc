"""CLIP ViT-B/32 image (and text) embeddings via open_clip, OpenAI weights.

OpenAI trained these weights with QuickGELU, so the quick-GELU variant of the
architecture is built; the plain one silently gives worse features.
"""
from __future__ import annotations

import contextlib
import logging
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np

from features import precision
from features.base import l2_normalize
from features.network import LazyModel, NetworkExtractor
from features.weights import WeightsSource, WeightsSpec, file_sha256

log = logging.getLogger(__name__)

ARCHITECTURE = "ViT-B-32-quickgelu"
MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)

# Tried in this order.  The Hub's safetensors file is a plain tensor file (loading it runs
# no code) and is where open_clip itself now fetches these weights; its revision and
# SHA-256 are pinned from one public record, a claim that the Hub's own reported hash
# (X-Linked-Etag) must confirm before any byte is taken.  OpenAI's release carries its
# SHA-256 in its URL.  The Hub's .bin copy has no pinned hash: only the Hub's report
# vouches for it.
HUB = "https://huggingface.co/timm/vit_base_patch32_clip_224.openai/resolve/a6f597a30f7b82c51704746581f9a4e41421e878/"
OPENAI_SHA256 = "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af"
WEIGHTS = WeightsSpec(
    name="clip",
    filename="ViT-B-32-quickgelu-openai.pt",
    sources=(
        WeightsSource("Hugging Face Hub (safetensors)", HUB + "open_clip_model.safetensors", ".safetensors",
                      sha256="e6d1bd7789aa45192b3bf90570a789b478bae1b74ebcce7eddd908e83a2b7c31", reports_sha256=True),
        WeightsSource("OpenAI release", f"https://openaipublic.azureedge.net/clip/models/{OPENAI_SHA256}/ViT-B-32.pt",
                      ".pt", sha256=OPENAI_SHA256),
        WeightsSource("Hugging Face Hub (bin)", HUB + "open_clip_pytorch_model.bin", ".bin", reports_sha256=True),
    ),
    description="CLIP ViT-B/32 (OpenAI, QuickGELU), 512-d",
    suffixes=(".safetensors", ".bin", ".pt", ".pth"),
    tensor_prefixes=("visual.", "transformer.", "token_embedding"),
)


def is_torchscript(path: Path) -> bool:
    """OpenAI's own release is a TorchScript archive, not a plain state dict."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("constants.pkl") for name in archive.namelist())


@contextlib.contextmanager
def _quiet_root_warnings():
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


class ClipExtractor(NetworkExtractor):
    name = "clip"
    dim = 512
    architecture = ARCHITECTURE
    mean, std = MEAN, STD
    offers_int8 = True

    def __init__(self, *args, **options) -> None:
        super().__init__(*args, **options)
        # Words need the text tower, which only a text query loads (a start loads the
        # image tower alone, often ready-made: features/ready.py).
        self._text = LazyModel(self._build_text)

    def _build(self):
        return self._build_clip()[0].visual

    def _build_clip(self):
        import open_clip

        with _quiet_root_warnings():  # open_clip warns "initialized randomly": we load weights next
            model = open_clip.create_model(ARCHITECTURE, pretrained=None)
        # The official release is a TorchScript archive, and loading it runs code; the
        # digest handed in may come from the hash memo, a file anyone who can write the
        # (shareable) models folder can forge.  So a load that trusts the file re-hashes it.
        official = WEIGHTS.is_official(self.digest) and WEIGHTS.is_official(file_sha256(self.weights))
        if is_torchscript(self.weights) and not official:
            # A TorchScript archive carries code; only the verified release is trusted.
            raise ValueError(f"{self.weights}: TorchScript archive with an unofficial hash refused")
        if not official:
            log.warning("CLIP weights %s are not the official file (sha256 %s...)", self.weights, self.digest[:12])
        open_clip.load_checkpoint(model, str(self.weights), weights_only=not official)
        return model.eval(), open_clip.get_tokenizer(ARCHITECTURE)

    def _build_text(self):
        import torch

        model, tokenizer = self._build_clip()
        model.visual = torch.nn.Identity()  # the image tower is the other model's; free this copy
        return model.to(self.device), tokenizer

    def _quantized(self, model):
        return precision.quantize_linear(model)

    def _forward(self, model, batch):
        return model(batch)

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        model, tokenizer = self._text.get()
        with torch.inference_mode():
            return l2_normalize(model.encode_text(tokenizer(list(texts)).to(self.device)).float().cpu().numpy())
