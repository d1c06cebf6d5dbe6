"""Fixtures for the real-browser tests: a fresh `jupyter lab` per test and one headless Debian chromium per session.

- `chromium_path`, `browser`: one Debian chromium for the session, in tests/conftest.py (shared with tests/hub).
- `lab`: a `LabServer` (see lab_harness.py) on 127.0.0.1, free port, token auth, temporary Jupyter dirs; stopped
  after the test (sessions deleted through the API, then the server's process group).
- `page`: a new browser context (1400x1000) per test, closed afterwards.
Screenshots go to artifacts/browser/<test id>/ (gitignored; CI can keep them as artifacts).
"""

from __future__ import annotations

import pytest

from lab_harness import ARTIFACTS, LabServer


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
