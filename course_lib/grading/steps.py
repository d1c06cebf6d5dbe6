"""What happens to *one* submitted notebook on its way through nbgrader (used by ``course_lib.grading.autograde``).

* :func:`repair_submission` -- before nbgrader sees it: parse (a file that is not a notebook raises
  :class:`InvalidSubmission`), rebuild a valid nbformat-4 notebook, drop nbgrader metadata nbgrader would
  crash on (unknown or renamed ``grade_id``), put back deleted read-only cells (setup and tests) next to
  their neighbours, and tell whether any answer was changed from the released exercise.
  nbgrader's own ``OverwriteCells`` then restores *edited* read-only cells (by checksum, hidden tests included).
* :class:`GuardedExecute` -- nbgrader's ``Execute`` step with the kernel in the bubblewrap sandbox
  (``sandbox``, :mod:`course_lib.grading.sandbox`), :mod:`course_lib.grading.guard` around each test cell (defence in
  depth), a total time budget, test cells that may not display a value, and an :class:`ExecutionReport`
  saying why a notebook could not be graded (kernel died, cell ignored the interrupt).
* :class:`HideHiddenTests` -- feedback step: hidden test code, and its text in any output, never reach the student.
"""
from __future__ import annotations

import ast
import hashlib
import json
import secrets
import time
from dataclasses import dataclass, field

import nbformat
from jinja2 import BytecodeCache
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbconvert.exporters import HTMLExporter
from nbformat import NotebookNode
from nbgrader import utils
from nbgrader.preprocessors import ClearHiddenTests, Execute
from traitlets import Bool, Integer

__all__ = ["InvalidSubmission", "RepairedSubmission", "repair_submission", "bound_names", "ExecutionReport",
           "GuardedExecute", "HideHiddenTests", "FeedbackExporter", "is_test_cell"]

_CELL_TYPES = {"code": nbformat.v4.new_code_cell, "markdown": nbformat.v4.new_markdown_cell,
               "raw": nbformat.v4.new_raw_cell}


class InvalidSubmission(ValueError):
    """The submitted file cannot be read as a notebook; the message is the reason given to the student."""


@dataclass
class RepairedSubmission:
    notebook: NotebookNode
    notes: list[str] = field(default_factory=list)
    unchanged: bool = False  # every answer cell is exactly as released


def _nbgrader_id(cell) -> str | None:
    meta = cell.get("metadata", {}).get("nbgrader")
    return meta.get("grade_id") if isinstance(meta, dict) else None


def _source_text(source) -> str:
    if isinstance(source, list):
        return "".join(str(s) for s in source)
    return source if isinstance(source, str) else ""


def _parse(raw: bytes) -> dict:
    try:
        data = json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError as error:
        raise InvalidSubmission(f"the file is not UTF-8 text ({error.reason} at byte {error.start})") from None
    except json.JSONDecodeError as error:
        raise InvalidSubmission(f"the file is not valid JSON (line {error.lineno}, column {error.colno}: "
                                f"{error.msg}); was it saved from Jupyter?") from None
    if not isinstance(data, dict) or not isinstance(data.get("cells", data.get("worksheets")), list):
        raise InvalidSubmission("the file is JSON but not a Jupyter notebook (no list of cells)")
    if data.get("nbformat", 4) < 4:
        try:
            data = nbformat.convert(nbformat.from_dict(data), 4)
        except Exception as error:  # noqa: BLE001 - any failure means "cannot be read"
            raise InvalidSubmission(f"the notebook uses format {data.get('nbformat')} and could not be "
                                    f"converted ({error})") from None
    return data


def _rebuild_cells(data: dict, release_meta: dict[str, dict], notes: list[str]) -> list[NotebookNode]:
    """Fresh nbformat-4 cells; nbgrader metadata comes from the release (a student cannot re-mark a cell)."""
    cells = []
    for raw_cell in data["cells"]:
        if not isinstance(raw_cell, dict) or raw_cell.get("cell_type") not in _CELL_TYPES:
            notes.append("dropped a cell that is not a code, markdown or raw cell")
            continue
        cell = _CELL_TYPES[raw_cell["cell_type"]](_source_text(raw_cell.get("source", "")))
        metadata = raw_cell.get("metadata") if isinstance(raw_cell.get("metadata"), dict) else {}
        nbgrader_meta = metadata.get("nbgrader")
        if isinstance(nbgrader_meta, dict):
            grade_id = nbgrader_meta.get("grade_id")
            if grade_id in release_meta:
                cell.metadata["nbgrader"] = nbformat.from_dict(json.loads(json.dumps(release_meta[grade_id])))
            elif any(nbgrader_meta.get(k) for k in ("grade", "solution", "locked", "task")):
                notes.append(f"ignored nbgrader metadata with unknown grade_id {grade_id!r}")
        if cell.cell_type == "markdown" and isinstance(raw_cell.get("attachments"), dict):
            cell["attachments"] = raw_cell["attachments"]
        cells.append(cell)
    return cells


