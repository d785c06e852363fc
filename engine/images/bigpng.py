"""Decode an enormous 8-bit PNG strip by strip into a reduced image.

Pillow decodes a PNG into one full-size buffer: a 20,990 x 29,700 RGBA design
(openclipart ships two) needs 2.5 GB before it can be shrunk.  Here the
compressed stream is inflated a strip of rows at a time and its row filters
undone, each strip starting from the previous strip's last row (the filters of
a row refer to the one above).  Each strip is box-reduced before the next one
is read, so memory stays at a few strips whatever the image size.  A 169 MP
design: 1.2 s (5.7 s when Pillow undid every filter on strips it re-inflated).
"""
from __future__ import annotations

import io
import struct
import zlib
from typing import BinaryIO, Iterator

import numpy as np
from PIL import Image
# zlib-ng inflates these mostly-empty designs 5x faster than the standard zlib
# (a 1.6 MB stream into 674 MB of rows: 0.15 vs 0.74 s) and sums Adler-32 with SIMD.
from zlib_ng import zlib_ng

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
MODES = {0: "L", 2: "RGB", 3: "P", 4: "LA", 6: "RGBA"}
# Rows inflated at a time: small enough that a strip's several passes stay in the CPU cache.
STRIP_BYTES = 512_000


class UnsupportedPng(ValueError):
    """The file is not a PNG this strip decoder handles (it falls back)."""


def _chunks(stream: BinaryIO) -> Iterator[tuple[bytes, bytes]]:
    if stream.read(8) != PNG_SIGNATURE:
        raise UnsupportedPng("not a PNG")
    while True:
        head = stream.read(8)
        if len(head) < 8:
            raise ValueError("truncated PNG: no IEND chunk")
        length, kind = struct.unpack(">I4s", head)
        body = stream.read(length)
        stream.read(4)  # CRC: Pillow checks the strips we build; a bad stream fails in zlib
        if len(body) < length:
            raise ValueError("truncated PNG chunk")
        yield kind, body
        if kind == b"IEND":
            return


def _png(header: bytes, extra: list[tuple[bytes, bytes]], stored: bytes) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    parts = [PNG_SIGNATURE, chunk(b"IHDR", header)]
    parts += [chunk(kind, body) for kind, body in extra]
    parts += [chunk(b"IDAT", stored), chunk(b"IEND", b"")]
    return b"".join(parts)


def _stored_zlib(pieces) -> bytes:
    """`pieces` joined as a zlib stream of stored (uncompressed) blocks.

    What zlib.compress(data, 0) makes, without first joining the pieces into
    one more copy of a strip (a 168 MP design is 674 MB of rows)."""
    out = [b"\x78\x01"]
    adler = 1
    flat = [memoryview(p).cast("B") for p in pieces]  # bytes or C-contiguous uint8 arrays
    blocks = [p[i: i + 65535] for p in flat for i in range(0, len(p), 65535)]
    for i, block in enumerate(blocks):
        out += [struct.pack("<BHH", i == len(blocks) - 1, len(block), len(block) ^ 0xFFFF), block]
        adler = zlib_ng.adler32(block, adler)
    out.append(struct.pack(">I", adler))
    return b"".join(out)


