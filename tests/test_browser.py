"""The search page in a real browser (Debian's Chromium driven by Playwright).

Wrong then right password, drag-and-drop a design, the results grid with
verdicts and score bars, a different top-K, a reindex watched to the end of
its progress bar, logout.  Screenshots land in test-artifacts/.
"""
from __future__ import annotations

import base64
import contextlib
import shutil
import threading
from pathlib import Path

import pytest

from engine import Engine
from features.hsv import HsvHistogram
from web import create_app
from web.passwords import store_password
from conftest import encode, make_design
from fakes import CountingExtractor

PASSWORD = "browser test password"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
WAIT_MS = 120_000
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@contextlib.contextmanager
def serving(cfg, engine):
    """The app served by waitress, as `image.py serve` runs it, on a free loopback port."""
    import waitress

    store_password(cfg.cache, PASSWORD)
    server = waitress.create_server(create_app(cfg, engine=engine), host="127.0.0.1", port=0, threads=4)
    threading.Thread(target=server.run, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.effective_port}"
    finally:
        server.close()


@pytest.fixture
def server(cfg, collection):
    engine = Engine(cfg, extractors={"resnet": CountingExtractor(), "hsv": HsvHistogram()})
    engine.reindex()
    with serving(cfg, engine) as url:
        yield url


@pytest.fixture
def browser():
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    # Waits are for conditions (an element appears, a text changes); the bound only keeps a
    # broken page from hanging the suite, so it is generous for a machine under load.
    expect.set_options(timeout=WAIT_MS)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(WAIT_MS)
    return page


def shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def drop(page, selector: str, data: bytes, name: str, mime: str) -> None:
    """Dispatch a real drop event carrying a file, as a drag from the desktop does."""
    page.evaluate(
        """([selector, b64, name, mime]) => {
            const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, { type: mime }));
            const target = document.querySelector(selector);
            for (const type of ["dragenter", "dragover", "drop"]) {
                target.dispatchEvent(new DragEvent(type, { dataTransfer: transfer, bubbles: true, cancelable: true }));
            }
        }""",
        [selector, base64.b64encode(data).decode(), name, mime],
    )


def log_in(page, server, password):
    page.goto(server + "/")
    page.fill("#password", password)
    page.click("button[type=submit]")


def test_search_page_end_to_end(page, server, cfg, collection):
    from playwright.sync_api import expect

    log_in(page, server, "wrong password")
    expect(page.locator(".error")).to_contain_text("Wrong password")
    log_in(page, server, PASSWORD)
    expect(page.locator("#status-images")).to_have_text("12")
    expect(page.locator("body[data-ready=true]")).to_be_attached()  # app.js has wired its handlers

    drop(page, "#drop", encode(collection["design_05.png"], "JPEG", quality=85), "copy.jpg", "image/jpeg")
    cards = page.locator("#results .card")
    expect(cards).to_have_count(12)
    expect(cards.first).to_have_attribute("data-path", "design_05.png")
    expect(cards.first.locator(".verdict")).to_have_text("duplicate")
    expect(cards.first.locator(".feature meter")).to_have_count(2)  # shape + colour; CLIP is off here
    shot(page, "search-results")

    page.select_option("#top-k", "6")
    expect(cards).to_have_count(6)

    make_design(90).save(cfg.images / "new design.png")
    page.click("#reindex")
    expect(page.locator("#progress")).to_be_visible()
    expect(page.locator("#progress-text")).to_contain_text("done: 1 indexed")
    expect(page.locator("#status-images")).to_have_text("13")
    shot(page, "reindex-finished")

    page.click("#logout")
    expect(page.locator("#password")).to_be_visible()
    page.goto(server + "/")
    expect(page).to_have_url(server + "/login?next=/")


def test_bad_upload_shows_the_servers_message(page, server):
    from playwright.sync_api import expect

    log_in(page, server, PASSWORD)
    expect(page.locator("body[data-ready=true]")).to_be_attached()  # app.js has wired its handlers
    drop(page, "#drop", b"this is not an image", "notes.png", "image/png")
    expect(page.locator("#message")).to_contain_text("not a usable image")


def test_the_loading_note_shows_until_the_networks_are_ready(page, cfg, collection):
    """Right after a start the page says a search will wait, and takes that down once loaded."""
    from playwright.sync_api import expect

    gate = threading.Event()  # holds the stand-in network's load open
    engine = Engine(cfg, extractors={"resnet": CountingExtractor(gate=gate), "hsv": HsvHistogram()})
    engine.warm_networks()
    try:
        with serving(cfg, engine) as url:
            log_in(page, url, PASSWORD)
            expect(page.locator("#networks-loading")).to_be_visible()
            shot(page, "networks-loading")
            gate.set()
            expect(page.locator("#networks-loading")).to_be_hidden()  # the page polls /health
    finally:
        gate.set()


