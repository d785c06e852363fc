"""Files Lookalike writes: whole or not at all; previews cheap, and made anew when a power cut emptied one."""
import os

from PIL import Image

from engine.images.thumbs import thumb_path, write_thumb
from features.files import atomic_write


def _counting_fsync(monkeypatch) -> list:
    calls = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real(fd)))
    return calls


def test_a_durable_write_reaches_the_disk_before_it_counts_and_a_cheap_one_does_not_wait(tmp_path, monkeypatch):
    calls = _counting_fsync(monkeypatch)
    atomic_write(tmp_path / "index.json", "{}")
    assert len(calls) == 2  # the file, then the folder holding its new name
    calls.clear()
    atomic_write(tmp_path / "preview.jpg", b"bytes", durable=False)
    assert calls == [] and (tmp_path / "preview.jpg").read_bytes() == b"bytes"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_previews_are_written_without_waiting_for_the_disk(tmp_path, monkeypatch):
    calls = _counting_fsync(monkeypatch)
    write_thumb(tmp_path, "ab" * 32, Image.new("RGB", (300, 200), "teal"))
    assert calls == []
    with Image.open(thumb_path(tmp_path, "ab" * 32)) as preview:
        assert max(preview.size) == 256


def test_a_preview_a_power_cut_left_empty_is_made_again_and_a_good_one_is_kept(tmp_path):
    target = thumb_path(tmp_path, "cd" * 32)
    target.parent.mkdir(parents=True)
    target.write_bytes(b"")
    write_thumb(tmp_path, "cd" * 32, Image.new("RGB", (300, 200), "teal"))
    with Image.open(target) as preview:
        assert preview.getpixel((10, 10))[1] > 100  # teal, readable
    made = target.stat().st_mtime_ns
    write_thumb(tmp_path, "cd" * 32, Image.new("RGB", (300, 200), "red"))
    assert target.stat().st_mtime_ns == made
