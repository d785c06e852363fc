"""Probes of the second security review, each refused or harmless."""
import csv
import io
import shutil
from concurrent.futures import ThreadPoolExecutor

import pytest
from PIL import Image

from web.auth import LoginLimiter
from web.passwords import WeakPassword, store_password
from conftest import encode, make_design
from test_web import PASSWORD, app, basic, client, gate, login, page_csrf  # noqa: F401  (fixtures)

CROSS_SITE = {"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"}


def tiny_huge_gif(width=10_000, height=9_990) -> bytes:
    """A few KB on the wire, ~100 MP once decoded: one transparent colour everywhere."""
    out = io.BytesIO()
    Image.new("P", (width, height), 0).save(out, "GIF", transparency=0)
    return out.getvalue()


def test_a_browser_never_gets_a_basic_challenge_only_a_script_that_chose_basic(client):
    anonymous = client.get("/duplicates.csv")
    assert anonymous.status_code == 401 and "WWW-Authenticate" not in anonymous.headers
    assert "authentication required" in anonymous.get_json()["error"]
    assert client.get("/image/design_00.png").headers.get("WWW-Authenticate") is None
    wrong = client.get("/health", headers=basic("not the password"))
    assert wrong.status_code == 401 and wrong.headers["WWW-Authenticate"].startswith("Basic")


@pytest.mark.parametrize("headers", [CROSS_SITE, {"Sec-Fetch-Site": "same-site"}, {"Origin": "http://evil.example"}])
def test_a_cross_site_post_with_basic_credentials_is_refused(client, headers):
    response = client.post("/reindex", headers={**basic(), **headers})
    assert response.status_code == 403 and "cross-site" in response.get_json()["error"]
    added = client.post("/collection", headers={**basic(), **headers},
                        data={"images": [(io.BytesIO(encode(make_design(3))), "x.png")]})
    assert added.status_code == 403


def test_scripts_and_same_origin_pages_keep_working(client):
    assert client.post("/reindex", headers=basic()).status_code == 202  # curl -u sends no Origin
    assert client.get("/reindex", headers=basic()).status_code == 200
    same = {"Origin": "http://localhost", "Sec-Fetch-Site": "same-origin"}
    assert client.get("/health", headers={**basic(), **same}).status_code == 200


def test_a_cross_site_post_with_the_session_cookie_is_refused_even_with_the_token(client):
    login(client)
    token = page_csrf(client)
    refused = client.post("/reindex", headers={"X-CSRF-Token": token, **CROSS_SITE})
    assert refused.status_code == 403
    assert client.post("/reindex", headers={"X-CSRF-Token": token, "Sec-Fetch-Site": "same-origin"}).status_code == 202


def test_logout_cannot_be_undone_by_a_request_still_in_flight(app, client, gate, collection):
    login(client)
    cookie = client.get_cookie("lookalike_session").value
    token = page_csrf(client)
    slow = app.test_client()
    slow.set_cookie("lookalike_session", cookie)
    network = app.extensions["engine"].networks.extractors["resnet"]
    network.arrived.clear()
    gate.clear()  # the search below waits inside the network until logout is done
    with ThreadPoolExecutor(1) as pool:
        search = pool.submit(slow.post, "/search", headers={"X-CSRF-Token": token},
                             data={"image": (io.BytesIO(encode(collection["design_01.png"])), "q.png")})
        assert network.arrived.wait(timeout=300)
        client.post("/logout", data={"csrf_token": token})
        gate.set()
        finished = search.result()
    assert finished.status_code == 200
    assert "lookalike_session=" + cookie not in finished.headers.get("Set-Cookie", "")
    again = app.test_client()
    again.set_cookie("lookalike_session", cookie)
    assert again.get("/health").status_code == 401


def test_anonymous_requests_store_no_session(app):
    store = app.session_interface
    for _ in range(50):
        page = app.test_client().get("/login")
        assert page.status_code == 200
        assert "lookalike_session" not in page.headers.get("Set-Cookie", "")
    assert len(store) == 0


def test_the_login_form_needs_a_token_its_own_cookie_issued(app, client):
    for data in ({"password": PASSWORD}, {"password": PASSWORD, "csrf_token": ""}):
        response = app.test_client().post("/login", data=data)
        assert response.status_code == 400 and "lookalike_session" not in response.headers.get("Set-Cookie", "")
    # A token read off someone else's login page does not work without that page's cookie.
    other = app.test_client()
    token = page_csrf_login(other)
    stranger = app.test_client()
    assert stranger.post("/login", data={"password": PASSWORD, "csrf_token": token}).status_code == 400
    assert other.post("/login", data={"password": PASSWORD, "csrf_token": token}).status_code == 302


def page_csrf_login(client) -> str:
    import re

    return re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").get_data(as_text=True)).group(1)


def test_csv_cells_that_a_spreadsheet_would_run_are_neutralised(app, client, cfg):
    names = ['=HYPERLINK("http:__x","y").png', "+cmd.png", "@SUM(1+1).png", "-2+3.png"]
    for name in names:
        shutil.copyfile(cfg.images / "design_00.png", cfg.images / name)
    app.extensions["engine"].reindex()
    rows = list(csv.reader(io.StringIO(client.get("/duplicates.csv", headers=basic()).get_data(as_text=True))))
    cells = [row[1] for row in rows[1:]]
    assert {"'" + name for name in names} <= set(cells)
    assert not any(cell[:1] in "=+-@\t\r" for cell in cells)


def test_a_tiny_file_declaring_a_huge_picture_is_refused_before_decoding(client):
    data = tiny_huge_gif()
    assert len(data) < 200_000
    response = client.post("/search", headers=basic(), data={"image": (io.BytesIO(data), "tiny.gif")})
    assert response.status_code == 400 and "limit" in response.get_json()["error"]


