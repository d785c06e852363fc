#!/usr/bin/env python3
"""Hostile uploads: what tiny files that declare huge pictures cost the server.

Starts `image.py serve` as a separate process on a free loopback port (the
sample collection, a temporary cache), then has CLIENTS threads post the same
payload at once, ROUNDS times, for each payload in turn, and prints the
server's peak resident memory (VmHWM) after each phase with the status codes
it answered:

- a 72 KB GIF declaring 10,000 x 9,990 pixels (refused from its header);
- the largest non-JPEG query accepted, a transparent GIF just under the query limit;
- a 48 MP JPEG (accepted: JPEGs are decoded at reduced size);
- the tiny-huge GIF as a design to add to the collection (header checked, never decoded).

    python bench/hostile_uploads.py [--clients 8] [--rounds 3]     (Linux: reads /proc)
"""
from __future__ import annotations

import argparse
import base64
import collections
import io
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "hostile-bench-" + uuid.uuid4().hex


def gif(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("P", (width, height), 0).save(out, "GIF", transparency=0)
    return out.getvalue()


def jpeg(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.linear_gradient("L").convert("RGB").resize((width, height)).save(out, "JPEG", quality=80)
    return out.getvalue()


def post(base: str, route: str, field: str, data: bytes, name: str) -> int:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{name}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(base + route, data=body, method="POST", headers={
        "Content-Type": f"multipart/form-data; boundary={boundary}",
        "Authorization": "Basic " + base64.b64encode(f":{PASSWORD}".encode()).decode()})
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_serving(base: str, process: subprocess.Popen) -> None:
    while process.poll() is None:
        try:
            urllib.request.urlopen(base + "/login", timeout=5).read()
            return
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)  # polling a server that is starting: nothing to wait on instead
    raise RuntimeError("the server exited during start-up")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="lookalike-hostile-"))
    images = work / "images"
    shutil.copytree(ROOT / "static" / "images", images)
    port = free_port()
    env = {**os.environ, "LOOKALIKE_PASSWORD": PASSWORD, "LOOKALIKE_RESCAN_MINUTES": "0"}
    process = subprocess.Popen([sys.executable, str(ROOT / "image.py"), "serve", "--images", str(images),
                                "--cache", str(work / "cache"), "--port", str(port)],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(base, process)
        post(base, "/search", "image", jpeg(400, 300), "warm.jpg")  # libraries loaded, first search done
        print(f"{args.clients} clients x {args.rounds} rounds per payload; server peak RSS after start-up and "
              f"one search: {peak_mb(process.pid):.0f} MB")
        largest_gif_side = int((24_000_000) ** 0.5) - 1
        phases = [
            ("search: 10,000 x 9,990 GIF", "/search", "image", gif(10_000, 9_990)),
            (f"search: {largest_gif_side} x {largest_gif_side} GIF", "/search", "image",
             gif(largest_gif_side, largest_gif_side)),
            ("search: 8,000 x 6,000 JPEG", "/search", "image", jpeg(8_000, 6_000)),
            ("add to collection: 10,000 x 9,990 GIF", "/collection", "images", gif(10_000, 9_990)),
        ]
        for label, route, field, data in phases:
            codes: collections.Counter = collections.Counter()
            lock = threading.Lock()
            started = time.perf_counter()

            def client() -> None:
                for _ in range(args.rounds):
                    code = post(base, route, field, data, "upload")
                    with lock:
                        codes[code] += 1

            threads = [threading.Thread(target=client) for _ in range(args.clients)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            print(f"  {label} ({len(data) / 1024:.0f} KB): answers {dict(codes)} in "
                  f"{time.perf_counter() - started:.1f} s; server peak RSS so far {peak_mb(process.pid):.0f} MB")
    finally:
        process.terminate()
        process.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