def decode_reduced(stream: BinaryIO, factor: int) -> Image.Image:
    """Decode an 8-bit, non-interlaced PNG reduced `factor` times on each side."""
    chunks = _chunks(stream)
    kind, ihdr = next(chunks)
    if kind != b"IHDR":
        raise ValueError("PNG without IHDR")
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", ihdr)
    if depth != 8 or interlace or colour not in CHANNELS:
        raise UnsupportedPng("only 8-bit non-interlaced PNGs are streamed")
    row_bytes = width * CHANNELS[colour]
    strip_rows = factor * max(1, STRIP_BYTES // (row_bytes * factor))
    strip_bytes = strip_rows * (row_bytes + 1)
    extra: list[tuple[bytes, bytes]] = []
    inflater = zlib_ng.decompressobj()
    pending = bytearray()
    previous_row = np.zeros(row_bytes, np.uint8)
    reduced_strips: list[Image.Image] = []
    rows_done = 0

    def flush(rows: int) -> None:
        nonlocal previous_row, rows_done
        take = rows * (row_bytes + 1)
        filtered = np.frombuffer(pending, np.uint8, take).reshape(rows, row_bytes + 1)
        pixels = _unfilter(filtered, previous_row, colour)
        del filtered  # a view into `pending`, which cannot shrink while one is held
        del pending[:take]
        previous_row = pixels[-1].copy()
        if extra:  # a palette or a transparent key colour: let Pillow's PNG reader apply it
            header = struct.pack(">IIBBBBB", width, rows + 1, 8, colour, 0, 0, 0)
            unfiltered = np.zeros((rows + 1, row_bytes + 1), np.uint8)
            unfiltered[:, 1:] = pixels
            strip = Image.open(io.BytesIO(_png(header, extra, _stored_zlib((unfiltered,)))))
            strip.load()
        else:
            mode = MODES[colour]
            strip = Image.frombuffer(mode, (width, rows + 1), pixels, "raw", mode, 0, 1)
        if strip.mode == "P":
            strip = strip.convert("RGBA")
        reduced_strips.append(_reduce(strip, pixels, factor))
        rows_done += rows

    for kind, body in chunks:
        if kind in (b"PLTE", b"tRNS"):
            extra.append((kind, body))
        elif kind == b"IDAT":
            compressed = body
            while compressed:  # inflate piecewise: one IDAT may hold the whole image
                pending += inflater.decompress(compressed, strip_bytes)
                compressed = inflater.unconsumed_tail
                while len(pending) >= strip_bytes and rows_done + strip_rows < height:
                    flush(strip_rows)
    pending += inflater.flush()
    if len(pending) < (height - rows_done) * (row_bytes + 1):
        raise ValueError("truncated PNG: image data ends early")
    flush(height - rows_done)
    return _stack(reduced_strips)


def _unfilter(filtered: np.ndarray, previous: np.ndarray, colour: int) -> np.ndarray:
    """Undo the PNG filters of `filtered` (rows x (1 + row bytes)); row 0 of the result is `previous`.

    None, Sub and Up rows (most of a design's) are undone here with NumPy, 20-30x faster
    than Pillow's byte-at-a-time loops; Average and Paeth depend on the pixel just undone
    to their left, so runs of those rows go to Pillow's row decoder."""
    rows, row_bytes = filtered.shape[0], filtered.shape[1] - 1
    pixel_bytes = CHANNELS[colour]
    out = np.empty((rows + 1, row_bytes), np.uint8)
    out[0] = previous
    kinds = filtered[:, 0]
    if kinds.max(initial=0) > 4:
        raise ValueError("corrupt PNG: unknown row filter")
    y = 0
    while y < rows:
        kind, line = kinds[y], filtered[y, 1:]
        if kind == 0:
            out[y + 1] = line
        elif kind == 1:  # Sub: each byte adds the byte one pixel to its left (mod 256)
            np.cumsum(line.reshape(-1, pixel_bytes), axis=0, dtype=np.uint8, out=out[y + 1].reshape(-1, pixel_bytes))
        elif kind == 2:  # Up: each byte adds the byte above it
            np.add(line, out[y], out=out[y + 1])
        else:
            end = y + 1
            while end < rows and kinds[end] >= 3:
                end += 1
            out[y + 1: end + 1] = _pillow_unfilter(filtered[y:end], out[y], colour)
            y = end
            continue
        y += 1
    return out


def _pillow_unfilter(filtered: np.ndarray, previous: np.ndarray, colour: int) -> np.ndarray:
    """Rows undone by Pillow's PNG row decoder, `previous` stored unfiltered above them."""
    rows, row_bytes = filtered.shape[0], filtered.shape[1] - 1
    mode = MODES[colour]
    width = row_bytes // CHANNELS[colour]
    stored = _stored_zlib((b"\x00", previous, filtered))
    strip = Image.frombytes(mode, (width, rows + 1), stored, "zip", mode)
    return np.asarray(strip).reshape(rows + 1, row_bytes)[1:]


def _reduce(strip: Image.Image, pixels: np.ndarray, factor: int) -> Image.Image:
    """The strip's own rows (row 0 is the previous strip's last) reduced `factor` times."""
    box = (0, 1, strip.width, strip.height)
    if factor == 1:
        return strip.crop(box)
    if strip.mode == "RGBA":
        # Pillow premultiplies RGBA by its alpha before reducing, a pass over the whole strip
        # that changes nothing where the strip is all opaque or all clear (most strips of a
        # design: a 169 MP one has 653 such strips of 1,000).
        low, high = strip.getchannel("A").getextrema()
        if high == 0:
            return Image.new("RGBA", (-(-strip.width // factor), -(-(strip.height - 1) // factor)))
        if low == 255:
            opaque = Image.frombuffer("RGBa", strip.size, pixels, "raw", "RGBa", 0, 1)
            return opaque.reduce(factor, box).convert("RGBA")
    return strip.reduce(factor, box)


def _stack(strips: list[Image.Image]) -> Image.Image:
    width = strips[0].width
    out = Image.new(strips[0].mode, (width, sum(s.height for s in strips)))
    top = 0
    for strip in strips:
        out.paste(strip, (0, top))
        top += strip.height
    return out
