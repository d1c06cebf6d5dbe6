"""A sandboxed Jupyter kernel for each graded notebook: bubblewrap (``bwrap``), no network, limits, nothing else.

Why this design. nbgrader runs a student's notebook, answers and tests, in one Jupyter kernel, and whatever that
kernel can reach, the student's code can reach: the masters with the answers, the gradebook with the hidden tests,
the CSV of grades, other submissions, the instructor's home (IPython start-up files, ``site-packages``). No check
*inside* the kernel can stop that, because the student's code runs in the same interpreter as the check. So the
grader (the parent process, which is trusted) starts every kernel inside a sandbox that the kernel cannot leave:

* **its own filesystem view** (a mount namespace, :func:`bwrap_command`): read-only ``/usr`` and the Python
  installation (the interpreter's prefix and the virtual environment, the latter at the neutral path
  ``/opt/venv``), a read-only *copy* of the ``course_lib`` package made once per grading run
  (:func:`copy_student_course_lib`: the same files students receive, bound at ``/opt/course``; the installed
  ``course_lib`` is an editable install whose ``__file__`` would point into the repository), a private, size-capped
  ``/tmp`` holding HOME, IPYTHONDIR and the working folder, and the folder of its connection files. Not the
  repository, not ``solutions/``, not the gradebook, the CSV, other submissions, ``/etc`` or HOME: they do not
  exist in there;
* **no network** (``--unshare-net``). The grader talks to the kernel over ZeroMQ's ``ipc`` transport: Unix sockets
  in a folder bound into the sandbox at the same path (a filesystem socket works across network namespaces);
  interrupts are ``interrupt_request`` messages, not signals, since the kernel is in another pid namespace;
* **its own process tree** (``--unshare-pid --die-with-parent``): when the kernel ends, or the grader kills it or
  dies, the sandbox's init process dies and the kernel takes every process it started with it -- a detached
  ``setsid`` daemon included;
* **an unprivileged uid** when the grader runs as root: the kernel runs as a uid of its own
  (:func:`kernel_uid`, distinct for concurrent kernels) with no capabilities and ``no_new_privs``, so it owns no
  file on the host and ``RLIMIT_NPROC`` counts its processes only. Run by an ordinary user, bwrap puts the kernel
  in a user namespace, where the same limit counts the namespace's processes;
* **limits** (``prlimit`` inside the sandbox, :class:`Limits`): processes (a fork bomb stops there), address space
  (a memory hog gets ``MemoryError``), file size, CPU seconds.

**Warm kernels.** Importing torch is 40 % of a kernel's CPU, so by default a grading worker starts this sandbox once,
as a *fork server* that imports torch, IPython and course_lib and then forks one kernel per notebook, each in new
user, mount, pid and IPC namespaces with a fresh ``/tmp`` and no capabilities (:mod:`course_lib.grading.forkserver`
says how, and what a kernel can still see); ``fork_server = False`` or ``--no-fork-server`` starts a sandbox per
kernel, as does a machine where the fork server cannot run.

The in-kernel guard (:mod:`course_lib.grading.guard`) stays, as defence in depth against a notebook redefining what
the tests use; a student who subverts their own interpreter can at worst fake their *own* test results, which the
sandbox confines to their own row.

Not stopped: kernel exploits (the sandbox is namespaces and rlimits, not a VM), what a kernel reads from ``/proc``
about the machine (CPU, memory), and CPU use of up to the limits. bubblewrap exists for Linux only; elsewhere
``make grade`` refuses to run unless told ``--no-sandbox``.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from jupyter_client.kernelspec import KernelSpec
from jupyter_client.manager import AsyncKernelManager
from traitlets import Bool, Dict, Unicode

__all__ = ["Limits", "SandboxUnavailable", "bwrap_path", "require_bwrap", "INSTALL_HINT", "copy_student_course_lib",
           "python_mounts", "kernel_uid", "bwrap_command", "SandboxedKernelManager", "KERNEL_ROOT"]

INSTALL_HINT = ("install bubblewrap (Debian/Ubuntu: sudo apt-get install bubblewrap; Fedora: sudo dnf install "
                "bubblewrap), or pass --no-sandbox to grade with the student's code running unconfined "
                "(only for a class you trust)")
KERNEL_ROOT = "/opt/course"  # where the copy of course_lib appears inside the sandbox
VENV_MOUNT = "/opt/venv"
HOME = "/tmp/home"  # on the sandbox's private tmpfs
_UID_BASE = 200_000_000  # kernel uid = base + pid of the grading worker: unique among live workers


class SandboxUnavailable(RuntimeError):
    """bubblewrap is missing or does not work here; the message says how to install it."""


@dataclass(frozen=True)
class Limits:
    """Resource limits of one kernel (its whole process tree for ``processes``)."""

    processes: int = 64  # threads count: ipykernel and torch use about 15
    memory_bytes: int = 4 << 30  # address space per process
    file_bytes: int = 64 << 20  # largest file it may write
    cpu_seconds: int = 600  # per process
    tmp_bytes: int = 256 << 20  # its private /tmp (HOME, working folder)


def bwrap_path() -> str | None:
    return shutil.which("bwrap")


def require_bwrap() -> str:
    """The path of ``bwrap``, after checking that it can start a sandbox here; raises :class:`SandboxUnavailable`."""
    path = bwrap_path()
    if path is None or not sys.platform.startswith("linux"):
        raise SandboxUnavailable(f"the grading sandbox needs bubblewrap (bwrap), not found on this "
                                 f"{sys.platform} machine: {INSTALL_HINT}")
    probe = subprocess.run([path, "--unshare-all", "--die-with-parent", "--ro-bind", "/usr", "/usr",
                            *_system_links(), "--", "/usr/bin/true"], capture_output=True, text=True)
    if probe.returncode != 0:
        raise SandboxUnavailable(f"bubblewrap is installed but cannot create a sandbox here "
                                 f"({probe.stderr.strip() or probe.returncode}); user namespaces may be disabled: "
                                 f"{INSTALL_HINT}")
    return path


def copy_student_course_lib(destination: Path, exclude: tuple[str, ...] = (), compiled: bool = True) -> Path:
    """Copy the ``course_lib`` package (no caches, no file in ``exclude``: paths inside the package such as
    ``"grading/autograde.py"``) to ``destination/course_lib``, readable by everyone, compiled unless told otherwise;
    return ``destination``. The sandbox's copy and, without the instructors' modules, the student bundle's
    (``course_lib.grading.student_dist``)."""
    import compileall

    import course_lib

    source = Path(course_lib.__file__).resolve().parent
    target = destination / "course_lib"
    caches = shutil.ignore_patterns("__pycache__", "*.pyc", ".*")

    def ignore(folder: str, names: list[str]) -> set[str]:
        inside = Path(folder).relative_to(source)
        return set(caches(folder, names)) | {name for name in names if (inside / name).as_posix() in exclude}

    shutil.copytree(source, target, ignore=ignore)
    if compiled:
        compileall.compile_dir(str(target), quiet=1)
    for path in [target, *target.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return destination


def _system_links() -> list[str]:
    """``/bin``, ``/lib``, ... as on the host: symlinks into ``/usr`` (merged /usr) or read-only binds."""
    args = []
    for name in ("/bin", "/sbin", "/lib", "/lib64", "/lib32"):
        if os.path.islink(name):
            args += ["--symlink", os.readlink(name), name]
        elif os.path.isdir(name):
            args += ["--ro-bind", name, name]
    return args


def python_mounts() -> tuple[list[tuple[str, str]], str]:
    """Read-only ``(host, sandbox)`` binds that make this interpreter work in the sandbox, and the interpreter's
    path in there. A virtual environment appears at ``/opt/venv`` (it may live inside the course repository); the
    installation it points to, and a user site-packages in use, at their own paths."""
    mounts, python = [], sys.executable
    base = os.path.realpath(sys.base_prefix)
    if not base.startswith("/usr/"):
        mounts.append((base, base))
    if sys.prefix != sys.base_prefix:
        mounts.append((os.path.realpath(sys.prefix), VENV_MOUNT))
        python = f"{VENV_MOUNT}/bin/{Path(sys.executable).name}"
    elif not os.path.realpath(sys.prefix).startswith("/usr/"):
        mounts.append((os.path.realpath(sys.prefix), os.path.realpath(sys.prefix)))
    import site

    user_site = site.getusersitepackages()
    if isinstance(user_site, str) and user_site in sys.path and os.path.isdir(user_site):
        mounts.append((user_site, user_site))
    return mounts, python


def kernel_uid() -> int | None:
    """A uid of the kernel's own when the grader is root (None otherwise: bwrap's user namespace maps it)."""
    return _UID_BASE + os.getpid() if os.geteuid() == 0 else None


def _parents(path: str) -> list[str]:
    parts = Path(path).parts[1:-1]
    return ["/" + "/".join(parts[:i + 1]) for i in range(len(parts))]


def bwrap_command(argv: list[str], *, lib_dir: str, comm_dir: str, limits: Limits, bwrap: str = "bwrap",
                  uid: int | None = None, env: dict[str, str] | None = None, nested_userns: bool = False) -> list[str]:
    """The command that runs ``argv`` (the kernel) in the sandbox described in the module docstring;
    ``nested_userns`` lets it create user namespaces (the fork server needs one per kernel)."""
    mounts, _ = python_mounts()
    cmd = [bwrap, "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
           "--die-with-parent", "--new-session", "--hostname", "grading"]
    if uid is None:  # an ordinary user: a user namespace, and none inside it but the fork server's
        cmd += ["--unshare-user"] + ([] if nested_userns else ["--disable-userns"])
    cmd += ["--ro-bind", "/usr", "/usr", *_system_links(), "--proc", "/proc", "--dev", "/dev"]
    made = {"/"}
    for host, inside in [*mounts, (lib_dir, KERNEL_ROOT)]:
        for parent in _parents(inside):
            if parent not in made and not parent.startswith("/usr"):
                cmd += ["--perms", "0755", "--dir", parent]
                made.add(parent)
        cmd += ["--ro-bind", host, inside]
        made.add(inside)
    cmd += ["--size", str(limits.tmp_bytes), "--perms", "1777", "--tmpfs", "/tmp",
            "--perms", "0777", "--dir", HOME, "--perms", "0777", "--dir", f"{HOME}/work"]  # the tmpfs is its own
    for parent in _parents(comm_dir):
        if parent != "/tmp":
            cmd += ["--perms", "0755", "--dir", parent]
    cmd += ["--bind", comm_dir, comm_dir, "--chdir", f"{HOME}/work", "--clearenv"]
    variables = {"HOME": HOME, "USER": "student", "PATH": f"{VENV_MOUNT}/bin:/usr/bin:/bin", "PYTHONPATH": KERNEL_ROOT,
                 "IPYTHONDIR": f"{HOME}/.ipython", "MPLCONFIGDIR": f"{HOME}/.matplotlib", "TMPDIR": "/tmp",
                 "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
                 "LANG": "C.UTF-8", **(env or {})}
    for name, value in variables.items():
        cmd += ["--setenv", name, value]
    cmd.append("--")
    if uid is not None:
        cmd += ["/usr/bin/setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--no-new-privs",
                "--inh-caps=-all", "--bounding-set=-all", "--"]
    cmd += ["/usr/bin/prlimit", f"--nproc={limits.processes}", f"--as={limits.memory_bytes}",
            f"--fsize={limits.file_bytes}", f"--cpu={limits.cpu_seconds}", "--core=0", "--"]
    return cmd + argv


class SandboxedKernelManager(AsyncKernelManager):
    """A kernel manager whose kernels run in the bubblewrap sandbox (used by ``GuardedExecute`` in ``make grade``).

    The connection file and ZeroMQ sockets live in a fresh folder (made by the grader, given to the kernel's uid).
    With ``fork_server`` (the default) the kernel is forked by this worker's fork server
    (:mod:`course_lib.grading.forkserver`: one sandbox that has imported torch, a fresh set of namespaces per
    kernel) and the folder is made in the fork server's shared folder; otherwise, or when the fork server cannot run
    here, the kernel command is :func:`bwrap_command` around ``python -s -m ipykernel_launcher`` and the folder is
    made under ``state_dir``.
    """

    lib_dir = Unicode(help="folder holding the copy of course_lib bound at /opt/course").tag(config=True)
    state_dir = Unicode(help="folder for the per-kernel connection folders (short path: Unix sockets)").tag(
        config=True)
    limits = Dict(help="overrides of Limits fields, e.g. {'memory_bytes': 2 << 30}").tag(config=True)
    bwrap = Unicode("bwrap").tag(config=True)
    fork_server = Bool(True, help="fork kernels from a warm sandbox (course_lib.grading.forkserver) when it can run "
                                  "here; False: a new sandbox per kernel").tag(config=True)

    def _sandbox_limits(self) -> Limits:
        return Limits(**self.limits)

    async def _async_pre_start_kernel(self, **kw):
        if not self.lib_dir:  # used outside make grade (plain `nbgrader autograde`): a copy for this manager
            self._own_lib = tempfile.mkdtemp(prefix="course-lib-")
            os.chmod(self._own_lib, 0o755)  # readable by the kernel's uid (mkdtemp makes it 0700)
            self.lib_dir = str(copy_student_course_lib(Path(self._own_lib)))
        uid = kernel_uid()
        own_copy = getattr(self, "_own_lib", None)  # a copy per kernel: nothing for a fork server to keep warm
        self._server = self._fork_server(uid) if self.fork_server and not own_copy else None
        comm = tempfile.mkdtemp(prefix="k", dir=self._server.comm_root if self._server else self.state_dir or None)
        if uid is not None:
            os.chown(comm, uid, uid)
        self._comm_dir, self._uid = comm, uid
        self.transport, self.ip = "ipc", f"{comm}/s"
        self.connection_file = f"{comm}/connection.json"
        spec = self.kernel_spec
        self._kernel_spec = KernelSpec(argv=spec.argv, display_name=spec.display_name, language=spec.language,
                                       interrupt_mode="message", env={}, metadata=spec.metadata)
        kw.pop("cwd", None)
        kw["stdout"] = subprocess.DEVNULL  # ipykernel's "how to connect" banner, not for the grader's terminal
        kernel_cmd, kw = await super()._async_pre_start_kernel(**kw)
        if uid is not None and os.path.exists(self.connection_file):
            os.chown(self.connection_file, uid, uid)
        return kernel_cmd, kw

    def _fork_server(self, uid: int | None):
        from course_lib.grading import forkserver

        limits = self._sandbox_limits()
        _, python = python_mounts()

        def command_for(comm_root: str) -> list[str]:
            argv = [python, "-s", "-m", "course_lib.grading.forkserver", str(limits.tmp_bytes), comm_root]
            return bwrap_command(argv, lib_dir=self.lib_dir, comm_dir=comm_root, limits=limits, bwrap=self.bwrap,
                                 uid=uid, nested_userns=True)

        key = (self.lib_dir, limits, uid, self.bwrap)
        base = os.path.dirname(self.lib_dir)  # the grading run's folder, removed at its end, when short enough
        return forkserver.fork_server(key, command_for, base if len(base) <= 64 else None)  # sockets: <= 107 bytes

    async def _async_launch_kernel(self, kernel_cmd, **kw):
        """Ask the fork server for the kernel; without one, start ``kernel_cmd`` (a sandbox of its own)."""
        from course_lib.grading.forkserver import ForkServerUnavailable

        if self._server is not None:
            try:
                self.provisioner.process = self._server.start_kernel(self.connection_file)
            except ForkServerUnavailable as error:
                self.log.warning("no forked kernel (%s): a sandbox of its own instead", error)
                self._server = None
            else:
                self.provisioner.pid = self.provisioner.pgid = None
                self._reconcile_connection_info(self.provisioner.connection_info)
                return
        await super()._async_launch_kernel(kernel_cmd, **kw)

    def format_kernel_cmd(self, extra_arguments=None):
        _, python = python_mounts()
        argv = [python, "-s", "-m", "ipykernel_launcher", "-f", self.connection_file]
        return bwrap_command(argv, lib_dir=self.lib_dir, comm_dir=self._comm_dir, limits=self._sandbox_limits(),
                             bwrap=self.bwrap, uid=self._uid)

    def seal_connection_folder(self) -> None:
        """Once the kernel has made its sockets: give the connection folder back to root, read-only for the kernel,
        so that it cannot fill the host's disk through the one folder it shares with it (as root only: in a user
        namespace the kernel is the folder's owner)."""
        if getattr(self, "_uid", None) is not None and os.geteuid() == 0:
            os.chown(self._comm_dir, 0, 0)
            os.chmod(self._comm_dir, 0o755)

    async def _async_cleanup_resources(self, restart: bool = False) -> None:
        await super()._async_cleanup_resources(restart=restart)
        shutil.rmtree(getattr(self, "_comm_dir", ""), ignore_errors=True)
        if getattr(self, "_server", None) is not None:  # nothing a kernel left there reaches the next one
            self._server.clear_comm_root()
        if getattr(self, "_own_lib", None) and not restart:
            shutil.rmtree(self._own_lib, ignore_errors=True)
            self._own_lib, self.lib_dir = None, ""

    pre_start_kernel = _async_pre_start_kernel
    _launch_kernel = _async_launch_kernel
    cleanup_resources = _async_cleanup_resources