class _HeldWhileIndexing(CountingExtractor):
    """The index's batches wait for the gate; a query (one picture) does not."""

    def embed(self, images):
        if len(images) > 1:
            self.arrived.set()
            assert self.gate.wait(timeout=300), "test never released the gate"
        return CountingExtractor(self.name).embed(images)


def test_a_search_during_the_first_index_says_so_and_runs_again_when_it_is_done(page, cfg, collection):
    """A designer who drops a design while a fresh install indexes must not read 'nothing alike'."""
    from playwright.sync_api import expect

    held = _HeldWhileIndexing(gate=threading.Event())
    engine = Engine(cfg, extractors={"resnet": held, "hsv": HsvHistogram()})
    engine.start_reindex()
    try:
        assert held.arrived.wait(timeout=300)
        with serving(cfg, engine) as url:
            log_in(page, url, PASSWORD)
            expect(page.locator("body[data-ready=true]")).to_be_attached()
            drop(page, "#drop", encode(collection["design_05.png"], "JPEG", quality=85), "copy.jpg", "image/jpeg")
            expect(page.locator("#message")).to_contain_text("still being indexed (0 / 12)")
            expect(page.locator("#message")).to_contain_text("from the 0 designs indexed so far")
            shot(page, "search-during-first-index")
            held.gate.set()
            cards = page.locator("#results .card")
            expect(cards.first).to_have_attribute("data-path", "design_05.png")  # searched again by itself
            expect(page.locator("#message")).not_to_contain_text("indexed")
    finally:
        held.gate.set()
        engine.wait_for_reindex(timeout=300)


@contextlib.contextmanager
def other_origin(html: str):
    """Another site on loopback (another port is another origin) serving one page."""
    import http.server

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = html.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    site = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=site.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{site.server_address[1]}/"
    finally:
        site.shutdown()


def test_a_cross_site_form_cannot_reindex_with_a_remembered_basic_login(browser, server):
    """The browser holds the password for Lookalike's origin (as after answering a Basic
    prompt); a page on another origin auto-submits a form that would start a reindex."""
    import json
    import urllib.request

    context = browser.new_context(http_credentials={"username": "", "password": PASSWORD, "origin": server})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    def reindex_started_at():
        request = urllib.request.Request(server + "/reindex", headers={
            "Authorization": "Basic " + base64.b64encode(f":{PASSWORD}".encode()).decode()})
        with urllib.request.urlopen(request) as response:
            return json.load(response)["started_at"]

    before = reindex_started_at()
    assert page.goto(server + "/duplicates.csv").status == 401  # no challenge: nothing to answer
    form = f'''<form method="post" action="{server}/reindex"></form>
                <script>document.forms[0].submit()</script>'''
    with other_origin(form) as evil:
        with page.expect_response(server + "/reindex") as posted:
            page.goto(evil)
    assert posted.value.status in (401, 403)
    assert reindex_started_at() == before  # no reindex was started
    context.close()


def test_the_compare_view_lays_the_match_over_the_query_and_says_why(page, cfg, collection):
    """A rotated copy: its result opens side by side, warped onto the query by the
    verified mapping, with the evidence in words."""
    from playwright.sync_api import expect

    from features import registry

    extractors = {name: registry.build(name) for name in ("hsv", "orb", "orb_mirror", "thumbprint")}
    engine = Engine(cfg, extractors=extractors)
    engine.reindex()
    from conftest import flat

    rotated = flat(collection["design_03.png"]).rotate(30, expand=True, fillcolor="white")
    with serving(cfg, engine) as url:
        log_in(page, url, PASSWORD)
        expect(page.locator("body[data-ready=true]")).to_be_attached()
        drop(page, "#drop", encode(rotated), "turned.png", "image/png")
        first = page.locator("#results .card").first
        expect(first).to_have_attribute("data-path", "design_03.png")
        first.locator(".compare-open").click()
        dialog = page.locator("#compare")
        expect(dialog).to_be_visible()
        expect(page.locator("#compare-title")).to_contain_text("design_03.png")
        expect(page.locator("#compare-words")).to_contain_text("matching points")
        expect(page.locator("#compare-words")).to_contain_text("rotated")
        expect(page.locator("#compare-overlay")).to_be_visible()
        assert "matrix3d" in page.locator("#compare-warped").evaluate("el => el.style.transform")
        page.fill("#compare-mix", "1")
        page.locator("#compare-mix").dispatch_event("input")
        assert page.locator("#compare-warped").evaluate("el => el.style.opacity") == "1"
        shot(page, "compare-view")
        page.click("#compare-close")
        expect(dialog).to_be_hidden()
