"""The grading sandbox against hostile submissions, and the grader's durability (resume, dead workers).

Each attack of tests/grading_fixtures/hostile.py is graded in one class by the instructors' command; every one
must score no more than the stub it started from, leak nothing into its feedback and leave no process or file
behind, while the correct submission keeps full marks. Needs bubblewrap: skipped without it, except where
``SANDBOX_TEST_REQUIRED=1`` (CI), where its absence fails.
"""
from __future__ import annotations

import csv
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import pytest

from course_lib.grading import autograde, sandbox
from grading_fixtures import hostile as H
from grading_fixtures import submissions as S
from test_grading import hidden_test_lines, sandbox_flag, visible_text

REPO = Path(__file__).resolve().parents[1]
A = "Q3"


def require_sandbox() -> None:
    """Skip without a working bubblewrap, unless SANDBOX_TEST_REQUIRED=1 makes that a failure."""
    try:
        sandbox.require_bwrap()
    except sandbox.SandboxUnavailable as error:
        if os.environ.get("SANDBOX_TEST_REQUIRED") == "1":
            pytest.fail(f"SANDBOX_TEST_REQUIRED=1 but the sandbox cannot run: {error}")
        pytest.skip(str(error))


def autograde_command(class_dir: Path, grades: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "course_lib.grading.autograde", str(class_dir), str(grades), "--timeout", "60",
            "--feedback", str(grades.parent / "feedback"), *extra]


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def grade(tmp_path: Path, submissions: dict, *flags: str) -> dict[str, dict]:
    """Write ``{student_id: notebook}`` (assignment A) under ``tmp_path`` and grade them with the instructors'
    command and ``flags``; the CSV rows by student (feedback in ``tmp_path/out/feedback``)."""
    class_dir, grades = tmp_path / "submitted", tmp_path / "out" / "grades.csv"
    for student, notebook in submissions.items():
        S.write_submission(class_dir, student, A, notebook)
    process = subprocess.run(autograde_command(class_dir, grades, *flags), cwd=REPO, capture_output=True, text=True,
                             timeout=600)
    assert process.returncode == 0, process.stdout + process.stderr
    return {r["student_id"]: r for r in read_csv(grades)}


