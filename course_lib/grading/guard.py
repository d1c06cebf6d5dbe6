"""Keeps the autograded test cells honest: runs *inside the kernel* that executes a student's notebook.

Student cells and test cells share one Python process, so a student cell can redefine what the tests rely on
(``torch.allclose = lambda *a, **k: True``, ``torch.testing.assert_close``, ``numpy.allclose``,
``course_lib.grading.check_tensor``, a method of ``torch.Tensor`` or of the reference layers, a builtin, a
name bound by the read-only setup cell, an IPython input/AST transformer that rewrites the test cells...).
``course_lib.grading.autograde`` calls, through IPython *user expressions* (evaluated outside the cell machinery):

* :func:`install` once before the first cell: imports the modules the tests use and snapshots them, and makes an
  entry class under a random name with a random key; every later call goes through that class, found with an
  expression that looks up no name (``().__class__.__mro__[1].__subclasses__()``), so neither rebinding this
  module's functions nor a notebook's own ``__import__`` redirects it, and each answer carries a digest of the
  key, which a fake answer cannot compute without digging the key out of this module's closures;
* :func:`remember` after each read-only setup cell: the values of the names that cell bound;
* :func:`restore` before each test cell: puts every snapshotted attribute, function body, class member,
  ``sys.modules`` entry, IPython hook list and remembered name back, pops torch function/dispatch modes and
  global module hooks, resets trace functions and grad mode, and returns ``"ok <token> <what was restored>"``.
  It refuses (raises) while a thread started by the notebook is alive: such a thread could patch things
  again while a test runs.

Limits: code in the same process can always reach this module itself (``gc``, closures, ``ctypes``); the guard
removes the ways a notebook can fool the tests by *redefining* things. It is defence in depth: what protects the
grader, the answers and the other students is the sandbox around the kernel (:mod:`course_lib.grading.sandbox`).
"""
from __future__ import annotations

import builtins
import hashlib
import importlib
import sys
import sysconfig
import threading
import types
import warnings

GUARDED_MODULES = (
    "builtins", "math", "operator", "copy", "io", "contextlib", "warnings", "numpy", "numpy.testing",
    "torch", "torch.testing", "torch.nn", "torch.nn.functional", "torch.nn.init", "torch.nn.parameter",
    "torch.nn.modules.module", "torch.nn.modules.batchnorm", "torch.nn.modules.instancenorm",
    "torch.nn.modules.normalization", "torch.autograd", "torch.overrides", "torch.testing._comparison",
    "course_lib", "course_lib.grading", "course_lib.grading.checks", "course_lib.grading.layers",
    "course_lib.grading.from_scratch", "course_lib.norms", "course_lib.norms.base", "course_lib.norms.batchnorm",
    "course_lib.norms.instancenorm", "course_lib.norms.normalization", "course_lib.norms.running_batchnorm",
    "course_lib.stats", "course_lib.functional",
    "torch.utils._python_dispatch",  # the from-scratch gate's dispatch mode (course_lib.grading.from_scratch)
)
# classes whose members are snapshotted besides those defined in the guarded modules
_CLASS_PREFIXES = ("torch.nn.", "torch._tensor", "torch.testing", "course_lib.", "IPython.", "ipykernel.")
_SHELL_ATTRIBUTES = ("compile", "display_formatter", "displayhook", "display_pub", "showtraceback",
                     "_showtraceback", "run_cell", "run_cell_async", "run_ast_nodes", "run_code", "transform_cell",
                     "transform_ast", "ex", "ev", "user_expressions", "should_run_async")
_SHELL_LISTS = ("input_transformers_cleanup", "input_transformers_post", "ast_transformers")
_MISSING = object()


