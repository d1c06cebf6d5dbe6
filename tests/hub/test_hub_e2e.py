"""A class on the course's JupyterHub, end to end: release -> fetch -> submit (one late) -> collect -> grade in the
sandbox -> release feedback -> each student fetches their own feedback.

The hub is deploy/jupyterhub/launch.py (what `make hub` runs) on 127.0.0.1, a free port, with temporary folders for
its state, the users' homes, the course and the exchange. The instructor's commands are the ones README gives, run in
the course folder with the environment the hub gives the instructor's server (as in its terminal). student1 works in
a real browser (Playwright + Debian chromium): logs in through the hub's form, lands in JupyterLab, and fetches,
saves and submits through the same nbgrader/Jupyter REST calls the Assignments panel makes, with the browser's
cookies. student2 does the same over plain HTTP, after the due date.

Skips, with the reason, where jupyterhub, configurable-http-proxy, chromium or bubblewrap is missing, unless
HUB_TEST_REQUIRED=1 (CI), where that fails.

Grading is `make grade`'s command with the course gradebook: `--gradebook` (due dates from it, nbgrader's late
penalty, results recorded there), `--totals`, and feedback written where `nbgrader release_feedback` finds it.
The browser is the session's one chromium (tests/conftest.py), shared with tests/browser.
"""
from __future__ import annotations

import csv
import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from hub_harness import BIN, HUB_DIR, PASSWORD, REPO, Hub, HubUser, missing_dependencies

from grading_fixtures import submissions as S  # noqa: E402 - hub_harness put tests/ on sys.path

pytestmark = pytest.mark.slow

ASSIGNMENT = "Q1"  # the exercise that grades fastest
NOTEBOOK = S.notebook_path(S.SOLUTIONS, ASSIGNMENT).name
INSTRUCTOR, ON_TIME, LATE = "instructor", "student1", "student2"
STUDENTS = [ON_TIME, LATE, "student3"]
COMMAND_TIMEOUT = 600


def _course_id() -> str:
    from traitlets.config.loader import PyFileConfigLoader
    return PyFileConfigLoader("nbgrader_config.py", path=str(REPO)).load_config().CourseDirectory.course_id


COURSE_ID = _course_id()


def marker(student: str) -> str:
    return f"# handed in by {student} (hub e2e)"


# ----------------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    missing = missing_dependencies()
    if missing:
        reason = "the hub test needs " + ", ".join(missing)
        if os.environ.get("HUB_TEST_REQUIRED") == "1":
            pytest.fail(f"HUB_TEST_REQUIRED=1, but {reason}")
        pytest.skip(reason)
    hub = Hub(tmp_path_factory.mktemp("hub"), STUDENTS, [INSTRUCTOR]).start()
    try:
        yield hub
    finally:
        hub.stop()


