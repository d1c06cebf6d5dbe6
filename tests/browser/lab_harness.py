"""Drive a student's JupyterLab session for real: a `jupyter lab` server and Debian's chromium via Playwright.

Used by tests/browser (conftest.py holds the fixtures). The facts this is built around are in docs/DESIGN.md section 6
(JupyterLab 4.6, ipywidgets 8.1, Playwright 1.65, chromium in a root container). Two parts:

- `LabServer`: a `jupyter lab` on 127.0.0.1 and a free port, token auth, temporary Jupyter config/data/runtime/
  settings/workspace dirs (so no workspace is restored), news and update checks off, windowing mode "none" (every cell
  stays in the page), a temporary `python3` kernelspec pointing at this interpreter, no inherited MPLBACKEND.
  Notebooks are *staged*: copied into the server's root with outputs, execution counts and saved widget state removed.
- `NotebookDriver`: open a staged notebook, wait for the kernel, Run All from the Run menu, wait until every cell ran,
  then move every `.widget-slider` with the keyboard and check that its readout, the HTML readout and the image(s) in
  the same cell output area change. Every defect is collected as a `Problem` with a message a student would understand.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import requests

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "artifacts" / "browser"

# Generous defaults for a 2-core CI machine; override with environment variables when debugging.
SERVER_START_TIMEOUT = float(os.environ.get("BROWSER_SERVER_TIMEOUT", 90))
KERNEL_READY_TIMEOUT = float(os.environ.get("BROWSER_KERNEL_TIMEOUT", 90))
RUN_ALL_TIMEOUT = float(os.environ.get("BROWSER_RUN_TIMEOUT", 300))  # a Q notebook runs in <= 60 s on one thread
WIDGET_TIMEOUT = float(os.environ.get("BROWSER_WIDGET_TIMEOUT", 30))  # per slider move: kernel round trip + redraw
STABLE_FOR = 1.0  # seconds the kernel must stay idle and the page unchanged before we call it settled

# A traceback (error output, or a kernel log entry) versus a warning: both render as stderr, so judge the text.
ERROR_TEXT = re.compile(r"Traceback \(most recent call last\)|^\s*[\w.]*(Error|Exception)\b(:|\s|$)", re.M)
WIDGET_ERROR_TEXT = re.compile(r"Error displaying widget|Error rendering output|Failed to render|model not found")
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


# --------------------------------------------------------------------------------------------------------- chromium
def find_chromium() -> str | None:
    """Debian's chromium (Playwright's own browser download does not work offline). CHROMIUM overrides."""
    for candidate in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if candidate and (path := shutil.which(candidate)):
            return path
    return None


def is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def chromium_args() -> list[str]:
    """Flags for containers: no sandbox as root (it cannot start there), /tmp instead of a small /dev/shm."""
    return (["--no-sandbox"] if is_root() else []) + ["--disable-dev-shm-usage", "--disable-gpu"]


# ----------------------------------------------------------------------------------------------------------- server
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def jupyter_env(base: Path, python: str = sys.executable) -> dict[str, str]:
    """Environment for a fresh, quiet JupyterLab whose only state lives under `base`.

    A venv's own data path wins over JUPYTER_DATA_DIR, so the temp kernelspec is also put first via JUPYTER_PATH.
    """
    dirs = {name: base / name for name in ("config", "data", "runtime", "settings", "workspaces", "ipython")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    kernel = dirs["data"] / "kernels" / "python3"
    kernel.mkdir(parents=True, exist_ok=True)
    (kernel / "kernel.json").write_text(json.dumps({
        "argv": [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
        "metadata": {"debugger": True},
    }, indent=1))
    (dirs["config"] / "jupyter_server_config.json").write_text(json.dumps({
        "LabApp": {"news_url": None, "check_for_updates_class": "jupyterlab.NeverCheckForUpdate"},
        "LanguageServerManager": {"autodetect": False},
    }, indent=1))
    settings = {
        "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
        "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
    }
    for plugin, values in settings.items():
        path = dirs["settings"] / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))

    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "MPLBACKEND", "IPYTHON"))}
    env.update(
        JUPYTER_CONFIG_DIR=str(dirs["config"]),
        JUPYTER_DATA_DIR=str(dirs["data"]),
        JUPYTER_PATH=str(dirs["data"]),
        JUPYTER_RUNTIME_DIR=str(dirs["runtime"]),
        JUPYTERLAB_SETTINGS_DIR=str(dirs["settings"]),
        JUPYTERLAB_WORKSPACES_DIR=str(dirs["workspaces"]),
        IPYTHONDIR=str(dirs["ipython"]),
        PYTHONUNBUFFERED="1",
    )
    return env


def strip_notebook(path: Path) -> None:
    """What a student gets: no outputs, no execution counts, no saved widget state, kernelspec python3."""
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    nb.metadata.pop("widgets", None)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nbformat.write(nb, path)


def terminate_group(proc: subprocess.Popen, timeout: float = 15) -> None:
    """Stop a process started with start_new_session=True, and everything in its group."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    try:  # leftovers of the group (the process itself may be gone while children remain)
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait(5)


