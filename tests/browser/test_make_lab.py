"""`make lab` smoke test (issue 9): the server starts, prints its token URL, /lab answers 200 with the token and
refuses (403 or a redirect to the login page) without it. Runs the Makefile's own recipe, with LAB_ARGS to pick
a free port and keep the browser closed, and fresh Jupyter dirs so nothing of the user's setup leaks in or out."""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time

import pytest
import requests

from lab_harness import REPO, free_port, jupyter_env, terminate_group

START_TIMEOUT = 180  # `make lab` first checks the install stamp; a stale one reinstalls from requirements.lock


def test_make_lab_prints_token_url_and_requires_it(tmp_path):
    make = shutil.which("make")
    if make is None:
        pytest.skip("`make` not found")
    port = free_port()
    env = jupyter_env(tmp_path / "jupyter")
    env["LAB_ARGS"] = f"--no-browser --ip=127.0.0.1 --port={port} --ServerApp.port_retries=0"
    proc = subprocess.Popen([make, "--no-print-directory", "lab"], cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)  # type: ignore[arg-type]
    reader.start()
    url_rx = re.compile(rf"(http://127\.0\.0\.1:{port}/lab\?token=([0-9a-f]+))")
    try:
        deadline, match = time.monotonic() + START_TIMEOUT, None
        while time.monotonic() < deadline and proc.poll() is None and not match:
            match = next((m for line in list(lines) if (m := url_rx.search(line))), None)
            time.sleep(0.2)
        output = "".join(lines)
        assert match, f"`make lab` printed no token URL for port {port} (exit {proc.poll()}):\n{output[-3000:]}"
        url, token = match.groups()
        base = f"http://127.0.0.1:{port}"

        with_token = requests.get(url, timeout=30)
        assert with_token.status_code == 200, f"/lab with the token: {with_token.status_code}"
        assert "JupyterLab" in with_token.text

        without = requests.get(f"{base}/lab", timeout=30, allow_redirects=False)
        assert without.status_code == 403 or (
            without.status_code in (301, 302, 303, 307) and "/login" in without.headers.get("Location", "")), (
            f"/lab without the token answered {without.status_code} {without.headers.get('Location', '')}")
        assert requests.get(f"{base}/api/status", timeout=30).status_code == 403, "the API must need the token"
        assert requests.get(f"{base}/api/status?token={token}", timeout=30).status_code == 200
        print(f"\n`make lab` printed {url.replace(token, '<token>')}; /lab: 200 with token, "
              f"{without.status_code} -> {without.headers.get('Location', '')} without")
    finally:
        terminate_group(proc)
    assert proc.returncode is not None
    with pytest.raises(requests.ConnectionError):  # the whole process group is gone: nothing listens any more
        requests.get(f"http://127.0.0.1:{port}/api/status", timeout=5)
