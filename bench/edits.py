"""The edits a copied design goes through, one function per kind, deterministic per seed.

Shared by the quality, duplicates and regions benchmarks so every figure is
measured on the same kinds of copies.
"""
from __future__ import annotations

import io
import random
from pathlib import Path

import numpy as np
from PIL import Image

from engine.images.decode import decode
from engine.images.edits import EDITS


# Enormous designs only slow a benchmark's setup; they are left out of the samples.
BIG_PIXELS = 40_000_000


def designs(source: str | Path, seed: int) -> list[Path]:
    """Openclipart's PNG designs under `source`, shuffled by `seed`, enormous ones left out."""
    found = sorted(p for p in Path(source).rglob("*.png") if _pixels(p) <= BIG_PIXELS)
    random.Random(seed).shuffle(found)
    return found


def _pixels(path: Path) -> int:
    with Image.open(path) as im:
        return im.width * im.height


def flatten(image: Image.Image) -> Image.Image:
    """What a designer sees: the design on white (the shared loader does the same)."""
    return decode(_png(image), side=1024).image


def signature(path: Path) -> np.ndarray:
    """A method-independent identity check: the flattened design as 32x32 grey, normalised."""
    image = flatten(Image.open(path)).convert("L")
    square = Image.new("L", (max(image.size),) * 2, 255)
    square.paste(image, ((square.width - image.width) // 2, (square.height - image.height) // 2))
    values = np.asarray(square.resize((32, 32), Image.Resampling.BOX), dtype=np.float32).ravel()
    values -= values.mean()
    return values / max(float(np.linalg.norm(values)), 1e-6)


def twins_of(sig: np.ndarray, signatures: np.ndarray, threshold: float = 0.95) -> list[int]:
    """Corpus designs identical to `sig` (or to its mirror image) at 32x32."""
    if not sig.any():  # nothing drawn (a fully transparent file): the same as every other blank
        return [int(i) for i in np.flatnonzero(~signatures.any(axis=1))]
    close = (signatures @ sig >= threshold) | (signatures @ _mirrored(sig) >= threshold)
    return [int(i) for i in np.flatnonzero(close)]


# Grey levels below this are the design's ink, above it the page.
JUDGE_INK = 235
# Content pictures correlating this well (as is or mirrored) are one design drawn twice.
JUDGE_SAME_DESIGN = 0.9


def content_signature(path: Path) -> np.ndarray:
    """The independent judge's picture of a design: its content (the box around its ink),
    flattened on white with PIL alone, letterboxed to 32x32 grey, mean-centred, unit length.
    It shares no code with Lookalike's decoder, thumbprints or verifier."""
    with Image.open(path) as opened:
        rgba = opened.convert("RGBA")
    page = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    grey = Image.alpha_composite(page, rgba).convert("L")
    box = Image.eval(grey, lambda v: 255 if v < JUDGE_INK else 0).getbbox()
    content = grey.crop(box) if box else grey
    square = Image.new("L", (max(content.size),) * 2, 255)
    square.paste(content, ((square.width - content.width) // 2, (square.height - content.height) // 2))
    values = np.asarray(square.resize((32, 32), Image.Resampling.BOX), dtype=np.float32).ravel()
    values -= values.mean()
    return values / max(float(np.linalg.norm(values)), 1e-6)


def same_design(sig: np.ndarray, signatures: np.ndarray, threshold: float = JUDGE_SAME_DESIGN) -> list[int]:
    """Designs whose content signature correlates with `sig` (or its mirror) at `threshold`."""
    return twins_of(sig, signatures, threshold)


def judge_correlation(first: Path, second: Path) -> float:
    """How alike the independent judge finds two designs: their content signatures'
    correlation, as is or mirrored (one design drawn twice from JUDGE_SAME_DESIGN up)."""
    a, b = content_signature(first), content_signature(second)
    return float(max(a @ b, _mirrored(a) @ b))


def _mirrored(sig: np.ndarray) -> np.ndarray:
    """A 32x32 signature of the design flipped left-right."""
    return sig.reshape(32, 32)[:, ::-1].ravel()


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def apply(kind: str, design: Image.Image, seed: int) -> Image.Image:
    return EDITS[kind](flatten(design), random.Random(seed))
