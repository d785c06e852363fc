#!/usr/bin/env python3
"""Indexing on each device the machine has: the networks alone, the workers' bound, the pipeline.

Random weights in the real formats stand in for CLIP and ResNet50 (the compute is
the same).  For every device (the GPU when torch sees one, and the CPU unless
--gpu-only), in one run, on designs and (with --photos) on 12 MP photos:

- start-up: building both networks and choosing their precision (fp16 on a GPU,
  int8 on a CPU, each only where it keeps the features), then the first batch;
- networks alone: images per second through both networks on ready inputs;
- workers' bound: the indexing workers alone (read, decode, colour, local
  features, regions, previews, letterboxing), no networks: the most the
  pipeline can do; on a GPU for photos also with the JPEGs decoded on the GPU;
- pipeline: `image.py index`'s Indexer, networks included, with its workers as
  threads and as processes (on a GPU, photos also with GPU decoding);
- the pipeline against min(networks alone, workers' bound).

First, how the worker stage alone scales with its threads (1 up to every core):
with the helper libraries' own thread pools as they come and previews fsynced,
with the pools held to one thread, as Lookalike runs threads (pools held, previews
not fsynced), and as processes instead of threads.  On a GPU, how far GPU-decoded photos are from CPU-decoded ones.

On a GPU also what the thread that feeds the networks costs: the designs with torch's
CPU threads left as they are (instead of one while the networks run on the GPU); fed
to the networks 32 files at a time as on a CPU (instead of the GPU's batch); and all of
that with the batches normalised on the CPU and sent as floats (instead of pixels
normalised on the GPU); and for every run, the share of its time the feeding thread
spent in the networks (the rest it waited for the workers).

    python bench/device_speed.py --designs DIR [--photos DIR] [--count 400] [--copies 3] [--gpu-only]
                                 [--no-scaling]
"""
from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


# Designs the networks alone are timed on: enough for a steady rate.
NETWORK_SAMPLE = 400


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


def photo_variants(sources: list[Path], count: int, folder: Path) -> list[Path]:
    """`count` distinct 12 MP JPEGs (quality 92) cut from the sources: each a different crop, some mirrored."""
    from PIL import Image, ImageOps

    folder.mkdir(parents=True)
    draw = random.Random(7)

    def make(index: int) -> Path:
        with Image.open(sources[index % len(sources)]) as image:
            image = image.convert("RGB")
        keep = draw.uniform(0.8, 1.0)
        left, top = draw.uniform(0, 1 - keep) * image.width, draw.uniform(0, 1 - keep) * image.height
        image = image.crop((round(left), round(top), round(left + keep * image.width), round(top + keep * image.height)))
        scale = (12_000_000 / (image.width * image.height)) ** 0.5
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BICUBIC)
        if index % 2:
            image = ImageOps.mirror(image)
        path = folder / f"{index:04d}.jpg"
        image.save(path, "JPEG", quality=92)
        return path

    with ThreadPoolExecutor(os.cpu_count()) as pool:
        return list(pool.map(make, range(count)))


def set_helper_pools(quiet: bool, as_they_come: dict) -> None:
    """OpenCV's and the pool-threaded BLAS libraries' threads: one each, or as they came."""
    import cv2
    from threadpoolctl import ThreadpoolController

    cv2.setNumThreads(1 if quiet else as_they_come["cv2"])
    for library in ThreadpoolController().select(user_api="blas").lib_controllers:
        if library.info().get("threading_layer") != "openmp":
            library.set_num_threads(1 if quiet else as_they_come.get(library.filepath, os.cpu_count()))


def helper_pools_as_they_come() -> dict:
    import cv2
    from threadpoolctl import ThreadpoolController

    sizes = {lib.filepath: lib.num_threads for lib in ThreadpoolController().select(user_api="blas").lib_controllers}
    return {"cv2": cv2.getNumThreads(), **sizes}


def workers_rate(indexer, files, threads: int) -> float:
    """Images per second through the worker stage alone, on `threads` threads."""
    every_feature = frozenset(indexer.fingerprints)
    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(indexer.prepare, [(file, every_feature) for file in files]))
    return len(files) / (time.perf_counter() - started)


