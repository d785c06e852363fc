#!/usr/bin/env python3
"""Load: concurrent clients against waitress on loopback, uploads and status calls.

Starts `image.py serve`'s app under waitress in this process, then runs
CLIENTS threads for SECONDS: each loops over a search upload (a design from
the collection, re-encoded) and a status call (/health or /reindex). Reports
errors (target 0), throughput, and p50/p99 latency per kind.

    python bench/load.py --images DIR --cache DIR [--clients 16] [--seconds 60]
"""
from __future__ import annotations

import argparse
import base64
import io
import random
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PASSWORD = "load-bench-" + uuid.uuid4().hex


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", required=True)
    parser.add_argument("--cache", required=True)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()

    app, server, base = start_server(Path(args.images), Path(args.cache))
    queries = make_queries(Path(args.images))
    timings: dict[str, list[float]] = {"search": [], "status": []}
    errors: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + args.seconds

    def client(seed: int) -> None:
        rng = random.Random(seed)
        while time.monotonic() < deadline:
            for kind, request in (("search", search_request(base, rng.choice(queries))),
                                  ("status", status_request(base, rng.choice(["/health", "/reindex"])))):
                started = time.perf_counter()
                try:
                    with urllib.request.urlopen(request, timeout=60) as response:
                        response.read()
                except (urllib.error.URLError, OSError) as exc:
                    with lock:
                        errors.append(f"{kind}: {exc}")
                    continue
                with lock:
                    timings[kind].append(time.perf_counter() - started)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    server.close()
    total = sum(len(v) for v in timings.values())
    print(f"{args.clients} clients, {elapsed:.0f} s, {app.extensions['engine'].snapshot.size} images indexed, "
          f"features {app.extensions['engine'].snapshot.features}")
    print(f"requests {total}, errors {len(errors)}, throughput {total / elapsed:.1f} req/s")
    for kind, values in timings.items():
        if values:
            ms = 1000 * np.array(values)
            print(f"  {kind:6s} n={len(ms):5d}  p50 {np.percentile(ms, 50):7.1f} ms  p95 {np.percentile(ms, 95):7.1f} ms  "
                  f"p99 {np.percentile(ms, 99):7.1f} ms")
    for line in errors[:5]:
        print("  error:", line)


def start_server(images: Path, cache: Path, models: Path | None = None, background_report: bool = True):
    """The app under waitress on a free loopback port (indexing first if the index is empty).

    Without `background_report` the engine does not compute the duplicate report
    after start-up, so a latency figure measures searches alone.
    """
    import waitress

    from engine.config import Config
    from engine import Engine
    from web import create_app
    from web.passwords import store_password

    config = Config(images=images, cache=cache, **({"models": models} if models else {}))
    store_password(config.cache, PASSWORD)
    app = create_app(config) if background_report else create_app(config, engine=Engine(config))
    if app.extensions["engine"].snapshot.size == 0:
        app.extensions["engine"].reindex()
    server = waitress.create_server(app, host="127.0.0.1", port=0, threads=8)
    threading.Thread(target=server.run, daemon=True).start()
    return app, server, f"http://127.0.0.1:{server.effective_port}"


def search_latency(images: Path, cache: Path, count: int = 40, models: Path | None = None) -> tuple[int, list[float]]:
    """One client, warm: milliseconds per uploaded search, after a few warm-up queries."""
    app, server, base = start_server(images, cache, models, background_report=False)
    queries = make_queries(images, count)
    for image in queries[:3]:
        urllib.request.urlopen(search_request(base, image), timeout=60).read()
    timings = []
    for image in queries:
        started = time.perf_counter()
        urllib.request.urlopen(search_request(base, image), timeout=60).read()
        timings.append(1000 * (time.perf_counter() - started))
    server.close()
    return app.extensions["engine"].snapshot.size, timings


def make_queries(folder: Path, count: int = 20) -> list[bytes]:
    files = sorted(p for p in folder.rglob("*.png"))[:count]
    out = []
    for path in files:
        buffer = io.BytesIO()
        image = Image.open(path).convert("RGBA")
        flat = Image.alpha_composite(Image.new("RGBA", image.size, "white"), image).convert("RGB")
        flat.save(buffer, "JPEG", quality=85)
        out.append(buffer.getvalue())
    return out


def _auth() -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f":{PASSWORD}".encode()).decode()}


def search_request(base: str, image: bytes) -> urllib.request.Request:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"q.jpg\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode() + image + f"\r\n--{boundary}--\r\n".encode()
    headers = {**_auth(), "Content-Type": f"multipart/form-data; boundary={boundary}"}
    return urllib.request.Request(base + "/search", data=body, headers=headers, method="POST")


def status_request(base: str, path: str) -> urllib.request.Request:
    return urllib.request.Request(base + path, headers=_auth())


if __name__ == "__main__":
    main()
