"""Every feature Lookalike extracts, in one list: the one place a feature is named.

Each entry says how to build its extractor, which weights file it needs (if
any), whether it is part of the fused vector (and its default weight there),
whether it is cheap enough to run in the decode workers, and whether the
designs found inside a sheet get it too.  Everything else asks this module;
adding a feature means a module for its extractor and an entry here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from features import clip, efficientnet, resnet
from features.base import Extractor
from features.hsv import HsvHistogram
from features.orb import MirroredOrbFeatures, OrbFeatures
from features.regions import RegionProposals
from features.thumbprint import ThumbprintFeatures
from features.weights import WeightsSpec


@dataclass(frozen=True)
class Feature:
    name: str
    build: Callable[..., Extractor]  # with a weights file: build(path, sha256, **options)
    weights: WeightsSpec | None = None  # None: nothing to download
    default_weight: float = 0.0  # share of the fused score by default; 0: not fused
    in_workers: bool = False  # cheap enough for the decode workers, beside decoding
    in_regions: bool = False  # extracted for every design found inside a sheet too
    on_request: bool = False  # built only when the configuration asks for it (--regions)
    # Without its weights file: what stands in for it, and why not (features/efficientnet.py).
    # Called as fallback(batch_size, device, sample, hash_memo, ready=...).
    fallback: Callable[..., tuple[Extractor | None, str]] | None = None

    @property
    def fused(self) -> bool:
        return self.default_weight > 0

    @property
    def network(self) -> bool:
        return self.weights is not None


FEATURES = (
    # What a design is.  Regions get it: it recognises a design however small on the sheet.
    Feature("clip", clip.ClipExtractor, clip.WEIGHTS, default_weight=0.5, in_regions=True),
    # Its shape.  Regions get it too, so that a region's score weighs what a whole design's
    # does: scored on colour alone, regions of unrelated sheets outranked a small design's
    # own original (bench/quality.py, without CLIP).
    Feature("resnet", resnet.ResnetExtractor, resnet.WEIGHTS, default_weight=0.3, in_regions=True,
            fallback=efficientnet.bundled),
    # How it looks in colour: counts least, as designs that share a palette are not alike.
    Feature("hsv", HsvHistogram, default_weight=0.2, in_workers=True, in_regions=True),
    # Local points for geometric verification, the design's own on a sheet too.
    Feature("orb", OrbFeatures, in_workers=True, in_regions=True),
    Feature("orb_mirror", MirroredOrbFeatures, in_workers=True),
    Feature("thumbprint", ThumbprintFeatures, in_workers=True),
    # No columns: its fingerprint versions the proposals.
    Feature("regions", RegionProposals, in_workers=True, on_request=True),
)
BY_NAME = {feature.name: feature for feature in FEATURES}

# Views the rest of the code asks for.
FUSED = tuple(f.name for f in FEATURES if f.fused)
NETWORKS = tuple(f.name for f in FEATURES if f.network)
IN_WORKERS = frozenset(f.name for f in FEATURES if f.in_workers)
IN_REGIONS = frozenset(f.name for f in FEATURES if f.in_regions)
# A region's fused vector, from the fused features regions get.
REGION_FUSED = tuple(f.name for f in FEATURES if f.in_regions and f.fused)
DEFAULT_WEIGHTS = {f.name: f.default_weight for f in FEATURES if f.fused}
# Built whatever is downloaded, on every install; and those built only when asked for.
ALWAYS = tuple(f.name for f in FEATURES if not f.network and not f.on_request)
ON_REQUEST = tuple(f.name for f in FEATURES if f.on_request)


def build(name: str, *args, **options) -> Extractor:
    return BY_NAME[name].build(*args, **options)


def weights_specs() -> list[WeightsSpec]:
    return [BY_NAME[name].weights for name in NETWORKS]


def spec_of(name: str) -> WeightsSpec:
    return BY_NAME[name].weights