class _Snapshot:
    """What the tests rely on, as it was before the first notebook cell ran (see :func:`restore`)."""

    def __init__(self, shell):
        self.shell = shell
        self.modules = {}
        for name in GUARDED_MODULES:
            try:
                self.modules[name] = importlib.import_module(name)
            except ImportError:  # a module the tests cannot use either; nothing to protect
                continue
        self.module_attrs = {name: dict(vars(mod)) for name, mod in self.modules.items()}
        self.classes: dict[type, dict] = {}
        self.functions: dict[types.FunctionType, tuple] = {}
        for mod in self.modules.values():
            for value in list(vars(mod).values()):
                self._add_class(value)
                self._add_function(value)
        import torch
        for cls in (torch.Tensor, torch.nn.Parameter, torch.nn.Module, type(shell),
                    *type(shell).__mro__, *type(getattr(shell, "kernel", None)).__mro__):
            self._add_class(cls)
        self.shell_attrs = {name: shell.__dict__.get(name, _MISSING) for name in _SHELL_ATTRIBUTES}
        self.shell_lists = {name: list(getattr(shell, name)) for name in _SHELL_LISTS}
        self.events = {name: list(cbs) for name, cbs in shell.events.callbacks.items()}
        kernel = getattr(shell, "kernel", None)
        self.kernel = kernel
        self.kernel_handlers = dict(getattr(kernel, "shell_handlers", {}) or {})
        self.kernel_attrs = {name: kernel.__dict__.get(name, _MISSING) for name in ("do_execute", "execute_request")} \
            if kernel is not None else {}
        hooks = importlib.import_module("torch.nn.modules.module")
        self.global_hooks = {name: dict(value) for name, value in vars(hooks).items()
                             if name.startswith("_global_") and isinstance(value, dict)}
        self.default_dtype = torch.get_default_dtype()
        self.threads = set(threading.enumerate())
        self.names: dict[str, object] = {}
        self.warning_filters = list(warnings.filters)

    def _add_class(self, value) -> None:
        if isinstance(value, type) and value not in self.classes and \
                getattr(value, "__module__", "").startswith(_CLASS_PREFIXES) and value.__flags__ & (1 << 9):
            # 1 << 9 = Py_TPFLAGS_HEAPTYPE: only classes whose members can be reassigned
            self.classes[value] = dict(vars(value))
            for member in list(vars(value).values()):
                self._add_function(getattr(member, "__func__", member))

    def _add_function(self, value) -> None:
        if isinstance(value, types.FunctionType) and value not in self.functions:
            self.functions[value] = (value.__code__, value.__defaults__, value.__kwdefaults__)


_snapshot: _Snapshot | None = None
_entry: type | None = None
_dict_update, _sha256 = dict.update, hashlib.sha256


def install(token: str, entry_name: str | None = None, key: str | None = None) -> str:
    """Import the guarded modules and snapshot them; returns ``"ok <token>"``. With ``entry_name`` and ``key``,
    also make the entry class the grader calls from then on (see the module docstring)."""
    global _snapshot, _entry
    from IPython import get_ipython

    _snapshot = _Snapshot(get_ipython())
    if entry_name and key:
        own_globals = dict(globals())
        _entry = own_globals["_entry"] = _make_entry(entry_name, key, own_globals, dict(vars(builtins)))
    return f"ok {token}"


def _make_entry(name: str, key: str, own_globals: dict, saved_builtins: dict) -> type:
    """A class named ``name`` whose ``call(function, nonce)`` first puts back this module's globals and the
    builtins as they were at install, then runs ``function`` and prefixes the answer with sha256(key + nonce)."""
    functions = {"restore": restore, "remember": remember}
    module_dict, builtins_dict = globals(), vars(builtins)

    def call(function: str, nonce: str, argument=None):
        _dict_update(module_dict, own_globals)
        _dict_update(builtins_dict, saved_builtins)
        digest = _sha256((key + nonce).encode()).hexdigest()
        return f"{digest} {functions[function](argument)}"

    return type(name, (), {"call": staticmethod(call), "__module__": "builtins"})


def remember(names: list[str]) -> str:
    """Snapshot the current values of ``names`` in the user namespace (bound by a read-only setup cell)."""
    user_ns = _snapshot.shell.user_ns
    for name in names:
        if name in user_ns:
            _snapshot.names[name] = user_ns[name]
    _snapshot.warning_filters = list(warnings.filters)
    return "ok"


def _notebook_threads(snap: _Snapshot) -> list[str]:
    found = []
    for thread in threading.enumerate():
        if thread in snap.threads or not thread.is_alive():
            continue
        target = getattr(thread, "_target", None)
        origin = getattr(target, "__module__", None) or type(thread).__module__
        if origin in (None, "__main__") or getattr(getattr(target, "__code__", None), "co_filename", "").startswith(
                ("<ipython-input", "/tmp/ipykernel")):
            found.append(thread.name)
    return found