def worker_scaling(folder: Path, extractors: dict, work: Path, pools: dict) -> None:
    """How the worker stage scales with threads, by how the helper pools and previews are set."""
    import functools

    from engine.config import Config
    from engine.images import thumbs
    from engine.images.scan import scan
    from engine.index.pipeline import Indexer

    files = list(scan(folder))
    counts = sorted({1, 4, 8, os.cpu_count() or 1})
    settings = (("threads, pools as they come, previews fsynced", False, True),
                ("threads, pools one thread, previews not fsynced (as shipped)", True, False))
    print(f"\nworker stage alone, {len(files)} designs, images/s by threads:")
    print("| setting | " + " | ".join(f"{n} threads" for n in counts) + " |")
    print("|---|" + "---|" * len(counts))
    shipped = thumbs.atomic_write
    try:
        for label, quiet, durable in settings:
            set_helper_pools(quiet, pools)
            thumbs.atomic_write = functools.partial(_forced_write, durable) if durable else shipped
            rates = []
            for threads in counts:
                cache = Path(tempfile.mkdtemp(dir=work))
                rates.append(workers_rate(Indexer(Config(images=folder, cache=cache), extractors), files, threads))
            print(f"| {label} | " + " | ".join(f"{r:.0f}" for r in rates) + " |", flush=True)
    finally:
        thumbs.atomic_write = shipped
        set_helper_pools(True, pools)
    rates = [processes_rate(Config(images=folder, cache=Path(tempfile.mkdtemp(dir=work)), threads=n),
                            sorted(extractors), files) for n in counts]
    print("| processes instead of threads, their start included (as shipped on 8+ cores) | "
          + " | ".join(f"{r:.0f}" for r in rates) + " |", flush=True)


def processes_rate(config, names: list[str], files) -> float:
    """Images per second through the worker stage in `config.threads` worker processes."""
    from engine.index import worker_processes

    every_feature = frozenset(names)
    started = time.perf_counter()
    with worker_processes.pool(config, names) as pool:
        list(pool.map(worker_processes.prepare, [(file, every_feature) for file in files]))
    return len(files) / (time.perf_counter() - started)


def distinct_copies(designs: list[Path], copies: int, folder: Path) -> list[Path]:
    """Each design `copies` times under other bytes (a text chunk naming the copy; the same
    pixels, so the same work): identical bytes would be recognised and not extracted again."""
    from PIL import Image, PngImagePlugin

    folder.mkdir(parents=True)

    def make(job: tuple[int, Path]) -> Path:
        copy, path = job
        info = PngImagePlugin.PngInfo()
        info.add_text("copy", str(copy))
        target = folder / f"{copy}-{path.name}"
        with Image.open(path) as image:
            image.save(target, "PNG", pnginfo=info)
        return target

    with ThreadPoolExecutor(os.cpu_count()) as pool:
        return list(pool.map(make, [(copy, path) for copy in range(copies) for path in designs]))


def _forced_write(forced: bool, path, data, **options):
    from features.files import atomic_write

    return atomic_write(path, data, **{**options, "durable": forced})


def measure(device: str, designs: list[Path], models_dir: Path, work: Path, photos: list[Path] = ()) -> dict:
    """The rows of one device: designs always, photos where given (keys prefixed 'photos_')."""
    from engine import models
    from engine.images.decode import decode
    from features.base import INPUT_SIDE, letterbox
    from features.device import describe

    started = time.perf_counter()
    extractors, missing = models.load_extractors(models_dir, batch_size=32, regions=True, device=device)
    assert not missing, missing
    networks = {n: extractors[n] for n in ("clip", "resnet")}
    pictures = [letterbox(decode(p.read_bytes()).image, INPUT_SIDE) for p in designs[:NETWORK_SAMPLE]]
    for extractor in networks.values():
        extractor.embed(pictures[:8])
    startup = time.perf_counter() - started

    started = time.perf_counter()
    for extractor in networks.values():
        extractor.embed(pictures)
    alone = len(pictures) / (time.perf_counter() - started)
    row = {"device": describe(device), "startup_s": startup, "alone": alone,
           "precision": {n: e.precision().precision for n, e in networks.items()},
           "batch": networks["resnet"].batch_size, "runs": []}
    for label, files, options in _runs(device, designs, photos):
        row["runs"].append({"set": label, **_pipeline_run(device, label, files, extractors, networks, work, alone,
                                                           options)})
    row.update(row["runs"][0])  # designs as `image.py index` runs them: what bench/index_speed.py reports
    return row


