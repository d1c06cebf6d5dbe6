"""Fixtures for the real-browser tests: a fresh `jupyter lab` per test and one headless Debian chromium per session.

- `chromium_path`: Debian's chromium (`apt-get install chromium`; `make browser-deps` does it as root). Missing ->
  the browser tests skip with the reason printed, except in CI (`CI` or `BROWSER_TEST_REQUIRED` set) where they fail.
- `lab`: a `LabServer` (see lab_harness.py) on 127.0.0.1, free port, token auth, temporary Jupyter dirs; stopped
  after the test (sessions deleted through the API, then the server's process group).
- `page`: a new browser context (1400x1000) per test, closed afterwards.
Screenshots go to artifacts/browser/<test id>/ (gitignored; CI can keep them as artifacts).
"""

from __future__ import annotations

import os

import pytest

from lab_harness import ARTIFACTS, LabServer, chromium_args, find_chromium

NO_CHROMIUM = ("no chromium found (looked for $CHROMIUM, chromium, chromium-browser, google-chrome): "
               "run `make browser-deps` as root, or `sudo apt-get install chromium`")


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = find_chromium()
    if path is None:
        if os.environ.get("CI") or os.environ.get("BROWSER_TEST_REQUIRED"):
            pytest.fail(f"the browser test must run in CI, but {NO_CHROMIUM}")
        pytest.skip(NO_CHROMIUM)
    return path


@pytest.fixture(scope="session")
def browser(chromium_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        # Playwright's own browser download does not work here: launch the system chromium.
        b = p.chromium.launch(executable_path=chromium_path, headless=True, args=chromium_args())
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def lab(tmp_path_factory):
    server = LabServer(tmp_path_factory.mktemp("lab")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(60_000)
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.fixture
def artifacts(request):
    name = request.node.name.replace("/", "_").replace("[", "_").replace("]", "").replace(":", "_")
    return ARTIFACTS / name
