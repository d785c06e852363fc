"""Which device the networks run on: `auto` (a CUDA GPU when torch sees one), `cpu` or `cuda`."""
from __future__ import annotations

import os
import shutil

CHOICES = ("auto", "cpu", "cuda")


class DeviceUnavailable(RuntimeError):
    """`cuda` was asked for where torch sees no GPU; the message says what torch sees."""


def resolve(requested: str = "auto") -> str:
    """'cpu' or 'cuda' for `requested`.

    `auto` looks for an NVIDIA driver before importing torch: on a machine without
    one the answer must not cost torch's import (seconds), which an unchanged
    re-scan would otherwise pay for nothing."""
    requested = (requested or "auto").lower()
    if requested not in CHOICES:
        raise ValueError(f"device must be one of {', '.join(CHOICES)}, not {requested!r}")
    if requested == "cpu" or (requested == "auto" and not _nvidia_driver_present()):
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if requested == "cuda":
        build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "a CPU-only build"
        raise DeviceUnavailable(f"--device cuda: torch {torch.__version__} ({build}) sees no CUDA device "
                                f"(torch.cuda.device_count() = {torch.cuda.device_count()})")
    return "cpu"


def describe(device: str) -> str:
    """The device as a user reads it: 'cpu', or 'cuda (NVIDIA H200)'."""
    if device == "cpu":
        return "cpu"
    import torch

    return f"{device} ({torch.cuda.get_device_name()})"


def _nvidia_driver_present() -> bool:
    return os.path.exists("/proc/driver/nvidia/version") or shutil.which("nvidia-smi") is not None
