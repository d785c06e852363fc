"""The engine's extractors: which are on, why the others are off, and the one
thread that computes a query's features."""
from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Mapping

import numpy as np
from PIL import Image

from engine.config import Config
from engine.models.build import load_extractors
from features import registry
from features.base import Extractor
from features.network import NetworkRefused

log = logging.getLogger(__name__)


class Networks:
    """Extractors by feature name, refreshed when weights appear or change."""

    def __init__(self, config: Config, extractors: Mapping[str, Extractor] | None = None) -> None:
        self.config = config
        self._fixed = extractors is not None
        # Networks that refused their weights at their build: off until the weights change.
        self._refused: dict[str, tuple[str | None, str]] = {}  # name -> (weights digest, why)
        if extractors is None:
            self.extractors, self.missing = self._load_extractors()
            self._warn_missing({})
        else:
            self.extractors, self.missing = dict(extractors), {}
            if config.regions:
                self.extractors.update((name, registry.build(name)) for name in registry.ON_REQUEST)
        # A query's features are computed on this one thread, one query at a time: torch
        # already uses every core, and each thread that calls it gets its own OpenMP team;
        # with one per web server thread, their idle teams spinning slowed searches (p95 up
        # by a quarter on 8,121 designs).  The rest of a search stays on the caller's thread,
        # so concurrent searches still overlap there (all of it on this thread cost a third
        # of the 16-client throughput).
        self._inference = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lookalike-query")
        self.warm_up: Future | None = None  # the networks loading ahead of the first search

    @property
    def fused(self) -> tuple[str, ...]:
        """The fused features that have an extractor now, in the registry's order."""
        return tuple(n for n in registry.FUSED if n in self.extractors)

    @property
    def device(self) -> str:
        """Where the networks run ('cpu' when none is loaded)."""
        return next((getattr(e, "device", "cpu") for e in self.extractors.values() if hasattr(e, "device")), "cpu")

    @property
    def shape_network(self) -> str | None:
        """Which network provides the shape feature (ResNet50, or the bundled one)."""
        return getattr(self.extractors.get("resnet"), "description", None)

    @property
    def loading(self) -> bool:
        return self.warm_up is not None and not self.warm_up.done()

    def embed(self, image: Image.Image, names: tuple[str, ...]) -> dict[str, np.ndarray]:
        """The named features of one picture (those with an extractor), on the query thread."""
        def run() -> dict[str, np.ndarray]:
            rows = {}
            for name in names:
                try:
                    if name in self.extractors:
                        rows[name] = self.extractors[name].embed([image])[0]
                except NetworkRefused as refused:
                    self.refuse(refused)  # the query is answered by the other features
            return rows

        return self._inference.submit(run).result()

    def refuse(self, refused: NetworkRefused) -> bool:
        """Switch off the network that refused its weights while it was built; False if it
        was not on.  It stays off, and says why on the page, until its weights change."""
        extractor = self.extractors.pop(refused.feature, None)
        if extractor is None:
            return False
        why = f"{getattr(extractor, 'description', refused.feature)}: refused: {refused}"
        self._refused[refused.feature] = (getattr(extractor, "digest", None), why)
        self.missing[refused.feature] = why
        log.warning("FEATURE OFF: %s", why)
        return True

    def embed_text(self, text: str) -> np.ndarray | None:
        """CLIP's unit vector for words; None when CLIP is off."""
        clip = self.extractors.get("clip")
        if clip is None:
            return None
        return self._inference.submit(clip.embed_text, [text]).result()[0]

    def warm(self) -> Future:
        """Load the networks now, in the background, on the thread that runs queries.

        They load on first use, and the first use is costly: building both and making
        their int8 copies made the first search after a start take 16 s here (the next
        one 0.2 s).  The web app starts this at once, so the first designer to drop an
        image does not wait for it; a search that comes sooner waits for the same load.
        """
        extractors = dict(self.extractors)
        blank = Image.new("RGB", (64, 64), "white")
        future = self._inference.submit(lambda: [extractor.embed([blank]) for extractor in extractors.values()])
        future.add_done_callback(_report_failed_warm_up)
        self.warm_up = future
        return future

    def refresh(self) -> None:
        """Pick up weights that appeared since start-up, keeping models already loaded."""
        if self._fixed:
            return
        fresh, missing = self._load_extractors()
        before, self.missing = self.missing, missing
        self._warn_missing(before)
        for name, extractor in fresh.items():
            current = self.extractors.get(name)
            if current is None or current.fingerprint() != extractor.fingerprint():
                self.extractors[name] = extractor

    def close(self, timeout: float) -> None:
        if self.warm_up is not None:
            wait([self.warm_up], timeout)
        self._inference.shutdown(wait=True, cancel_futures=True)

    def _load_extractors(self):
        config = self.config
        extractors, missing = load_extractors(config.models_dir, config.batch_size, config.regions, config.device,
                                              ready_dir=config.ready_networks_dir)
        for name, (digest, why) in self._refused.items():
            if name in extractors and getattr(extractors[name], "digest", None) == digest:
                del extractors[name]
                missing[name] = why
        return extractors, missing

    def _warn_missing(self, before: Mapping[str, str]) -> None:
        for name, reason in self.missing.items():
            if name not in before:
                log.warning("FEATURE OFF: %s", reason)
        for name in set(before) - set(self.missing):
            log.warning("FEATURE ON: %s weights found; its vectors will be extracted", name)


def _report_failed_warm_up(future: Future) -> None:
    # Nothing waits on the warm-up: say why it failed here; a search then retries the load.
    if future.exception() is not None:
        log.warning("Loading the networks ahead of the first search failed: %s", future.exception())
