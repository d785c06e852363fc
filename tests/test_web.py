"""The web app: who gets in, search and reindex over HTTP, files stay inside the collection."""
import base64
import io
import re
import shutil
import threading

import numpy as np
import pytest
from PIL import Image

from engine import Engine
from features.hsv import HsvHistogram
from web import create_app
from web.auth import LoginLimiter
from web.passwords import store_password
from conftest import encode, flat, make_design
from fakes import CountingExtractor

PASSWORD = "correct horse battery"


@pytest.fixture
def gate():
    gate = threading.Event()
    gate.set()
    return gate


@pytest.fixture
def app(cfg, collection, gate):
    store_password(cfg.cache, PASSWORD)
    engine = Engine(cfg, extractors={"resnet": CountingExtractor(gate=gate), "hsv": HsvHistogram()})
    engine.reindex()
    app = create_app(cfg, engine=engine)
    app.config["TESTING"] = True
    # Lockouts that outlast any test: whether a try is refused must not depend on how
    # long the tries before it took on a busy machine.
    app.extensions["login_limiter"] = LoginLimiter(first_lockout=LoginLimiter.MAX_LOCKOUT)
    return app


@pytest.fixture
def client(app):
    return app.test_client()


def basic(password=PASSWORD):
    return {"Authorization": "Basic " + base64.b64encode(f":{password}".encode()).decode()}


def login(client, password=PASSWORD):
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    return client.post("/login", data={"password": password, "csrf_token": token})


def page_csrf(client):
    return re.search(r'name="csrf-token" content="([^"]+)"', client.get("/").get_data(as_text=True)).group(1)


def test_every_route_but_login_and_static_refuses_anonymous_requests(app, client):
    checked = 0
    for rule in app.url_map.iter_rules():
        if rule.endpoint in ("auth.login", "static"):
            continue
        url = rule.rule.replace("<path:relative>", "design_00.png")
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            response = client.open(url, method=method)
            if rule.endpoint.startswith("pages."):
                assert response.status_code == 302 and "/login" in response.location, url
            else:
                assert response.status_code == 401, (method, url)
            checked += 1
    assert checked >= 8


def test_wrong_then_right_password(client):
    assert login(client, "nope").status_code == 401
    assert client.get("/").status_code == 302
    response = login(client)
    assert response.status_code == 302
    assert client.get("/").status_code == 200


def test_logout_ends_the_session(client):
    login(client)
    cookie = client.get_cookie("lookalike_session").value
    client.post("/logout", data={"csrf_token": page_csrf(client)})
    assert client.get("/").status_code == 302
    client.set_cookie("lookalike_session", cookie)  # a copied cookie is dead too
    assert client.get("/health").status_code == 401


def test_session_cookie_flags(client):
    response = login(client)
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_search_with_basic_auth_returns_the_design_first(client, collection):
    data = {"image": (io.BytesIO(encode(collection["design_06.png"], "JPEG")), "q.jpg"), "top_k": "3"}
    response = client.post("/search", data=data, headers=basic())
    assert response.status_code == 200
    results = response.get_json()["results"]
    assert len(results) == 3 and results[0]["path"] == "design_06.png"
    assert set(results[0]["scores"]) == {"clip", "resnet", "hsv"}
    thumb = client.get(results[0]["thumb_url"], headers=basic())
    assert thumb.status_code == 200
    preview = Image.open(io.BytesIO(thumb.data))
    assert preview.format == "JPEG" and max(preview.size) <= 256
    # The preview is the design itself, flattened onto white, only smaller.
    expected = np.asarray(flat(collection["design_06.png"]).resize(preview.size, Image.Resampling.BOX), dtype=np.float32)
    assert np.abs(np.asarray(preview.convert("RGB"), dtype=np.float32) - expected).mean() < 12


def test_bearer_token_works_like_basic(client):
    assert client.get("/health", headers={"Authorization": f"Bearer {PASSWORD}"}).status_code == 200
    assert client.get("/health", headers={"Authorization": "Bearer wrong"}).status_code == 401


def test_browser_search_needs_the_csrf_token(client, collection):
    login(client)
    image = lambda: (io.BytesIO(encode(collection["design_02.png"])), "q.png")
    assert client.post("/search", data={"image": image()}).status_code == 403
    ok = client.post("/search", data={"image": image()}, headers={"X-CSRF-Token": page_csrf(client)})
    assert ok.status_code == 200 and ok.get_json()["results"][0]["path"] == "design_02.png"


