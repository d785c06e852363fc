#!/usr/bin/env python3
"""Would static int8 keep EfficientNet-Lite0's features?  The precision rule, run by hand.

The other networks offer int8 and adopt it where it keeps every check design's
vector within cosine 0.99 of fp32 and runs 1.1x faster (features/precision.py).
EfficientNet-Lite0's weights are fixed (one recorded file from pip), so the
outcome is the same on every install: this script measures it with the same
functions (`precision.quantize_static`, calibrated on the bundled calibration
designs, and `precision.measure` on the check designs) and prints the choice
the rule makes.

    python bench/efficientnet_int8.py
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.models.sample import calibration_sample, precision_sample  # noqa: E402
from features import efficientnet, precision  # noqa: E402
from features.base import to_batch  # noqa: E402


def main() -> None:
    import torch

    path = efficientnet.weights_file()
    if path is None:
        sys.exit(f"{efficientnet.PACKAGE} is not installed")
    checks, calibration = precision_sample(), calibration_sample()
    network = efficientnet.EfficientNetLite0Extractor(path, efficientnet.SHA256, device="cpu",
                                                      sample=lambda: checks)
    model = network._build()
    batch = to_batch(list(checks), network.mean, network.std)
    calibrate = to_batch(list(calibration), network.mean, network.std)
    print(f"{len(checks)} check designs, {len(calibration)} calibration designs, torch {torch.__version__}")
    choice = precision.measure(model, precision.quantize_static(model, calibrate), batch)
    print(f"static int8 (as ResNet50 makes it): least cosine to fp32 {choice.min_cosine:.3f} (the rule asks "
          f">= {precision.MIN_COSINE}), {choice.fp32_ms:.1f} -> {choice.int8_ms:.1f} ms per image at batch "
          f"{len(checks)}; the rule chooses {choice.precision}")

if __name__ == "__main__":
    main()