def _runs(device: str, designs: list[Path], photos: list[Path]) -> list[tuple[str, list[Path], dict]]:
    """(label, files, Config overrides) of every pipeline run on `device`; keys starting with '_'
    are this bench's variations of the feeding thread (_pipeline_run)."""
    runs = [("designs, workers as threads", designs, {"worker_processes": "off", "gpu_jpeg": False}),
            ("designs, workers as processes", designs, {"worker_processes": "on", "gpu_jpeg": False})]
    if device != "cpu":  # what the thread that feeds a GPU costs the run, as it is and as it was
        runs += [("designs, processes, torch's CPU team left spinning", designs,
                  {"worker_processes": "on", "gpu_jpeg": False, "_torch_team": True}),
                 ("designs, processes, fed 32 files at a time as on a CPU", designs,
                  {"worker_processes": "on", "gpu_jpeg": False, "_feed_batch": 32}),
                 ("designs, processes, fed 32 at a time, torch's team, batches normalised on the CPU", designs,
                  {"worker_processes": "on", "gpu_jpeg": False, "_feed_batch": 32, "_torch_team": True,
                   "_normalise_on_cpu": True})]
    if photos and device != "cpu":  # on the CPU the networks are the bound whatever the files
        runs += [("photos, threads, CPU decodes", photos, {"worker_processes": "off", "gpu_jpeg": False}),
                 ("photos, processes, CPU decodes", photos, {"worker_processes": "on", "gpu_jpeg": False}),
                 ("photos, threads, GPU decodes JPEG", photos, {"worker_processes": "off", "gpu_jpeg": True})]
    return runs


@contextlib.contextmanager
def feeding_thread(normalise_on_cpu: bool = False, torch_team: bool = False):
    """The thread that feeds the networks varied for one run: batches normalised on the
    CPU and sent as floats (instead of pixels normalised on the GPU); torch's CPU threads
    left as they are (instead of one while the networks run on a GPU)."""
    from engine.index import pipeline
    from features.base import to_batch
    from features.network import NetworkExtractor

    shipped_batch, shipped_threads = NetworkExtractor._device_batch, pipeline.torch_on_one_thread
    if normalise_on_cpu:
        NetworkExtractor._device_batch = lambda self, images: self._on_device(to_batch(images, self.mean, self.std))
    if torch_team:
        pipeline.torch_on_one_thread = lambda when: contextlib.nullcontext()
    try:
        yield
    finally:
        NetworkExtractor._device_batch, pipeline.torch_on_one_thread = shipped_batch, shipped_threads


def timed_indexer(config, extractors: dict):
    """An Indexer that counts the seconds its feeding thread spends running the networks."""
    from engine.index.pipeline import Indexer

    class Timed(Indexer):
        in_networks = 0.0

        def _finish(self, batch, state, report):
            started = time.perf_counter()
            try:
                return super()._finish(batch, state, report)
            finally:
                self.in_networks += time.perf_counter() - started

    return Timed(config, extractors)


def _pipeline_run(device: str, label: str, files: list[Path], extractors: dict, networks: dict, work: Path,
                  alone: float, options: dict) -> dict:
    from engine.config import Config
    from engine.index.store import IndexData

    folder = work / f"images-{device}-{len(files)}-{files[0].suffix}"
    if not folder.exists():
        folder.mkdir()
        for path in files:
            shutil.copyfile(path, folder / path.name)
    tag = f"{device}-{label}".replace(" ", "_").replace(",", "")
    variations = {key[1:]: options.pop(key) for key in list(options) if key.startswith("_")}
    config = Config(images=folder, cache=work / f"cache-{tag}", **options)
    workers_only = {n: e for n, e in extractors.items() if n not in networks}
    jpeg_on = device if options["gpu_jpeg"] and device != "cpu" else None
    workers = workers_only_indexer(config.with_overrides(cache=work / f"cache-{tag}-workers"), workers_only, jpeg_on)
    if jpeg_on:  # nvJPEG's one-time start, outside the timed runs
        from engine.images.decode import ANALYSIS_SIDE
        from engine.images.gpu_jpeg import GpuJpegDecoder

        with GpuJpegDecoder(device, ANALYSIS_SIDE) as decoder:
            decoder.picture(files[0].read_bytes(), 1, 1)
    started = time.perf_counter()
    workers.run(IndexData())
    bound = len(files) / (time.perf_counter() - started)

    indexer = timed_indexer(config, extractors)
    indexer.batch_size = variations.pop("feed_batch", indexer.batch_size)
    with feeding_thread(**variations):
        started = time.perf_counter()
        _, report = indexer.run(IndexData())
        seconds = time.perf_counter() - started
    return {"threads": config.threads, "decode_bound": bound, "pipeline": report.indexed / seconds,
            "share": report.indexed / seconds / min(alone, bound), "in_networks": indexer.in_networks / seconds}