def test_a_large_jpeg_query_is_still_accepted_it_decodes_at_reduced_size(client):
    big = make_design(4, size=400).resize((6400, 6000))  # 38 MP, over the query limit for other formats
    response = client.post("/search", headers=basic(), data={"image": (io.BytesIO(encode(big, "JPEG", quality=70)), "big.jpg")})
    assert response.status_code == 200


@pytest.mark.parametrize("name, content", [
    ("evil.svg", b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'),
    ("page.html", b"<script>alert(1)</script>"),
    (".hidden.png", None),
    ("sub/.secret/design.png", None),
])
def test_the_image_route_serves_only_what_the_scanner_indexes(client, cfg, name, content):
    target = cfg.images / name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(content if content is not None else (cfg.images / "design_00.png").read_bytes())
    response = client.get(f"/image/{name}", headers=basic())
    assert response.status_code == 404 and b"<script>" not in response.data


def test_the_content_type_comes_from_the_file_not_its_name(client, cfg):
    (cfg.images / "html.jpg").write_bytes(b"<html><script>alert(1)</script></html>")
    assert client.get("/image/html.jpg", headers=basic()).status_code == 404
    shutil.copyfile(cfg.images / "design_00.png", cfg.images / "really_png.jpg")
    assert client.get("/image/really_png.jpg", headers=basic()).mimetype == "image/png"


@pytest.mark.parametrize("url", ["/login", "/health", "/image/design_00.png", "/nowhere", "/static/app.js"])
def test_every_response_carries_the_protective_headers(client, url):
    response = client.get(url, headers=basic())
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    policy = response.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in policy and "script-src 'self'" in policy
    assert response.headers["Referrer-Policy"] == "same-origin"


def test_malformed_credentials_are_a_counted_failure_not_a_crash(app, client):
    login(client)
    odd_token = client.post("/reindex", headers={"X-CSRF-Token": "ünïcödé".encode().decode("latin-1")})
    assert odd_token.status_code == 403
    client = app.test_client()
    for header in ("Basic w6k6w6k=", "Basic ünïcödé", "Basic %%%", "Bearer ünïcödé"):
        response = client.get("/health", headers={"Authorization": header.encode().decode("latin-1")})
        assert response.status_code == 401
    for _ in range(6):
        client.get("/health", headers={"Authorization": "Basic ünïcödé".encode().decode("latin-1")})
    assert client.get("/health", headers=basic()).status_code == 429  # 10 failures: locked


def test_parallel_wrong_passwords_get_no_more_tries_than_sequential_ones(app):
    checker = app.extensions["password_checker"]
    checked = []
    original = checker.check

    def counting(password):
        checked.append(password)
        return original(password)

    checker.check = counting
    with ThreadPoolExecutor(12) as pool:
        codes = list(pool.map(lambda _: app.test_client().get("/health", headers=basic("wrong")).status_code, range(60)))
    assert len(checked) == LoginLimiter.FREE_FAILURES
    assert codes.count(401) == LoginLimiter.FREE_FAILURES and codes.count(429) == 50


def test_a_lockout_doubles_and_then_lets_the_right_password_in():
    now = [0.0]
    limiter = LoginLimiter(clock=lambda: now[0])
    for _ in range(LoginLimiter.FREE_FAILURES):
        assert limiter.attempt("a", lambda: False) == (False, 0)
    assert limiter.attempt("a", lambda: True)[1] > 0  # locked: not even checked
    now[0] += 1.5
    assert limiter.attempt("a", lambda: False) == (False, 0)  # one more try after the first lockout
    assert limiter.retry_after("a") == 3  # the next lockout is twice as long
    assert limiter.attempt("b", lambda: True) == (True, 0)  # others are not affected
    now[0] += 2.5
    assert limiter.attempt("a", lambda: True) == (True, 0)
    assert limiter.retry_after("a") == 0


def test_behind_the_named_proxy_failures_count_against_the_forwarded_address(app, client, cfg):
    def tries(forwarded):
        return [client.get("/health", headers={**basic("wrong"), "X-Forwarded-For": forwarded}).status_code
                for _ in range(LoginLimiter.FREE_FAILURES + 1)]

    # Not configured: the header is the client's word and is ignored.
    assert tries("10.0.0.1")[-1] == 429
    app.extensions["engine"].config = cfg.with_overrides(trusted_proxy="127.0.0.1")
    app.extensions["login_limiter"] = LoginLimiter(first_lockout=LoginLimiter.MAX_LOCKOUT)
    assert tries("spoofed, 10.0.0.2")[-1] == 429
    ok = client.get("/health", headers={**basic(), "X-Forwarded-For": "10.0.0.3"})
    assert ok.status_code == 200  # another user behind the same proxy is not locked out


def test_a_short_password_is_refused_with_a_message(cfg):
    with pytest.raises(WeakPassword, match="12 characters"):
        store_password(cfg.cache, "short pass")


def test_health_names_no_absolute_path(cfg, collection):
    from web import create_app

    store_password(cfg.cache, PASSWORD)
    body = create_app(cfg).test_client().get("/health", headers=basic()).get_data(as_text=True)
    assert str(cfg.cache) not in body and str(cfg.images) not in body


def test_a_logged_in_browser_can_log_in_again_on_the_login_page(client):
    import re

    login(client)
    page = client.get("/login").get_data(as_text=True)
    form = page[page.index('<form class="login"'):]  # the header's logout form has the session's token
    token = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)
    assert client.post("/login", data={"password": PASSWORD, "csrf_token": token}).status_code == 302
