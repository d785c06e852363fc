"""Incremental indexing: only what changed is extracted; bad files are skipped and reported."""
import os

import pytest

from engine.index import store
from engine import Engine
from features.hsv import HsvHistogram
from conftest import make_design
from fakes import CountingExtractor


def engine_for(cfg, **fake):
    """An engine counting network calls; regions off so each call is one whole image."""
    network = CountingExtractor(**fake)
    cfg = cfg.with_overrides(regions=False)
    return Engine(cfg, extractors={"resnet": network, "hsv": HsvHistogram()}), network


def test_first_index_then_unchanged_extracts_nothing(cfg, collection):
    engine, network = engine_for(cfg)
    report = engine.reindex()
    assert (report.indexed, report.unchanged, report.skipped) == (12, 0, [])
    assert network.embedded == 12
    again = engine.reindex()
    assert (again.indexed, again.unchanged, again.removed) == (0, 12, 0)
    assert network.embedded == 12


def test_new_changed_and_deleted_files_are_detected(cfg, collection):
    engine, network = engine_for(cfg)
    engine.reindex()
    make_design(100).save(cfg.images / "new.png")
    changed = cfg.images / "design_00.png"
    make_design(101).save(changed)
    os.utime(changed, ns=(1, 1))  # a different mtime even on coarse clocks
    (cfg.images / "design_01.png").unlink()
    report = engine.reindex()
    assert (report.indexed, report.unchanged, report.removed) == (2, 10, 1)
    assert network.embedded == 14
    paths = {e.path for e in engine.snapshot.data.entries}
    assert "new.png" in paths and "design_01.png" not in paths


def test_broken_files_are_skipped_with_reasons_and_the_rest_indexed(cfg, collection):
    (cfg.images / "empty.png").write_bytes(b"")
    (cfg.images / "text.jpg").write_text("not really a jpeg")
    (cfg.images / "sub").mkdir()
    (cfg.images / "sub" / "half.png").write_bytes((cfg.images / "design_02.png").read_bytes()[:300])
    (cfg.images / ".DS_Store").write_bytes(b"\x00\x01")
    (cfg.images / "Thumbs.db").write_bytes(b"\x00\x01")
    engine, _ = engine_for(cfg)
    report = engine.reindex()
    reasons = {s["path"]: s["reason"] for s in report.skipped}
    assert set(reasons) == {"empty.png", "text.jpg", "sub/half.png"}
    assert "empty" in reasons["empty.png"] and "not an image" in reasons["text.jpg"]
    assert report.indexed == 12
    # Known-bad files are reported again but not re-read.
    assert {s["path"] for s in engine.reindex().skipped} == set(reasons)


def test_changed_fingerprint_recomputes_only_that_feature(cfg, collection):
    engine, network = engine_for(cfg)
    engine.reindex()
    upgraded, upgraded_net = engine_for(cfg, version="v2")
    report = upgraded.reindex()
    assert upgraded_net.embedded == 12 and report.indexed == 12
    assert upgraded.snapshot.data.fingerprints["resnet"] == "fake-resnet-v2"


def test_feature_that_appears_later_is_the_only_one_extracted(cfg, collection):
    colour_only = Engine(cfg.with_overrides(regions=False), extractors={"hsv": HsvHistogram()})
    colour_only.reindex()
    assert colour_only.snapshot.features == ("hsv",)
    engine, network = engine_for(cfg)
    calls = []
    hsv = engine.networks.extractors["hsv"]
    original = hsv.embed
    hsv.embed = lambda images: calls.append(len(images)) or original(images)
    engine.reindex()
    assert network.embedded == 12 and calls == []
    assert engine.snapshot.features == ("resnet", "hsv")


def test_interrupted_index_resumes_from_its_checkpoint(cfg, collection):
    crashing, _ = engine_for(cfg, fail_after=8)
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashing.reindex()
    saved = store.load(cfg.index_file)
    assert not saved.complete and len(saved) == 8
    engine, network = engine_for(cfg)
    report = engine.reindex()
    assert report.indexed == 4 and report.unchanged == 8 and network.embedded == 4
    assert len(engine.snapshot.data) == 12 and engine.snapshot.data.complete


def test_symlink_leaving_the_collection_is_not_indexed(cfg, collection, tmp_path):
    outside = tmp_path / "secret.png"
    make_design(55).save(outside)
    (cfg.images / "link.png").symlink_to(outside)
    engine, _ = engine_for(cfg)
    engine.reindex()
    assert "link.png" not in {e.path for e in engine.snapshot.data.entries}


def test_a_folder_of_awkward_files_indexes_every_valid_one(cfg):
    """Real-world oddities side by side: each valid file indexed, each broken one reported."""
    import io

    from PIL import Image

    from conftest import encode
    from test_decode import _bomb_png

    design = make_design(7)
    valid = {
        "cmyk.jpg": encode(design.convert("RGB").convert("CMYK"), "JPEG"),
        "sixteen.png": encode(Image.frombytes("I;16", (64, 64), bytes(range(256)) * 32)),
        "palette-transparent.png": encode(design.convert("P"), transparency=0),
        "ünïcødé designs/ring №1.png": encode(design),
    }
    exif = Image.Exif()
    exif[0x0112] = 6
    valid["rotated.jpg"] = encode(design.convert("RGB"), "JPEG", exif=exif.tobytes())
    gif = io.BytesIO()
    frames = [design.convert("RGB"), make_design(8).convert("RGB")]
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:])
    valid["animated.gif"] = gif.getvalue()
    broken = {"bomb.png": _bomb_png(30_000, 30_000), "zero.jpg": b"", "cut.jpg": valid["cmyk.jpg"][:500]}
    for name, data in {**valid, **broken}.items():
        (cfg.images / name).parent.mkdir(parents=True, exist_ok=True)
        (cfg.images / name).write_bytes(data)
    engine, _ = engine_for(cfg.with_overrides(index_max_pixels=100_000_000))
    report = engine.reindex()
    assert {e.path for e in engine.snapshot.data.entries} == set(valid)
    reasons = {s["path"]: s["reason"] for s in report.skipped}
    assert set(reasons) == set(broken) and "limit" in reasons["bomb.png"]
    rotated = next(e for e in engine.snapshot.data.entries if e.path == "rotated.jpg")
    assert (rotated.width, rotated.height) == (design.height, design.width)


