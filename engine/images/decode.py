"""The one image loader in front of every extractor.

Every file is decoded once per indexing pass into an RGB picture no larger
than ANALYSIS_SIDE on its longer side: EXIF orientation applied, transparency
composited onto white, palette / 16-bit / CMYK / grayscale converted.  Large
JPEGs are decoded at reduced size (draft mode), enormous PNGs strip by strip,
so no single file can take gigabytes.
"""
from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image

from engine.images import bigpng

# Longer side of the shared analysis picture: above the 224 px the networks
# take, and enough detail for local-feature verification.
ANALYSIS_SIDE = 512
# Above this, PNGs are streamed in strips instead of decoded whole.
STREAM_PIXELS = 40_000_000
# Default ceiling for any image (decompression-bomb guard); the largest real
# openclipart design is 623 MP, which streams in bounded memory.
DEFAULT_MAX_PIXELS = 1_000_000_000

# We enforce our own pixel limit before decoding; Pillow's would refuse the
# enormous but legitimate designs outright.
Image.MAX_IMAGE_PIXELS = None


class UnreadableImage(ValueError):
    """A file that is not a usable image; the message is the user-facing reason."""


@dataclass(frozen=True)
class Decoded:
    """An analysis-size RGB picture plus the original's oriented dimensions.

    `full` is the oriented RGB picture as decoded, before it was shrunk (only
    when the caller asked for it): region crops come from it without a second
    decode, which for a PNG would inflate the whole file again.
    """

    image: Image.Image
    width: int
    height: int
    full: Image.Image | None = None

    @property
    def array(self) -> np.ndarray:
        return np.asarray(self.image)


def open_image(data: bytes) -> Image.Image:
    """Read the header only (format and declared size); no pixels are decoded yet."""
    try:
        return Image.open(io.BytesIO(data))
    except Exception as exc:  # Pillow raises many types for "not an image"
        raise UnreadableImage("not an image file (unrecognised format)") from exc


def image_mimetype(path) -> str | None:
    """The MIME type of the format the file's own header declares, None if not an image."""
    try:
        with open(path, "rb") as stream, open_image(stream.read(64 * 1024)) as image:
            return Image.MIME.get(image.format)
    except (OSError, UnreadableImage):
        return None


def analysis_scale(width: int, height: int, side: int = ANALYSIS_SIDE) -> float:
    """Original pixels per analysis-picture pixel, for mapping boxes back."""
    longest = max(width, height)
    return longest / min(longest, side)


def decode(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, side: int = ANALYSIS_SIDE,
           keep_full: bool = False, jpeg_max_pixels: int | None = None, gpu_jpeg=None) -> Decoded:
    """Decode image bytes into the shared analysis picture or raise UnreadableImage.

    `jpeg_max_pixels` lets a JPEG be larger than `max_pixels`: it is decoded at
    reduced size, so its memory does not grow with its declared size.
    `gpu_jpeg`: a GpuJpegDecoder (engine/images/gpu_jpeg.py) that takes the RGB and
    grey JPEGs it can; a picture decoded there has no `full` (region crops decode again).
    """
    if not data:
        raise UnreadableImage("empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _decode(data, max_pixels, side, keep_full, jpeg_max_pixels or max_pixels, gpu_jpeg)
    except UnreadableImage:
        raise
    except (OSError, ValueError, SyntaxError, EOFError, struct.error) as exc:
        raise UnreadableImage(f"cannot decode image: {exc}") from exc
    except MemoryError as exc:
        raise UnreadableImage("image too large to decode in memory") from exc


def _decode(data: bytes, max_pixels: int, side: int, keep_full: bool, jpeg_max_pixels: int,
            gpu_jpeg) -> Decoded:
    image = open_image(data)
    width, height = image.size
    if image.format == "JPEG":
        max_pixels = jpeg_max_pixels
    if width * height > max_pixels:
        raise UnreadableImage(
            f"image is {width}x{height} = {width * height / 1e6:.0f} MP, over the "
            f"{max_pixels / 1e6:.0f} MP limit (decompression-bomb guard)"
        )
    orientation = _exif_orientation(image)
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    if gpu_jpeg is not None and image.format == "JPEG" and image.mode in ("RGB", "L"):
        pixels = gpu_jpeg.picture(data, image.width, image.height)
        if pixels is not None:
            small = _apply_orientation(Image.fromarray(pixels, "RGB"), orientation)
            return Decoded(image=small, width=width, height=height)
    image = _load_reduced(image, data, side)
    image = _to_rgb_on_white(image)
    image = _apply_orientation(image, orientation)
    full = image if keep_full else None
    if keep_full and max(image.size) > side:
        image = image.copy()  # thumbnail() works in place; `full` stays as decoded
    image.thumbnail((side, side), Image.Resampling.LANCZOS, reducing_gap=3.0)
    return Decoded(image=image, width=width, height=height, full=full)


def _exif_orientation(image: Image.Image) -> int:
    if image.format == "PNG" and "exif" not in image.info:
        return 1  # Pillow's PNG getexif() would decode the whole image to look further
    try:
        return int(image.getexif().get(0x0112, 1))
    except Exception:  # a broken EXIF block must not cost the image
        return 1


_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _apply_orientation(image: Image.Image, orientation: int) -> Image.Image:
    method = _TRANSPOSE.get(orientation)
    return image.transpose(method) if method is not None else image


def _load_reduced(image: Image.Image, data: bytes, side: int) -> Image.Image:
    """Decode only as many pixels as the analysis size needs."""
    if image.format == "JPEG":
        image.draft(image.mode if image.mode in ("RGB", "L") else None, (side, side))
    elif image.format == "PNG" and image.width * image.height > STREAM_PIXELS:
        factor = max(1, max(image.size) // (2 * side))
        try:
            return bigpng.decode_reduced(io.BytesIO(data), factor)
        except bigpng.UnsupportedPng:
            pass  # e.g. 16-bit or interlaced: decode whole, still under the pixel limit
    image.seek(0)  # animated files: the first frame is the design
    image.load()
    return image


def _to_rgb_on_white(image: Image.Image) -> Image.Image:
    """Convert any mode to RGB, flattening transparency onto white."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # Pillow clips 16-bit values when converting to L; scale them instead.
        values = np.asarray(image, dtype=np.uint32)
        peak = 65535 if values.max() > 255 else 255
        image = Image.fromarray((values * 255 // peak).astype(np.uint8), "L")
    if image.mode == "P" and isinstance(image.info.get("transparency"), int):
        # One transparent palette entry (GIF, most palette PNGs): painting that entry white
        # flattens the picture without an RGBA copy, a white canvas and a composite of its
        # full size (a 24 MP GIF: 100 MB instead of 460).
        image = _palette_on_white(image)
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def _palette_on_white(image: Image.Image) -> Image.Image:
    palette = bytearray(image.getpalette("RGB") or b"")
    index = image.info["transparency"]
    if 3 * index + 3 > len(palette):
        palette.extend(b"\0" * (3 * index + 3 - len(palette)))
    palette[3 * index:3 * index + 3] = b"\xff\xff\xff"
    flat = image.copy() if image.readonly else image
    flat.putpalette(bytes(palette), "RGB")
    flat.info.pop("transparency", None)
    return flat.convert("RGB")
