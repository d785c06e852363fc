"""Building the extractors: every feature in the registry whose weights are here."""
from __future__ import annotations

import logging
from pathlib import Path

from engine.models import sample
from engine.models.weights import HASH_MEMO, find_weights
from features import registry
from features.base import Extractor
from features.device import resolve as resolve_device
from features.ready import ReadyNetworks
from features.weights import WeightsSpec, file_sha256

log = logging.getLogger(__name__)


def load_extractors(
    models_dir: Path, batch_size: int = 32, regions: bool = False, device: str = "auto",
    ready_dir: Path | None = None,
) -> tuple[dict[str, Extractor], dict[str, str]]:
    """Every extractor whose weights are present, plus a reason for each one switched off.

    With `regions`, the separate designs inside sheets also get entries of their own.
    `device` is 'auto', 'cpu' or 'cuda' (features/device.py: 'auto' imports torch only
    where an NVIDIA driver is present); raises DeviceUnavailable for 'cuda' without a GPU.
    `ready_dir`: where networks made ready to run are kept between starts (features/ready.py).
    """
    extractors: dict[str, Extractor] = {}
    missing: dict[str, str] = {}
    runs_on = resolve_device(device)  # a bundled network runs even without any download
    ready = ReadyNetworks(ready_dir) if ready_dir is not None else None
    for name in registry.NETWORKS:
        network, reason = _network(registry.BY_NAME[name], models_dir, batch_size, runs_on, ready)
        if network is not None:
            extractors[name] = network
        else:
            missing[name] = reason
    for name in registry.ALWAYS:
        extractors[name] = registry.build(name)
    if regions:  # the one feature built on request
        extractors.update((name, registry.build(name)) for name in registry.ON_REQUEST)
    return extractors, missing


def _network(feature: registry.Feature, models_dir: Path, batch_size: int, device: str,
             ready: ReadyNetworks | None) -> tuple[Extractor | None, str]:
    """The feature's network from its weights file, else its fallback; else why it is off."""
    spec = feature.weights
    path = find_weights(models_dir, spec)
    if path is not None:
        return feature.build(path, file_sha256(path, models_dir / HASH_MEMO), batch_size=batch_size,
                             sample=sample.precision_sample, calibration=sample.calibration_sample,
                             calibration_id=sample.calibration_id, device=device, ready=ready), ""
    if feature.fallback is not None:
        stand_in, why_not = feature.fallback(batch_size, device, sample.precision_sample, models_dir / HASH_MEMO,
                                             ready=ready)
        if stand_in is not None:
            return stand_in, ""
        log.warning("The bundled %s network is off too: %s", feature.name, why_not)
    return None, (
        f"{spec.description}: weights not found ({models_dir.name}/{spec.filename}); "
        f"run `python image.py models fetch`, or download {spec.sources[0].url} in a browser "
        f"and run `python image.py models import FILE`"
    )


def fetch(models_dir: Path, progress=None, report=lambda line: None, mirror: str | None = None) -> list[str]:
    """Download every missing network from its sources in turn (engine/models/download.py);
    each accepted file must load as its network.  Returns the names fetched; raises FetchFailed."""
    from engine.models import download

    return download.fetch(models_dir, registry.weights_specs(), check=check_loads,
                          present=lambda spec: find_weights(models_dir, spec) is not None,
                          progress=progress, report=report, mirror=mirror)


def check_loads(spec: WeightsSpec, path: Path) -> None:
    """The file builds the network and gives unit-length vectors of its size on a bundled design."""
    import numpy as np

    extractor = registry.build(spec.name, path, file_sha256(path))
    design = (sample.precision_sample() or (None,))[0]
    if design is None:
        from PIL import Image

        design = Image.new("RGB", (64, 64), "white")
    rows = extractor.embed([design])
    norms = np.linalg.norm(rows, axis=1)
    if rows.shape != (1, extractor.dim) or not np.allclose(norms, 1.0, atol=1e-3):
        raise ValueError(f"gave vectors of shape {rows.shape} and length {norms}, not one unit {extractor.dim}-d vector")
