"""Lookalike with Milvus as its store, the way a studio runs it: the same answers as FAISS
in this process, from the command line and the page; a Milvus that cannot be reached
gives a 503 with a message and costs nothing already indexed."""
import base64
import dataclasses
import io
import json
import os
import shutil
import threading
import uuid

import pytest

from engine import Engine
from engine.index import milvus
from features.hsv import HsvHistogram
from features.orb import MirroredOrbFeatures, OrbFeatures
from features.thumbprint import ThumbprintFeatures
from web import create_app
from web.passwords import store_password
from conftest import encode
from fakes import CountingExtractor
from test_cli import run

DOWN = "http://127.0.0.1:9"  # nothing listens on the discard port
SERVER = os.environ.get("LOOKALIKE_TEST_MILVUS_URI")


def engine_of(config):
    return Engine(config, extractors={"resnet": CountingExtractor(), "hsv": HsvHistogram(), "orb": OrbFeatures(),
                                      "orb_mirror": MirroredOrbFeatures(), "thumbprint": ThumbprintFeatures()})


@pytest.fixture(params=["lite"] + (["server"] if SERVER else []))
def both(request, cfg, collection, tmp_path):
    """The same collection (with an edited copy in it) indexed with FAISS and with Milvus
    (Lite under the cache folder; a server where LOOKALIKE_TEST_MILVUS_URI names one)."""
    collection["design_05.png"].rotate(12, expand=True).resize((250, 250)).save(cfg.images / "copy_of_05.png")
    on_faiss = engine_of(cfg)
    server = {"milvus_uri": SERVER, "collection": f"t{uuid.uuid4().hex[:10]}"} if request.param == "server" else {}
    on_milvus = engine_of(dataclasses.replace(cfg, cache=tmp_path / "milvus-cache", store="milvus", **server))
    for engine in (on_faiss, on_milvus):
        engine.reindex()
    yield on_faiss, on_milvus
    if server:
        client = on_milvus.store._client_now()
        for name in client.list_collections():
            if name.startswith(server["collection"]):
                client.drop_collection(name)
    for engine in (on_faiss, on_milvus):
        engine.close()


def test_milvus_answers_searches_and_duplicates_as_faiss_does(both, collection):
    on_faiss, on_milvus = both
    snapshot = on_milvus.snapshot
    assert snapshot.in_store and snapshot.local is not None and snapshot.thumbprint_index is not None
    assert (on_milvus.config.cache / "milvus.db").exists() or on_milvus.config.milvus_uri == SERVER
    for name in ("design_05.png", "design_09.png"):
        query = encode(collection[name].resize((200, 200)), "JPEG", quality=85)
        want = [(r.path, r.verdict, round(r.score, 4)) for r in on_faiss.search_bytes(query, top_k=5)]
        got = [(r.path, r.verdict, round(r.score, 4)) for r in on_milvus.search_bytes(query, top_k=5)]
        assert got == want and got[0][0] == name
    groups = [sorted(g.paths) for g in on_milvus.duplicates()]
    assert groups == [sorted(g.paths) for g in on_faiss.duplicates()]
    assert ["copy_of_05.png", "design_05.png"] in groups


def test_a_reindex_sends_milvus_only_what_changed(both, cfg, collection):
    _, on_milvus = both
    on_milvus.snapshot
    (cfg.images / "design_03.png").unlink()
    collection["design_07.png"].resize((300, 300)).save(cfg.images / "new_one.png")
    on_milvus.reindex()
    snapshot = on_milvus.snapshot
    rows = {snapshot.data.entries[r].path for r in snapshot.index.search(snapshot.fused_rows(), 13)[1].ravel() if r >= 0}
    assert "new_one.png" in rows and "design_03.png" not in rows
    assert len(snapshot.index) == snapshot.size == 13


@pytest.fixture
def down_app(cfg, collection):
    """The page of an instance whose Milvus server is not there."""
    store_password(cfg.cache, "correct horse battery")
    engine = engine_of(dataclasses.replace(cfg, store="milvus", milvus_uri=DOWN))
    engine.reindex()  # the local index is saved whatever the store does
    app = create_app(cfg, engine=engine)
    app.config["TESTING"] = True
    yield app, engine
    engine.close()