def restore(token: str) -> str:
    """Put back everything the tests rely on; returns ``"ok <token> <comma-separated restored names>"``."""
    snap = _snapshot
    restored: list[str] = []
    threads = _notebook_threads(snap)
    if threads:
        raise RuntimeError(f"threads started by the notebook are still running ({', '.join(threads)})")
    for name, module in snap.modules.items():
        if sys.modules.get(name) is not module:
            sys.modules[name] = module
            restored.append(f"sys.modules[{name!r}]")
        current = vars(module)
        for attr, value in snap.module_attrs[name].items():
            if current.get(attr, _MISSING) is not value:
                setattr(module, attr, value)
                restored.append(f"{name}.{attr}")
    for cls, members in snap.classes.items():
        current = dict(vars(cls))
        for attr, value in members.items():
            if current.get(attr, _MISSING) is not value:
                setattr(cls, attr, value)
                restored.append(f"{cls.__qualname__}.{attr}")
        for attr in current.keys() - members.keys():
            delattr(cls, attr)
            restored.append(f"{cls.__qualname__}.{attr} (added)")
    for fn, (code, defaults, kwdefaults) in snap.functions.items():
        if fn.__code__ is not code or fn.__defaults__ is not defaults or fn.__kwdefaults__ is not kwdefaults:
            fn.__code__, fn.__defaults__, fn.__kwdefaults__ = code, defaults, kwdefaults
            restored.append(f"{fn.__module__}.{fn.__qualname__} (body)")
    restored += _restore_runtime(snap)
    user_ns = snap.shell.user_ns
    for name, value in snap.names.items():
        if user_ns.get(name, _MISSING) is not value:
            user_ns[name] = value
            restored.append(name)
    return f"ok {token} " + ",".join(restored)


_LIBRARY_DIRS = tuple({sysconfig.get_paths()[key] for key in ("purelib", "platlib", "stdlib", "platstdlib")})


def _is_library_function(callback) -> bool:
    """A function installed with Python or a package (e.g. matplotlib's figure flush), not notebook code."""
    code = getattr(getattr(callback, "__func__", callback), "__code__", None)
    return isinstance(code, types.CodeType) and code.co_filename.startswith(_LIBRARY_DIRS)


def _restore_attrs(obj, saved: dict, label: str, restored: list[str]) -> None:
    """Put back the instance attributes ``saved`` of ``obj`` (``_MISSING``: it had none); note each in ``restored``."""
    for name, value in saved.items():
        if obj.__dict__.get(name, _MISSING) is not value:
            if value is _MISSING:
                del obj.__dict__[name]
            else:
                obj.__dict__[name] = value
            restored.append(f"{label}.{name}")


def _restore_runtime(snap: _Snapshot) -> list[str]:
    """Interpreter, torch and IPython state outside module and class attributes."""
    import torch

    restored = []
    shell = snap.shell
    _restore_attrs(shell, snap.shell_attrs, "IPython shell", restored)
    for name, items in snap.shell_lists.items():
        if getattr(shell, name) != items:
            getattr(shell, name)[:] = items
            restored.append(f"IPython shell.{name}")
    for event, callbacks in shell.events.callbacks.items():
        keep = [cb for cb in callbacks if cb in snap.events.get(event, []) or _is_library_function(cb)]
        if keep != callbacks:
            callbacks[:] = keep
            restored.append(f"IPython events[{event!r}]")
    kernel = snap.kernel
    if kernel is not None:
        handlers = getattr(kernel, "shell_handlers", None)
        if handlers is not None and handlers != snap.kernel_handlers:
            handlers.clear()
            handlers.update(snap.kernel_handlers)
            restored.append("kernel.shell_handlers")
        _restore_attrs(kernel, snap.kernel_attrs, "kernel", restored)
    for name, hooks in snap.global_hooks.items():
        current = getattr(sys.modules["torch.nn.modules.module"], name)
        if dict(current) != hooks:
            current.clear()
            current.update(hooks)
            restored.append(f"torch.nn.modules.module.{name}")
    while torch._C._len_torch_function_stack() > 0:
        torch._C._pop_torch_function_stack()
        restored.append("torch function mode")
    while torch._C._len_torch_dispatch_stack() > 0:
        torch._C._pop_torch_dispatch_stack()
        restored.append("torch dispatch mode")
    if sys.gettrace() is not None or sys.getprofile() is not None:
        sys.settrace(None)
        sys.setprofile(None)
        restored.append("sys.settrace/setprofile")
    threading.settrace(None)
    threading.setprofile(None)
    torch.set_grad_enabled(True)
    if torch.get_default_dtype() != snap.default_dtype:
        torch.set_default_dtype(snap.default_dtype)
    warnings.filters[:] = snap.warning_filters
    getattr(warnings, "_filters_mutated", lambda: None)()  # invalidate the "already warned" caches
    return restored
