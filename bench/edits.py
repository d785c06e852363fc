"""The edits a copied design goes through, one function per kind, deterministic per seed.

Shared by the quality, duplicates and regions benchmarks so every figure is
measured on the same kinds of copies.
"""
from __future__ import annotations

import io
import random
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from engine.images.decode import decode


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
    mirrored = sig.reshape(32, 32)[:, ::-1].ravel()
    close = (signatures @ sig >= threshold) | (signatures @ mirrored >= threshold)
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


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    out = io.BytesIO()
    image.convert("RGB").save(out, "JPEG", quality=quality)
    return Image.open(io.BytesIO(out.getvalue())).convert("RGB")


def resave(im, rng):
    return _jpeg(im, 60)


def resize(im, rng):
    factor = rng.choice([0.4, 0.6, 1.8])
    return im.resize((max(8, int(im.width * factor)), max(8, int(im.height * factor))), Image.Resampling.BICUBIC)


def crop(im, rng):
    keep = 0.7
    w, h = im.size
    x0 = int(rng.uniform(0, 1 - keep) * w)
    y0 = int(rng.uniform(0, 1 - keep) * h)
    return im.crop((x0, y0, x0 + int(w * keep), y0 + int(h * keep)))


def rotate(im, rng):
    return im.rotate(rng.choice([-20, -12, 12, 20, 90]), expand=True, fillcolor="white", resample=Image.Resampling.BICUBIC)


def mirror(im, rng):
    return im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)


def recolour(im, rng):
    hsv = np.asarray(im.convert("HSV")).copy()
    hsv[..., 0] = (hsv[..., 0].astype(int) + rng.randint(60, 190)) % 256
    out = Image.fromarray(hsv, "HSV").convert("RGB")
    white = np.asarray(im).min(axis=2) > 245  # keep the white page white
    arr = np.asarray(out).copy()
    arr[white] = 255
    return Image.fromarray(arr)


def watermark(im, rng):
    out = im.copy()
    draw = ImageDraw.Draw(out)
    font = ImageFont.load_default(size=max(12, im.width // 9))
    text = rng.choice(["SAMPLE", "© STUDIO", "DRAFT"])
    for row in range(3):
        y = int(im.height * (0.2 + 0.3 * row))
        draw.text((im.width * 0.1, y), text, fill=(120, 120, 120), font=font)
    return out


def canvas(im, rng):
    factor = rng.uniform(1.6, 2.4)
    big = Image.new("RGB", (int(im.width * factor), int(im.height * factor)), "white")
    big.paste(im, (rng.randint(0, big.width - im.width), rng.randint(0, big.height - im.height)))
    return big


def photo(im, rng):
    """Photographed at an angle: perspective, grey paper, soft focus, JPEG."""
    w, h = im.size
    margin = 0.12
    coeffs = _perspective(
        [(0, 0), (w, 0), (w, h), (0, h)],
        [(rng.uniform(0, margin) * w, rng.uniform(0, margin) * h),
         (w - rng.uniform(0, margin) * w, rng.uniform(0, margin) * h),
         (w - rng.uniform(0, margin) * w, h - rng.uniform(0, margin) * h),
         (rng.uniform(0, margin) * w, h - rng.uniform(0, margin) * h)],
    )
    paper = im.transform((w, h), Image.Transform.PERSPECTIVE, coeffs, Image.Resampling.BICUBIC, fillcolor=(235, 232, 225))
    arr = np.asarray(paper).astype(np.float32) * 0.92 + 10
    return _jpeg(Image.fromarray(arr.clip(0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.8)), 80)


def _perspective(source, target):
    """Coefficients mapping output points (target) back to input points (source)."""
    matrix = []
    for (x, y), (u, v) in zip(target, source):
        matrix.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        matrix.append([0, 0, 0, x, y, 1, -v * x, -v * y])
    rhs = np.array(source, dtype=np.float64).reshape(8)
    return np.linalg.solve(np.array(matrix, dtype=np.float64), rhs).tolist()


EDITS = {
    "resave": resave, "resize": resize, "crop": crop, "rotate": rotate, "mirror": mirror,
    "recolour": recolour, "watermark": watermark, "canvas": canvas, "photo": photo,
}


def apply(kind: str, design: Image.Image, seed: int) -> Image.Image:
    return EDITS[kind](flatten(design), random.Random(seed))