class LabServer:
    """`jupyter lab` on 127.0.0.1:<free port> with a token, its state in `base`, serving `base/root`."""

    def __init__(self, base: Path, jupyter: str | None = None):
        self.base = base
        self.root = base / "root"
        self.root.mkdir(parents=True, exist_ok=True)
        self.env = jupyter_env(base / "jupyter")
        self.jupyter = jupyter or str(Path(sys.executable).with_name("jupyter"))
        self.token = os.urandom(16).hex()
        self.log_path = base / "server.log"
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self._staged: set[str] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "LabServer":
        for attempt in range(3):  # a free port can be taken between choosing and binding: try another
            self.port = free_port()
            cmd = [self.jupyter, "lab", "--no-browser", "--ip=127.0.0.1", f"--port={self.port}",
                   "--ServerApp.port_retries=0", f"--IdentityProvider.token={self.token}",
                   f"--ServerApp.root_dir={self.root}"] + (["--allow-root"] if is_root() else [])
            log = open(self.log_path, "ab")
            self.proc = subprocess.Popen(cmd, env=self.env, cwd=self.root, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
            log.close()
            deadline = time.monotonic() + SERVER_START_TIMEOUT
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    if self.get("/api/status").status_code == 200:
                        return self
                except requests.ConnectionError:
                    pass
                time.sleep(0.3)
            if self.proc.poll() is None:
                terminate_group(self.proc)
                raise RuntimeError(f"jupyter lab did not answer within {SERVER_START_TIMEOUT:.0f}s; "
                                   f"log {self.log_path}:\n{self.log_tail()}")
        raise RuntimeError(f"jupyter lab exited at start (3 attempts); log {self.log_path}:\n{self.log_tail()}")

    def get(self, path: str, **kw) -> requests.Response:
        return requests.get(self.url + path, headers={"Authorization": f"token {self.token}"}, timeout=10, **kw)

    def sessions(self) -> list[dict]:
        return self.get("/api/sessions").json()

    def kernel_state(self, notebook: str) -> str | None:
        """execution_state of the kernel of `notebook` as the server tracks it; None when it has no session."""
        for s in self.sessions():
            if s.get("path") == notebook and s.get("kernel"):
                return s["kernel"].get("execution_state")
        return None

    def log_size(self) -> int:
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def log_text(self, since: int = 0) -> str:
        with open(self.log_path, "rb") as f:
            f.seek(since)
            return f.read().decode("utf-8", "replace")

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-n:]) if self.log_path.exists() else "(no log)"

    def stage(self, notebook: Path) -> str:
        """Copy the notebook's folder into the server root once (relative data/imports keep working), strip the
        notebook, return its path relative to the root (what /lab/tree/ and /api/sessions use)."""
        notebook = notebook.resolve()
        folder = notebook.parent.name
        if folder not in self._staged:
            shutil.copytree(notebook.parent, self.root / folder, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__", "artifacts"))
            self._staged.add(folder)
        strip_notebook(self.root / folder / notebook.name)
        return f"{folder}/{notebook.name}"

    def shutdown_sessions(self) -> None:
        """Kernels run in their own process groups: shut them down through the API before stopping the server."""
        try:
            for s in self.sessions():
                requests.delete(f"{self.url}/api/sessions/{s['id']}",
                                headers={"Authorization": f"token {self.token}"}, timeout=15)
        except requests.RequestException:
            pass

    def stop(self) -> None:
        if self.proc is not None:
            self.shutdown_sessions()
            terminate_group(self.proc)
            self.proc = None


# ----------------------------------------------------------------------------------------------------------- driver
@dataclass
class Problem:
    kind: str  # "widget missing", "traceback", "kernel died", "unchanged", "not run", "timeout"
    message: str

    def __str__(self) -> str:
        return f"[{self.kind}] {self.message}"


@dataclass
class SliderMove:
    index: int
    label: str
    key: str
    value_before: str
    value_after: str
    readout_changed: bool
    images_changed: int
    images_total: int
    seconds: float
    screenshot: Path | None = None
    log_entries: int = 0  # new Log Console entries (widget callback output) after this move


@dataclass
class Report:
    notebook: str
    problems: list[Problem] = field(default_factory=list)
    moves: list[SliderMove] = field(default_factory=list)
    screenshots: list[Path] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    slider_labels: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)  # informative only: JupyterLab logs benign ones

    def add(self, kind: str, message: str) -> None:
        self.problems.append(Problem(kind, message))

    def summary(self) -> str:
        lines = [f"{self.notebook}: " + ", ".join(f"{k} {v:.1f}s" for k, v in self.timings.items())]
        for m in self.moves:
            lines.append(f"  slider #{m.index} {m.label!r} {m.key}: {m.value_before} -> {m.value_after}; "
                         f"readout {'changed' if m.readout_changed else 'UNCHANGED'}; "
                         f"{m.images_changed}/{m.images_total} image(s) changed; {m.seconds:.1f}s"
                         + (f"; {m.log_entries} new Log Console entries" if m.log_entries else ""))
        lines += [f"  screenshot {p}" for p in self.screenshots]
        lines += [f"  browser console error: {c[:200]}" for c in self.console_errors]
        lines += [f"  PROBLEM {p}" for p in self.problems]
        return "\n".join(lines)


