"""The shared loader: every kind of design file becomes the same RGB picture."""
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from engine.images import bigpng
from engine.images.decode import ANALYSIS_SIDE, UnreadableImage, decode
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


def _png_with_filters(pixels: np.ndarray, colour: int, kinds: list[int]) -> bytes:
    """A PNG whose row i is stored with filter kinds[i % len(kinds)] (an encoder picks its own)."""
    height = pixels.shape[0]
    pixel_bytes = pixels.shape[2] if pixels.ndim == 3 else 1
    rows = pixels.reshape(height, -1).astype(np.int32)
    body = bytearray()
    for y in range(height):
        row, up = rows[y], rows[y - 1] if y else np.zeros_like(rows[0])
        left = np.concatenate([np.zeros(pixel_bytes, np.int32), row[:-pixel_bytes]])
        up_left = np.concatenate([np.zeros(pixel_bytes, np.int32), up[:-pixel_bytes]])
        guess = left + up - up_left
        paeth = np.where((abs(guess - left) <= abs(guess - up)) & (abs(guess - left) <= abs(guess - up_left)), left,
                         np.where(abs(guess - up) <= abs(guess - up_left), up, up_left))
        kind = kinds[y % len(kinds)]
        predicted = [0, left, up, (left + up) // 2, paeth][kind]
        body += bytes([kind]) + ((row - predicted) % 256).astype(np.uint8).tobytes()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", pixels.shape[1], height, 8, colour, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(body)))
            + chunk(b"IEND", b""))


@pytest.mark.parametrize("factor", [1, 3])
@pytest.mark.parametrize("mode, colour", [("RGBA", 6), ("RGB", 2), ("LA", 4), ("L", 0)])
def test_strip_decoder_undoes_every_row_filter(mode, colour, factor, monkeypatch):
    monkeypatch.setattr(bigpng, "STRIP_BYTES", 4096)  # many strips, so runs of rows cross them
    rng = np.random.default_rng(1)
    rgba = rng.integers(0, 256, (150, 61, 4), dtype=np.uint8)
    rgba[:40, :, 3] = 0  # a clear band and an opaque one, as around and inside a design
    rgba[40:80, :, 3] = 255
    pixels = np.asarray(Image.fromarray(rgba, "RGBA").convert(mode))
    # Every filter, alone and in runs (Average and Paeth rows are undone together).
    data = _png_with_filters(pixels, colour, [0, 1, 2, 3, 4, 4, 3, 2, 2, 1, 3, 3, 0])
    full = Image.open(io.BytesIO(data))
    assert np.array_equal(np.asarray(full), pixels)  # the test's own encoder is right
    streamed = bigpng.decode_reduced(io.BytesIO(data), factor)
    expected = full.reduce(factor) if factor > 1 else full
    assert streamed.mode == expected.mode
    assert np.array_equal(np.asarray(streamed), np.asarray(expected))


def test_strip_decoder_refuses_an_unknown_row_filter():
    data = _png_with_filters(np.zeros((4, 5, 3), np.uint8), 2, [0])
    rows = b"\x07" + bytes(15) + (b"\x00" + bytes(15)) * 3  # filter kinds end at 4
    with pytest.raises(ValueError, match="filter"):
        bigpng.decode_reduced(io.BytesIO(_replace_idat(data, zlib.compress(rows))), 1)


def _replace_idat(png: bytes, body: bytes) -> bytes:
    start = png.index(b"IDAT") - 4
    end = start + 12 + struct.unpack(">I", png[start:start + 4])[0]
    chunk = struct.pack(">I", len(body)) + b"IDAT" + body + struct.pack(">I", zlib.crc32(b"IDAT" + body))
    return png[:start] + chunk + png[end:]


def test_strip_decoder_reports_truncation():
    data = encode(make_design(4).resize((600, 600)))
    with pytest.raises(ValueError):
        bigpng.decode_reduced(io.BytesIO(data[: len(data) // 2]), 2)
