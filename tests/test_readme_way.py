"""Lookalike run the way the README says: a copy of the repository, its root as the working
directory, every default path relative and untouched (static/images, cache), no weights.

Absolute temporary paths, which every other test uses, hide the bugs this layer is for:
a relative cache that one library resolves against its own folder, say.
"""
from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from conftest import ROOT
from test_browser import ARTIFACTS, browser, page  # noqa: F401  (fixtures)

PASSWORD = "readme-way-" + uuid.uuid4().hex
AUTH = {"Authorization": "Basic " + base64.b64encode(f":{PASSWORD}".encode()).decode()}
START_DEADLINE = 300  # seconds: a hang guard for a loaded machine, not a speed target


def repository_copy(target: Path) -> Path:
    """The files a fresh clone has (what git tracks, or would track: not what it ignores), nothing a run made."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                                cwd=ROOT, capture_output=True, check=True).stdout
        files = [name for name in listed.decode().split("\0") if name]
    except (OSError, subprocess.CalledProcessError):
        skip = {".venv", "cache", ".git", "test-artifacts", "__pycache__"}
        files = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*")
                 if p.is_file() and not skip & set(p.relative_to(ROOT).parts)]
    for name in files:
        if (ROOT / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target / name)
    return target


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def fetch(url: str, data: bytes | None = None, headers: dict | None = None) -> tuple[int, str, bytes]:
    request = urllib.request.Request(url, data=data, headers={**AUTH, **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.headers.get_content_type(), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get_content_type(), exc.read()


class Served:
    """The running server and how many designs its collection holds now."""

    def __init__(self, base: str, root: Path, designs: int, process: subprocess.Popen) -> None:
        self.base, self.root, self.designs, self.process = base, root, designs, process

    def __iter__(self):  # base, root, designs, process
        return iter((self.base, self.root, self.designs, self.process))


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """`python image.py serve` in a repository copy, as the README starts it."""
    root = repository_copy(tmp_path_factory.mktemp("fresh-clone"))
    designs = sorted((root / "static" / "images").glob("*.png"))
    # A copy under another name, so the Duplicates page has a group to show; named as a
    # file manager names it, it sorts before every bundled design (the networks' own
    # checks must not take the collection's first design for theirs).
    shutil.copyfile(designs[4], root / "static" / "images" / f"Copy of {designs[4].name}")
    port = free_port()
    env = {**os.environ, "LOOKALIKE_PASSWORD": PASSWORD, "LOOKALIKE_PORT": str(port), "PYTHONUNBUFFERED": "1"}
    for name in ("LOOKALIKE_IMAGES", "LOOKALIKE_CACHE", "LOOKALIKE_MODELS"):
        env.pop(name, None)
    log = (root / "serve.log").open("w")
    process = subprocess.Popen([sys.executable, "image.py", "serve"], cwd=root, env=env, stdout=log,
                               stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        yield Served(base, root, len(designs) + 1, process)
    finally:
        process.terminate()
        process.wait(timeout=60)
        log.close()


def wait_for_start_up_index(base: str, expected: int, process) -> dict:
    """Until /health says the collection is indexed; nobody clicks Reindex."""
    deadline = time.monotonic() + START_DEADLINE
    while time.monotonic() < deadline:
        assert process.poll() is None, "the server exited"
        try:
            status, _, body = fetch(base + "/health")
        except (urllib.error.URLError, OSError):
            status = None  # not listening yet
        if status == 200:
            health = json.loads(body)
            if health["images"] == expected and not health["reindex"]["running"]:
                return health
        time.sleep(0.2)  # polling another process: there is nothing in it to wait on
    raise AssertionError("the start-up index did not finish")


def multipart(field: str, name: str, data: bytes) -> tuple[bytes, dict]:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{name}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def page_assets(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="(/static/[^"]+)"', html)


def test_serve_indexes_at_start_and_every_url_the_pages_use_answers(served):
    base, root, _, process = served
    health = wait_for_start_up_index(base, served.designs, process)
    assert health["status"] == "degraded" and set(health["features_off"]) == {"clip"}
    assert "EfficientNet-Lite0" in health["shape_network"]  # the learned shape feature every install has
    assert (root / "cache" / "index.npz").is_file()  # the relative default, under the working directory
    assert not (root / "web" / "cache").exists()

    status, kind, page = fetch(base + "/")
    assert status == 200 and kind == "text/html"
    assets = page_assets(page.decode())
    assert any(a.endswith(".js") for a in assets) and any(a.endswith(".css") for a in assets)
    for asset in assets:
        assert fetch(base + asset)[0] == 200, asset

    query = sorted((root / "static" / "images").glob("*.png"))[3]
    body, headers = multipart("image", query.name, query.read_bytes())
    status, _, answer = fetch(base + "/search", body, headers)
    assert status == 200
    results = json.loads(answer)["results"]
    assert results[0]["path"] == query.name and results[0]["verdict"] == "exact"
    for result in results:
        for key in ("thumb_url", "image_url"):
            status, kind, data = fetch(base + result[key])
            assert status == 200 and kind.startswith("image/") and data, (key, result["path"])

    status, _, view = fetch(base + "/duplicates/view")
    assert status == 200
    for asset in page_assets(view.decode()):
        assert fetch(base + asset)[0] == 200, asset
    groups = json.loads(fetch(base + "/duplicates")[2])["groups"]
    assert groups, "the planted copy forms a group"
    for path in (p for g in groups for p in g["paths"]):
        status, kind, _ = fetch(base + "/thumb/" + urllib.request.quote(path))
        assert status == 200 and kind == "image/jpeg", path


def test_a_missing_thumbnail_is_made_again_not_a_500(served):
    base, root, _, process = served
    wait_for_start_up_index(base, served.designs, process)
    for thumb in (root / "cache" / "thumbs").rglob("*.jpg"):
        thumb.unlink()
    name = sorted((root / "static" / "images").glob("*.png"))[5].name
    status, kind, data = fetch(base + "/thumb/" + urllib.request.quote(name))
    assert status == 200 and kind == "image/jpeg" and data


def test_designs_copied_in_while_serving_are_found_without_a_click(served):
    base, root, _, process = served
    wait_for_start_up_index(base, served.designs, process)
    # The watcher's interval is minutes; a reindex request stands in for its next tick,
    # which runs the same code (Engine.keep_up_to_date -> start_reindex).
    source = sorted((root / "static" / "images").glob("*.png"))[7]
    shutil.copyfile(source, root / "static" / "images" / "arrived later.png")
    served.designs += 1
    assert fetch(base + "/reindex", b"", {"Content-Type": "application/x-www-form-urlencoded"})[0] in (202, 409)
    wait_for_start_up_index(base, served.designs, process)


def every_picture_rendered(page, selector: str) -> None:
    from playwright.sync_api import expect

    pictures = page.locator(f"{selector} img")
    expect(pictures.first).to_be_visible()
    for i in range(pictures.count()):
        pictures.nth(i).scroll_into_view_if_needed()
    page.wait_for_function(
        "(s) => [...document.querySelectorAll(s + ' img')].every((img) => img.complete && img.naturalWidth > 0)",
        arg=selector)


def test_every_picture_on_the_search_and_duplicates_pages_renders(served, page):
    from playwright.sync_api import expect

    base, root, _, process = served
    wait_for_start_up_index(base, served.designs, process)
    page.goto(base + "/")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    expect(page.locator("body[data-ready=true]")).to_be_attached()
    expect(page.locator("#w-clip")).to_be_disabled()  # no CLIP weights: its control says so
    expect(page.locator("#w-resnet")).to_be_enabled()  # shape comes from the bundled network
    query = sorted((root / "static" / "images").glob("*.png"))[2]
    page.set_input_files("#file", str(query))
    expect(page.locator("#results .card").first).to_have_attribute("data-path", query.name)
    every_picture_rendered(page, "#results")
    expect(page.locator("#results .card").first.locator(".feature meter")).to_have_count(2)  # shape + colour
    page.screenshot(path=str(ARTIFACTS / "readme-way-search.png"), full_page=True)
    page.goto(base + "/duplicates/view")
    every_picture_rendered(page, "#groups")
    page.screenshot(path=str(ARTIFACTS / "readme-way-duplicates.png"), full_page=True)