def test_an_unchanged_rescan_rewrites_nothing_and_keeps_the_snapshot(cfg, collection):
    engine = Engine(cfg)
    engine.reindex()
    written, snapshot = cfg.index_file.stat().st_mtime_ns, engine.snapshot
    report = engine.reindex()
    assert report.indexed == 0 and report.unchanged == len(collection) and report.removed == 0
    assert cfg.index_file.stat().st_mtime_ns == written and engine.snapshot is snapshot
    (cfg.images / sorted(collection)[0]).unlink()  # a change is written and served
    assert engine.reindex().removed == 1
    assert engine.snapshot is not snapshot and len(engine.snapshot.data) == len(collection) - 1


def test_touched_files_are_hashed_but_never_extracted_again(cfg, collection):
    engine, network = engine_for(cfg)
    engine.reindex()
    for path in cfg.images.iterdir():
        os.utime(path, ns=(2_000_000_000_000_000_000, 2_000_000_000_000_000_000))
    report = engine.reindex()
    assert (report.unchanged, report.indexed, report.extracted, report.moved) == (12, 0, 0, 0)
    assert network.embedded == 12
    # The new dates are recorded: the next scan does not even hash the files.
    assert {e.mtime_ns for e in engine.snapshot.data.entries} == {2_000_000_000_000_000_000}
    assert engine.reindex().unchanged == 12


def test_moved_and_copied_files_keep_their_features(cfg, collection):
    engine, network = engine_for(cfg)
    engine.reindex()
    before = {e.path: e.sha256 for e in engine.snapshot.data.entries}
    (cfg.images / "archive" / "2024").mkdir(parents=True)
    for path in sorted(cfg.images.glob("design_*.png")):
        path.rename(cfg.images / "archive" / "2024" / path.name)
    (cfg.images / "copy of design_03.png").write_bytes((cfg.images / "archive" / "2024" / "design_03.png").read_bytes())
    report = engine.reindex()
    assert (report.moved, report.removed, report.indexed, report.extracted) == (12, 0, 1, 0)
    assert network.embedded == 12
    after = {e.path: e.sha256 for e in engine.snapshot.data.entries}
    assert after["archive/2024/design_05.png"] == before["design_05.png"]
    assert after["copy of design_03.png"] == before["design_03.png"]
    found = engine.search_bytes((cfg.images / "archive" / "2024" / "design_07.png").read_bytes(), 2)
    assert found[0].path == "archive/2024/design_07.png"


def test_a_file_still_being_written_is_taken_at_the_next_scan(cfg, collection, monkeypatch):
    from engine.index import changes as indexer

    engine, network = engine_for(cfg)
    engine.reindex()
    make_design(120).save(cfg.images / "arriving.png")
    real_scan = indexer.scan

    def scan_while_writing(root, unreadable=None):
        for file in real_scan(root, unreadable):  # the scan saw fewer bytes than the read will
            yield file if file.path != "arriving.png" else indexer.FileInfo(file.path, file.size - 100, file.mtime_ns)

    monkeypatch.setattr(indexer, "scan", scan_while_writing)
    report = engine.reindex()
    assert report.indexed == 0 and "next scan" in report.skipped[0]["reason"]
    monkeypatch.setattr(indexer, "scan", real_scan)
    assert engine.reindex().indexed == 1


def test_a_folder_that_cannot_be_read_keeps_what_the_index_knew(cfg, collection, monkeypatch):
    engine, network = engine_for(cfg)
    sub = cfg.images / "shared"
    sub.mkdir()
    make_design(130).save(sub / "kept.png")
    engine.reindex()
    from engine.images import scan

    real_scandir = os.scandir

    def scandir(folder):  # as a share that went away, or a permission taken back (root ignores chmod)
        if os.fspath(folder) == os.fspath(sub.resolve()):
            raise PermissionError(13, "Permission denied", os.fspath(folder))
        return real_scandir(folder)

    monkeypatch.setattr(scan.os, "scandir", scandir)
    report = engine.reindex()
    assert report.removed == 0 and "shared/kept.png" in {e.path for e in engine.snapshot.data.entries}


def test_a_missing_images_folder_leaves_the_index_answering(cfg, collection):
    from engine.index.pipeline import CollectionUnavailable

    engine, network = engine_for(cfg)
    engine.reindex()
    saved = cfg.index_file.read_bytes()
    cfg.images.rename(cfg.images.with_name("unmounted"))
    with pytest.raises(CollectionUnavailable, match="cannot be read"):
        engine.reindex()
    assert cfg.index_file.read_bytes() == saved and engine.snapshot.size == 12
