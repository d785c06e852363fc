"""Replacing a file all at once, for every file Lookalike writes and later trusts."""
from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import BinaryIO, Callable


def atomic_write(path: Path, data: bytes | str | Callable[[BinaryIO], None], private: bool = False,
                 durable: bool = True) -> None:
    """Replace `path` with `data` (bytes, text, or a function writing to a binary file).

    The bytes go to a temporary file beside it, named uniquely per call so two
    writers never share one, which is fsynced and renamed over `path`; then the
    folder is fsynced.  A reader, or the file after a crash, is the old file or
    the new one, never half of one.  `private`: readable by its owner only, from
    the first byte on.  `durable=False` skips both fsyncs: a reader still never
    sees half a file, but after a power cut the file may be empty.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o644)
    try:
        with os.fdopen(fd, "wb") as out:
            if callable(data):
                data(out)
            else:
                out.write(data.encode() if isinstance(data, str) else data)
            out.flush()
            if durable:
                os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if private:
        os.chmod(path, 0o600)
    if durable:
        _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # Windows cannot open folders; its rename is already durable enough
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