def _restore_missing_readonly(cells: list, release: NotebookNode, notes: list[str]) -> list:
    """Insert each read-only release cell (setup, tests) that is missing after its nearest present predecessor."""
    present = {_nbgrader_id(c) for c in cells} - {None}
    previous_id, restored_ids = None, []
    for release_cell in release.cells:
        grade_id = _nbgrader_id(release_cell)
        if grade_id is None:
            continue
        if grade_id not in present and utils.is_locked(release_cell):
            restored = nbformat.from_dict(json.loads(json.dumps(release_cell)))
            if restored.cell_type == "code":
                restored.outputs, restored.execution_count = [], None
            restored["id"] = f"restored-{secrets.token_hex(4)}"
            ids = [_nbgrader_id(c) for c in cells]
            at = ids.index(previous_id) + 1 if previous_id in ids else 0
            cells.insert(at, restored)
            present.add(grade_id)
            restored_ids.append(grade_id)
        if grade_id in present:
            previous_id = grade_id
    if restored_ids:
        notes.append(f"restored deleted read-only cells: {', '.join(restored_ids)}")
    return cells


def repair_submission(raw: bytes, release: NotebookNode) -> RepairedSubmission:
    """A gradable copy of the submitted bytes, given the released student version of the notebook."""
    data = _parse(raw)
    notes: list[str] = []
    release_meta = {_nbgrader_id(c): c.metadata["nbgrader"] for c in release.cells if _nbgrader_id(c)}
    cells = _rebuild_cells(data, release_meta, notes)
    seen: set[str] = set()
    for cell in cells:  # nbgrader keeps the last of duplicated ids; report them
        grade_id = _nbgrader_id(cell)
        if grade_id is not None and grade_id in seen:
            notes.append(f"cell {grade_id} appears more than once (the last copy is graded)")
        seen.add(grade_id)
    cells = _restore_missing_readonly(cells, release, notes)
    notebook = nbformat.v4.new_notebook(cells=cells, metadata=json.loads(json.dumps(release.metadata)))
    answers = {_nbgrader_id(c): c.source.strip() for c in cells if utils.is_solution(c)}
    unchanged = all(answers.get(_nbgrader_id(c), c.source.strip()) == c.source.strip()
                    for c in release.cells if utils.is_solution(c))
    return RepairedSubmission(notebook, notes, unchanged)