def survivors(*markers: str) -> list[str]:
    """Processes carrying the hostile marker or one of ``markers`` (the grader's TMPDIR is in its kernels'
    command lines). Not "any sandbox uid": other grading runs on the machine are not this test's survivors."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(m in cmdline for m in (H.MARKER, *markers)):
            found.append(f"{entry.name}: {cmdline[:120]}")
    return found


def poison_paths() -> list[Path]:
    return [Path.home() / ".ipython" / "profile_default" / "startup" / f"00-{H.MARKER}.py",
            Path(sysconfig.get_paths()["purelib"]) / f"{H.MARKER}.pth"]


@pytest.mark.slow
def test_hostile_submissions_score_no_more_than_the_stub_and_leave_nothing(tmp_path):
    require_sandbox()
    grades = tmp_path / "out" / "grades.csv"
    class_dir = tmp_path / "submitted"
    for student, notebook in H.class_of_hostile_submissions(A, str(grades)).items():
        S.write_submission(class_dir, student, A, notebook)
    scratch = Path(tempfile.mkdtemp(prefix="gbx"))  # the grader's TMPDIR: must be empty afterwards
    try:
        process = subprocess.run(autograde_command(class_dir, grades, "--workers", "2"), cwd=REPO,
                                 capture_output=True, text=True, timeout=900,
                                 env={**os.environ, "TMPDIR": str(scratch)})
        time.sleep(2)  # time for a surviving daemon to write once more
        left_in_tmp = sorted(p.name for p in scratch.iterdir())
        left_running = survivors(str(scratch))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    assert process.returncode == 0, f"{process.stdout}\n{process.stderr}"
    rows = {r["student_id"]: r for r in read_csv(grades)}
    feedback = {student: visible_text(next((tmp_path / "out" / "feedback" / student / A).glob("*.html")))
                for student in rows}
    problems = []
    honest = ("13.0", "all tests passed; written answers (4 points) to grade by hand in formgrader")
    if (rows["correct"]["score"], rows["correct"]["reason"]) != honest:
        problems.append(f"honest submission lost marks: {rows['correct']}")
    stub = float(rows["stub"]["score"])
    for student, row in rows.items():
        if student not in ("correct", "stub") and float(row["score"]) > stub:
            problems.append(f"{student} scored {row['score']} > stub {stub}: {row['reason']}")
    if "written by a daemon" in grades.read_text() or "hacker" in rows:
        problems.append("a detached process wrote to the CSV")
    if left_running:
        problems.append(f"processes left behind: {left_running}")
    if left_in_tmp:
        problems.append(f"files left in the grader's TMPDIR: {left_in_tmp}")
    if [p for p in poison_paths() if p.exists()]:
        problems.append(f"poison files on the host: {[p for p in poison_paths() if p.exists()]}")
    if "masters found: []" not in feedback["read_masters"]:
        problems.append("the kernel found files with answers: " + feedback["read_masters"][:2000])
    for attack in ("neuter_guard", "fake_import", "fake_user_expressions"):
        if "restored" not in rows[attack]["reason"] and "not run" not in rows[attack]["reason"]:
            problems.append(f"{attack}: the guard neither restored nor refused: {rows[attack]['reason']}")
    hog = re.findall(r"memory hog got (\d+) MiB", feedback["memory_hog"])
    if not hog or int(hog[0]) >= 4096:
        problems.append(f"the memory limit did not apply (4 GiB): {hog or rows['memory_hog']}")
    forks = re.findall(r"fork stopped after (\d+) children", feedback["fork_flood"])
    if not forks and rows["fork_flood"]["status"] == "graded":
        problems.append(f"the fork flood was not stopped: {rows['fork_flood']}")
    host = feedback["host_files"]
    listing = re.findall(r"root folder: \[(.*?)\]", host)
    allowed = {"bin", "dev", "lib", "lib32", "lib64", "opt", "proc", "root", "sbin", "tmp", "usr"}
    if not listing or {name.strip(" '") for name in listing[0].split(",")} - allowed:
        problems.append(f"the sandbox shows more of the host than it binds: {listing}")
    if os.geteuid() == 0 and "connection folder -> PermissionError" not in host:
        problems.append("the kernel can write to the host through its connection folder")
    for path in ("/etc/passwd", "/etc/shadow", "/etc/hostname", "/root/.bashrc"):
        if f"{path} -> FileNotFoundError" not in host:
            problems.append(f"{path} is visible in the sandbox: " + host[host.find(path + " ->"):][:200])
    dumped = feedback["hidden_tests_dump"]
    if rows["hidden_tests_dump"]["status"] != "graded" or "feedback could not" in rows["hidden_tests_dump"]["reason"]:
        problems.append(f"a student cell with the hidden-test marker broke grading: {rows['hidden_tests_dump']}")
    leaked = [line for line in hidden_test_lines(A) if line in dumped]
    if leaked:
        problems.append(f"hidden tests in the feedback: {leaked[:3]}")
    if "[hidden test]" not in dumped:
        problems.append("the dump printed no hidden-test line: the leak check above proves nothing")
    assert not problems, "\n".join(problems) + f"\n\nCSV:\n{grades.read_text()}"


@pytest.mark.slow
def test_nothing_passes_from_one_kernel_to_the_next_of_the_same_worker(tmp_path):
    """One worker grades a planter, then a seeker: kernels forked from the worker's fork server share nothing
    writable, cannot read the fork server, and killing every process it can name does not stop the next kernel."""
    require_sandbox()
    planter = S.with_cell_after_setup(S.stub(A), H.PLANT)
    planter.cells.insert(planter.cells.index(next(c for c in planter.cells if H.MARKER in c.source)) + 1,
                         S.nbformat.v4.new_code_cell(H.SEEK))  # in its own kernel the seeker must find them
    planter.cells.append(S.nbformat.v4.new_code_cell(H.KILL_VISIBLE))
    rows = grade(tmp_path, {"a_planter": planter, "b_seeker": S.with_cell_after_setup(S.stub(A), H.SEEK),
                            "c_correct": S.correct(A)}, "--workers", "1")
    feedback = {s: visible_text(next((tmp_path / "out" / "feedback" / s / A).glob("*.html"))) for s in rows}
    planted = re.findall(r"planted in: \[(.*?)\] shared memory: (\w+)", feedback["a_planter"])
    assert planted and "/tmp" in planted[0][0] and planted[0][1] == "True", feedback["a_planter"][:3000]
    own = re.findall(r"left by an earlier kernel: \[(.*?)\] shared memory: (\w+)", feedback["a_planter"])
    assert own and H.MARKER in own[0][0] and own[0][1] == "True", "the seeker must see what its own kernel planted"
    assert "opened of other processes: []" in feedback["a_planter"], feedback["a_planter"][:3000]
    assert "left by an earlier kernel: [] shared memory: False" in feedback["b_seeker"], feedback["b_seeker"][:3000]
    assert rows["b_seeker"]["status"] == "graded" and rows["c_correct"]["score"] == "13.0", rows
    pids = [re.findall(r"kernel pid in the fork server's namespace: (\d+)", feedback[s]) for s in ("a_planter",
                                                                                                  "b_seeker")]
    assert pids[0] and pids[1] and int(pids[1][-1]) > int(pids[0][0]), \
        f"the seeker ran in a new fork server, not the planter's (it was killed?): {pids}"


FORK_SERVER_SEEN = """\
import pathlib
def _command_line(entry):
    try:
        return (entry / "cmdline").read_bytes()
    except OSError:
        return b""