# Page-side helpers. A slider's "widget area" is the output area of the cell that displays it: the explorer's
# readout (ipywidgets.HTML) and plot (ipywidgets.Image, or any <img>) live there.
JS_CELLS = """() => [...document.querySelectorAll('.jp-Notebook .jp-Cell')].map((c, i) => {
    const prompt = c.querySelector('.jp-InputArea-prompt');
    return {
        index: i,
        code: c.classList.contains('jp-CodeCell'),
        prompt: prompt ? prompt.textContent.trim() : '',
        stderr: [...c.querySelectorAll('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')]
                .map(o => o.innerText),
        text: [...c.querySelectorAll('.jp-OutputArea-output')].map(o => o.innerText).join('\\n'),
    };
})"""

JS_SLIDERS = """() => [...document.querySelectorAll('.widget-slider')].map(s => {
    const h = s.querySelector('.noUi-handle');
    const label = s.querySelector('.widget-label');
    const readout = s.querySelector('.widget-readout');
    return {
        label: label ? label.textContent.trim() : '',
        readout: readout ? readout.textContent.trim() : null,
        handle: !!h,
        now: h ? h.getAttribute('aria-valuenow') : null,
        min: h ? h.getAttribute('aria-valuemin') : null,
        max: h ? h.getAttribute('aria-valuemax') : null,
        disabled: s.classList.contains('mod-disabled') || (h && h.getAttribute('aria-disabled') === 'true'),
    };
})"""

JS_AREA = """(slider) => {
    const area = slider.closest('.jp-Cell-outputArea') || slider.closest('.jp-OutputArea') || slider.parentElement;
    const readout = slider.querySelector('.widget-readout');
    return {
        value: readout ? readout.textContent.trim() : '',
        html: [...area.querySelectorAll('.widget-html-content, .widget-htmlmath-content')].map(e => e.innerText),
        imgs: [...area.querySelectorAll('img')].map(i => i.src),
    };
}"""