@pytest.mark.parametrize("payload, message", [
    ({}, "multipart field 'image'"),
    ({"image": (io.BytesIO(b"plain text"), "x.png")}, "not a usable image"),
    ({"image": (io.BytesIO(encode(make_design(1))), "x.png"), "top_k": "lots"}, "top_k"),
    ({"image": (io.BytesIO(encode(make_design(1))), "x.png"), "weights": "clip=-1"}, "weights"),
])
def test_bad_uploads_get_400_with_a_message(client, payload, message):
    response = client.post("/search", data=payload, headers=basic())
    assert response.status_code == 400
    assert message in response.get_json()["error"]


def test_upload_over_the_size_limit_gets_413(app, client):
    app.config["MAX_CONTENT_LENGTH"] = 1000
    data = {"image": (io.BytesIO(b"x" * 5000), "big.png")}
    response = client.post("/search", data=data, headers=basic())
    assert response.status_code == 413 and "too large" in response.get_json()["error"]


def test_per_query_weights_are_applied(client, collection):
    data = {"image": (io.BytesIO(encode(collection["design_06.png"])), "q.png"), "weights": "clip=0,resnet=0,hsv=1"}
    results = client.post("/search", data=data, headers=basic()).get_json()["results"]
    assert all(abs(r["score"] - r["scores"]["hsv"]) < 1e-5 for r in results)


def test_reindex_runs_in_background_and_refuses_a_second(app, client, gate, cfg):
    make_design(77).save(cfg.images / "added.png")
    gate.clear()  # hold the reindex inside the network until we have checked
    assert client.post("/reindex", headers=basic()).status_code == 202
    assert client.post("/reindex", headers=basic()).status_code == 409
    assert client.get("/reindex", headers=basic()).get_json()["running"] is True
    # Searches keep answering from the previous index meanwhile (hsv only: the network is held).
    during = client.post("/search", headers=basic(), data={
        "image": (io.BytesIO(encode(make_design(3))), "q.png"), "weights": "clip=0,resnet=0,hsv=1"})
    assert during.status_code == 200
    gate.set()
    engine = app.extensions["engine"]
    assert engine.wait_for_reindex(timeout=300)
    state = client.get("/reindex", headers=basic()).get_json()
    assert state["running"] is False and state["report"]["indexed"] == 1
    assert client.get("/health", headers=basic()).get_json()["images"] == 13


@pytest.mark.parametrize("path", [
    "../secret.txt", "..%2fsecret.txt", "%2e%2e/secret.txt", "/etc/passwd", "sub/../../secret.txt", "link.png",
])
def test_image_route_never_leaves_the_collection(client, cfg, path):
    secret = cfg.images.parent / "secret.txt"
    secret.write_text("top secret")
    (cfg.images / "link.png").symlink_to(secret)
    response = client.get(f"/image/{path}", headers=basic(), follow_redirects=True)
    assert response.status_code == 404
    assert b"top secret" not in response.data


def test_image_route_serves_collection_files(client, cfg):
    response = client.get("/image/design_00.png", headers=basic())
    assert response.status_code == 200 and response.data == (cfg.images / "design_00.png").read_bytes()


def test_health_reports_features_switched_off(cfg, collection):
    store_password(cfg.cache, PASSWORD)
    app = create_app(cfg)  # no weights in this cache
    body = app.test_client().get("/health", headers=basic()).get_json()
    assert body["status"] == "degraded" and set(body["features_off"]) == {"clip"}  # shape: the bundled network
    client = app.test_client()
    login(client)
    assert "Some features are switched off" in client.get("/").get_data(as_text=True)


def test_the_page_says_when_the_networks_are_still_loading(app, client, gate):
    engine = app.extensions["engine"]
    gate.clear()  # the stand-in network's load (its first embed) is held open
    engine.warm_networks()
    login(client)

    def note_hidden() -> bool:
        page = client.get("/").get_data(as_text=True)
        return "hidden" in re.search(r'<p class="note" id="networks-loading" ([^>]*)>', page).group(1)

    assert client.get("/health").get_json()["networks_loading"] is True and not note_hidden()
    gate.set()
    engine.networks.warm_up.result(timeout=300)
    assert client.get("/health").get_json()["networks_loading"] is False and note_hidden()


def test_repeated_failures_are_rate_limited(client):
    for _ in range(10):
        assert client.get("/health", headers=basic("wrong")).status_code == 401
    limited = client.get("/health", headers=basic())
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) > 0
    assert login(client, "wrong").status_code == 429