def workers_only_indexer(config, extractors: dict, jpeg_on: str | None):
    """An Indexer of the worker features alone that decodes JPEGs on `jpeg_on`, as a run on that GPU would."""
    from engine.index.pipeline import Indexer

    class WorkersOnly(Indexer):
        def jpeg_device(self) -> str | None:
            return jpeg_on

    return WorkersOnly(config, extractors)


def gpu_decode_agreement(photos: list[Path], models_dir: Path) -> None:
    """How far the analysis pictures of photos decoded on the GPU are from the CPU's."""
    import numpy as np

    from engine import models
    from engine.images.decode import ANALYSIS_SIDE, decode
    from engine.images.gpu_jpeg import GpuJpegDecoder
    from features.base import l2_normalize

    extractors, _ = models.load_extractors(models_dir, batch_size=32, regions=False, device="cpu")
    differences, cosines = [], {"hsv": [], "thumbprint": []}
    with GpuJpegDecoder("cuda", ANALYSIS_SIDE) as decoder:
        for path in photos[:40]:
            data = path.read_bytes()
            on_cpu, on_gpu = decode(data).image, decode(data, gpu_jpeg=decoder).image
            if on_cpu.size != on_gpu.size:
                print(f"  {path.name}: sizes differ, {on_cpu.size} on the CPU, {on_gpu.size} on the GPU")
                continue
            differences.append(np.abs(np.asarray(on_cpu, np.int16) - np.asarray(on_gpu, np.int16)).mean())
            for name in ("hsv", "thumbprint"):  # thumbprints are stored as bytes: compared as unit rows
                a, b = (l2_normalize(extractors[name].embed([im]).astype(np.float32))[0] for im in (on_cpu, on_gpu))
                cosines[name].append(float(np.dot(a, b)))
    print(f"\nGPU-decoded photos against CPU-decoded ({len(differences)} photos): mean absolute pixel difference "
          f"{np.mean(differences):.2f} of 255 (worst {np.max(differences):.2f}); cosine hsv min "
          f"{min(cosines['hsv']):.4f}, thumbprint min {min(cosines['thumbprint']):.4f}")


def print_row(row: dict) -> None:
    for run in row["runs"]:
        print(f"| {row['device']} | {run['set']} | {run['threads']} | {row['startup_s']:.1f} s | "
              f"{row['precision']['clip']}, {row['precision']['resnet']} | {row['batch']} | "
              f"{row['alone']:.1f} img/s | {run['decode_bound']:.1f} img/s | "
              f"{run['pipeline']:.1f} img/s | {100 * run['share']:.0f}% | {100 * run['in_networks']:.0f}% |",
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--designs", required=True, type=Path)
    parser.add_argument("--photos", type=Path, help="folder of photos; 12 MP JPEG variants are cut from them")
    parser.add_argument("--count", type=int, default=400)
    parser.add_argument("--gpu-only", action="store_true")
    parser.add_argument("--no-scaling", action="store_true", help="leave out the worker stage's scaling table")
    parser.add_argument("--copies", type=int, default=1,
                        help="index each design this many times (distinct bytes): runs long enough that "
                             "the worker processes' start is a small part")
    args = parser.parse_args()

    import torch

    pools = helper_pools_as_they_come()
    designs = sorted(args.designs.rglob("*.png"))[: args.count]
    devices = (["cuda"] if torch.cuda.is_available() else []) + ([] if args.gpu_only else ["cpu"])
    with tempfile.TemporaryDirectory() as temp:
        work = Path(temp)
        models_dir = random_weights(work)
        from engine import models

        workers_only, _ = models.load_extractors(models_dir, batch_size=32, regions=True, device="cpu")
        if not args.no_scaling:
            worker_scaling(args.designs, {n: e for n, e in workers_only.items() if n not in ("clip", "resnet")},
                           work, pools)
        if args.copies > 1:
            designs = distinct_copies(designs, args.copies, work / "designs")
        photos = []
        if args.photos:
            sources = sorted(p for p in args.photos.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
            photos = photo_variants(sources, args.count, work / "photos")
        print(f"\n{len(designs)} designs, {len(photos)} photos of 12 MP; torch {torch.__version__}, "
              f"{os.cpu_count()} cores")
        print("| device | set | workers | start-up | precision (clip, resnet) | batch | networks alone "
              "| workers' bound | pipeline | pipeline / min(networks, workers) | feeding thread in the networks |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for device in devices:
            row = measure(device, designs, models_dir, work, photos)
            print_row(row)
        if photos and "cuda" in devices:
            gpu_decode_agreement(photos, models_dir)


if __name__ == "__main__":
    main()