JS_IMAGE_HASHES = """async (slider) => {
    const area = slider.closest('.jp-Cell-outputArea') || slider.closest('.jp-OutputArea') || slider.parentElement;
    const out = [];
    for (const img of area.querySelectorAll('img')) {
        if (!img.src || img.src === location.href) { out.push('empty'); continue; }
        const buf = await (await fetch(img.src)).arrayBuffer();
        const digest = await crypto.subtle.digest('SHA-256', buf);
        out.push(buf.byteLength + ':' + [...new Uint8Array(digest)].map(b => b.toString(16).padStart(2, '0')).join(''));
    }
    return out;
}"""

JS_KERNEL_UI = """(panel) => {
    const name = panel.querySelector('.jp-Toolbar-kernelName');
    const ind = panel.querySelector('.jp-Notebook-ExecutionIndicator');
    const status = panel.querySelector('.jp-Toolbar-kernelStatus');
    return {
        name: name ? name.innerText.trim() : '',
        status: ind ? (ind.getAttribute('data-status') || '') : (status ? status.getAttribute('title') || '' : ''),
    };
}"""


def _clean(text: str) -> str:
    return ANSI.sub("", text)


def _first_error_line(text: str) -> str:
    lines = [ln for ln in _clean(text).splitlines() if ln.strip()]
    for ln in reversed(lines):
        if re.match(r"^\s*[\w.]*(Error|Exception)\b", ln):
            return ln.strip()
    return lines[-1].strip() if lines else ""


def log_tracebacks(log: str) -> list[str]:
    """One line per traceback in a server/kernel log: the record that introduced it ... the exception line."""
    lines = log.splitlines()
    found = []
    for i, line in enumerate(lines):
        if "Traceback (most recent call last)" in line:
            head = next((ln.strip() for ln in reversed(lines[:i]) if ln.strip()), "")
            tail = next((ln.strip() for ln in lines[i + 1:] if re.match(r"^[\w.]*(Error|Exception)\b", ln)), "")
            found.append(f"{head[:160]} ... {tail[:200]}")
    return found


