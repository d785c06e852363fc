"""The edits a copied design goes through, one function per kind, deterministic per seed.

Calibration (engine/match/calibration.py) makes edited copies of a studio's own
designs with them, and the benchmarks use the same ones, so every figure is
measured on the same kinds of copies.  Each takes a flattened RGB picture and a
random.Random.
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont


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
