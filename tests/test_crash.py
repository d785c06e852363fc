"""Killing the indexer with SIGKILL mid-run loses nothing: the previous index still loads."""
import json
import os
import signal
import subprocess
import sys
import time

from engine.index import store
from conftest import ROOT, make_design


def test_sigkill_mid_reindex_keeps_the_previous_index(cfg, collection):
    env = {**os.environ, "LOOKALIKE_CHECKPOINT_EVERY": "8", "LOOKALIKE_BATCH_SIZE": "4"}
    command = [sys.executable, str(ROOT / "image.py"), "index", "--images", str(cfg.images), "--cache", str(cfg.cache), "--json"]
    first = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert json.loads(first.stdout.splitlines()[-1])["indexed"] == 12
    for seed in range(200, 400):
        make_design(seed, size=600).save(cfg.images / f"more_{seed}.png")
    before = cfg.index_file.stat().st_mtime_ns
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    try:
        # Wait for the first checkpoint of the new run (the index file is replaced), then kill
        # without warning.  The deadline only stops a broken run from hanging the suite.
        deadline = time.monotonic() + 300
        while cfg.index_file.stat().st_mtime_ns == before and process.poll() is None:
            assert time.monotonic() < deadline, "no checkpoint was written"
            try:
                process.wait(timeout=0.05)
            except subprocess.TimeoutExpired:
                pass
        assert process.poll() is None, "indexing finished before it could be killed"
        process.send_signal(signal.SIGKILL)
        process.wait()
    finally:
        if process.poll() is None:
            process.kill()
    survived = store.load(cfg.index_file)  # loads: no torn write
    paths = {e.path for e in survived.entries}
    assert {f"design_{s:02d}.png" for s in range(12)} <= paths
    resumed = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    report = json.loads(resumed.stdout.splitlines()[-1])
    assert report["indexed"] + report["unchanged"] == 212
    assert report["unchanged"] >= len(paths)  # nothing already extracted was redone
