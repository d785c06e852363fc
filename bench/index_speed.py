#!/usr/bin/env python3
"""Indexing speed: Lookalike's pipeline against the straightforward loop and the networks' ceiling.

For each image set, in one run on the same images and the same random-weight
networks (the compute is the same as with the real weights):
  (a) the straightforward loop: one image at a time, full decode, batch of one
      per network, histogram on the full-size image, with the networks in the
      precision Lookalike measured for them; (a32) the same loop with both
      networks in fp32 (as a loop that never chose a precision would run them);
  (b) Lookalike's indexer (one decode sized to need, parallel workers, batches);
  (c) the networks alone at the indexer's batch size on pre-decoded tensors,
      over the same network work as (b): every image through CLIP and ResNet50,
      and every region the pipeline cut out of a sheet through CLIP (regions are
      network inputs too), measured just before and just after (b) and averaged;
      (c0) is the same for whole images only;
  (w) the workers' own work alone, one image after another on one thread, in
      seconds of CPU per image.  With every core busy (as in (b) on two cores),
      b/c cannot exceed N / (N + W), N being the networks' CPU seconds per image
      in (c): the bound printed with it.
Each phase runs in a fresh child process, so its peak RSS is its own.
Start-up is reported separately, as a user at a terminal meets it: the wall time
of `image.py index` that finds one new design in an indexed folder, and of
`image.py search` of one picture, both with both networks' weights present; the
first start after the weights appear makes the networks ready to run and keeps
them (features/ready.py), the later ones load what it kept.

    python bench/index_speed.py --designs /usr/share/openclipart/png --photos DIR [--count 160]

--photos takes any folder of pictures (e.g. the wallpaper packages'): each one
of at least 2 MP becomes a 12 MP+ JPEG (upscaled where smaller, quality 92),
so the set is as large as the folder allows.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.device_speed import random_weights  # noqa: E402


def main() -> None:
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")  # torch's C++ deprecation notices, in every phase
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--designs", default="/usr/share/openclipart/png")
    parser.add_argument("--photos", help="folder of photos (JPEG/PNG/WebP, >= 2 MP): made into >= 12 MP JPEGs")
    parser.add_argument("--count", type=int, default=160, help="images per set")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--search-images", help="collection of an existing (e.g. 8,000-image) index: "
                        "report warm search latency through the HTTP API")
    parser.add_argument("--search-cache", help="cache folder of that index")
    parser.add_argument("--search-models", help="weights folder for the search (default: the cache's)")
    parser.add_argument("--search-only", action="store_true", help="only the search latency")
    parser.add_argument("--fp32", action="append", default=[], choices=["clip", "resnet"],
                        help="keep this network in fp32 in every phase instead of the measured precision "
                             "(repeatable): shows how much of the pipeline hides behind slower networks")
    args = parser.parse_args()
    if args.search_images:
        report_search_latency(args)
    if args.search_only:
        return
    work = Path(tempfile.mkdtemp(prefix="lookalike-speed-"))
    models = random_weights(work)
    for network in args.fp32:
        force_fp32(models, network)
    models_fp32 = work / "models-fp32"
    shutil.copytree(models, models_fp32)
    for network in ("clip", "resnet"):
        force_fp32(models_fp32, network)
    ordinary, enormous = split_by_size(Path(args.designs), args.count)
    sets = {"designs": ordinary, "designs with the enormous ones": ordinary[: args.count - len(enormous)] + enormous}
    if args.photos:
        sets["photos"] = large_photos(Path(args.photos), work / "photo-sources", args.count)
    report_startup(sets["designs"][:40], work / "startup", models)
    ctx = mp.get_context("spawn")
    for name, files in sets.items():
        folder = work / name
        folder.mkdir()
        for i, path in enumerate(files):
            shutil.copyfile(path, folder / f"{i:04d}{path.suffix}")
        n = len(files)
        with ctx.Pool(1) as pool:
            naive, naive_rss = pool.apply(run_naive, (folder, models))
        with ctx.Pool(1) as pool:
            naive_fp32, _ = pool.apply(run_naive, (folder, models_fp32))
        # The ceiling is measured just before and just after the pipeline and averaged:
        # this machine's speed drifts by tens of percent within minutes.
        with ctx.Pool(1) as pool:
            before = pool.apply(run_networks, (models, args.batch_size))
        with ctx.Pool(1) as pool:
            piped, piped_rss, crops = pool.apply(run_pipeline, (folder, work / f"cache-{name}", models, args.batch_size))
        with ctx.Pool(1) as pool:
            after = pool.apply(run_networks, (models, args.batch_size))
        with ctx.Pool(1) as pool:
            rescan, _, _ = pool.apply(run_pipeline, (folder, work / f"cache-{name}", models, args.batch_size))
        with ctx.Pool(1) as pool:
            workers_cpu = pool.apply(run_workers, (folder, work / f"cache-{name}-workers", models))

        def ceiling_of(per_image: dict[str, float]) -> float:
            return n / (n * (per_image["clip"] + per_image["resnet"]) + crops * per_image["clip"])

        per_image = {key: (before[key] + after[key]) / 2 for key in before}
        ceiling = ceiling_of(per_image)
        networks_cpu = 1 / ceiling_of({name: per_image[f"{name}_cpu"] for name in ("clip", "resnet")})
        whole_only = 1 / (per_image["clip"] + per_image["resnet"])
        print(f"\n{name}: {n} images, {crops} regions cut from sheets")
        print(f"  (a) straightforward loop   {n / naive:7.2f} img/s   peak RSS {naive_rss:6.0f} MB")
        print(f"  (a32) the same, fp32       {n / naive_fp32:7.2f} img/s")
        print(f"  (b) Lookalike pipeline     {n / piped:7.2f} img/s   peak RSS {piped_rss:6.0f} MB")
        print(f"  (c) networks alone         {ceiling:7.2f} img/s   (batch {args.batch_size}, pre-decoded, "
              f"images and regions; {ceiling_of(before):.2f} before (b), {ceiling_of(after):.2f} after)")
        print(f"  (c0) whole images only     {whole_only:7.2f} img/s")
        print(f"  (w) workers' work alone    {1000 * workers_cpu:7.1f} ms of CPU per image, against the networks' "
              f"{1000 * networks_cpu:.1f}: b/c can reach at most {100 * networks_cpu / (networks_cpu + workers_cpu):.0f}% "
              f"with every core busy")
        bound = networks_cpu / (networks_cpu + workers_cpu)
        print(f"  b/a = {naive / piped:.2f}x   b/a32 = {naive_fp32 / piped:.2f}x   b/c = {100 * (n / piped) / ceiling:.0f}%   "
              f"b/c0 = {100 * (n / piped) / whole_only:.0f}%   b reaches {100 * (n / piped) / ceiling / bound:.0f}% "
              f"of the bound   unchanged re-scan {rescan:.2f} s")
    report_gpu(sets["designs"], models, work)
    shutil.rmtree(work, ignore_errors=True)


def report_gpu(designs: list[Path], models: Path, work: Path) -> None:
    """The same work on the GPU, when torch sees one: its networks alone, the machine's decode bound, the pipeline."""
    import torch

    if not torch.cuda.is_available():
        print("\nno GPU here: GPU rows not measured")
        return
    from bench.device_speed import measure

    row = measure("cuda", designs, models, work)
    print(f"\n{row['device']}, {len(designs)} designs: start-up {row['startup_s']:.1f} s, precision "
          f"{row['precision']}, batch {row['batch']}; networks alone {row['alone']:.1f} img/s, decode bound "
          f"({row['threads']} workers) {row['decode_bound']:.1f} img/s, pipeline {row['pipeline']:.1f} img/s = "
          f"{100 * row['share']:.0f}% of min(networks, decode)")


