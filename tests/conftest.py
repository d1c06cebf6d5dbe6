"""Fixtures shared by the browser tests (tests/browser) and the JupyterHub test (tests/hub): one headless Debian
chromium for the whole session -- Playwright's sync API runs one instance at a time in a process.

- `chromium_path`: Debian's chromium (`apt-get install chromium`; `make browser-deps` does it as root). Missing ->
  the tests that need it skip with the reason printed, except in CI (`CI` or `BROWSER_TEST_REQUIRED` set) where they
  fail.
- `browser`: that chromium, launched once by Playwright (its own browser download does not work here).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

NO_CHROMIUM = ("no chromium found (looked for $CHROMIUM, chromium, chromium-browser, google-chrome): "
               "run `make browser-deps` as root, or `sudo apt-get install chromium`")


def _lab_harness():
    sys.path.insert(0, str(Path(__file__).parent / "browser"))
    import lab_harness

    return lab_harness


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = _lab_harness().find_chromium()
    if path is None:
        if os.environ.get("CI") or os.environ.get("BROWSER_TEST_REQUIRED"):
            pytest.fail(f"the browser test must run in CI, but {NO_CHROMIUM}")
        pytest.skip(NO_CHROMIUM)
    return path


@pytest.fixture(scope="session")
def browser(chromium_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path, headless=True, args=_lab_harness().chromium_args())
        try:
            yield b
        finally:
            b.close()
