"""The indexing workers as processes: the same index as threads make, and only where they pay."""
import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from PIL import Image

from engine.index import worker_processes
from engine.index.pipeline import Indexer
from engine.index.store import IndexData
from features import registry
from conftest import make_design
from fakes import CountingExtractor, square_or_exit


_real_pool = worker_processes.pool


def _worker_features(regions: bool = True) -> dict:
    names = [n for n in registry.IN_WORKERS if regions or n != "regions"]
    return {name: registry.build(name) for name in names}


def _sheet() -> Image.Image:
    """Four designs on one white page: the workers cut them out as regions."""
    sheet = Image.new("RGB", (1400, 1000), "white")
    for i, (x, y) in enumerate(((80, 80), (760, 80), (80, 540), (760, 540))):
        design = make_design(40 + i).convert("RGBA").resize((420, 380))
        sheet.paste(design, (x, y), design)
    return sheet


def test_processes_make_the_same_index_as_threads(cfg, collection, monkeypatch):
    started = []
    monkeypatch.setattr(worker_processes, "pool", lambda *a: started.append(a) or _real_pool(*a))
    _sheet().save(cfg.images / "sheet.png")
    (cfg.images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    extractors = {**_worker_features(), "resnet": CountingExtractor()}
    indexes = {}
    for mode in ("off", "on"):
        config = cfg.with_overrides(cache=cfg.cache / mode, worker_processes=mode)
        indexes[mode], report = Indexer(config, extractors).run(IndexData())
        assert report.indexed == 13 and [s["path"] for s in report.skipped] == ["broken.png"]
    assert len(started) == 1  # the second run, and only it, ran in processes
    threads, processes = indexes["off"], indexes["on"]
    assert [e.path for e in threads.entries] == [e.path for e in processes.entries]
    assert sorted(threads.vectors) == sorted(processes.vectors)
    for name, block in threads.vectors.items():
        assert np.array_equal(block, processes.vectors[name]), name
    assert len(threads.regions) >= 4
    assert np.array_equal(threads.regions.boxes, processes.regions.boxes)
    for name, block in threads.regions.vectors.items():
        assert np.array_equal(block, processes.regions.vectors[name]), name
    assert sorted(p.name for p in (cfg.cache / "on" / "thumbs").rglob("*.jpg")) == \
        sorted(p.name for p in (cfg.cache / "off" / "thumbs").rglob("*.jpg"))


def test_processes_are_used_only_on_many_cores_for_large_runs_and_never_for_stand_ins(cfg, monkeypatch):
    monkeypatch.setattr(worker_processes.os, "cpu_count", lambda: 16)
    assert worker_processes.wanted(cfg, 500)
    assert not worker_processes.wanted(cfg, 20)  # a few new files: the start would cost more
    assert not worker_processes.wanted(cfg.with_overrides(worker_processes="off"), 500)
    monkeypatch.setattr(worker_processes.os, "cpu_count", lambda: 2)
    assert not worker_processes.wanted(cfg, 5000)
    assert worker_processes.wanted(cfg.with_overrides(worker_processes="on"), 5)

    forced = cfg.with_overrides(worker_processes="on")
    assert worker_processes.stage(Indexer(forced, _worker_features(regions=False)), 5)[1]
    # A stand-in for a worker feature cannot be rebuilt in a process: threads.
    stand_in = Indexer(forced, {"hsv": CountingExtractor("hsv"), "orb": registry.build("orb")})
    assert not worker_processes.stage(stand_in, 5)[1]


def _spawned(workers):
    return ProcessPoolExecutor(max_workers=workers or 2, mp_context=multiprocessing.get_context("spawn"))


def test_a_file_that_kills_its_worker_process_is_reported_and_the_run_goes_on():
    """Every file in flight when a process dies is tried again alone; only the killer is lost."""
    items = [f"design {n}" for n in range(12)]
    items.insert(5, "poison")  # fakes.square_or_exit ends its process on this one
    results = list(worker_processes.completed_in_processes(square_or_exit, items, window=4, new_pool=_spawned,
                                                           crashed=lambda item: ("crashed", item)))
    assert sorted(results, key=str) == sorted([("crashed", "poison")] + [("done", i) for i in items if i != "poison"],
                                              key=str)
