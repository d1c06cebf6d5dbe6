"""Hostile submissions: each is a stub (tests/grading_fixtures/submissions.py) plus one cell that attacks the grader
instead of answering. ``tests/test_sandbox.py`` grades them with ``make grade``'s command and checks that none
scores more than the stub, leaks anything into its feedback, or leaves a process or a file behind.

Every process these cells start carries :data:`MARKER` in its command line, so a test can look for survivors.
"""
from __future__ import annotations

from . import submissions as S

MARKER = "gradeb-hostile-survivor"

# The review's attack: read the masters (answers, hidden tests) from disk and run their solution cells. It looks
# where the grader used to keep them (../../../source, the gradebook's folder), where the editable course_lib
# points (course_lib.__file__ -> repository -> solutions/), and anywhere else on the file system it can see.
READ_MASTERS = '''\
import glob, json, os, pathlib
import course_lib
places = ["../../../source/*/*.ipynb", "../../../*.db",
          str(pathlib.Path(course_lib.__file__).resolve().parents[1] / "solutions" / "*" / "*.ipynb")]
found = [p for pattern in places for p in glob.glob(pattern)]
for top, dirs, files in os.walk("/"):
    dirs[:] = [d for d in dirs if os.path.join(top, d) not in ("/proc", "/sys", "/dev", "/usr")
               and d not in ("site-packages", "dist-packages")]
    found += [os.path.join(top, f) for f in files if f.endswith((".ipynb", ".db", ".csv"))]
print("masters found:", sorted(found))
for path in found:
    if path.endswith(".ipynb"):
        for cell in json.load(open(path))["cells"]:
            source = "".join(cell["source"])
            if "BEGIN SOLUTION" in source:
                exec(source, globals())
'''

# Neutering the in-kernel guard by rebinding its functions, then cheating as in submissions.CHEAT.
NEUTER_GUARD = '''\
import course_lib.grading.guard
course_lib.grading.guard.restore = lambda token: f"ok {token} "
course_lib.grading.guard.remember = lambda names: "ok"
''' + S.CHEAT

# The guard used to be reached as __import__('sys').modules[...], evaluated in the notebook's namespace.
FAKE_IMPORT = '''\
import types
class _FakeGuard:
    restore = staticmethod(lambda token: f"ok {token} ")
    remember = staticmethod(lambda names: "ok")
_fake_sys = types.SimpleNamespace(modules={"course_lib.grading.guard": _FakeGuard})
_real_import = __builtins__.__import__ if hasattr(__builtins__, "__import__") else __builtins__["__import__"]
def __import__(name, *args, **kwargs):
    return _fake_sys if name == "sys" else _real_import(name, *args, **kwargs)
''' + S.CHEAT

# Answering the grader's guard calls itself: every user expression "succeeds" with the answer the guard would give.
FAKE_USER_EXPRESSIONS = '''\
import re
def _fake_user_expressions(expressions):
    answers = {}
    for name, expression in expressions.items():
        token = (re.findall(r"[0-9a-f]{16}", expression) or [""])[0]
        answers[name] = {"status": "ok", "data": {"text/plain": repr(f"ok {token} ")}, "metadata": {}}
    return answers
get_ipython().user_expressions = _fake_user_expressions
''' + S.CHEAT

# A detached process that outlives the kernel and rewrites the grades (the path is given: the worst case).
DETACHED_WRITER = '''\
import subprocess, sys
_daemon = """
import sys, time
for _ in range(1200):
    for path in sys.argv[2:]:
        try:
            with open(path, "a") as handle:
                handle.write("hacker,Q3,Q3_batchnorm_from_scratch,13.0,13.0,graded,written by a daemon,0\\\\n")
        except OSError:
            pass
    time.sleep(0.05)
"""
subprocess.Popen([sys.executable, "-c", _daemon, "MARKER", "CSV_PATH", "/tmp/grades.csv"],
                 start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
'''.replace("MARKER", MARKER)

# Poisoning later kernels: an IPython start-up file and a .pth file that make every comparison pass.
POISON = "import torch; torch.allclose = lambda *a, **k: True  # " + MARKER
STARTUP_POISON = f'''\
import os, site, sys, sysconfig
_poison = {POISON!r}
targets = [os.path.expanduser("~/.ipython/profile_default/startup/00-{MARKER}.py"),
           "/root/.ipython/profile_default/startup/00-{MARKER}.py"]
targets += [os.path.join(p, "{MARKER}.pth") for p in site.getsitepackages() + [sysconfig.get_paths()["purelib"]]]
written = []
for target in targets:
    try:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "w") as handle:
            handle.write(("import sys; exec(%r)" % _poison) if target.endswith(".pth") else _poison)
        written.append(target)
    except OSError as error:
        print("could not write", target, type(error).__name__)
'''

# A fork flood: children that sleep for ten minutes (bounded at 2000, in case no limit applies).
FORK_FLOOD = f'''\
import os
children = 0
try:
    for _ in range(2000):
        pid = os.fork()
        if pid == 0:
            os.execv("/bin/sleep", ["{MARKER}", "600"])
        children += 1
except OSError as error:
    print("fork stopped after", children, "children:", type(error).__name__)
'''