def report_startup(designs: list[Path], work: Path, models: Path) -> None:
    """Wall seconds of the command line's index (one new design) and search, first and later starts."""
    import subprocess

    folder, cache = work / "images", work / "cache"
    folder.mkdir(parents=True)
    for i, path in enumerate(designs[1:]):
        shutil.copyfile(path, folder / f"{i:04d}{path.suffix}")
    common = ["--images", str(folder), "--cache", str(cache), "--models", str(models)]

    def wall(*command: str) -> float:
        started = time.perf_counter()
        subprocess.run([sys.executable, "image.py", *command, *common], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return time.perf_counter() - started

    wall("index")  # the folder indexed, and the networks made ready and kept
    seconds = {}
    for start in ("first", "later"):
        for command in ("index", "search"):
            if start == "first":
                shutil.rmtree(cache / "networks")  # as if the weights had just appeared
            new = folder / f"new-{command}-{start}.png"
            new.write_bytes(designs[0].read_bytes() + new.name.encode())  # other bytes: a design not yet seen
            seconds[f"{command} {start}"] = wall("index") if command == "index" else wall("search", str(new))
    print(f"start-up, command line, both networks: index finding one new design "
          f"{seconds['index later']:.1f} s (first start after the weights appeared {seconds['index first']:.1f} s); "
          f"search of one picture {seconds['search later']:.1f} s ({seconds['search first']:.1f} s)")


def report_search_latency(args) -> None:
    import numpy as np

    from bench.load import search_latency

    models = Path(args.search_models) if args.search_models else None
    size, ms = search_latency(Path(args.search_images), Path(args.search_cache), models=models)
    print(f"warm search through the HTTP API, {size} images indexed, {len(ms)} uploads: "
          f"p50 {np.percentile(ms, 50):.0f} ms, p95 {np.percentile(ms, 95):.0f} ms")


def split_by_size(folder: Path, count: int, enormous_pixels: int = 16_000_000, how_many: int = 10
                  ) -> tuple[list[Path], list[Path]]:
    """`count` ordinary designs (at most 16 MP), and the collection's `how_many` largest."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None  # only the headers are read here
    sizes = {}
    for path in folder.rglob("*.png"):
        with Image.open(path) as image:
            sizes[path] = image.width * image.height
    ordinary = [path for path in pick(folder, "*.png", len(sizes)) if sizes[path] <= enormous_pixels][:count]
    largest = sorted(sizes, key=sizes.get)[-how_many:]
    return ordinary, largest


def pick(folder: Path, pattern: str, count: int) -> list[Path]:
    files = sorted(folder.rglob(pattern))
    random.Random(3).shuffle(files)
    return files[:count]


def large_photos(source: Path, target: Path, count: int) -> list[Path]:
    """Up to `count` JPEGs of at least 12 MP, one per distinct source picture of >= 2 MP."""
    from PIL import Image

    target.mkdir(parents=True)
    made, seen = [], set()
    for path in pick(source, "*", 10 * count):
        if path.suffix.lower() not in (".jpg", ".jpeg", ".png", ".webp") or len(made) >= count:
            continue
        if path.resolve() in seen:  # the packages link one picture under several sizes
            continue
        seen.add(path.resolve())
        with Image.open(path) as image:
            if image.width * image.height < 2_000_000:
                continue
            scale = max(1.0, (12_000_000 / (image.width * image.height)) ** 0.5)
            photo = image.convert("RGB").resize((round(image.width * scale) + 1, round(image.height * scale) + 1),
                                                Image.Resampling.BICUBIC)
        made.append(target / f"{len(made):04d}.jpg")
        photo.save(made[-1], "JPEG", quality=92)
    return made


def force_fp32(models_dir: Path, network: str) -> None:
    """Record fp32 as the precision choice for `network`'s weights, as if it had been measured."""
    from engine import models
    from features import precision

    models.load_extractors(models_dir)[0][network].remember(precision.ONLY_FP32)  # builds no model


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_naive(folder: Path, models_dir: Path) -> tuple[float, float]:
    """One image at a time, full-size decode, batch of one, histogram on the full image."""
    import numpy as np
    from PIL import Image

    from engine import models

    Image.MAX_IMAGE_PIXELS = None  # the loop decodes every design whole, however large
    extractors, _ = models.load_extractors(models_dir, batch_size=1)
    warm = Image.new("RGB", (64, 64), "white")
    for name in ("clip", "resnet"):
        extractors[name].embed([warm])
    started = time.perf_counter()
    for path in sorted(folder.iterdir()):
        image = Image.open(path)
        image.load()
        rgba = image.convert("RGBA")
        flat = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba).convert("RGB")
        for name in ("clip", "resnet"):
            extractors[name].embed([flat])
        extractors["hsv"].embed([flat])
        np.asarray(flat)
    return time.perf_counter() - started, peak_mb()


