"""`models fetch` against local servers that behave like the real sources (loopback only):
several sources tried in order, each verified, transfers resumed, the Hub's reported hash
checked, a mirror folder first, and an honest message when everything fails."""
from __future__ import annotations

import contextlib
import hashlib
import http.server
import threading
from dataclasses import replace

import pytest

from engine.models import download as downloads
from engine import models
from features import registry
from features.weights import WeightsSource


class Site:
    """A loopback HTTP server whose routes are set by each test; it logs every request."""

    def __init__(self) -> None:
        self.routes: dict[str, dict] = {}
        self.requests: list[tuple[str, str | None]] = []
        site = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                site.requests.append((self.path, self.headers.get("Range")))
                route = site.routes.get(self.path, {"status": 404})
                if "redirect" in route:
                    self.send_response(302)
                    self.send_header("Location", route["redirect"])
                    for name, value in route.get("headers", {}).items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if route.get("status", 200) != 200:
                    self.send_error(route["status"])
                    return
                body, start = route["body"], 0
                asked = self.headers.get("Range")
                if asked and route.get("ranges", True):
                    start = int(asked.split("=")[1].rstrip("-"))
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                for name, value in route.get("headers", {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                cut = route.pop("cut_after", None)  # the connection drops once, part-way
                self.wfile.write(body[start:cut] if cut is not None else body[start:])
                if cut is not None:
                    self.wfile.flush()
                    self.close_connection = True

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def site():
    served = Site()
    yield served
    served.server.shutdown()


@pytest.fixture(scope="module")
def resnet_bytes(weight_files) -> bytes:
    return weight_files["resnet"].read_bytes()


def resnet_spec(*sources: WeightsSource):
    return replace(registry.spec_of("resnet"), sources=tuple(sources))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def run(cfg, spec, lines=None, mirror=""):
    return downloads.fetch(cfg.models_dir, [spec], check=models.check_loads, present=lambda s: False,
                           report=(lines.append if lines is not None else lambda line: None), mirror=mirror)


def test_a_dead_source_falls_through_to_the_next(cfg, site, resnet_bytes):
    site.routes["/good/resnet.pth"] = {"body": resnet_bytes}
    spec = resnet_spec(WeightsSource("dead", site.base + "/dead/resnet.pth", ".pth", sha256=sha(resnet_bytes)),
                       WeightsSource("good", site.base + "/good/resnet.pth", ".pth", sha256=sha(resnet_bytes)[:8]))
    lines = []
    assert run(cfg, spec, lines) == ["resnet"]
    assert len(lines) == 1 and "dead" in lines[0] and "404" in lines[0]
    assert (cfg.models_dir / "resnet50-11ad3fa6.pth").read_bytes() == resnet_bytes
    assert {r.name: r.source for r in models.status(cfg.models_dir)}["resnet"] == "good"


def test_a_file_with_the_wrong_hash_is_refused_and_nothing_is_left(cfg, site, resnet_bytes):
    site.routes["/tampered.pth"] = {"body": resnet_bytes[:-4] + b"evil"}
    spec = resnet_spec(WeightsSource("tampered", site.base + "/tampered.pth", ".pth", sha256=sha(resnet_bytes)))
    with pytest.raises(downloads.FetchFailed) as failed:
        run(cfg, spec)
    assert "does not match" in str(failed.value)
    assert list(cfg.models_dir.iterdir()) == []


def test_an_interrupted_transfer_resumes_with_a_range_request(cfg, site, resnet_bytes):
    half = len(resnet_bytes) // 2
    site.routes["/resnet.pth"] = {"body": resnet_bytes, "cut_after": half}
    spec = resnet_spec(WeightsSource("flaky", site.base + "/resnet.pth", ".pth", sha256=sha(resnet_bytes)))
    assert run(cfg, spec) == ["resnet"]
    assert site.requests[0] == ("/resnet.pth", None)
    path, asked = site.requests[1]
    assert path == "/resnet.pth" and asked is not None and int(asked.split("=")[1].rstrip("-")) > 0
    assert (cfg.models_dir / "resnet50-11ad3fa6.pth").read_bytes() == resnet_bytes


def test_the_hubs_reported_hash_is_checked_before_and_after(cfg, site, resnet_bytes):
    digest = sha(resnet_bytes)
    site.routes["/repo/resolve/rev/model.bin"] = {"redirect": site.base + "/cdn/blob",
                                                   "headers": {"X-Linked-Etag": f'"{digest}"'}}
    site.routes["/cdn/blob"] = {"body": resnet_bytes, "headers": {"ETag": '"not-a-hash"'}}
    vouched = WeightsSource("hub", site.base + "/repo/resolve/rev/model.bin", ".bin", reports_sha256=True)
    assert run(cfg, resnet_spec(vouched)) == ["resnet"]
    assert (cfg.models_dir / "resnet50-11ad3fa6.bin").read_bytes() == resnet_bytes

    # A pinned hash the Hub does not confirm: refused before a byte of the file is taken.
    (cfg.models_dir / "resnet50-11ad3fa6.bin").unlink()
    site.requests.clear()
    pinned = replace(vouched, sha256="0" * 64)
    with pytest.raises(downloads.FetchFailed, match="server reports SHA-256"):
        run(cfg, resnet_spec(pinned))
    # And a server that reports no hash cannot vouch for an unpinned file.
    site.routes["/repo/resolve/rev/model.bin"]["headers"] = {}
    with pytest.raises(downloads.FetchFailed, match="reported no SHA-256"):
        run(cfg, resnet_spec(vouched))


def test_a_mirror_folder_comes_first(cfg, site, tmp_path, resnet_bytes):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "resnet50-11ad3fa6.pth").write_bytes(resnet_bytes)
    spec = resnet_spec(WeightsSource("torchvision", site.base + "/models/resnet50-11ad3fa6.pth", ".pth",
                                     sha256=sha(resnet_bytes)[:8]))
    assert run(cfg, spec, mirror=str(mirror)) == ["resnet"]
    assert site.requests == []  # the source itself was never asked
    assert models.status(cfg.models_dir)[1].source == "mirror (torchvision)"


def test_a_file_that_does_not_load_as_the_network_is_refused(cfg, site):
    import io

    import torch

    junk = io.BytesIO()
    torch.save({"conv1.weight": torch.zeros(1)}, junk)
    site.routes["/junk.pth"] = {"body": junk.getvalue()}
    spec = resnet_spec(WeightsSource("junk", site.base + "/junk.pth", ".pth", sha256=sha(junk.getvalue())))
    with pytest.raises(downloads.FetchFailed, match="does not load as ResNet50"):
        run(cfg, spec)
    assert not any(cfg.models_dir.glob("resnet50*"))


def test_when_every_source_fails_the_command_says_what_was_tried_and_the_way_by_hand(cfg, site, monkeypatch, capsys):
    import image

    dead = [WeightsSource(f"source {i}", f"{site.base}/dead/{i}.pth", ".pth", sha256="ab" * 32) for i in (1, 2)]
    for name, sources in (("resnet", dead), ("clip", dead[:1])):
        feature = registry.BY_NAME[name]
        monkeypatch.setitem(registry.BY_NAME, name, replace(feature, weights=replace(feature.weights, sources=tuple(sources))))
    monkeypatch.delenv(downloads.MIRROR_ENV, raising=False)
    assert image.main(["models", "fetch", "--cache", str(cfg.cache)]) == 1
    err = capsys.readouterr().err
    assert "source 1" in err and "source 2" in err and "HTTP 404" in err
    assert "models import FILE" in err and f"{site.base}/dead/1.pth" in err


def test_an_unwritable_models_folder_is_named(cfg, site, resnet_bytes, monkeypatch):
    site.routes["/resnet.pth"] = {"body": resnet_bytes}
    spec = resnet_spec(WeightsSource("good", site.base + "/resnet.pth", ".pth", sha256=sha(resnet_bytes)))
    real_open = type(cfg.models_dir).open

    def full_disk(path, mode="r", *args, **kwargs):
        if path.name.endswith(".part") and "b" in mode and ("w" in mode or "a" in mode):
            raise OSError(28, "No space left on device")
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(type(cfg.models_dir), "open", full_disk)
    with pytest.raises(downloads.ModelsFolderUnwritable, match="No space left"):
        run(cfg, spec)
    assert not (cfg.models_dir / "resnet50-11ad3fa6.pth").exists()


def test_every_configured_source_is_verified_by_a_pinned_or_reported_hash():
    for spec in registry.weights_specs():
        assert spec.sources
        for source in spec.sources:
            assert source.url.startswith("https://")
            assert source.sha256 or source.reports_sha256, (spec.name, source.label)
    clip_sources = [s.label for s in registry.spec_of("clip").sources]
    assert clip_sources[0].startswith("Hugging Face Hub") and "OpenAI release" in clip_sources