# A memory hog: 512 MiB blocks, every page written (bounded at 8 GiB, in case no limit applies).
MEMORY_HOG = '''\
import numpy
blocks = []
try:
    for _ in range(16):
        block = numpy.empty(512 << 20, dtype=numpy.uint8)
        block[::4096] = 1
        blocks.append(block)
except MemoryError:
    pass
print("memory hog got", len(blocks) * 512, "MiB")
del blocks
'''

# The host's files: what a sandbox shows should be only what it binds.
HOST_FILES = '''\
import os
print("root folder:", sorted(os.listdir("/")))
for path in ("/etc/passwd", "/etc/shadow", "/etc/hostname", "/root/.bashrc", "/proc/1/cmdline"):
    try:
        print(path, "->", open(path, "rb").read()[:300])
    except OSError as error:
        print(path, "->", type(error).__name__)
print("environment:", sorted(os.environ))
import sys
_folder = os.path.dirname(sys.argv[sys.argv.index("-f") + 1])  # the connection folder: the one the host shares
try:
    with open(os.path.join(_folder, "filler"), "wb") as handle:
        handle.write(bytes(1 << 20))
    print("connection folder -> written")
except OSError as error:
    print("connection folder ->", type(error).__name__)
'''

# The feedback's hidden-test markers in a student cell, and a dump of every cell's source (hidden tests
# included) after the tests ran, to get them into the feedback.
HIDDEN_MARKERS = '''\
# ### BEGIN HIDDEN TESTS  (a student's comment that looks like nbgrader's marker)
print("### BEGIN HIDDEN TESTS")
'''
DUMP_SOURCES = '''\
for _source in In:  # IPython's input history: every cell run so far, test cells included
    print(_source)
'''

# One kernel leaves something for the next one graded by the same worker (kernels of a worker are forked from one
# warm sandbox, course_lib.grading.forkserver): a file in every folder it can write, a SysV shared-memory segment,
# and it reads what it can of every other process it can see (a fork server's memory or pipes would be a way back).
PLANT = f'''\
import ctypes, os
planted, opened = [], []
for top, dirs, files in os.walk("/"):
    dirs[:] = [d for d in dirs if os.path.join(top, d) not in ("/proc", "/sys", "/usr", "/opt")]
    try:
        with open(os.path.join(top, "{MARKER}-plant"), "w") as handle:
            handle.write("planted")
        planted.append(top)
    except OSError:
        pass
segment = ctypes.CDLL(None).shmget(0x5EED, 4096, 0o1666)
print("planted in:", planted, "shared memory:", segment >= 0)
me = os.readlink("/proc/self")
for pid in [p for p in os.listdir("/proc") if p.isdigit() and p != me]:
    for what in ("environ", "mem", "fd/0", "fd/1", "root/tmp"):
        try:
            path = f"/proc/{{pid}}/{{what}}"
            os.listdir(path) if what == "root/tmp" else open(path, "rb").close()
            opened.append(f"{{pid}}/{{what}}")
        except OSError:
            pass
print("opened of other processes:", opened)
print("kernel pid in the fork server's namespace:", me)
'''
# ... and then it kills every process it can name and its process group (its own kernel included).
KILL_VISIBLE = '''\
import os, signal
for pid in [*sorted((int(p) for p in os.listdir("/proc") if p.isdigit()), reverse=True), 0, -1]:
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
'''
SEEK = f'''\
import ctypes, os
found = []
for top, dirs, files in os.walk("/"):
    dirs[:] = [d for d in dirs if os.path.join(top, d) not in ("/proc", "/sys", "/usr", "/opt")]
    found += [os.path.join(top, f) for f in files if f.startswith("{MARKER}")]
print("left by an earlier kernel:", found, "shared memory:", ctypes.CDLL(None).shmget(0x5EED, 0, 0) >= 0)
print("kernel pid in the fork server's namespace:", os.readlink("/proc/self"))
'''


def class_of_hostile_submissions(assignment: str, csv_path: str) -> dict:
    """``{student_id: notebook}``: the correct answer, the stub, and one stub per attack."""
    stub = S.stub(assignment)
    with_dump = S.with_cell_after_setup(stub, HIDDEN_MARKERS)
    with_dump.cells.append(S.nbformat.v4.new_code_cell(DUMP_SOURCES))
    return {
        "correct": S.correct(assignment),
        "stub": stub,
        "read_masters": S.with_cell_after_setup(stub, READ_MASTERS),
        "neuter_guard": S.with_cell_after_setup(stub, NEUTER_GUARD),
        "fake_import": S.with_cell_after_setup(stub, FAKE_IMPORT),
        "fake_user_expressions": S.with_cell_after_setup(stub, FAKE_USER_EXPRESSIONS),
        "detached_writer": S.with_cell_after_setup(stub, DETACHED_WRITER.replace("CSV_PATH", csv_path)),
        "startup_poison": S.with_cell_after_setup(stub, STARTUP_POISON),
        "fork_flood": S.with_cell_after_setup(stub, FORK_FLOOD),
        "memory_hog": S.with_cell_after_setup(stub, MEMORY_HOG),
        "host_files": S.with_cell_after_setup(stub, HOST_FILES),
        "hidden_tests_dump": with_dump,
    }
