#!/usr/bin/env python3
"""Lookalike's one entry point: parse the command line, build the config, call the engine.

    python image.py serve    [--images DIR] [--cache DIR] [--host H] [--port P]
    python image.py index    [--images DIR] [--cache DIR] [--json]
    python image.py search   QUERY_IMAGE... [--text WORDS] [--top-k K] [--weights clip=.5,resnet=.3,hsv=.2] [--json]
    python image.py duplicates [--threshold T] [--json | --csv]
    python image.py models   status [--json] | fetch | import FILE...
    python image.py set-password

Flags override LOOKALIKE_* environment variables, which override defaults.
"""
from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import sys
from pathlib import Path

from engine import StoreError
from engine.config import Config, from_environment, parse_weights
from features.device import DeviceUnavailable


NOISY_LIBRARIES = ("faiss", "faiss.loader", "waitress.queue", "timm", "open_clip", "huggingface_hub")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.verbose = getattr(args, "verbose", False)
    logging.basicConfig(level=logging.INFO if not getattr(args, "json", False) else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if not args.verbose:
        # Libraries' own chatter (FAISS's CPU build, waitress's queue, torch's C++ deprecation
        # notices, read at torch's import, which comes later) is not what a user reads.
        for name in NOISY_LIBRARIES:
            logging.getLogger(name).setLevel(logging.WARNING)
        os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    try:
        config = from_environment().with_overrides(
            images=_path(getattr(args, "images", None)), cache=_path(getattr(args, "cache", None)),
            models=_path(getattr(args, "models", None)), device=getattr(args, "device", None),
            host=getattr(args, "host", None), port=getattr(args, "port", None),
            store=getattr(args, "store", None), milvus_uri=getattr(args, "milvus_uri", None),
        )
    except ValueError as exc:  # a LOOKALIKE_* variable that does not parse
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        return args.handler(config, args)
    except DeviceUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except StoreError as exc:
        print(f"error: the vector store cannot answer: {exc}", file=sys.stderr)
        return 3


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="image.py", description="Lookalike: find designs that look alike.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="also show the libraries' own log lines")
    # SUPPRESS: a flag given before a nested sub-command must not be reset by it.
    common.add_argument("--images", default=argparse.SUPPRESS, help="folder of design images (default static/images)")
    common.add_argument("--cache", default=argparse.SUPPRESS, help="folder for the index and secrets (default cache)")
    common.add_argument("--models", default=argparse.SUPPRESS, help="folder of model weights (default CACHE/models)")
    common.add_argument("--store", default=argparse.SUPPRESS, choices=("faiss", "milvus"),
                        help="where searches find neighbours (default faiss, in this process)")
    common.add_argument("--milvus-uri", default=argparse.SUPPRESS, metavar="URI",
                        help="Milvus Lite file (*.db, default CACHE/milvus.db) or http://host:19530")
    common.add_argument("--device", default=argparse.SUPPRESS, choices=("auto", "cpu", "cuda"),
                        help="where the networks run (default auto: a CUDA GPU when torch sees one)")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", parents=[common], help="start the web app (waitress)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.set_defaults(handler=cmd_serve)

    index = sub.add_parser("index", parents=[common], help="index new, changed and deleted images")
    index.add_argument("--json", action="store_true", help="print one JSON summary as the last line")
    index.set_defaults(handler=cmd_index)

    search = sub.add_parser("search", parents=[common], help="find the closest designs to query images")
    search.add_argument("queries", nargs="*", metavar="QUERY_IMAGE")
    search.add_argument("--text", action="append", default=[], help="search by words (CLIP); repeatable")
    search.add_argument("--top-k", type=int, default=None)
    search.add_argument("--weights", type=parse_weights, help="e.g. clip=0.5,resnet=0.3,hsv=0.2")
    search.add_argument("--json", action="store_true", help="one JSON line per query")
    search.set_defaults(handler=cmd_search)

    models = sub.add_parser("models", parents=[common], help="model weights: status, fetch, import")
    models_sub = models.add_subparsers(dest="action", required=True)
    status = models_sub.add_parser("status", parents=[common])
    status.add_argument("--json", action="store_true")
    status.set_defaults(handler=cmd_models_status)
    models_sub.add_parser("fetch", parents=[common]).set_defaults(handler=cmd_models_fetch)
    imp = models_sub.add_parser("import", parents=[common])
    imp.add_argument("files", nargs="+", type=Path)
    imp.set_defaults(handler=cmd_models_import)

    dups = sub.add_parser("duplicates", parents=[common], help="list every group of duplicate designs")
    dups.add_argument("--threshold", type=float, help="fused score from which neighbours are checked (default 0.5)")
    form = dups.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true", help="one JSON object as the last line")
    form.add_argument("--csv", action="store_true", help="CSV: group, path, suggestion")
    dups.set_defaults(handler=cmd_duplicates)

    calibrate = sub.add_parser("calibrate", parents=[common],
                               help="choose the verdicts' thresholds on this collection's own designs")
    calibrate.add_argument("--sample", type=int, default=300, help="designs to make edited copies of (default 300)")
    calibrate.add_argument("--target-false-alarms", type=float, default=0.01, metavar="F",
                           help="largest share of unrelated designs that may be called copies (default 0.01)")
    calibrate.add_argument("--json", action="store_true", help="print one JSON summary as the last line")
    calibrate.set_defaults(handler=cmd_calibrate)

    password = sub.add_parser("set-password", parents=[common], help="set the web password (stored hashed)")
    password.set_defaults(handler=cmd_set_password)
    return parser


def cmd_serve(config: Config, args: argparse.Namespace) -> int:
    import waitress

    from web import create_app
    from web.passwords import WeakPassword, ensure_password

    try:
        generated = ensure_password(config.cache, os.environ.get("LOOKALIKE_PASSWORD"))
    except WeakPassword as exc:
        print(f"error: LOOKALIKE_PASSWORD: {exc}", file=sys.stderr)
        return 2
    if generated:
        print(f"\nNo password was set. Generated one (shown only now):\n\n    {generated}\n\n"
              "Change it with: python image.py set-password\n", flush=True)
    app = create_app(config)
    print(f"Lookalike on http://{config.host}:{config.port}/  (images: {config.images})", flush=True)
    # waitress refuses a body over its own limit in plain text before the app sees it; with
    # room above the app's limit, an upload that is too large gets the app's JSON message.
    waitress.serve(app, host=config.host, port=config.port, threads=8,
                   max_request_body_size=4 * app.config["MAX_CONTENT_LENGTH"])
    return 0


def cmd_index(config: Config, args: argparse.Namespace) -> int:
    from engine import Engine

    if not config.images.is_dir():
        print(f"error: images folder {config.images} does not exist", file=sys.stderr)
        return 2
    engine = Engine(config)
    with _progress_bar(engine, quiet=args.json):
        report = engine.reindex()
        if engine.store is not None:  # bring the store's collections up to date now, not at the first search
            engine.snapshot
    summary = report.as_dict()
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"indexed {summary['indexed']}, unchanged {summary['unchanged']}, removed {summary['removed']}, "
              f"skipped {len(summary['skipped'])} in {summary['seconds']:.1f}s; features: {', '.join(summary['features'])}")
        for item in summary["skipped"]:
            print(f"  skipped {item['path']}: {item['reason']}")
    return 0