def run_pipeline(folder: Path, cache: Path, models_dir: Path, batch_size: int) -> tuple[float, float, int]:
    """Seconds, peak RSS and how many regions the indexer cut out of sheets."""
    from engine.config import Config
    from engine import Engine

    engine = Engine(Config(images=folder, cache=cache, models=models_dir, batch_size=batch_size))
    engine.warm_networks().result()  # loading the networks is not indexing
    started = time.perf_counter()
    engine.reindex()
    return time.perf_counter() - started, peak_mb(), len(engine.snapshot.data.regions.parents)


def run_networks(models_dir: Path, batch_size: int) -> dict[str, float]:
    """Seconds per image of each network on ready 224 px batches: the ceiling any pipeline can reach."""
    from PIL import Image

    from engine import models

    extractors, _ = models.load_extractors(models_dir, batch_size=batch_size)
    images = [Image.new("RGB", (224, 224), (i, 100, 200)) for i in range(batch_size)]
    for name in ("clip", "resnet"):
        extractors[name].embed(images[:2])
    rounds = 3
    seconds = {}
    for name in ("clip", "resnet"):
        started, cpu = time.perf_counter(), time.process_time()
        for _ in range(rounds):
            extractors[name].embed(images)
        seconds[name] = (time.perf_counter() - started) / (rounds * batch_size)
        seconds[f"{name}_cpu"] = (time.process_time() - cpu) / (rounds * batch_size)
    return seconds


def run_workers(folder: Path, cache: Path, models_dir: Path) -> float:
    """CPU seconds per image of the indexer's worker stage alone (everything but the networks)."""
    from engine.config import Config
    from engine import Engine
    from engine.index.pipeline import Indexer
    from engine.images.scan import scan

    engine = Engine(Config(images=folder, cache=cache, models=models_dir))
    indexer = Indexer(engine.config, engine.networks.extractors)
    files, every_feature = list(scan(folder)), frozenset(indexer.fingerprints)
    started = time.process_time()
    for file in files:
        indexer.prepare((file, every_feature))
    return (time.process_time() - started) / len(files)


if __name__ == "__main__":
    main()
