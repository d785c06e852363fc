#!/usr/bin/env python3
"""Indexing on each device the machine has: the networks alone, the decode bound, the pipeline.

Random weights in the real formats stand in for CLIP and ResNet50 (the compute is
the same).  For every device (the GPU when torch sees one, and the CPU unless
--gpu-only), in one run:

- start-up: building both networks and choosing their precision (fp16 on a GPU,
  int8 on a CPU, each only where it keeps the features), then the first batch;
- networks alone: images per second through both networks on ready inputs;
- decode bound: the indexing workers alone (read, decode, colour, local features,
  regions, previews, letterboxing), no networks: the most the pipeline can do;
- pipeline: `image.py index`'s Indexer on the designs, networks included;
- the pipeline against min(networks alone, decode bound).

    python bench/device_speed.py --designs DIR [--count 400] [--gpu-only]
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def random_weights(folder: Path) -> Path:
    """A models folder holding random-weight files in the real formats, imported as a user would."""
    import open_clip
    import torch
    import torchvision
    from safetensors.torch import save_file

    from engine import models

    torch.manual_seed(0)
    clip = open_clip.create_model("ViT-B-32-quickgelu", pretrained=None)
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, str(folder / "clip.safetensors"))
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), folder / "resnet.pth")
    target = folder / "models"
    for name in ("clip.safetensors", "resnet.pth"):
        models.import_file(target, folder / name)
    return target


def measure(device: str, designs: list[Path], models_dir: Path, work: Path) -> dict:

    from engine import models
    from engine.config import Config
    from engine.images.decode import decode
    from engine.index.pipeline import Indexer
    from engine.index.store import IndexData
    from features.base import INPUT_SIDE, letterbox
    from features.device import describe

    started = time.perf_counter()
    extractors, missing = models.load_extractors(models_dir, batch_size=32, regions=True, device=device)
    assert not missing, missing
    networks = {n: extractors[n] for n in ("clip", "resnet")}
    pictures = [letterbox(decode(p.read_bytes()).image, INPUT_SIDE) for p in designs]
    for extractor in networks.values():
        extractor.embed(pictures[:8])
    startup = time.perf_counter() - started

    started = time.perf_counter()
    for extractor in networks.values():
        extractor.embed(pictures)
    alone = len(pictures) / (time.perf_counter() - started)

    folder = work / f"images-{device}"
    folder.mkdir()
    for path in designs:
        shutil.copyfile(path, folder / path.name)
    config = Config(images=folder, cache=work / f"cache-{device}")
    workers_only = {n: e for n, e in extractors.items() if n not in networks}
    started = time.perf_counter()
    Indexer(config.with_overrides(cache=work / f"cache-{device}-workers"), workers_only).run(IndexData())
    decode_bound = len(designs) / (time.perf_counter() - started)

    started = time.perf_counter()
    _, report = Indexer(config, extractors).run(IndexData())
    pipeline = report.indexed / (time.perf_counter() - started)
    return {
        "device": describe(device), "threads": config.threads, "startup_s": startup,
        "precision": {n: e.precision().precision for n, e in networks.items()},
        "alone": alone, "decode_bound": decode_bound, "pipeline": pipeline,
        "share": pipeline / min(alone, decode_bound),
        "batch": networks["resnet"].batch_size,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--designs", required=True, type=Path)
    parser.add_argument("--count", type=int, default=400)
    parser.add_argument("--gpu-only", action="store_true")
    args = parser.parse_args()

    import torch

    designs = sorted(args.designs.rglob("*.png"))[: args.count]
    devices = (["cuda"] if torch.cuda.is_available() else []) + ([] if args.gpu_only else ["cpu"])
    with tempfile.TemporaryDirectory() as temp:
        work = Path(temp)
        models_dir = random_weights(work)
        print(f"{len(designs)} designs; torch {torch.__version__}")
        print("| device | threads | start-up | precision (clip, resnet) | batch | networks alone | decode bound "
              "| pipeline | pipeline / min(networks, decode) |")
        print("|---|---|---|---|---|---|---|---|---|")
        for device in devices:
            row = measure(device, designs, models_dir, work)
            print(f"| {row['device']} | {row['threads']} | {row['startup_s']:.1f} s | "
                  f"{row['precision']['clip']}, {row['precision']['resnet']} | {row['batch']} | "
                  f"{row['alone']:.1f} img/s | {row['decode_bound']:.1f} img/s | {row['pipeline']:.1f} img/s | "
                  f"{100 * row['share']:.0f}% |", flush=True)


if __name__ == "__main__":
    main()
