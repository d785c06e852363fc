"""Model weights: where they are expected, fetching, importing, and building extractors."""
from __future__ import annotations

import functools
import hashlib
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from engine import regions as region_boxes
from engine.fetch import read_sources, record_source
from features import NETWORKS, HsvHistogram
from features.base import Extractor
from features.device import resolve as resolve_device
from features.orb import MirroredOrbFeatures, OrbFeatures
from features.thumbprint import ThumbprintFeatures
from features.weights import WeightsSpec, file_sha256

log = logging.getLogger(__name__)
HASH_MEMO = "hashes.json"


@dataclass(frozen=True)
class WeightsStatus:
    name: str
    description: str
    path: str
    present: bool
    official: bool | None
    source: str | None  # where the present file came from: a source's label, or "imported"
    urls: list[str]

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def expected_path(models_dir: Path, spec: WeightsSpec) -> Path:
    return models_dir / spec.filename


def find_weights(models_dir: Path, spec: WeightsSpec) -> Path | None:
    """The official file name, or an imported file with the same stem and an accepted suffix."""
    official = expected_path(models_dir, spec)
    if official.is_file():
        return official
    stem = Path(spec.filename).stem
    for suffix in spec.suffixes:
        candidate = models_dir / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def status(models_dir: Path) -> list[WeightsStatus]:
    rows = []
    provenance = read_sources(models_dir)
    for spec, _ in NETWORKS.values():
        found = find_weights(models_dir, spec)
        official = spec.is_official(file_sha256(found, models_dir / HASH_MEMO)) if found else None
        source = provenance.get(spec.name, {}).get("source", "unknown") if found else None
        rows.append(WeightsStatus(
            name=spec.name, description=spec.description,
            path=str(found or expected_path(models_dir, spec)), present=found is not None,
            official=official, source=source, urls=[s.url for s in spec.sources],
        ))
    return rows


def load_extractors(
    models_dir: Path, batch_size: int = 32, regions: bool = False, device: str = "auto"
) -> tuple[dict[str, Extractor], dict[str, str]]:
    """Every extractor whose weights are present, plus a reason for each one switched off.

    With `regions`, the separate designs inside sheets also get entries of their own.
    `device` is 'auto', 'cpu' or 'cuda' (features/device.py: 'auto' imports torch only
    where an NVIDIA driver is present); raises DeviceUnavailable for 'cuda' without a GPU.
    """
    extractors: dict[str, Extractor] = {}
    missing: dict[str, str] = {}
    found = {name: find_weights(models_dir, spec) for name, (spec, _) in NETWORKS.items()}
    runs_on = resolve_device(device)  # the bundled shape network runs even without any download
    for name, (spec, factory) in NETWORKS.items():
        path = found[name]
        if path is None and name == "resnet":
            shape, reason = _bundled_shape_network(batch_size, runs_on)
            if shape is not None:
                extractors[name] = shape
                continue
            log.warning("The bundled shape network is off too: %s", reason)
        if path is None:
            missing[name] = (
                f"{spec.description}: weights not found ({models_dir.name}/{spec.filename}); "
                f"run `python image.py models fetch`, or download {spec.sources[0].url} in a browser "
                f"and run `python image.py models import FILE`"
            )
            continue
        extractors[name] = factory(path, file_sha256(path, models_dir / HASH_MEMO), batch_size=batch_size,
                                   sample=precision_sample, calibration=calibration_sample,
                                   calibration_id=calibration_id, device=runs_on)
    extractors["hsv"] = HsvHistogram()
    extractors["orb"] = OrbFeatures()
    extractors["orb_mirror"] = MirroredOrbFeatures()
    extractors["thumbprint"] = ThumbprintFeatures()
    if regions:
        extractors["regions"] = region_boxes.RegionProposals()
    return extractors, missing


def _bundled_shape_network(batch_size: int, device: str) -> tuple[Extractor | None, str]:
    """EfficientNet-Lite0 from its pip package, standing in for ResNet50 (features/efficientnet.py);
    None and the reason when the package is missing or its file is not the recorded one."""
    from features import efficientnet

    path = efficientnet.weights_file()
    if path is None or not path.is_file():
        return None, f"the {efficientnet.PACKAGE} package is not installed"
    digest = file_sha256(path)
    if digest != efficientnet.SHA256:
        return None, f"{path}: SHA-256 {digest[:12]}... is not the recorded one; the file is refused"
    return efficientnet.EfficientNetLite0Extractor(path, digest, batch_size=batch_size, device=device), ""