def bound_names(source: str) -> list[str]:
    """Names a cell binds at top level (imports, assignments, defs): what the guard must keep for the tests."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    names: list[str] = []
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names += [(alias.asname or alias.name).split(".")[0] for alias in node.names if alias.name != "*"]
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.append(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                names += [n.id for n in ast.walk(target) if isinstance(n, ast.Name)]
    return names


def is_test_cell(cell) -> bool:
    return cell.cell_type == "code" and utils.is_grade(cell) and not utils.is_solution(cell)


@dataclass
class ExecutionReport:
    """Why a notebook could not be fully executed (``failure``), and what the guard restored."""

    failure: str | None = None
    status: str | None = None
    restored: list[str] = field(default_factory=list)
    refused_cells: list[str] = field(default_factory=list)
    interrupted_cells: list[str] = field(default_factory=list)


def _error_output(ename: str, evalue: str) -> NotebookNode:
    return nbformat.v4.new_output("error", ename=ename, evalue=evalue, traceback=[f"{ename}: {evalue}"])


class GuardedExecute(Execute):
    """nbgrader's ``Execute`` with the grading guard before each test cell (see the module docstring).

    ``GuardedExecute.last_report`` is the :class:`ExecutionReport` of the notebook executed last in this
    process (the pipeline grades one notebook at a time per worker process).
    """

    notebook_timeout = Integer(600, help="Total seconds for the whole notebook; later cells are not run.").tag(
        config=True)
    guard_timeout = Integer(60, help="Seconds for one call of the grading guard (the first imports torch).").tag(
        config=True)
    sandbox = Bool(False, help="Run the kernel in the bubblewrap sandbox (course_lib.grading.sandbox).").tag(
        config=True)
    last_report: ExecutionReport = ExecutionReport()

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.sandbox:  # nbgrader's Execute passes its kernel manager class as an argument, not as config
            from course_lib.grading.sandbox import SandboxedKernelManager

            self.kernel_manager_class = SandboxedKernelManager

    def preprocess(self, nb, resources=None, km=None):
        self.report = GuardedExecute.last_report = ExecutionReport()
        self._token = secrets.token_hex(8)
        self._entry_name, self._key = f"_{secrets.token_hex(8)}", secrets.token_hex(16)
        self._guard_installed = False
        self._deadline = time.monotonic() + self.notebook_timeout
        return super().preprocess(nb, resources, km)

    def _call_guard(self, expression: str) -> str | None:
        """Evaluate ``expression`` in the kernel as a user expression; its string value, or None on failure."""
        msg_id = self.kc.execute("", silent=True, store_history=False, user_expressions={"guard": expression})
        cell_timeout, self.timeout = self.timeout, self.guard_timeout
        try:
            reply = self.wait_for_reply(msg_id)
        except DeadKernelError:
            self._fail("kernel_died", "the kernel died between two cells (os._exit, a crash or out of memory)")
        finally:
            self.timeout = cell_timeout
        if reply is None:
            return None
        value = reply["content"].get("user_expressions", {}).get("guard", {})
        if value.get("status") != "ok":
            self.log.warning("grading guard failed: %s: %s", value.get("ename"), value.get("evalue"))
            return None
        try:
            return ast.literal_eval(value["data"]["text/plain"])
        except (KeyError, ValueError, SyntaxError):
            return None

    def _cell_label(self, cell, index: int) -> str:
        """``grade_id`` of a course cell; for a student's cell its position and first line."""
        if _nbgrader_id(cell):
            return _nbgrader_id(cell)
        first = cell.source.strip().splitlines()[0]
        return f"cell {index + 1} ({first[:40]!r})"

    def _guard(self, function: str, argument) -> str | None:
        """Call ``course_lib.grading.guard.<function>(argument)`` in the kernel. The first call (install, before
        any student cell) imports the module; later ones go through the entry class it made, found without a
        name lookup, and must answer with sha256(key + nonce) (see the guard's docstring)."""
        if not self._guard_installed:
            return self._call_guard(f"__import__('course_lib.grading.guard', fromlist=['install']).install("
                                    f"{argument!r}, {self._entry_name!r}, {self._key!r})")
        nonce = secrets.token_hex(8)
        answer = self._call_guard(f"[k for k in ().__class__.__mro__[1].__subclasses__() if k.__name__ == "
                                  f"{self._entry_name!r}][0].call({function!r}, {nonce!r}, {argument!r})")
        digest = hashlib.sha256((self._key + nonce).encode()).hexdigest()
        if answer is None or not answer.startswith(digest + " "):
            return None
        return answer[len(digest) + 1:]

    def _before_test_cell(self, cell, label: str) -> bool:
        """Restore what the tests rely on; False (and an error output in the cell) when that is impossible."""
        answer = self._guard("restore", self._token)
        if answer is None or not answer.startswith(f"ok {self._token} "):
            self.report.refused_cells.append(label)
            cell.outputs = [_error_output("GradingGuardError", "the notebook changed the grading machinery in a "
                                          "way that could not be undone; this test is not run")]
            return False
        self.report.restored += [name for name in answer.split(" ", 2)[2].split(",") if name]
        return True

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type != "code" or not cell.source.strip():
            return cell, resources
        label = self._cell_label(cell, index)
        if time.monotonic() > self._deadline:
            self._fail("timeout", f"the notebook ran longer than {self.notebook_timeout} s in total; "
                                  f"stopped before {label}")
        if not self._guard_installed:
            seal = getattr(self.km, "seal_connection_folder", None)
            if seal is not None:  # the kernel is up and has made its sockets (course_lib.grading.sandbox)
                seal()
            if self._guard("install", self._token) != f"ok {self._token}":
                self._fail("error", "the grading guard could not be installed in the kernel")
            self._guard_installed = True
        test = is_test_cell(cell)
        if test and not self._before_test_cell(cell, label):
            return cell, resources
        try:
            cell, resources = super().preprocess_cell(cell, resources, index)
        except DeadKernelError:
            self._fail("kernel_died", f"the kernel died while running {label} (os._exit, a crash or out of memory)")
        except CellTimeoutError:
            self._fail("timeout", f"{label} did not finish within {self.timeout} s and ignored the interrupt; "
                                  "the kernel was killed")
        if any(o.output_type == "error" and o.get("ename") == "CellTimeoutError" for o in cell.outputs):
            self.report.interrupted_cells.append(label)
        if test:  # nbgrader would take a displayed value as the score
            cell.outputs = [_error_output("TestCellDisplayedValue", "a test cell displayed a value; test cells "
                                          "only assert") if o.output_type == "execute_result" else o
                            for o in cell.outputs]
        if utils.is_locked(cell) and not utils.is_grade(cell):  # read-only setup cell
            names = bound_names(cell.source)
            if names and self._guard("remember", names) != "ok":
                self._fail("error", f"the grading guard could not record the names bound by {label}")
        return cell, resources

    def _fail(self, status: str, reason: str) -> None:
        self.report.status, self.report.failure = status, reason
        raise RuntimeError(reason)


