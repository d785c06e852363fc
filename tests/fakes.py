"""A cheap stand-in network for logic tests: counts what it is asked to embed."""
from __future__ import annotations

import threading

import numpy as np
from PIL import Image

from features.base import l2_normalize, letterbox


class CountingExtractor:
    """Pretends to be the ResNet feature: a 16x16 grey thumbnail, centred, as the vector."""

    dim = 256

    def __init__(self, name: str = "resnet", version: str = "v1", fail_after: int | None = None,
                 gate: threading.Event | None = None) -> None:
        self.name = name
        self.version = version
        self.embedded = 0
        self.fail_after = fail_after
        self.gate = gate  # when set, embed() waits for it: lets a test hold a reindex open
        self.arrived = threading.Event()  # set once embed() has been entered

    def fingerprint(self) -> str:
        return f"fake-{self.name}-{self.version}"

    def embed(self, images: list[Image.Image]) -> np.ndarray:
        self.arrived.set()
        if self.gate is not None:
            assert self.gate.wait(timeout=300), "test never released the gate"
        if self.fail_after is not None and self.embedded + len(images) > self.fail_after:
            raise RuntimeError("simulated crash in the middle of indexing")
        self.embedded += len(images)
        rows = [np.asarray(letterbox(im, 16).convert("L"), dtype=np.float32).ravel() for im in images]
        rows = [r - r.mean() for r in rows]
        return l2_normalize(np.stack(rows))


def square_or_exit(item: str):
    """For a worker process: ends the process on "poison" (as a decoder crash would), else answers."""
    import os

    if item == "poison":
        os._exit(3)
    return ("done", item)
