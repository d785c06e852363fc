"""Networks made ready to run, kept between starts.

Making a network ready costs seconds at every start: importing its library,
building the architecture from the weights file, and for int8 quantizing it
(ResNet50's static int8 also observes its activations on calibration designs).
What comes out is a TorchScript module, which loads again in a tenth of a
second.  So it is saved once, keyed by everything that shapes it (weights hash,
precision and how it was made, preprocessing, torch version, machine), and
loaded at later starts.

Kept under the cache folder, not beside the weights: a models folder may be
shared or read-only, and a TorchScript archive carries code.  Only an archive
this install wrote is loaded: its bytes must carry the signature made with a
key that never leaves the cache folder, and once loaded it must give, on a
probe picture, the vector it gave when it was saved.  Anything else is
removed and the network is made ready again from its weights.
"""
from __future__ import annotations

import functools
import hashlib
import hmac
import json
import logging
import os
import secrets
from pathlib import Path
from typing import Callable

import numpy as np

from features import torchscript
from features.base import to_batch
from features.files import atomic_write
from features.weights import file_sha256
from features.precision import INT8, Choice

log = logging.getLogger(__name__)

KEY_FILE = "signing.key"
VERSION = "ready-v1"
PROBE_COSINE = 0.999


@functools.lru_cache(maxsize=1)
def probe_picture():
    """A fixed picture with colour, edges and text-like detail, the same at every start."""
    from PIL import Image, ImageDraw

    picture = Image.new("RGB", (224, 224), "white")
    draw = ImageDraw.Draw(picture)
    for i in range(8):
        draw.rectangle((10 + 12 * i, 20 + 9 * i, 120 + 10 * i, 60 + 14 * i), outline=(30 * i, 200 - 20 * i, 90), width=3)
    draw.ellipse((120, 110, 210, 200), fill=(200, 40, 60))
    draw.polygon(((20, 210), (90, 130), (110, 215)), fill=(20, 60, 160))
    return picture


class ReadyNetworks:
    """A folder of ready-to-run TorchScript networks, each signed by this install."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def load(self, name: str, key: str, probe: Callable[[object], np.ndarray]):
        """The module saved for `key`, or None (none saved, or refused and removed).

        `probe(module)`: the module's vector for the probe picture."""
        archive, record = self._paths(name, key)
        if not archive.is_file() or not record.is_file():
            return None
        try:
            module = self._verified(archive, record, key, probe)
        except Exception as exc:  # any fault in a kept file: make the network again from its weights
            log.warning("%s: the kept ready network %s is refused (%s); building it again", name, archive.name, exc)
            _remove(archive, record)
            return None
        log.info("%s: loaded ready from %s", name, archive.name)
        return module

    def save(self, name: str, key: str, module, probe: Callable[[object], np.ndarray], expected: np.ndarray) -> None:
        """Keep `module` for `key`, if it gives `expected` (the built model's probe vector).
        A folder that cannot be written only costs the next start its time."""
        import torch

        cosine = _cosine(probe(module), expected)
        if cosine < PROBE_COSINE:
            log.warning("%s: its TorchScript form differs from the model (cosine %.4f); not kept", name, cosine)
            return
        archive, record = self._paths(name, key)
        try:
            with torchscript.one_at_a_time():
                atomic_write(archive, lambda out: torch.jit.save(module, out), private=True)
            entry = {"key": key, "signature": self._sign(archive), "probe": [float(x) for x in expected]}
            atomic_write(record, json.dumps(entry), private=True)
            # One kept form per network: those for earlier weights, or another torch, go.
            _remove(*(path for path in self.folder.glob(f"{name}-*") if path not in (archive, record)))
        except Exception as exc:
            log.warning("%s: could not keep the ready network in %s (%s)", name, self.folder, exc)
            _remove(archive, record)

    def _verified(self, archive: Path, record: Path, key: str, probe: Callable[[object], np.ndarray]):
        import torch

        entry = json.loads(record.read_text())
        if entry.get("key") != key:
            raise ValueError("it was made for other weights or another torch")
        if not hmac.compare_digest(str(entry.get("signature", "")), self._sign(archive)):
            raise ValueError("its signature does not match: this install did not write it")
        with torchscript.one_at_a_time():
            module = torch.jit.load(str(archive), map_location="cpu")
        cosine = _cosine(probe(module), entry["probe"])
        if cosine < PROBE_COSINE:
            raise ValueError(f"it no longer gives its probe vector (cosine {cosine:.4f})")
        return module

    def _paths(self, name: str, key: str) -> tuple[Path, Path]:
        stem = f"{name}-{hashlib.sha256(f'{VERSION}:{key}'.encode()).hexdigest()[:20]}"
        return self.folder / f"{stem}.pt", self.folder / f"{stem}.json"

    def _sign(self, archive: Path) -> str:
        # Hashed again at every load (no memo): the bytes are what is vouched for.
        return hmac.new(self._key(), bytes.fromhex(file_sha256(archive)), hashlib.sha256).hexdigest()

    def _key(self) -> bytes:
        path = self.folder / KEY_FILE
        try:
            key = path.read_bytes()
            if len(key) == 32:
                return key
        except OSError:
            pass
        key = secrets.token_bytes(32)
        atomic_write(path, key, private=True)
        if os.name != "nt":
            os.chmod(self.folder, 0o700)
        return key


class KeptBetweenStarts:
    """Loading a network extractor (features/network.py) through a ReadyNetworks folder:
    what was kept is loaded, else the model is built and kept for the next start.

    Expects of the class it is mixed into: `name`, `mean`, `std`, `preprocess`, `_ready`,
    `_choice`, and the hooks `_known_choice`, `_load_built`, `_memo_key`, `_int8_tag`,
    `_forward` (features/precision.py and features/network.py).
    """

    def _load(self):
        """The model ready to run: kept from an earlier start where it can be, else built."""
        choice = self._known_choice() if self._ready is not None else None
        if choice is not None:
            kept = self._ready.load(self.name, self._ready_key(choice), self._probe)
            if kept is not None:
                self._choice = choice
                return kept
        model = self._load_built()
        if self._ready is not None:
            self._ready.save(self.name, self._ready_key(self._choice), self._scripted(model), self._probe,
                             expected=self._probe(model))
        return model

    def _ready_key(self, choice: Choice) -> str:
        how = self._int8_tag() if choice.precision == INT8 else choice.precision
        return f"{self._memo_key}:{self.preprocess}:{how}"

    def _probe(self, model) -> np.ndarray:
        """The model's vector for the fixed probe picture."""
        import torch

        with torch.inference_mode():
            return self._forward(model, to_batch([probe_picture()], self.mean, self.std)).float().numpy()[0]

    def _scripted(self, model):
        """The model as TorchScript, to be saved: traced on the probe picture unless it is already."""
        import torch

        if isinstance(model, torch.jit.ScriptModule):
            return model
        batch = to_batch([probe_picture()], self.mean, self.std)
        with torch.inference_mode(), torchscript.one_at_a_time():
            return torch.jit.freeze(torch.jit.trace(model, batch, check_trace=False).eval())


def _cosine(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32)
    if a.shape != b.shape:
        return -1.0
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))


def _remove(*paths: Path) -> None:
    for path in paths:
        try:
            path.unlink(missing_ok=True)
        except OSError:
            pass  # a folder that cannot be written: nothing was kept in it either
