"""The collection's files as the page serves them: images, their previews, uploads."""
from __future__ import annotations

import logging
from concurrent.futures import Executor
from pathlib import Path
from typing import Callable

from PIL import Image

from engine.config import Config
from engine.images.decode import UnreadableImage, decode
from engine.images.scan import served_image
from engine.images.thumbs import restore_thumb
from engine.images.uploads import Added, add_to_collection
from engine.index.snapshot import Snapshot

log = logging.getLogger(__name__)


class CollectionFiles:
    def __init__(self, config: Config, snapshot: Callable[[], Snapshot], decoder: Executor) -> None:
        """`decoder`: the engine's pool for decoding on a bounded number of threads."""
        self.config = config
        self._snapshot = snapshot
        self._decoder = decoder

    def image_file(self, relative: str) -> tuple[Path, str] | None:
        """A collection image and its MIME type; None for anything else (never outside it)."""
        return served_image(self.config.images, relative)

    def thumbnail(self, relative: str) -> Path | None:
        """The preview file of an indexed design, made again if it went missing from the
        cache; None when the design is not indexed or its file no longer holds those bytes."""
        snap = self._snapshot()
        row = snap.row_of.get(relative)
        if row is None:
            return None
        entry = snap.data.entries[row]

        def decode_preview(data: bytes) -> Image.Image:
            return self._decoder.submit(decode, data, max_pixels=self.config.index_max_pixels).result().image

        try:
            return restore_thumb(self.config.images, self.config.thumbs_dir, entry.path, entry.sha256, decode_preview)
        except (OSError, UnreadableImage) as exc:
            log.warning("No preview for %s: %s", relative, exc)
            return None

    def add_design(self, name: str, data: bytes) -> Added:
        """Save an uploaded design into the collection (reindex to make it searchable)."""
        return add_to_collection(self.config.images, name, data, self.config.upload_max_pixels)
