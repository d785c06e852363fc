"""Decode an enormous 8-bit PNG strip by strip into a reduced image.

Pillow decodes a PNG into one full-size buffer: a 20,990 x 29,700 RGBA design
(openclipart ships two) needs 2.5 GB before it can be shrunk.  Here the
compressed stream is inflated a strip of rows at a time; each strip is
re-wrapped as a tiny PNG whose first row is the previous strip's last row,
stored unfiltered, so Pillow can undo the Up/Average/Paeth filters that refer
to it.  Each strip is box-reduced before the next one is read, so memory stays
at a few strips whatever the image size.
"""
from __future__ import annotations

import io
import struct
import zlib
from typing import BinaryIO, Iterator

from PIL import Image

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
    blocks = [memoryview(p)[i: i + 65535] for p in pieces for i in range(0, len(p), 65535)]
    for i, block in enumerate(blocks):
        out += [struct.pack("<BHH", i == len(blocks) - 1, len(block), len(block) ^ 0xFFFF), block]
        adler = zlib.adler32(block, adler)
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
    inflater = zlib.decompressobj()
    pending = bytearray()
    previous_row = bytes(row_bytes)
    reduced_strips: list[Image.Image] = []
    rows_done = 0

    def flush(rows: int) -> None:
        nonlocal previous_row, rows_done
        take = rows * (row_bytes + 1)
        # Row 0, unfiltered, is the previous strip's last row: the filters of row 1 refer to it.
        stored = _stored_zlib((b"\x00", previous_row, memoryview(pending)[:take]))
        del pending[:take]
        if extra:  # a palette or a transparent key colour: let Pillow's PNG reader apply it
            header = struct.pack(">IIBBBBB", width, rows + 1, 8, colour, 0, 0, 0)
            strip = Image.open(io.BytesIO(_png(header, extra, stored)))
            strip.load()
        else:  # Pillow's PNG row decoder (filters and all) on the strip, without a PNG around it
            mode = MODES[colour]
            strip = Image.frombytes(mode, (width, rows + 1), stored, "zip", mode)
        previous_row = strip.crop((0, rows, width, rows + 1)).tobytes()
        if strip.mode == "P":
            strip = strip.convert("RGBA")
        rows_of_this_strip = (0, 1, width, rows + 1)  # row 0 is the previous strip's last
        reduced_strips.append(strip.reduce(factor, rows_of_this_strip) if factor > 1
                              else strip.crop(rows_of_this_strip))
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


def _stack(strips: list[Image.Image]) -> Image.Image:
    width = strips[0].width
    out = Image.new(strips[0].mode, (width, sum(s.height for s in strips)))
    top = 0
    for strip in strips:
        out.paste(strip, (0, top))
        top += strip.height
    return out
