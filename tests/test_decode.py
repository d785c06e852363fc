"""The shared loader: every kind of design file becomes the same RGB picture."""
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from engine import bigpng
from engine.decode import ANALYSIS_SIDE, UnreadableImage, decode
from conftest import encode, make_design


def test_transparent_design_matches_its_flattened_copy():
    design = make_design(1)
    from_png = decode(encode(design)).array.astype(int)
    from_jpeg = decode(encode(design, "JPEG", quality=95)).array.astype(int)
    assert np.abs(from_png - from_jpeg).mean() < 3  # transparent pixels became white, like the copy
    assert from_png[0, 0].tolist() == [255, 255, 255]


def test_large_image_is_reduced_to_analysis_size_and_keeps_original_dimensions():
    big = Image.new("RGB", (4000, 3000), "navy")
    decoded = decode(encode(big, "JPEG"))
    assert max(decoded.image.size) == ANALYSIS_SIDE
    assert (decoded.width, decoded.height) == (4000, 3000)


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (200, 100), "white")
    image.paste((255, 0, 0), (0, 0, 50, 100))  # red on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: viewers turn it 90 degrees clockwise
    data = encode(image, "JPEG", exif=exif.tobytes())
    decoded = decode(data)
    assert (decoded.width, decoded.height) == (100, 200)
    top = decoded.array[:20].reshape(-1, 3).mean(axis=0)
    assert top[0] > 200 and top[1] < 80  # the red band is now on top


@pytest.mark.parametrize("mode", ["P", "L", "CMYK", "I;16", "LA", "1"])
def test_every_pixel_mode_becomes_rgb(mode):
    source = make_design(2).convert("RGB")
    if mode == "I;16":
        grey = np.asarray(source.convert("L"), dtype=np.uint16) * 257
        image = Image.frombytes("I;16", source.size, grey.astype("<u2").tobytes())
        fmt = "PNG"
    else:
        image = source.convert(mode)
        fmt = "JPEG" if mode == "CMYK" else "PNG"
    decoded = decode(encode(image, fmt))
    assert decoded.image.mode == "RGB"
    assert decoded.array.mean() > 20  # not black: 16-bit values were scaled, not clipped


def test_palette_transparency_goes_white():
    image = Image.new("P", (64, 64), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.paste(1, (16, 16, 48, 48))
    image.info["transparency"] = 0
    arr = decode(encode(image, transparency=0)).array
    assert arr[0, 0].tolist() == [255, 255, 255]
    assert arr[32, 32].tolist() == [255, 0, 0]


def test_animated_gif_uses_first_frame():
    frames = [Image.new("RGB", (50, 50), c) for c in ("red", "blue")]
    out = io.BytesIO()
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:])
    assert decode(out.getvalue()).array[25, 25].tolist()[0] > 200


@pytest.mark.parametrize("data, reason", [
    (b"", "empty"),
    (b"hello, I am text named .jpg", "not an image"),
    (encode(make_design(3))[:200], "cannot decode"),
])
def test_broken_files_raise_a_clear_reason(data, reason):
    with pytest.raises(UnreadableImage, match=reason):
        decode(data)


def _bomb_png(width: int, height: int) -> bytes:
    """A few-kilobyte PNG that claims width x height pixels."""
    raw = zlib.compress(b"\x00" * (width + 1) * 64, 9)
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


def test_decompression_bomb_is_refused_before_decoding():
    with pytest.raises(UnreadableImage, match="limit"):
        decode(_bomb_png(30_000, 30_000), max_pixels=100_000_000)


@pytest.mark.parametrize("strip_bytes", [4096, bigpng.STRIP_BYTES])  # many strips; blocks of 64 KB
@pytest.mark.parametrize("mode", ["RGBA", "RGB", "L", "P"])
def test_strip_decoder_matches_a_full_decode(mode, strip_bytes, monkeypatch):
    monkeypatch.setattr(bigpng, "STRIP_BYTES", strip_bytes)
    rng = np.random.default_rng(0)
    base = np.kron(rng.integers(0, 255, (30, 25, 4), dtype=np.uint8), np.ones((9, 11, 1), dtype=np.uint8))
    image = Image.fromarray(base, "RGBA").convert(mode)
    data = encode(image)
    streamed = bigpng.decode_reduced(io.BytesIO(data), 3)
    full = Image.open(io.BytesIO(data))
    full = (full.convert("RGBA") if mode == "P" else full).reduce(3)
    assert streamed.size == full.size
    assert np.array_equal(np.asarray(streamed), np.asarray(full))


def test_strip_decoder_reports_truncation():
    data = encode(make_design(4).resize((600, 600)))
    with pytest.raises(ValueError):
        bigpng.decode_reduced(io.BytesIO(data[: len(data) // 2]), 2)