_lines = [_command_line(p) for p in pathlib.Path("/proc").iterdir()]
print("fork server seen:", any(b"course_lib.grading.forkserver" in line for line in _lines))
"""


@pytest.mark.slow
def test_a_sandbox_per_kernel_without_the_fork_server(tmp_path):
    """``--no-fork-server``: every kernel in a new sandbox (the fallback where the fork server cannot run); without
    it the kernel was forked (the fork server's command line is in its /proc)."""
    require_sandbox()
    stub = S.with_cell_after_setup(S.stub(A), FORK_SERVER_SEEN)
    for flags, seen in ((["--no-fork-server"], "False"), ([], "True")):
        rows = grade(tmp_path / str(seen), {"a_correct": S.correct(A), "b_stub": stub}, "--workers", "1", *flags)
        assert rows["a_correct"]["score"] == "13.0" and float(rows["b_stub"]["score"]) < 13, rows
        feedback = visible_text(next((tmp_path / str(seen) / "out" / "feedback" / "b_stub" / A).glob("*.html")))
        assert f"fork server seen: {seen}" in feedback, (flags, feedback[:3000])


def test_plain_nbgrader_autograde_gets_a_sandbox_per_kernel_and_removes_its_copy():
    """Without make grade's shared copy of course_lib (plain ``nbgrader autograde``, formgrader's button) each kernel
    manager copies course_lib for itself, so it starts a sandbox of its own rather than a fork server."""
    require_sandbox()
    import nbformat
    from jupyter_core.utils import run_sync  # works under an event loop already running (the whole suite has one)
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(FORK_SERVER_SEEN + "import course_lib")])
    manager = sandbox.SandboxedKernelManager(kernel_name="python3")
    NotebookClient(nb, km=manager, timeout=120).execute()
    copy = manager.lib_dir
    run_sync(manager.shutdown_kernel)(now=True)  # the client leaves a manager it did not make running
    assert "fork server seen: False" in nb.cells[0].outputs[0]["text"], nb.cells[0].outputs
    assert copy and not os.path.exists(copy) and manager.lib_dir == "", "its copy of course_lib is removed"


@pytest.mark.parametrize("answer, said", [
    ('{"error": "no user namespaces here"}', "no user namespaces here"),
    ("", "the fork server ended (exit code 0)"),
    ("Fontconfig error", "the fork server said b'Fontconfig error\\n', not JSON"),
])
def test_a_fork_server_that_cannot_start_is_said_once_and_left_out(tmp_path, capsys, answer, said):
    from course_lib.grading import forkserver

    command = [sys.executable, "-c", f"print({answer!r})" if answer else "pass"]
    tries = []

    def command_for(comm_root: str) -> list[str]:
        tries.append(comm_root)
        return command

    key = ("a test's fork server", str(tmp_path), answer)
    try:
        assert forkserver.fork_server(key, command_for, str(tmp_path)) is None
        assert forkserver.fork_server(key, command_for, str(tmp_path)) is None
    finally:
        forkserver.stop_fork_servers()
    assert len(tries) == 1, "a fork server that failed is not started again for every kernel"
    assert f"no fork server ({said}); a new sandbox per kernel instead" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [], "its shared folder is removed"


def test_a_kernel_that_cannot_be_set_up_is_said_and_the_fork_server_lives_on(tmp_path):
    """A kernel whose namespaces cannot be set up (here: a shared folder that does not exist in the sandbox) is an
    error for that kernel (the kernel manager then starts a sandbox of its own), not a stuck or dead fork server."""
    require_sandbox()
    from course_lib.grading import forkserver

    lib = sandbox.copy_student_course_lib(tmp_path / "lib")
    _, python = sandbox.python_mounts()

    def command_for(root: str) -> list[str]:
        argv = [python, "-s", "-m", "course_lib.grading.forkserver", str(64 << 20), "/no-such-folder"]
        return sandbox.bwrap_command(argv, lib_dir=str(lib), comm_dir=root, limits=sandbox.Limits(),
                                     uid=sandbox.kernel_uid(), nested_userns=True)

    root = tempfile.mkdtemp(prefix="kernels-")
    os.chmod(root, 0o755)
    server = forkserver.ForkServer(command_for, root)
    try:
        for _ in range(2):
            with pytest.raises(forkserver.ForkServerUnavailable, match="FileNotFoundError.*no-such-folder"):
                server.start_kernel(f"{root}/connection.json")
        assert server.alive() and server.request({"poll": 123}) == {"exit": None}
    finally:
        server.stop()
    assert not os.path.exists(root)