def instructor(hub: Hub, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """A command in the instructor's terminal: the course folder, the environment the hub gives their server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "NBGRADER"))}
    env.update(PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}", HOME=str(hub.home(INSTRUCTOR)),
               USER=INSTRUCTOR, NBGRADER_EXCHANGE=str(hub.exchange), NBGRADER_COURSE_ID=COURSE_ID,
               JUPYTER_CONFIG_PATH=os.pathsep.join([str(HUB_DIR / "jupyter" / "instructor"), str(HUB_DIR / "jupyter")]),
               OMP_NUM_THREADS="1")
    done = subprocess.run(args, cwd=hub.course, env=env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
    if check and done.returncode != 0:
        raise AssertionError(f"instructor's `{' '.join(args)}` exited with {done.returncode}:\n"
                             f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


class Answer:
    """What a student hands in: the correct solution, marked with their name in the first answer cell."""

    @staticmethod
    def notebook(student: str) -> dict:
        nb = S.correct(ASSIGNMENT)
        cell = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("solution") and c.cell_type == "code")
        cell.source = marker(student) + "\n" + cell.source
        return nbformat.from_dict(nb)


def _check(response, what: str) -> dict | list:
    status = getattr(response, "status_code", None) or response.status
    text = response.text if isinstance(response.text, str) else response.text()
    if status >= 400:
        raise AssertionError(f"{what}: HTTP {status}\n{text[:3000]}")
    body = response.json()
    if isinstance(body, dict) and body.get("success") is False:
        raise AssertionError(f"{what}: nbgrader answered {body.get('value')!r}")
    return body


class BrowserUser:
    """student1 in chromium: the hub's login form, JupyterLab, then the Assignments panel's REST calls."""

    def __init__(self, hub: Hub, name: str, page):
        self.hub, self.name, self.page = hub, name, page

    @property
    def server(self) -> str:
        return f"{self.hub.url}/user/{self.name}"

    def login_and_open_lab(self) -> None:
        self.page.goto(self.hub.url + "/hub/login")
        self.page.fill("#username_input", self.name)
        self.page.fill("#password_input", PASSWORD)
        self.page.click("#login_submit")
        self.page.wait_for_url(f"**/user/{self.name}/lab**", timeout=240_000)
        self.page.wait_for_selector("#jp-main-dock-panel", timeout=120_000)

    def _headers(self) -> dict[str, str]:
        cookies = self.page.context.cookies(self.server + "/")
        token = next((c["value"] for c in cookies if c["name"] == "_xsrf" and c["path"].startswith("/user/")), None)
        return {"X-XSRFToken": token} if token else {}

    def post(self, path: str, data: dict):
        return self.page.request.post(self.server + path, form=data, headers=self._headers(), timeout=300_000)

    def put_json(self, path: str, body: dict):
        return self.page.request.put(self.server + path, data=body, headers=self._headers())

    def get(self, path: str):
        return self.page.request.get(self.server + path)


def fetch_answer_submit(user, home: Path) -> None:
    ids = {"assignment_id": ASSIGNMENT, "course_id": COURSE_ID}
    listed = _check(user.post("/assignments/fetch", data=ids), f"{user.name}: fetch {ASSIGNMENT}")
    fetched = [a for a in listed["value"] if a["assignment_id"] == ASSIGNMENT and a["status"] == "fetched"]
    assert fetched, f"{user.name}: after fetch, {ASSIGNMENT} is not listed as fetched: {listed}"
    assert (home / ASSIGNMENT / NOTEBOOK).is_file(), f"{user.name}: fetch did not put {NOTEBOOK} in their home"
    path = f"/api/contents/{ASSIGNMENT}/{NOTEBOOK}"
    _check(user.put_json(path, {"type": "notebook", "format": "json", "content": Answer.notebook(user.name)}),
           f"{user.name}: save the answered notebook")
    _check(user.post("/assignments/submit", data=ids), f"{user.name}: submit {ASSIGNMENT}")


def fetch_feedback(user) -> dict[str, str]:
    """nbgrader's fetch_feedback from the student's server; the HTML files it brought, read back through the API."""
    ids = {"assignment_id": ASSIGNMENT, "course_id": COURSE_ID}
    _check(user.post("/assignments/fetch_feedback", data=ids), f"{user.name}: fetch_feedback")
    folder = _check(user.get(f"/api/contents/{ASSIGNMENT}/feedback?content=1"), f"{user.name}: list feedback")
    found = {}
    for stamp in folder["content"]:
        inner = _check(user.get(f"/api/contents/{stamp['path']}?content=1"), f"{user.name}: list {stamp['path']}")
        for item in inner["content"]:
            body = _check(user.get(f"/api/contents/{item['path']}?content=1&format=text&type=file"),
                          f"{user.name}: read {item['path']}")
            found[item["path"]] = body["content"]
    return found


@pytest.fixture(scope="module")
def run(hub, browser, tmp_path_factory):
    """The whole class, once; every test below checks one part of what it left."""
    started = time.monotonic()
    out = tmp_path_factory.mktemp("grading")
    result = {"hub": hub, "grades": out / "grades.csv", "totals": out / "totals.csv"}

    teacher = HubUser(hub, INSTRUCTOR)
    assert teacher.login().status_code == 302, "the instructor could not log in with the demo password"
    teacher.start_server()
    result["formgrader_status"] = teacher.get("/formgrader").status_code
    instructor(hub, "nbgrader", "generate_assignment", ASSIGNMENT, "--force")
    instructor(hub, "nbgrader", "release_assignment", ASSIGNMENT)

    # one chromium for the whole test session (tests/conftest.py): Playwright's sync API allows one at a time
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        context.set_default_timeout(120_000)
        student1 = BrowserUser(hub, ON_TIME, context.new_page())
        student1.login_and_open_lab()
        fetch_answer_submit(student1, hub.home(ON_TIME))

        # The due date falls between the two submissions: student1 on time, student2 late.
        due = dt.datetime.now(dt.timezone.utc)
        instructor(hub, "nbgrader", "db", "assignment", "add", ASSIGNMENT,
                   f"--duedate={due:%Y-%m-%d %H:%M:%S.%f} UTC")
        time.sleep(1.5)
        student2 = HubUser(hub, LATE)
        assert student2.login().status_code == 302, f"{LATE} could not log in with the demo password"
        student2.start_server()
        result["student_formgrader_status"] = student2.get("/formgrader").status_code
        fetch_answer_submit(student2, hub.home(LATE))

        intruder = HubUser(hub, "mallory")
        result["unknown_user_login"] = intruder.login().status_code
        result["wrong_password_login"] = HubUser(hub, "student3").login(password="not-" + PASSWORD).status_code

        instructor(hub, "nbgrader", "collect", ASSIGNMENT)
        grade = [sys.executable, "-m", "course_lib.grading.autograde", str(hub.course / "submitted"),
                 str(result["grades"]), "--course-dir", str(hub.course), "--feedback", str(hub.course / "feedback"),
                 "--workers", "2", "--gradebook", f"sqlite:///{hub.course / 'gradebook.db'}", "--totals",
                 str(result["totals"])]
        result["grading"] = instructor(hub, *grade)
        instructor(hub, "nbgrader", "release_feedback", ASSIGNMENT)

        result["feedback"] = {ON_TIME: fetch_feedback(student1), LATE: fetch_feedback(student2)}
    finally:
        context.close()
    result["seconds"] = time.monotonic() - started
    print(f"hub e2e: the class from release to feedback in {result['seconds']:.0f} s")
    return result


def rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# -------------------------------------------------------------------------------------------------------- tests
def test_hub_roles_and_login(run):
    assert run["formgrader_status"] == 200, "the instructor's server has no formgrader"
    assert run["student_formgrader_status"] == 404, "a student's server serves the formgrader"
    assert run["unknown_user_login"] != 302, "a user who is not in the class could log in"
    assert run["wrong_password_login"] != 302, "a wrong password was accepted"


def test_release_fetch_submit_collect(run):
    hub = run["hub"]
    released = hub.exchange / COURSE_ID / "outbound" / ASSIGNMENT / NOTEBOOK
    assert released.is_file(), f"release_assignment did not put {NOTEBOOK} in the exchange"
    assert "### BEGIN SOLUTION" not in released.read_text(), "the released notebook holds the solutions"
    inbound = sorted(p.name.split("+")[0] for p in (hub.exchange / COURSE_ID / "inbound").iterdir())
    assert inbound == [ON_TIME, LATE], f"the exchange's inbound holds {inbound}"
    for student in (ON_TIME, LATE):
        collected = hub.course / "submitted" / student / ASSIGNMENT / NOTEBOOK
        assert collected.is_file(), f"collect did not bring {student}'s notebook"
        assert marker(student) in collected.read_text(), f"the collected notebook of {student} is not theirs"
    assert not (hub.course / "submitted" / "student3").exists(), "student3 submitted nothing, yet was collected"


def test_graded_in_the_sandbox(run):
    by_student = {r["student_id"]: r for r in rows(run["grades"])}
    assert sorted(by_student) == [ON_TIME, LATE], f"grades.csv rows: {sorted(by_student)}"
    for student, row in by_student.items():
        assert row["status"] == "graded", f"{student}: {row['status']} ({row['reason']})"
        assert row["assignment"] == ASSIGNMENT
    on_time = by_student[ON_TIME]
    assert float(on_time["score"]) == float(on_time["max_score"]) > 0, f"the correct solution scored {on_time}"


def test_each_student_sees_only_their_own_feedback(run):
    hub = run["hub"]
    released = sorted((hub.exchange / COURSE_ID / "feedback").glob("*.html"))
    assert len(released) == 2, f"release_feedback put {len(released)} files in the exchange"
    for path in released:
        assert not any(s in path.name for s in STUDENTS), f"feedback in the exchange named after a student: {path}"
    for student, other in ((ON_TIME, LATE), (LATE, ON_TIME)):
        files = run["feedback"][student]
        assert len(files) == 1, f"{student} fetched {sorted(files)}"
        (path, text), = files.items()
        assert path.endswith(f"{ASSIGNMENT}/feedback/{path.split('/')[-2]}/{NOTEBOOK[:-6]}.html"), path
        assert marker(student) in text, f"{student}'s feedback is not about their notebook"
        assert marker(other) not in text, f"{student} received {other}'s feedback"
        assert "BEGIN HIDDEN TESTS" not in text, f"{student}'s feedback shows the hidden tests"


def test_late_submission_penalty_gradebook_and_totals(run):
    """The late submission carries nbgrader's penalty; the course gradebook and the totals agree with the CSV."""
    by_student = {r["student_id"]: r for r in rows(run["grades"])}
    for column in ("timestamp", "late_penalty"):
        assert column in by_student[ON_TIME], f"grades.csv has no {column} column: {list(by_student[ON_TIME])}"
    on_time, late = by_student[ON_TIME], by_student[LATE]
    assert float(on_time["late_penalty"]) == 0, f"{ON_TIME} submitted before the due date: {on_time}"
    penalty = float(late["late_penalty"])
    assert penalty > 0, f"{LATE} submitted after the due date without a penalty: {late}"

    from nbgrader.api import Gradebook
    with Gradebook(f"sqlite:///{run['hub'].course / 'gradebook.db'}") as gb:
        recorded = {s: gb.find_submission(ASSIGNMENT, s) for s in (ON_TIME, LATE)}
        assert recorded[ON_TIME].late_submission_penalty == 0
        assert recorded[LATE].late_submission_penalty == pytest.approx(penalty)
        auto_max, hand = float(on_time["max_score"]), float(on_time["hand_graded_points"])
        assert hand > 0, f"the exercise's written answers are graded by hand: {on_time}"
        assert recorded[ON_TIME].score == pytest.approx(auto_max), "written answers score 0 until graded by hand"
        assert recorded[ON_TIME].max_score == pytest.approx(auto_max + hand)

    totals = {r["student_id"]: r for r in rows(run["totals"])}
    assert {ON_TIME, LATE} <= set(totals), f"totals.csv rows: {sorted(totals)}"
    assert float(totals[ON_TIME]["total"]) == pytest.approx(auto_max), totals[ON_TIME]
    assert float(totals[LATE]["total"]) == pytest.approx(max(auto_max - penalty, 0)), totals[LATE]
    assert float(totals[ON_TIME]["max_total"]) == pytest.approx(auto_max + hand), totals[ON_TIME]