def cmd_search(config: Config, args: argparse.Namespace) -> int:
    from engine import Engine, TextSearchUnavailable
    from engine.images.decode import UnreadableImage

    if not args.queries and not args.text:
        print("error: give query images and/or --text", file=sys.stderr)
        return 2
    engine = Engine(config)  # models load once, on the first query, for every query
    if not len(engine.index.data):  # else an empty answer reads as "nothing alike"
        print(f"note: nothing is indexed in {config.cache} yet; run `python image.py index` first", file=sys.stderr)
    top_k, failures = args.top_k or config.top_k, 0
    jobs = [(q, lambda q=q: engine.search_bytes(Path(q).read_bytes(), top_k, args.weights)) for q in args.queries]
    jobs += [(t, lambda t=t: engine.search_text(t, top_k)) for t in args.text]
    for query, run in jobs:
        try:
            results = run()
        except (OSError, UnreadableImage, TextSearchUnavailable) as exc:
            failures += 1
            message = {"query": query, "error": str(exc), "results": []}
            print(json.dumps(message) if args.json else f"{query}: error: {exc}", flush=True)
            continue
        if args.json:
            print(json.dumps({"query": query, "results": [r.as_dict() for r in results]}), flush=True)
        else:
            print(query)
            for rank, r in enumerate(results, 1):
                parts = " ".join(f"{k}={v:.3f}" for k, v in r.scores.items() if v is not None)
                print(f"  {rank:2d}. {r.score:.3f} {r.verdict:9s} {r.path}  ({parts})")
    return 1 if failures == len(jobs) else 0


def cmd_duplicates(config: Config, args: argparse.Namespace) -> int:
    from engine import Engine
    from engine.match.duplicates import to_csv

    groups = Engine(config).duplicates(args.threshold)
    if args.json:
        print(json.dumps({"groups": [g.as_dict() for g in groups]}))
    elif args.csv:
        sys.stdout.write(to_csv(groups))
    else:
        for number, group in enumerate(groups, 1):
            print(f"group {number}: keep {group.keep}")
            for pair in group.pairs:
                print(f"  {pair.verdict:9s} {pair.score:.3f} {pair.inliers:4d} inliers  {pair.a}  <->  {pair.b}")
        print(f"{len(groups)} groups, {sum(len(g.paths) for g in groups)} images")
    return 0