def test_grading_refuses_without_bubblewrap_unless_told(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sandbox, "bwrap_path", lambda: None)
    (tmp_path / "submitted").mkdir()
    code = autograde.main([str(tmp_path / "submitted"), str(tmp_path / "grades.csv"), "--course-dir", str(REPO)])
    message = capsys.readouterr().err
    assert code == 2 and not (tmp_path / "grades.csv").exists(), message
    assert "bubblewrap" in message and "apt-get install bubblewrap" in message and "--no-sandbox" in message
    code = autograde.main([str(tmp_path / "submitted"), str(tmp_path / "grades.csv"), "--course-dir", str(REPO),
                           "--no-sandbox"])
    assert code == 0 and read_csv(tmp_path / "grades.csv") == []


def test_sandbox_command_binds_no_repository_and_limits_the_kernel(tmp_path):
    command = sandbox.bwrap_command(["python"], lib_dir=str(tmp_path / "lib"), comm_dir=str(tmp_path / "c"),
                                    limits=sandbox.Limits(), uid=sandbox._UID_BASE + 1)
    sources = [command[i + 1] for i, arg in enumerate(command) if arg in ("--bind", "--ro-bind")]
    assert not [s for s in sources if s.startswith(str(REPO)) and not s.startswith(str(REPO / ".venv"))], sources
    assert "--unshare-net" in command and "--unshare-pid" in command and "--die-with-parent" in command
    assert {"--nproc=64", "--core=0"} <= set(command) and "--reuid=200000001" in command
    assert [command[i + 1] for i, arg in enumerate(command) if arg == "--bind"] == [str(tmp_path / "c")], \
        "only the connection folder is writable from the host"


def partial_then_resume(class_dir: Path, grades: Path) -> tuple[list[dict], list[dict], str]:
    """Start grading, kill it (with its process group) once the CSV has a row, then resume."""
    process = subprocess.Popen(autograde_command(class_dir, grades, "--workers", "1", *sandbox_flag()), cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and process.poll() is None:
        if grades.is_file() and len(read_csv(grades)) >= 1:
            break
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    before = read_csv(grades)
    resumed = subprocess.run(autograde_command(class_dir, grades, "--workers", "1", "--resume", *sandbox_flag()),
                             cwd=REPO, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    return before, read_csv(grades), resumed.stdout


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_csv(tmp_path):
    class_dir, grades = tmp_path / "submitted", tmp_path / "out" / "grades.csv"
    expected = {"a_correct": 13.0, "b_blank": 0.0, "c_invalid": 0.0, "d_correct": 13.0}
    for student, content in (("a_correct", S.correct(A)), ("b_blank", S.blank(A)), ("c_invalid", b"not json"),
                             ("d_correct", S.correct(A))):
        S.write_submission(class_dir, student, A, content)
    before, after, output = partial_then_resume(class_dir, grades)
    assert 1 <= len(before) < len(expected), f"the kill came too late or too early to test resuming: {before}"
    assert f"resuming: {len(before)} submission(s) already in" in output, output
    keys = [r["student_id"] for r in after]
    assert keys == sorted(expected), f"one row per submission, sorted, expected: {keys}"
    by_student = {r["student_id"]: r for r in after}
    for row in before:
        assert by_student[row["student_id"]] == row, "a row graded before the kill is kept as it was"
    assert {s: float(r["score"]) for s, r in by_student.items()} == expected, after


KILL_WORKER = "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)"


@pytest.mark.slow
def test_a_dead_worker_costs_only_its_own_submission(tmp_path):
    """Unconfined (--no-sandbox), a kernel can kill the grading worker that started it: that submission is retried
    once in a fresh worker and then gets an error row; the others are graded normally."""
    rows = grade(tmp_path, {"a_killer": S.with_cell_after_setup(S.blank(A), KILL_WORKER), "b_correct": S.correct(A),
                            "c_blank": S.blank(A)}, "--workers", "2", "--no-sandbox")
    assert rows["a_killer"]["status"] == "error" and "died twice" in rows["a_killer"]["reason"], rows["a_killer"]
    assert (rows["b_correct"]["score"], rows["c_blank"]["status"]) == ("13.0", "blank"), rows