class NotebookDriver:
    """One notebook in one browser page. Methods record Problems in `self.report`; `check()` runs the whole visit."""

    def __init__(self, page, server: LabServer, notebook: str, artifacts: Path,
                 widget_timeout: float = WIDGET_TIMEOUT):
        self.page = page
        self.server = server
        self.notebook = notebook
        self.artifacts = artifacts
        self.widget_timeout = widget_timeout
        self.report = Report(notebook)
        self.log_start = server.log_size()
        self._shot = 0
        artifacts.mkdir(parents=True, exist_ok=True)
        for old in artifacts.glob("*.png"):
            old.unlink()
        page.on("console", lambda m: m.type == "error" and self.report.console_errors.append(m.text))
        page.on("pageerror", lambda e: self.report.console_errors.append(f"page error: {e}"))

    # ----------------------------------------------------------------------------------------------- small helpers
    @property
    def panel(self):
        return self.page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)").first

    def screenshot(self, name: str, locator=None) -> Path:
        self._shot += 1
        path = self.artifacts / f"{self._shot:02d}_{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}.png"
        try:
            (locator or self.page).screenshot(path=str(path))
        except Exception:  # an element that vanished: keep the whole page instead
            self.page.screenshot(path=str(path))
        self.report.screenshots.append(path)
        return path

    def kernel_ui(self) -> dict:
        return self.panel.evaluate(JS_KERNEL_UI)

    def dialog_text(self) -> str | None:
        dialogs = self.page.locator(".jp-Dialog")
        return dialogs.first.inner_text() if dialogs.count() else None

    def check_kernel_alive(self) -> bool:
        state = self.server.kernel_state(self.notebook)
        dialog = self.dialog_text() or ""
        if state in ("dead", "restarting", "autorestarting") or re.search(r"died|Kernel Restarting|Dead kernel",
                                                                           dialog):
            code = [c for c in self.page.evaluate(JS_CELLS) if c["code"]]
            running = [c["index"] for c in code if "*" in c["prompt"]]
            not_run = [c["index"] for c in code if not re.search(r"\[\d+\]", c["prompt"])]
            msg = f"kernel died (server state {state!r})"
            if running or not_run:
                msg += f" while running cell {(running or not_run)[0]}"
            if dialog:
                msg += f"; JupyterLab says: {' '.join(dialog.split())[:300]}"
            self.report.add("kernel died", msg)
            self.screenshot("kernel_died")
            return False
        return True

    def kernel_idle(self) -> bool:
        ui = self.kernel_ui()
        return (self.server.kernel_state(self.notebook) == "idle" and ui["status"] == "idle"
                and ui["name"] not in ("", "No Kernel"))

    # ------------------------------------------------------------------------------------------------------ steps
    def open(self) -> None:
        t = time.monotonic()
        self.page.goto(f"{self.server.url}/lab/tree/{self.notebook}?token={self.server.token}")
        self.page.locator(".jp-NotebookPanel .jp-Notebook").first.wait_for(timeout=KERNEL_READY_TIMEOUT * 1000)
        # The execution indicator can read "idle" while the kernel name still says "No Kernel": wait for both,
        # and for the server to report the session's kernel idle.
        deadline = time.monotonic() + KERNEL_READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.dialog_text():
                self.screenshot("dialog_at_open")
                raise AssertionError(f"{self.notebook}: a dialog blocks the notebook: {self.dialog_text()!r}")
            if self.kernel_idle():
                break
            time.sleep(0.25)
        else:
            self.screenshot("kernel_not_ready")
            raise AssertionError(f"{self.notebook}: kernel not ready after {KERNEL_READY_TIMEOUT:.0f}s "
                                 f"(toolbar {self.kernel_ui()}, server {self.server.kernel_state(self.notebook)!r})")
        self.report.timings["open+kernel"] = time.monotonic() - t

    def run_all(self) -> None:
        t = time.monotonic()
        self.page.locator(".lm-MenuBar-item", has_text=re.compile(r"^Run$")).click()
        self.page.locator('.lm-Menu-item[data-command="runmenu:run-all"]').click()
        deadline = time.monotonic() + RUN_ALL_TIMEOUT
        idle_since = None
        cells = []
        while time.monotonic() < deadline:
            if not self.check_kernel_alive():
                return
            cells = self.page.evaluate(JS_CELLS)
            code = [c for c in cells if c["code"]]
            running = any("*" in c["prompt"] for c in code)
            counted = all(re.search(r"\[\d+\]", c["prompt"]) for c in code)
            errored = any(ERROR_TEXT.search(_clean(s)) for c in code for s in c["stderr"])
            if not running and (counted or errored) and self.kernel_idle():
                idle_since = idle_since or time.monotonic()
                if time.monotonic() - idle_since >= STABLE_FOR:
                    break
            else:
                idle_since = None
            time.sleep(0.25)
        else:
            self.report.add("timeout", f"Run All did not finish within {RUN_ALL_TIMEOUT:.0f}s; prompts: "
                            + ", ".join(f"cell {c['index']} {c['prompt']}" for c in cells if c["code"]))
            self.screenshot("run_all_timeout")
        self.report.timings["run all"] = time.monotonic() - t
        self.collect_errors(cells)

    def collect_errors(self, cells: list[dict] | None = None) -> None:
        """Tracebacks in any output (not warnings), widget render errors, code cells that never ran."""
        cells = cells if cells is not None else self.page.evaluate(JS_CELLS)
        seen = {p.message for p in self.report.problems}

        def add(kind, message):
            if message not in seen:
                seen.add(message)
                self.report.add(kind, message)

        for c in cells:
            for s in c["stderr"]:
                if ERROR_TEXT.search(_clean(s)):
                    add("traceback", f"cell {c['index']}: {_first_error_line(s)}")
            if m := WIDGET_ERROR_TEXT.search(c["text"]):
                add("widget missing", f"cell {c['index']}: widget did not render: {m.group(0)!r}")
            if c["code"] and not re.search(r"\[\d+\]", c["prompt"]):
                add("not run", f"cell {c['index']} has no execution count (prompt {c['prompt']!r}): "
                    "an earlier error stopped Run All, or it never ran")

    def collect_kernel_log_errors(self) -> None:
        """Errors outside any cell: a comm handler that raises is logged by ipykernel to its stderr, which is the
        server's log; a kernel that died is restarted by the server, which logs it. Report both."""
        log = _clean(self.server.log_text(self.log_start))
        if re.search(r"kernel \S+ restarted|KernelRestarter: restarting", log) and not any(
                p.kind == "kernel died" for p in self.report.problems):
            self.report.add("kernel died", f"the server restarted the kernel (it died): see {self.server.log_path}")
        for message in log_tracebacks(log):
            self.report.add("traceback", f"kernel/server log: {message} (see {self.server.log_path})")

    def log_entries(self) -> int:
        """Entries in the notebook's Log Console, from the status bar item's tooltip ("1 new messages, 1 log
        entries for ...")."""
        titles = self.page.evaluate("""() => [...document.querySelectorAll('.jp-LogConsoleStatusItem [title]')]
                                            .map(e => e.getAttribute('title'))""")
        counts = [int(m.group(1)) for t in titles if (m := re.search(r"(\d+) log entr", t or ""))]
        return max(counts, default=0)

    def collect_log_console_errors(self) -> None:
        """An exception in a widget callback is shown nowhere in the notebook: ipywidgets sends it from the comm
        handler, and JupyterLab puts such outputs in the Log Console (the status bar counts its entries). Open it
        and report the tracebacks found there."""
        entries = self.log_entries()
        if not entries:
            return
        self.page.locator(".jp-LogConsoleStatusItem").first.click()
        console = self.page.locator(".jp-LogConsolePanel").first
        try:
            console.wait_for(timeout=10_000)
            self.page.wait_for_timeout(500)
            text = _clean(console.inner_text())
        except Exception as e:  # the entries exist but cannot be read: say so rather than pass silently
            self.report.add("traceback", f"log console has {entries} entries but could not be read: {e}")
            return
        path = self.screenshot("log_console", console)
        if ERROR_TEXT.search(text):
            culprits = [m.label for m in self.report.moves if m.log_entries]
            self.report.add("traceback", f"Log Console (output of widget callbacks): {_first_error_line(text)}"
                            + (f"; written after moving {culprits}" if culprits else "") + f" -- see {path}")

    def sliders(self, expected: dict[str, str]) -> list[dict]:
        """Wait for the widgets to render; report expected sliders (label regex) that are missing."""
        t = time.monotonic()
        deadline = time.monotonic() + self.widget_timeout
        found, last, since = [], None, time.monotonic()
        while time.monotonic() < deadline:
            found = self.page.evaluate(JS_SLIDERS)
            labels = [s["label"] for s in found]
            if labels != last:
                last, since = labels, time.monotonic()
            have_all = all(any(re.search(rx, lb, re.I) for lb in labels) for rx in expected.values())
            if found and have_all and all(s["handle"] for s in found) and time.monotonic() - since >= STABLE_FOR:
                break
            time.sleep(0.25)
        self.report.slider_labels = [s["label"] for s in found]
        for name, rx in expected.items():
            if not any(re.search(rx, s["label"], re.I) for s in found):
                self.report.add("widget missing", f"no {name} slider (label matching /{rx}/i) on the page after "
                                f"{self.widget_timeout:.0f}s; sliders found: {[s['label'] for s in found]}")
        if not found:
            self.report.add("widget missing", "no .widget-slider rendered at all")
        self.report.timings["widgets render"] = time.monotonic() - t
        return found

    def area_state(self, slider) -> dict:
        return slider.evaluate(JS_AREA)

    def image_hashes(self, slider) -> list[str] | None:
        try:
            return slider.evaluate(JS_IMAGE_HASHES)
        except Exception:  # a blob URL revoked because the image changed under us: caller retries
            return None

    def move_slider(self, index: int, info: dict) -> SliderMove | None:
        slider = self.page.locator(".widget-slider").nth(index)
        handle = slider.locator(".noUi-handle").first
        label = info["label"] or f"slider #{index}"
        if info["disabled"]:
            self.report.add("unchanged", f"{label!r}: slider is disabled, a student cannot move it")
            return None
        slider.scroll_into_view_if_needed()
        before = self.area_state(slider)
        before_hashes = self._settled_hashes(slider)
        if not before["html"]:
            self.report.add("widget missing", f"{label!r}: no readout (ipywidgets.HTML) in its cell's output")
        if not before["imgs"]:
            self.report.add("widget missing", f"{label!r}: no plot image (ipywidgets.Image) in its cell's output")
        area = slider.locator("xpath=ancestor::div[contains(@class,'jp-Cell-outputArea')][1]")
        self.screenshot(f"slider{index}_{label}_before", area)
        log_before = self.log_entries()
        at_max = info["now"] is not None and info["max"] is not None and float(info["now"]) >= float(info["max"])
        key = "ArrowLeft" if at_max else "ArrowRight"
        t = time.monotonic()
        handle.press(key)  # focuses the noUi handle, like a student tabbing to it, then presses the arrow key

        # The slider's own readout changes at once; the HTML readout and the image only after the kernel round trip
        # (sometimes through intermediate images). Wait until both changed and everything stayed still for
        # STABLE_FOR with the kernel idle -- or until the timeout, and then report what did not change.
        deadline = t + self.widget_timeout
        last, since, now_state = None, time.monotonic(), before
        while True:
            if not self.check_kernel_alive():
                return None
            now_state = self.area_state(slider)
            snapshot = (now_state["value"], now_state["html"], now_state["imgs"])
            if snapshot != last:
                last, since = snapshot, time.monotonic()
            idle = self.kernel_idle()
            if not idle:
                since = time.monotonic()
            changed = now_state["html"] != before["html"] and now_state["imgs"] != before["imgs"]
            settled = time.monotonic() - since >= STABLE_FOR
            if (changed and settled) or time.monotonic() > deadline and (settled or time.monotonic() > deadline + 10):
                break
            time.sleep(0.1)
        after_hashes = self._settled_hashes(slider)
        seconds = time.monotonic() - t
        readout_changed = now_state["html"] != before["html"]
        pairs = list(zip(before_hashes or [], after_hashes or []))
        images_changed = sum(a != b for a, b in pairs)
        move = SliderMove(index, label, key, before["value"], now_state["value"], readout_changed, images_changed,
                          len(after_hashes or []), seconds)
        move.screenshot = self.screenshot(f"slider{index}_{label}_after", area)
        move.log_entries = self.log_entries() - log_before
        if now_state["value"] == before["value"]:
            self.report.add("unchanged", f"{label!r}: {key} did not move the slider (value stays "
                            f"{before['value']!r})")
        if before["html"] and not readout_changed:
            self.report.add("unchanged", f"{label!r}: readout unchanged after moving {before['value']} -> "
                            f"{now_state['value']} (still {' | '.join(before['html'])[:200]!r})")
        if before["imgs"] and images_changed == 0:
            self.report.add("unchanged", f"{label!r}: plot image bytes unchanged after moving {before['value']} -> "
                            f"{now_state['value']} (waited {seconds:.1f}s)")
        if len(before_hashes or []) != len(after_hashes or []):
            self.report.add("unchanged", f"{label!r}: number of images went {len(before_hashes or [])} -> "
                            f"{len(after_hashes or [])}")
        self.report.moves.append(move)
        return move

    def _settled_hashes(self, slider) -> list[str]:
        for _ in range(20):
            hashes = self.image_hashes(slider)
            if hashes is not None:
                return hashes
            time.sleep(0.2)
        return []

    # ---------------------------------------------------------------------------------------------- whole visit
    def check(self, expected: dict[str, str]) -> Report:
        """What a student does: open, Run All, move every slider on the page; collect every defect."""
        t0 = time.monotonic()
        self.open()
        self.run_all()
        if not any(p.kind == "kernel died" for p in self.report.problems):
            self.screenshot("after_run_all")
            found = self.sliders(expected)
            for i, info in enumerate(found):
                if info["handle"]:
                    self.move_slider(i, info)
            self.collect_errors()
            self.screenshot("after_sliders")
            self.collect_log_console_errors()
        self.collect_kernel_log_errors()
        self.report.timings["total"] = time.monotonic() - t0
        return self.report