def cmd_calibrate(config: Config, args: argparse.Namespace) -> int:
    from engine import Engine
    from engine.match.calibration import TooSmall

    if not 0 <= args.target_false_alarms < 1 or args.sample < 1:
        print("error: --sample must be positive and --target-false-alarms between 0 and 1", file=sys.stderr)
        return 2
    engine = Engine(config)
    engine.reindex()  # calibrate on the collection as it is now (an unchanged one costs a scan)
    bar = None
    if not args.json:
        from tqdm import tqdm

        def progress(done: int, total: int) -> None:
            nonlocal bar
            bar = bar or tqdm(total=total, unit="design", desc="calibrating", file=sys.stderr)
            bar.update(done - bar.n)
    try:
        made = engine.calibrate(args.sample, args.target_false_alarms, None if args.json else progress)
    except TooSmall as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if bar is not None:
            bar.close()
    summary = made.as_dict()
    if args.json:
        print(json.dumps(summary))
    else:
        score = "off" if made.duplicate_score is None else f"{made.duplicate_score:.3f}"
        print(f"Verdicts {made.summary()} (target {100 * made.target_false_alarms:.1f}%): "
              f"{made.copies} edited copies, {made.negatives} negatives; a fused score makes a copy from {score}, "
              f"{made.duplicate_points} agreeing points do, the same picture needs every cosine >= {made.exact_cosine:.3f}")
    return 0


def cmd_models_status(config: Config, args: argparse.Namespace) -> int:
    from engine import models
    from features.device import describe as describe_device, resolve as resolve_device

    rows = [row.as_dict() for row in models.status(config.models_dir)]
    if args.json:
        print(json.dumps(rows))
    else:
        print(f"device: {describe_device(resolve_device(config.device))}")
        for row in rows:
            state = (f"present, from {row['source']}" + ("" if row["official"] else ", NOT an official file")
                     if row["present"] else "MISSING")
            print(f"{row['name']:7s} {state:45s} {row['path']}\n        {row['description']}")
        if not next(row for row in rows if row["name"] == "resnet")["present"]:
            from features import efficientnet
            bundled = efficientnet.weights_file()
            print(f"shape   {'from ' + efficientnet.DESCRIPTION + ': ' + str(bundled) if bundled else 'off: no weights'}")
    return 0


def cmd_models_fetch(config: Config, args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from engine import models
    from engine.models.download import FetchFailed, ModelsFolderUnwritable

    def progress(what: str, total: int | None, initial: int):
        bar = tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, desc=what,
                   file=sys.stderr)

        class Bar:  # tqdm counts increments; the fetch reports bytes so far
            def update(self, done: int) -> None:
                bar.update(done - bar.n)

            def close(self) -> None:
                bar.close()

        return Bar()

    def report(line: str) -> None:
        print(f"  failed: {line}", file=sys.stderr, flush=True)

    try:
        fetched = models.fetch(config.models_dir, progress, report)
    except (FetchFailed, ModelsFolderUnwritable) as exc:
        lead = "some weights could not be fetched.\n" if isinstance(exc, FetchFailed) else ""
        print(f"error: {lead}{exc}", file=sys.stderr)
        return 1
    print("fetched: " + (", ".join(fetched) if fetched else "nothing (all weights present)"))
    return 0


def cmd_models_import(config: Config, args: argparse.Namespace) -> int:
    from engine import models

    for source in args.files:
        try:
            row = models.import_file(config.models_dir, source)
        except (OSError, ValueError) as exc:
            print(f"error: {source}: {exc}", file=sys.stderr)
            return 1
        note = "" if row.official else " (not the official file: it will load with a warning)"
        print(f"imported {source} as {row.name} -> {row.path}{note}")
    return 0


def cmd_set_password(config: Config, args: argparse.Namespace) -> int:
    from web.passwords import MIN_LENGTH, store_password

    password = os.environ.get("LOOKALIKE_PASSWORD") or getpass.getpass("New password: ")
    if not os.environ.get("LOOKALIKE_PASSWORD") and password != getpass.getpass("Repeat: "):
        print("error: the passwords differ", file=sys.stderr)
        return 1
    if len(password) < MIN_LENGTH:
        print(f"error: use at least {MIN_LENGTH} characters", file=sys.stderr)
        return 1
    store_password(config.cache, password)
    print("password stored (hashed) in", config.cache)
    return 0


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None  # an empty flag or variable means the default


class _progress_bar:
    """A tqdm bar fed by the engine's progress, on stderr; silent with --json."""

    def __init__(self, engine, quiet: bool) -> None:
        self.engine, self.quiet, self.bar = engine, quiet, None

    def __enter__(self):
        if not self.quiet:
            from tqdm import tqdm

            def update(done: int, total: int, current: str) -> None:
                if self.bar is None:
                    self.bar = tqdm(total=total, unit="img", desc="indexing", file=sys.stderr)
                self.bar.update(done - self.bar.n)

            self.engine.on_progress(update)
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()


if __name__ == "__main__":
    sys.exit(main())