def test_text_search_without_clip_is_a_clear_400(client):
    response = client.post("/search", data={"text": "teardrop pendant"}, headers=basic())
    assert response.status_code == 400 and "CLIP" in response.get_json()["error"]


def test_duplicates_api_json_and_csv(client, cfg, collection):
    response = client.get("/duplicates", headers=basic())
    assert response.status_code == 200 and response.get_json() == {"groups": []}
    csv = client.get("/duplicates.csv?threshold=0.6", headers=basic())
    assert csv.status_code == 200 and csv.mimetype == "text/csv"
    assert csv.get_data(as_text=True).splitlines()[0] == "group,path,suggestion"
    assert client.get("/duplicates?threshold=2", headers=basic()).status_code == 400


def test_add_to_collection_checks_content_and_never_overwrites(client, cfg):
    files = [(io.BytesIO(encode(make_design(50))), "../../evil name.png"),
             (io.BytesIO(encode(make_design(50))), "../../evil name.png"),
             (io.BytesIO(b"MZ not an image"), "tool.png")]
    response = client.post("/collection", data={"images": files}, headers=basic())
    body = response.get_json()
    assert response.status_code == 201 and len(body["added"]) == 2
    assert body["rejected"][0]["name"] == "tool.png"
    saved = [cfg.images / p for p in body["added"]]
    assert len(set(saved)) == 2 and all(p.is_file() for p in saved)
    assert all(p.resolve().is_relative_to(cfg.images.resolve()) for p in saved)
    assert all(p.parts[-3] == "uploads" and "evil-name" in p.name for p in saved)


def test_bomb_upload_is_refused_without_decoding(client):
    from test_decode import _bomb_png

    response = client.post("/search", data={"image": (io.BytesIO(_bomb_png(30_000, 30_000)), "bomb.png")},
                           headers=basic())
    assert response.status_code == 400 and "limit" in response.get_json()["error"]


def test_secret_key_is_generated_once_and_private(app, cfg):
    key_file = cfg.cache / "secret_key"
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    assert create_app(cfg, engine=app.extensions["engine"]).config["SECRET_KEY"] == key_file.read_text().strip()


def test_a_control_is_disabled_only_for_a_feature_that_is_off(cfg, collection):
    """Right after a first start nothing is indexed yet; the shape control must still be live
    when a shape network is there (the bundled one, with no downloads)."""
    store_password(cfg.cache, PASSWORD)
    app = create_app(cfg)
    client = app.test_client()
    login(client)
    page = client.get("/").get_data(as_text=True)
    controls = {name: re.search(rf'<input type="range" id="w-{name}"[^>]*>', page).group(0) for name in ("clip", "resnet")}
    assert "disabled" in controls["clip"] and "disabled" not in controls["resnet"]
    assert 'id="w-clip-off"' in page and 'id="w-resnet-off"' not in page


def test_a_started_app_exits_cleanly_while_its_background_work_runs(tmp_path):
    """The app starts indexing, loading networks and computing the duplicate report in
    background threads; a process that ends meanwhile must exit 0, not abort."""
    import subprocess
    import sys

    from conftest import ROOT

    script = tmp_path / "start_and_exit.py"
    script.write_text(f"""
import shutil, sys
from pathlib import Path
sys.path.insert(0, {str(ROOT)!r})
from engine.config import Config
from web import create_app
from web.passwords import store_password
shutil.copytree({str(ROOT / "static" / "images")!r}, {str(tmp_path / "images")!r})
config = Config(images=Path({str(tmp_path / "images")!r}), cache=Path({str(tmp_path / "cache")!r}))
store_password(config.cache, "a long enough password")
create_app(config).test_client().get("/login")
""")
    for _ in range(3):
        result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-2000:]
        shutil.rmtree(tmp_path / "images")


def test_calibration_is_started_and_watched_over_the_api(app, client):
    """Twelve designs are too few: the run ends at once, says why, and the built-in
    thresholds stay (what the page shows beside its Calibrate button)."""
    started = client.post("/calibrate", headers=basic())
    assert started.status_code == 202
    assert app.extensions["engine"].calibration.wait(300)
    state = client.get("/calibrate", headers=basic()).get_json()
    assert not state["running"] and "too few to calibrate" in state["error"]
    assert state["verdicts"] == client.get("/health", headers=basic()).get_json()["verdicts"]
    assert "not calibrated" in state["verdicts"]
    page = client.get("/", headers=basic()).get_data(as_text=True)
    assert 'id="calibrate"' in page and "not calibrated on this collection" in page
