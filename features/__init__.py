"""Feature extractors: CLIP (semantics), ResNet50 (shape), HSV (colour), local points,
thumbprints and region proposals; features/registry.py lists them all.

Importing this package loads no model; networks load on first use.
"""
from features.base import Extractor, l2_normalize
from features.fusion import fuse, fuse_query
from features.registry import DEFAULT_WEIGHTS, FUSED as FEATURE_NAMES

__all__ = ["DEFAULT_WEIGHTS", "Extractor", "FEATURE_NAMES", "fuse", "fuse_query", "l2_normalize"]
