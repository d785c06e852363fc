"""One frozen configuration, read from flags and LOOKALIKE_* environment variables."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping

from features import DEFAULT_WEIGHTS

ENV_PREFIX = "LOOKALIKE_"
COLLECTION_PREFIX = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,199}")


@dataclass(frozen=True)
class Config:
    images: Path = Path("static/images")
    cache: Path = Path("cache")
    host: str = "127.0.0.1"
    port: int = 5050
    top_k: int = 12
    weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    max_upload_mb: int = 25
    # Designs added from the page: far above any real design photo, far below a bomb.
    upload_max_pixels: int = 100_000_000
    # A query needs a few megapixels at most; its size is checked before decoding, and a
    # JPEG (decoded at reduced size) may be larger.  Bounds what hostile uploads cost.
    query_max_pixels: int = 24_000_000
    # Queries decoded at the same time; the rest wait their turn.
    decode_slots: int = 2
    # Collection files: just above the largest real design seen (623 MP), which streams.
    index_max_pixels: int = 700_000_000
    threads: int = max(1, os.cpu_count() or 1)
    # The indexing workers as processes: 'auto' (on 8+ cores, for runs of 200+ files), 'on', 'off'.
    worker_processes: str = "auto"
    batch_size: int = 32
    # Save the index every this many newly extracted images, so a crash loses little.
    checkpoint_every: int = 256
    # Index the separate designs inside sheets and collages as regions too.
    regions: bool = True
    secure_cookies: bool = False
    # Where the networks run: 'auto' (a CUDA GPU when torch sees one), 'cpu' or 'cuda'.
    device: str = "auto"
    # While the networks run on a GPU, collection JPEGs are decoded there too (batched nvJPEG).
    gpu_jpeg: bool = True
    # While serving, the collection is re-scanned this often (0: only at start).
    rescan_minutes: float = 5.0
    # Weights folder; defaults to <cache>/models.  Several collections can share one.
    models: Path | None = None
    # The reverse proxy's address: only requests from it are counted against the address
    # it forwards (X-Forwarded-For); everyone else is counted by their own.
    trusted_proxy: str | None = None
    # Where searches find neighbours: 'faiss' (in this process) or 'milvus' (docs/deploy-milvus.md).
    store: str = "faiss"
    # Milvus: a path ending in .db runs Milvus Lite in this process (default <cache>/milvus.db);
    # http://host:19530 is a Milvus server.
    milvus_uri: str | None = None
    # Prefix of this instance's Milvus collections: instances sharing one Milvus each need their own.
    collection: str = "lookalike"

    def __post_init__(self) -> None:
        if self.store not in ("faiss", "milvus"):
            raise ValueError(f"store {self.store!r}: choose faiss or milvus")
        if not COLLECTION_PREFIX.fullmatch(self.collection):  # Milvus's rule for collection names
            raise ValueError(f"collection prefix {self.collection!r}: letters, digits and _, not starting with a digit")
        # Absolute once, here: nothing downstream may depend on the working directory
        # (Flask resolves a relative file against its package folder, for one).
        for name in ("images", "cache", "models"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, Path(value).expanduser().absolute())

    @property
    def models_dir(self) -> Path:
        return self.models or self.cache / "models"

    @property
    def index_file(self) -> Path:
        return self.cache / "index.npz"

    @property
    def ready_networks_dir(self) -> Path:
        """Networks made ready to run, kept between starts (features/ready.py)."""
        return self.cache / "networks"

    @property
    def milvus_address(self) -> str:
        """The Milvus URI, a Lite file made absolute like the other paths."""
        uri = self.milvus_uri or str(self.cache / "milvus.db")
        return uri if "://" in uri else str(Path(uri).expanduser().absolute())

    @property
    def thumbs_dir(self) -> Path:
        return self.cache / "thumbs"

    def with_overrides(self, **values) -> "Config":
        """A copy with the given non-None values replaced."""
        return replace(self, **{k: v for k, v in values.items() if v is not None})


def parse_weights(text: str) -> dict[str, float]:
    """'clip=0.5,resnet=0.3,hsv=0.2' (or JSON) -> {'clip': 0.5, ...}."""
    import json

    text = text.strip()
    if text.startswith("{"):
        raw = json.loads(text)
    else:
        raw = dict(part.split("=", 1) for part in text.split(",") if part.strip())
    weights = {str(k).strip(): float(v) for k, v in raw.items()}
    unknown = set(weights) - set(DEFAULT_WEIGHTS)
    if unknown:
        raise ValueError(f"unknown feature(s) in weights: {', '.join(sorted(unknown))}")
    if any(v < 0 for v in weights.values()):
        raise ValueError("weights must not be negative")
    return {**DEFAULT_WEIGHTS, **weights}


def from_environment(environ: Mapping[str, str] = os.environ) -> Config:
    """Defaults overridden by LOOKALIKE_* variables; flags override these in turn."""
    def get(name: str):
        return environ.get(ENV_PREFIX + name)

    values: dict = {}
    for name, convert in (
        ("IMAGES", Path), ("CACHE", Path), ("MODELS", Path), ("HOST", str), ("PORT", int), ("TOP_K", int),
        ("MAX_UPLOAD_MB", int), ("UPLOAD_MAX_PIXELS", int), ("QUERY_MAX_PIXELS", int), ("INDEX_MAX_PIXELS", int),
        ("TRUSTED_PROXY", str), ("RESCAN_MINUTES", float), ("DEVICE", str), ("WORKER_PROCESSES", str),
        ("THREADS", int), ("BATCH_SIZE", int), ("CHECKPOINT_EVERY", int), ("STORE", str), ("MILVUS_URI", str),
        ("COLLECTION", str),
    ):
        if get(name):
            values[name.lower()] = convert(get(name))
    if get("WEIGHTS"):
        values["weights"] = parse_weights(get("WEIGHTS"))
    for name in ("REGIONS", "GPU_JPEG"):
        if get(name):
            values[name.lower()] = get(name).lower() not in ("0", "false", "no")
    if get("SECURE_COOKIES"):
        values["secure_cookies"] = get("SECURE_COOKIES").lower() in ("1", "true", "yes")
    return Config(**values)