def test_an_unreachable_milvus_gives_503_with_a_message_and_keeps_the_index(down_app, cfg, collection, monkeypatch):
    app, engine = down_app
    crashed = []
    monkeypatch.setattr(threading, "excepthook", crashed.append)
    engine.warm_duplicates()  # as serve does at start and after each reindex
    for helper in engine.report._helpers:
        helper.join(60)
    assert crashed == []  # the background report waits for the store, without a traceback
    client = app.test_client()
    auth = {"Authorization": "Basic " + base64.b64encode(b":correct horse battery").decode()}
    saved = (cfg.cache / "index.npz").read_bytes()
    response = client.post("/search", data={"image": (io.BytesIO(encode(collection["design_02.png"])), "q.png")},
                           headers=auth)
    assert response.status_code == 503
    assert "cannot reach Milvus at http://127.0.0.1:9" in response.get_json()["error"]
    health = client.get("/health", headers=auth).get_json()
    assert health["status"] == "degraded" and "cannot reach Milvus" in health["store"]["problem"]
    assert health["images"] == 12  # the local index answers the page meanwhile
    page = client.get("/", headers=auth).get_data(as_text=True)
    assert 'id="store-problem" role="alert" >' in page and "cannot reach Milvus" in page
    assert (cfg.cache / "index.npz").read_bytes() == saved


def test_the_command_line_runs_on_milvus_lite_with_relative_paths(tmp_path, collection, cfg):
    shutil.copytree(cfg.images, tmp_path / "studio" / "designs")
    studio = tmp_path / "studio"
    env = {"LOOKALIKE_STORE": "milvus", "LOOKALIKE_COLLECTION": "studio_a"}
    indexed = run("index", "--images", "designs", "--cache", "cache", "--json", env_extra=env, cwd=studio)
    assert indexed.returncode == 0, indexed.stderr
    assert (studio / "cache" / "milvus.db").exists()
    query = studio / "query.png"
    query.write_bytes(encode(collection["design_04.png"].resize((240, 240))))
    found = run("search", "query.png", "--images", "designs", "--cache", "cache", "--json", env_extra=env, cwd=studio)
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout.strip())["results"][0]["path"] == "design_04.png"
    # Milvus's own rule for names, said before anything starts.
    other = run("search", "query.png", "--images", "designs", "--cache", "cache", "--json",
                env_extra={**env, "LOOKALIKE_COLLECTION": "studio b"}, cwd=studio)
    assert other.returncode == 2 and "collection prefix 'studio b'" in other.stderr
    down = run("search", "query.png", "--images", "designs", "--cache", "cache", "--milvus-uri", DOWN,
               env_extra=env, cwd=studio)
    assert down.returncode == 3 and "cannot reach Milvus at http://127.0.0.1:9" in down.stderr
    assert "Traceback" not in down.stderr


def test_milvus_lost_mid_search_answers_503_then_recovers(cfg, collection, monkeypatch):
    monkeypatch.setattr(milvus, "RETRY_AFTER_S", 0.0)  # the next request may try again at once
    store_password(cfg.cache, "correct horse battery")
    engine = engine_of(dataclasses.replace(cfg, store="milvus"))
    engine.reindex()
    app = create_app(cfg, engine=engine)
    client = app.test_client()
    auth = {"Authorization": "Basic " + base64.b64encode(b":correct horse battery").decode()}

    def ask():
        return client.post("/search", data={"image": (io.BytesIO(encode(collection["design_03.png"])), "q.png")},
                           headers=auth)

    assert ask().status_code == 200
    milvus_client = engine.store._client_now()
    real_search = milvus_client.search

    def lost(*args, **kwargs):
        raise ConnectionResetError("the server went away")

    milvus_client.search = lost
    response = ask()
    assert response.status_code == 503 and "the server went away" in response.get_json()["error"]
    assert "the server went away" in client.get("/health", headers=auth).get_json()["store"]["problem"]
    milvus_client.search = real_search
    again = ask()
    assert again.status_code == 200 and again.get_json()["results"][0]["path"] == "design_03.png"
    assert client.get("/health", headers=auth).get_json()["store"]["problem"] is None
    engine.close()
