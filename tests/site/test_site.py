"""The course website in a real browser: every page as a reader meets it (run `make site` first; `make test-site`).

Serves build/site/html on 127.0.0.1 and opens it in headless Debian chromium (Playwright): the landing page shows the
course map; every Q page loads, shows at least one rendered figure and no traceback or error output; "next" leads
from one lecture to the following one; the search page finds BatchNorm; the API page lists every norm of
course_lib.norms. Screenshots go to artifacts/site/. Without a built site these tests fail in CI (CI or
SITE_TEST_REQUIRED set) and skip elsewhere, saying to run `make site`.
"""
from __future__ import annotations

import functools
import http.server
import os
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "browser"))
from lab_harness import chromium_args, find_chromium  # noqa: E402

HTML = ROOT / "build" / "site" / "html"
ARTIFACTS = ROOT / "artifacts" / "site"
LECTURES = sorted(p.stem for p in (ROOT / "notebooks").glob("Q*.ipynb"))
NORMS = ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d",
         "LayerNorm", "GroupNorm", "RMSNorm", "RunningBatchNorm"]
pytestmark = pytest.mark.browser


def _required() -> bool:
    return bool(os.environ.get("CI") or os.environ.get("SITE_TEST_REQUIRED"))


@pytest.fixture(scope="module")
def site_url():
    if not (HTML / "index.html").is_file():
        message = f"no built site in {HTML}: run `make site` first"
        pytest.fail(message) if _required() else pytest.skip(message)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(HTML))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    handler.func.log_message = lambda *args: None  # quiet: one line per request otherwise
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


@pytest.fixture(scope="module")
def browser():
    path = find_chromium()
    if path is None:
        message = "no chromium found: `make browser-deps` as root, or `sudo apt-get install chromium`"
        pytest.fail(message) if _required() else pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, headless=True, args=chromium_args())
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1300, "height": 950})
    context.set_default_timeout(30_000)
    try:
        yield context.new_page()
    finally:
        context.close()


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=False)


def test_landing_page_is_the_course_map_with_a_link_to_every_lecture(page, site_url):
    page.goto(f"{site_url}/index.html")
    body = page.inner_text("article")
    assert "Course map" in body
    hrefs = page.eval_on_selector_all("article a", "els => els.map(e => e.getAttribute('href'))")
    for stem in LECTURES:
        assert any(h and f"notebooks/{stem}.html" in h for h in hrefs), f"no link to {stem}"
    shot(page, "index")


@pytest.mark.parametrize("stem", LECTURES)
def test_every_lecture_page_shows_a_figure_and_no_error(page, site_url, stem):
    page.goto(f"{site_url}/notebooks/{stem}.html")
    page.wait_for_load_state("networkidle")
    article = page.inner_text("article")
    assert stem.split("_")[0] in page.title() or stem.split("_")[0] in article
    for marker in ("Traceback (most recent call last)", "Error Traceback"):
        assert marker not in article, f"{stem}: '{marker}' on the page"
    assert page.locator(".output.traceback, .output.error").count() == 0
    sizes = page.eval_on_selector_all(
        ".cell_output img", "imgs => imgs.map(i => [i.complete, i.naturalWidth, i.naturalHeight])")
    rendered = [s for s in sizes if s[0] and s[1] > 100 and s[2] > 50]
    assert rendered, f"{stem}: no rendered figure among {len(sizes)} output images"
    page.locator(".cell_output img").first.scroll_into_view_if_needed()
    shot(page, stem)


def test_next_link_goes_from_one_lecture_to_the_following_one(page, site_url):
    page.goto(f"{site_url}/notebooks/{LECTURES[0]}.html")
    page.locator("a.right-next").first.click()
    page.wait_for_load_state()
    assert page.url.endswith(f"notebooks/{LECTURES[1]}.html"), page.url


def test_search_finds_the_lectures(page, site_url):
    page.goto(f"{site_url}/search.html?q=RunningBatchNorm")
    page.wait_for_selector("#search-results li, ul.search li", timeout=30_000)
    results = page.inner_text("#search-results")
    assert "Q9" in results, results[:500]
    shot(page, "search")


def test_api_page_lists_every_norm_with_its_docstring(page, site_url):
    page.goto(f"{site_url}/api.html")
    ids = set(page.eval_on_selector_all("dt[id]", "els => els.map(e => e.id)"))
    missing = [n for n in NORMS if f"course_lib.norms.{n}" not in ids]
    assert missing == [], f"API page lacks {missing}"
    page.locator("dt[id='course_lib.norms.BatchNorm2d']").scroll_into_view_if_needed()
    shot(page, "api")