# Real designs on which a lower precision must keep each network's features
# (features/precision.py): the ones shipped as the demo collection.  The first
# SAMPLE_SIZE check int8; the rest calibrate it where it needs calibrating.
SAMPLE_DIR = Path(__file__).resolve().parent.parent / "static" / "images"
SAMPLE_SIZE = 16


def precision_sample() -> tuple:
    """Up to SAMPLE_SIZE bundled designs, decoded as indexing decodes them."""
    return _bundled_designs()[:SAMPLE_SIZE]


def calibration_sample() -> tuple:
    """The other bundled designs: never the ones that then check the int8 network."""
    return _bundled_designs()[SAMPLE_SIZE:]


@functools.lru_cache(maxsize=1)
def calibration_id() -> str:
    """Names the bundled designs, calibration ones included, by their files' bytes,
    without decoding them (a fingerprint is asked for on every re-scan)."""
    digest = hashlib.sha256()
    for path in _bundled_paths():
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def _bundled_paths() -> list[Path]:
    return sorted(SAMPLE_DIR.glob("*.png"))


@functools.lru_cache(maxsize=1)
def _bundled_designs() -> tuple:
    from engine.decode import UnreadableImage, decode

    pictures = []
    for path in _bundled_paths():
        try:
            pictures.append(decode(path.read_bytes()).image)
        except (OSError, UnreadableImage):
            continue
    return tuple(pictures)


def fetch(models_dir: Path, progress=None, report=lambda line: None, mirror: str | None = None) -> list[str]:
    """Download every missing network from its sources in turn (engine/fetch.py); each
    accepted file must load as its network.  Returns the names fetched; raises FetchFailed."""
    from engine import fetch as downloads

    specs = [spec for spec, _ in NETWORKS.values()]
    return downloads.fetch(models_dir, specs, check=check_loads, present=lambda spec: find_weights(models_dir, spec)
                           is not None, progress=progress, report=report, mirror=mirror)


def check_loads(spec: WeightsSpec, path: Path) -> None:
    """The file builds the network and gives unit-length vectors of its size on a bundled design."""
    import numpy as np

    _, factory = NETWORKS[spec.name]
    extractor = factory(path, file_sha256(path))
    design = (_bundled_designs() or (None,))[0]
    if design is None:
        from PIL import Image

        design = Image.new("RGB", (64, 64), "white")
    rows = extractor.embed([design])
    norms = np.linalg.norm(rows, axis=1)
    if rows.shape != (1, extractor.dim) or not np.allclose(norms, 1.0, atol=1e-3):
        raise ValueError(f"gave vectors of shape {rows.shape} and length {norms}, not one unit {extractor.dim}-d vector")


def import_file(models_dir: Path, source: Path) -> WeightsStatus:
    """Copy a weights file into the models folder under the name the loader looks for."""
    spec = identify(source)
    models_dir.mkdir(parents=True, exist_ok=True)
    for suffix in spec.suffixes:  # one file per network: drop an older import
        old = models_dir / f"{Path(spec.filename).stem}{suffix}"
        if old.exists():
            old.unlink()
    target = models_dir / f"{Path(spec.filename).stem}{source.suffix.lower()}"
    shutil.copyfile(source, target.with_name(target.name + ".part"))
    target.with_name(target.name + ".part").replace(target)
    record_source(models_dir, spec.name, "imported")
    return next(row for row in status(models_dir) if row.name == spec.name)


def identify(source: Path) -> WeightsSpec:
    """Which network a weights file belongs to, by official hash, else by its tensor names."""
    digest = file_sha256(source)
    for spec, _ in NETWORKS.values():
        if spec.is_official(digest):
            return spec
    keys = _tensor_names(source)
    if any(k.startswith(("visual.", "transformer.", "token_embedding")) for k in keys):
        return NETWORKS["clip"][0]
    if any(k.startswith(("layer4.", "conv1.", "fc.")) for k in keys):
        return NETWORKS["resnet"][0]
    raise ValueError(f"{source}: not a CLIP ViT-B/32 or ResNet50 weights file")


def _tensor_names(source: Path) -> list[str]:
    if source.suffix.lower() == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(source), framework="pt") as handle:
            return list(handle.keys())
    import torch

    try:
        state = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{source}: not a readable state dict ({exc})") from exc
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{source}: not a state dict")
    return [k[7:] if k.startswith("module.") else k for k in state]
