"""A course hub for the end-to-end test: deploy/jupyterhub/launch.py on 127.0.0.1 with temporary folders, and users
who log in through the hub's form and talk to their own single-user server over HTTP (nbgrader's assignment_list
REST API, Jupyter's contents API). The browser user shares these helpers through Playwright's request context.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import requests

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO / "tests" / "browser")]

from lab_harness import free_port, terminate_group  # noqa: E402

HUB_DIR = REPO / "deploy" / "jupyterhub"
BIN = Path(sys.executable).parent
START_TIMEOUT = float(os.environ.get("HUB_START_TIMEOUT", 90))
SPAWN_TIMEOUT = float(os.environ.get("HUB_SPAWN_TIMEOUT", 180))
PASSWORD = "e2e-" + os.urandom(6).hex()


def missing_dependencies() -> list[str]:
    """What the hub test needs and this machine lacks, each with how to get it."""
    missing = []
    if not (BIN / "jupyterhub").exists() and shutil.which("jupyterhub") is None:
        missing.append("jupyterhub (make hub-deps)")
    if not (HUB_DIR / "node_modules" / ".bin" / "configurable-http-proxy").exists() \
            and shutil.which("configurable-http-proxy") is None:
        missing.append("configurable-http-proxy (make hub-deps: npm ci in deploy/jupyterhub)")
    from lab_harness import find_chromium
    if find_chromium() is None:
        missing.append("chromium (make browser-deps)")
    if shutil.which("bwrap") is None:
        missing.append("bubblewrap for the grading sandbox (make sandbox-deps)")
    return missing


class Hub:
    """The course hub (launch.py, the command `make hub` runs) with its state, course and exchange under `base`."""

    def __init__(self, base: Path, students: list[str], instructors: list[str]):
        self.base = base
        self.state, self.course, self.exchange = base / "state", base / "course", base / "exchange"
        self.students, self.instructors = students, instructors
        self.log_path = base / "hub.log"
        self.proc: subprocess.Popen | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "Hub":
        self.port = free_port()
        cmd = [sys.executable, str(HUB_DIR / "launch.py"), "--state", str(self.state), "--course-dir",
               str(self.course), "--exchange", str(self.exchange), "--port", str(self.port), "--password", PASSWORD,
               "--students", ",".join(self.students), "--instructors", ",".join(self.instructors)]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                if requests.get(self.url + "/hub/api", timeout=5).status_code == 200:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"the hub did not answer within {START_TIMEOUT:.0f}s (exit code {self.proc.poll()}); "
                           f"log {self.log_path}:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """SIGTERM: the hub stops the users' servers (cleanup_servers) and the proxy; then its group; then any
        single-user server still serving a home under our temporary state (started by this hub, by pid)."""
        if self.proc is not None:
            terminate_group(self.proc, timeout=30)
        for pid in _pids_serving(self.state / "home", self.course):
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass

    def home(self, user: str) -> Path:
        return self.state / "home" / user


def _pids_serving(*roots: Path) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        if any(cwd == str(r) or cwd.startswith(str(r) + os.sep) for r in roots):
            found.append(int(proc.name))
    return found


class HubUser:
    """One person logging in through the hub's form, then using their own server over HTTP with its cookies."""

    def __init__(self, hub: Hub, name: str):
        self.hub, self.name = hub, name
        self.http = requests.Session()

    @property
    def server(self) -> str:
        return f"{self.hub.url}/user/{self.name}"

    def login(self, password: str = PASSWORD) -> requests.Response:
        page = self.http.get(self.hub.url + "/hub/login", timeout=30)
        match = re.search(r'name="_xsrf"\s+value="([^"]+)"', page.text)
        if match is None:
            raise AssertionError(f"no _xsrf field in the hub's login form:\n{page.text[:2000]}")
        return self.http.post(self.hub.url + "/hub/login", timeout=60, allow_redirects=False,
                              data={"username": self.name, "password": password, "_xsrf": match.group(1)})

    def start_server(self) -> None:
        """/hub/spawn, then wait until /user/<name>/lab answers (the OAuth round trip sets the server's cookie)."""
        self.http.get(self.hub.url + "/hub/spawn", timeout=SPAWN_TIMEOUT)
        deadline = time.monotonic() + SPAWN_TIMEOUT
        last = None
        while time.monotonic() < deadline:
            last = self.http.get(self.server + "/lab", timeout=60)
            at_lab = last.url.startswith(self.server + "/lab")
            if last.status_code == 200 and at_lab and "jupyter-config-data" in last.text:
                return
            time.sleep(1)
        raise AssertionError(f"{self.name}'s JupyterLab did not come up within {SPAWN_TIMEOUT:.0f}s "
                             f"(last: {last and last.status_code} {last and last.url}); hub log:\n"
                             f"{self.hub.log_tail()}")

    def _xsrf(self) -> dict[str, str]:
        token = self.http.cookies.get("_xsrf", path=f"/user/{self.name}/")
        return {"X-XSRFToken": token} if token else {}

    def post(self, path: str, **kw) -> requests.Response:
        return self.http.post(self.server + path, headers=self._xsrf(), timeout=300, **kw)

    def put_json(self, path: str, body: dict) -> requests.Response:
        return self.http.put(self.server + path, headers=self._xsrf(), json=body, timeout=60)

    def get(self, path: str, **kw) -> requests.Response:
        return self.http.get(self.server + path, timeout=60, **kw)
