"""The built book in a real headless browser: every page loads, its images render, navigation works.

Drives Debian's Chromium through ChromeDriver's W3C WebDriver HTTP interface (plain urllib,
no extra Python package). Runs after the book is built (``make test-book`` sets ``VSTAIN_BUILD_BOOK=1``); skipped where
``chromedriver`` or the built book is absent.
"""

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
HTML = ROOT / "book" / "_build" / "html"
CHROMEDRIVER = shutil.which("chromedriver")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = [
    pytest.mark.skipif(os.environ.get("VSTAIN_BUILD_BOOK") != "1", reason="runs after the book build (make test-book)"),
    pytest.mark.skipif(not (CHROMEDRIVER and CHROMIUM), reason="needs Debian's chromium and chromium-driver"),
]


class WebDriver:
    """The few WebDriver commands the checks need."""

    def __init__(self, port: int, tmp: Path):
        self.base = f"http://127.0.0.1:{port}"
        flags = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp / 'profile'}"]
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome",
                                                 "goog:chromeOptions": {"binary": CHROMIUM, "args": flags}}}}
        self.session = self._call("POST", "/session", caps)["sessionId"]

    def _call(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())["value"]

    def get(self, url):
        self._call("POST", f"/session/{self.session}/url", {"url": url})

    def script(self, source):
        return self._call("POST", f"/session/{self.session}/execute/sync", {"script": source, "args": []})

    def quit(self):
        self._call("DELETE", f"/session/{self.session}")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    # checked here, not at collection: test_book_build.py builds the book in the same session
    if not (HTML / "index.html").is_file():
        pytest.fail(f"no built book at {HTML}: run `make test-book` (it builds the book first)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    driver_process = subprocess.Popen([CHROMEDRIVER, f"--port={port}"], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        driver = WebDriver(port, tmp_path_factory.mktemp("chromium"))
        yield driver
        driver.quit()
    finally:
        driver_process.terminate()
        driver_process.wait(timeout=10)


def _pages():
    toc = yaml.safe_load((ROOT / "book" / "_toc.yml").read_text())
    return [toc["root"]] + [c["file"] for part in toc["parts"] for c in part["chapters"]]


IMAGES_OK = """
const imgs = Array.from(document.querySelectorAll('main img'));
return {count: imgs.length,
        broken: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute('src'))};
"""


@pytest.mark.parametrize("page", _pages())
def test_page_loads_with_its_images(browser, page):
    browser.get((HTML / f"{page}.html").as_uri())
    title = browser.script("return document.title")
    assert title and "404" not in title
    images = browser.script(IMAGES_OK)
    assert images["broken"] == [], f"{page}: images that did not render: {images['broken']}"
    if page.startswith("chapters/"):
        assert images["count"] > 0, f"{page}: no figure"


def test_next_links_walk_through_every_page(browser):
    pages = _pages()
    browser.get((HTML / f"{pages[0]}.html").as_uri())
    visited = [browser.script("return location.pathname")]
    for _ in pages[1:]:
        href = browser.script("const a = document.querySelector('a.right-next'); return a ? a.href : null")
        assert href, f"no 'next' link on {visited[-1]}"
        browser.get(href)
        visited.append(browser.script("return location.pathname"))
    expected = [str(HTML / f"{p}.html") for p in pages]
    assert visited == expected


def test_sidebar_lists_every_chapter(browser):
    browser.get((HTML / f"{_pages()[0]}.html").as_uri())
    links = browser.script(
        "return Array.from(document.querySelectorAll('nav.bd-docs-nav a.reference.internal'))"
        ".map(a => a.getAttribute('href'))"
    )
    for page in _pages()[1:]:
        assert any(link.split("#")[0] == f"{page}.html" for link in links), f"{page} missing from the sidebar"


SLIDE = """
const root = document.querySelector('.vstain-slice-browser');
if (!root) return null;
const slider = root.querySelector('input[type=range]'), image = root.querySelector('img');
const before = {src: image.src, shown: root.querySelector('output').textContent};
slider.value = slider.max;
slider.dispatchEvent(new Event('input', {bubbles: true}));
return {before: before, after: {src: image.src, shown: root.querySelector('output').textContent}};
"""
LOADED = """
const image = document.querySelector('.vstain-slice-browser img');
return image.complete && image.naturalWidth > 0;
"""


def test_the_volume_chapter_slice_browser_moves_with_its_slider(browser):
    page = next(p for p in _pages() if p.endswith("07_volume"))
    browser.get((HTML / f"{page}.html").as_uri())
    moved, deadline = None, time.monotonic() + 60  # a page of embedded slices may still be parsing
    while moved is None and time.monotonic() < deadline:
        moved = browser.script(SLIDE)
        if moved is None:
            time.sleep(0.25)
    assert moved is not None, f"{page}: no slice browser on the page"
    assert moved["after"]["src"] != moved["before"]["src"], "the picture did not change with the slider"
    assert moved["after"]["shown"] != moved["before"]["shown"]
    deadline = time.monotonic() + 10  # the new slice decodes asynchronously after its source changes
    while not browser.script(LOADED) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert browser.script(LOADED), "the slice shown after moving the slider never loaded"
