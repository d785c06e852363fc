"""The command-line contract scripts depend on: image.py index / search / models."""
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT, encode


def run(*args, env_extra=None, cwd=None):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env_extra or {})}
    return subprocess.run([sys.executable, str(ROOT / "image.py"), *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=600, cwd=cwd)


@pytest.fixture
def indexed(cfg, collection):
    (cfg.images / "broken.jpg").write_text("not an image")
    result = run("index", "--images", cfg.images, "--cache", cfg.cache, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_index_json_summary(indexed):
    assert indexed["indexed"] == 12 and indexed["unchanged"] == 0 and indexed["removed"] == 0
    assert indexed["skipped"] == [{"path": "broken.jpg", "reason": indexed["skipped"][0]["reason"]}]
    assert "not an image" in indexed["skipped"][0]["reason"]
    # No weights downloaded: the bundled EfficientNet-Lite0 provides the shape feature.
    assert indexed["features"] == ["hsv", "orb", "orb_mirror", "regions", "resnet", "thumbprint"] and indexed["seconds"] >= 0


def test_search_json_one_line_per_query(cfg, collection, indexed, tmp_path):
    query = tmp_path / "query copy.jpg"
    query.write_bytes(encode(collection["design_09.png"], "JPEG", quality=90))
    result = run("search", query, cfg.images / "design_01.png", "--images", cfg.images,
                 "--cache", cfg.cache, "--top-k", 2, "--json")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert [line["query"] for line in lines] == [str(query), str(cfg.images / "design_01.png")]
    assert lines[0]["results"][0]["path"] == "design_09.png"
    assert len(lines[1]["results"]) == 2
    first = lines[1]["results"][0]
    assert first["path"] == "design_01.png" and isinstance(first["score"], float)
    assert set(first["scores"]) == {"clip", "resnet", "hsv"}


def test_search_before_anything_is_indexed_says_what_to_run(cfg, collection):
    result = run("search", cfg.images / "design_01.png", "--images", cfg.images, "--cache", cfg.cache, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip())["results"] == []
    assert "nothing is indexed" in result.stderr and "image.py index" in result.stderr


def test_environment_supplies_defaults_and_flags_win(cfg, collection, tmp_path):
    env = {"LOOKALIKE_IMAGES": str(tmp_path / "nowhere"), "LOOKALIKE_CACHE": str(cfg.cache)}
    assert run("index", "--json", env_extra=env).returncode == 2
    ok = run("index", "--images", cfg.images, "--json", env_extra=env)
    assert ok.returncode == 0 and json.loads(ok.stdout.splitlines()[-1])["indexed"] == 12


def test_models_status_json(cfg):
    result = run("models", "status", "--cache", cfg.cache, "--json")
    rows = json.loads(result.stdout)
    assert {r["name"] for r in rows} == {"clip", "resnet"}
    assert all({"name", "path", "present"} <= set(r) for r in rows)
    assert all(r["present"] is False and r["path"].startswith(str(cfg.cache)) for r in rows)


def test_set_password_stores_only_a_hash(cfg):
    result = run("set-password", "--cache", cfg.cache, env_extra={"LOOKALIKE_PASSWORD": "a long password"})
    assert result.returncode == 0, result.stderr
    stored = (cfg.cache / "auth.json").read_text()
    assert "a long password" not in stored and "scrypt" in stored
    assert oct((cfg.cache / "auth.json").stat().st_mode & 0o777) == "0o600"
