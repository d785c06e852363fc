"""Weights files in the models folder: which are there, where from, and importing one."""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from engine.models.download import read_sources, record_source
from features.files import atomic_write
from features import registry
from features.weights import WeightsSpec, file_sha256

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
    for spec in registry.weights_specs():
        found = find_weights(models_dir, spec)
        official = spec.is_official(file_sha256(found, models_dir / HASH_MEMO)) if found else None
        source = provenance.get(spec.name, {}).get("source", "unknown") if found else None
        rows.append(WeightsStatus(
            name=spec.name, description=spec.description,
            path=str(found or expected_path(models_dir, spec)), present=found is not None,
            official=official, source=source, urls=[s.url for s in spec.sources],
        ))
    return rows


def import_file(models_dir: Path, source: Path) -> WeightsStatus:
    """Copy a weights file into the models folder under the name the loader looks for."""
    spec = identify(source)
    models_dir.mkdir(parents=True, exist_ok=True)
    for suffix in spec.suffixes:  # one file per network: drop an older import
        old = models_dir / f"{Path(spec.filename).stem}{suffix}"
        if old.exists():
            old.unlink()
    target = models_dir / f"{Path(spec.filename).stem}{source.suffix.lower()}"
    with source.open("rb") as stream:
        atomic_write(target, lambda out: shutil.copyfileobj(stream, out, 1 << 20))
    record_source(models_dir, spec.name, "imported")
    return next(row for row in status(models_dir) if row.name == spec.name)


def identify(source: Path) -> WeightsSpec:
    """Which network a weights file belongs to, by official hash, else by its tensor names."""
    digest = file_sha256(source)
    specs = registry.weights_specs()
    for spec in specs:
        if spec.is_official(digest):
            return spec
    keys = _tensor_names(source)
    for spec in specs:
        if any(k.startswith(spec.tensor_prefixes) for k in keys):
            return spec
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
