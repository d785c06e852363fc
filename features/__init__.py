"""Feature extractors: CLIP (semantics), ResNet50 (shape), HSV (colour).

Importing this package loads no model; networks load on first use.
"""
from features.base import Extractor, l2_normalize
from features.clip import WEIGHTS as CLIP_WEIGHTS, ClipExtractor
from features.fusion import DEFAULT_WEIGHTS, fuse, fuse_query
from features.hsv import HsvHistogram
from features.resnet import WEIGHTS as RESNET_WEIGHTS, ResnetExtractor

FEATURE_NAMES = ("clip", "resnet", "hsv")
# Extractors that need a weights file, with the class that uses it.
NETWORKS = {
    "clip": (CLIP_WEIGHTS, ClipExtractor),
    "resnet": (RESNET_WEIGHTS, ResnetExtractor),
}

__all__ = [
    "DEFAULT_WEIGHTS", "Extractor", "FEATURE_NAMES", "HsvHistogram", "NETWORKS",
    "fuse", "fuse_query", "l2_normalize",
]