class HideHiddenTests(ClearHiddenTests):
    """Feedback step: the hidden tests never reach the student, neither as code nor through an output.

    * Only *test cells* (read-only, restored from the gradebook) are searched for the markers: a student cell that
      contains "BEGIN HIDDEN TESTS" is the student's own text (nbgrader raised on its unmatched marker, and that
      student's feedback was lost).
    * A test cell that had hidden tests keeps only ``ename: evalue`` of its error, no traceback and no printed
      output: code the tests call is the student's, and it can print its caller's source.
    * Every line of hidden-test text is cut from every output of the notebook (a later cell could print what a
      test cell's call saw). Text re-encoded by the student's code (reversed, base64) is not recognised: keep the
      hidden tests' *values* out of reach by design (the kernel never sees the gradebook; see README).
    """

    def preprocess(self, nb, resources):
        secret: set[str] = set()
        for cell in nb.cells:
            if is_test_cell(cell) and self.begin_test_delimeter in cell.source:
                secret |= {line.strip() for line in _hidden_lines(cell.source, self.begin_test_delimeter,
                                                                 self.end_test_delimeter) if len(line.strip()) >= 8}
                self._remove_hidden_test_region(cell)
                errors = [o for o in cell.get("outputs", []) if o.output_type == "error"]
                cell.outputs = [_error_output(o.ename, o.evalue) for o in errors[:1]]
        for cell in nb.cells:
            for output in cell.get("outputs", []):
                _scrub_output(output, secret)
        nb.metadata.pop("celltoolbar", None)
        return nb, resources


class _CompiledTemplates(BytecodeCache):
    """Jinja's compiled templates kept in memory for the life of the grading process (keyed by template name and
    source checksum, so an edited template is compiled again)."""

    def __init__(self):
        self._code: dict[str, bytes] = {}

    def load_bytecode(self, bucket):
        if bucket.key in self._code:
            bucket.bytecode_from_string(self._code[bucket.key])

    def dump_bytecode(self, bucket):
        self._code[bucket.key] = bucket.bytecode_to_string()


class FeedbackExporter(HTMLExporter):
    """nbconvert's HTML exporter for the feedback pages, compiling its templates once per grading process.

    nbgrader builds a new exporter for every notebook; compiling the feedback templates again was about 0.27 s of
    each submission's ~3.6 s (measured with cProfile on Q6). Same templates, same configuration, same HTML."""

    _templates = _CompiledTemplates()

    def _create_environment(self):
        environment = super()._create_environment()
        environment.bytecode_cache = self._templates
        return environment


def _hidden_lines(source: str, begin: str, end: str) -> list[str]:
    lines, inside = [], False
    for line in source.splitlines():
        if begin in line:
            inside = True
        elif end in line:
            inside = False
        elif inside:
            lines.append(line)
    return lines


def _scrub(text: str, secret: set[str]) -> str:
    for line in secret:
        text = text.replace(line, "[hidden test]")
    return text


def _scrub_output(output, secret: set[str]) -> None:
    """Replace each hidden-test line in the text of ``output`` (stream, error, any text-like display data)."""
    if not secret:
        return
    if "text" in output:
        output.text = _scrub(_source_text(output.text), secret)
    if output.get("output_type") == "error":
        output.evalue = _scrub(str(output.get("evalue", "")), secret)
        output.traceback = [_scrub(str(line), secret) for line in output.get("traceback", [])]
    for mime, value in dict(output.get("data", {})).items():
        if isinstance(value, (str, list)) and not mime.startswith("image/"):
            output.data[mime] = _scrub(_source_text(value), secret)
