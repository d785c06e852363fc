"""Shared fixtures: a config on tmp_path, generated designs, random-weight model files."""
from __future__ import annotations

import io
import random
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine import Engine  # noqa: E402
from engine.config import Config  # noqa: E402
from engine.images.decode import decode  # noqa: E402
from features.hsv import HsvHistogram  # noqa: E402
from features.orb import OrbFeatures  # noqa: E402
from features.thumbprint import ThumbprintFeatures  # noqa: E402

# The sample designs that ship in the repository (openclipart, public domain).
SAMPLES = ROOT / "static" / "images"


def make_design(seed: int, size: int = 320) -> Image.Image:
    """A transparent design of random coloured shapes, different for every seed."""
    rng = random.Random(seed)
    image = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(3, 6)):
        colour = tuple(rng.randint(0, 230) for _ in range(3)) + (255,)
        x0, y0 = rng.randint(0, size // 2), rng.randint(0, size // 2)
        x1, y1 = x0 + rng.randint(40, size // 2), y0 + rng.randint(40, size // 2)
        shape = rng.choice(["ellipse", "rectangle", "polygon"])
        if shape == "polygon":
            points = [(rng.randint(0, size), rng.randint(0, size)) for _ in range(rng.randint(3, 6))]
            draw.polygon(points, fill=colour)
        else:
            getattr(draw, shape)((x0, y0, x1, y1), fill=colour, outline=(0, 0, 0, 255), width=3)
    return image


def flat(design: Image.Image) -> Image.Image:
    """The design flattened onto white, as a JPEG copy or a page would show it."""
    page = Image.new("RGB", design.size, "white")
    page.paste(design, mask=design.getchannel("A") if "A" in design.mode else None)
    return page


def encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    out = io.BytesIO()
    if fmt == "JPEG" and image.mode != "RGB":
        image = flat(image)
    image.save(out, fmt, **options)
    return out.getvalue()


def sample(name: str) -> Image.Image:
    """A bundled sample design as the loader sees it: decoded, flattened on white."""
    return decode((SAMPLES / name).read_bytes()).image.copy()


def weight_free_engine(cfg: Config, designs: dict[str, Image.Image], points: bool = True) -> Engine:
    """An engine over `designs` saved into the collection and indexed with the features that
    need no weights: colour, local points (unless not `points`) and thumbprints."""
    for name, picture in designs.items():
        picture.save(cfg.images / name)
    extractors = {"hsv": HsvHistogram(), **({"orb": OrbFeatures()} if points else {}),
                  "thumbprint": ThumbprintFeatures()}
    engine = Engine(cfg, extractors=extractors)
    engine.reindex()
    return engine


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    images = tmp_path / "images"
    images.mkdir()
    return Config(images=images, cache=tmp_path / "cache", threads=2, batch_size=4)


@pytest.fixture
def collection(cfg: Config) -> dict[str, Image.Image]:
    """Twelve distinct transparent designs written into the images folder."""
    designs = {}
    for seed in range(12):
        name = f"design_{seed:02d}.png"
        designs[name] = make_design(seed)
        designs[name].save(cfg.images / name)
    return designs


@pytest.fixture(scope="session")
def weight_files(tmp_path_factory) -> dict[str, Path]:
    """Random-weight files in the real formats: open_clip safetensors and torchvision .pth."""
    import open_clip
    import torch
    import torchvision
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    clip = open_clip.create_model("ViT-B-32-quickgelu", pretrained=None)
    clip_path = folder / "clip-random.safetensors"
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, str(clip_path))
    resnet = torchvision.models.resnet50(weights=None)
    resnet_path = folder / "resnet-random.pth"
    torch.save(resnet.state_dict(), resnet_path)
    return {"clip": clip_path, "resnet": resnet_path}


@pytest.fixture(scope="session")
def models_folder(weight_files: dict[str, Path], tmp_path_factory) -> Path:
    """A models folder holding the random weights, imported the way a user would."""
    from engine import models

    folder = tmp_path_factory.mktemp("models")
    for path in weight_files.values():
        models.import_file(folder, path)
    return folder


@pytest.fixture
def with_weights(cfg: Config, models_folder: Path) -> Config:
    return cfg.with_overrides(models=models_folder)


def unit_rows(rows: np.ndarray) -> bool:
    return bool(np.allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-4))
