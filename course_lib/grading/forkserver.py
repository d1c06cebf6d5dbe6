"""Warm sandboxed kernels: a fork server in the sandbox imports torch once; every notebook gets a fresh fork.

Why. A grading kernel spends about 40 % of its CPU importing torch, IPython and course_lib before the student's
first cell runs; with a new bubblewrap sandbox per notebook (:mod:`course_lib.grading.sandbox`) that import is paid
for every notebook of the class. Here each grading worker starts one sandbox (the *fork server*) that imports them
and then only forks; each notebook's kernel is a fresh fork that never shares anything writable with the one before:

* **the fork server runs no student code.** It is the same sandbox as a per-notebook kernel's (same read-only
  binds, no network, the kernel's uid, the limits); it imports :data:`PRELOAD`, then waits for one-line JSON
  requests from its worker on its stdin (``start`` a kernel for a connection file, ``poll``, ``kill``). The only
  thing it receives is a connection-file path; a kernel never talks to it;
* **each kernel gets new namespaces** (:func:`_enter_kernel_namespaces`): the fork unshares a user, mount, pid and
  IPC namespace, then forks again, so the kernel is the *init* of its own pid namespace -- every process it starts
  (a detached daemon included) dies when it ends -- and cannot name the fork server's pid to signal it (as an
  init, it also ignores the signals it has no handler for, such as a SIGTERM it sends itself); it mounts a
  new size-capped ``/tmp`` (HOME, IPYTHONDIR, working folder: IPython start-up files written by one submission are
  gone for the next) and a new ``/dev/shm``, and its own SysV IPC; the rest of the sandbox (``/`` and ``/dev``,
  whose folders bwrap made for the fork server and, as an ordinary user, lets it write) becomes read-only; then it
  drops every capability (the mounts cannot be undone to look under them) and closes every file descriptor but
  stderr (the fork server's request pipe is out of reach);
* **nothing to signal or read.** The kernel is in a session and process group of its own, and the fork server's
  pid does not exist in its pid namespace, so no ``kill``, ``killpg`` or ``kill(-1)`` reaches it. ``/proc`` still
  shows the fork server's and the intermediate's pids and command lines (nothing secret); their memory, environment
  and file descriptors are refused: both are made non-dumpable, which is what refuses them to a process of the same
  uid under Linux's classic ptrace rule (on the course machine they are refused even without it, so the test there,
  ``tests/test_sandbox.py``'s planter and seeker, checks the refusal, not which rule gives it);
* **the shared folder is emptied**: the folder of connection folders is bound into the fork server once; the worker
  removes everything in it after each kernel, so a file left there does not reach the next kernel.

If the fork server cannot start here (user namespaces disabled inside the sandbox, an old kernel), the worker says
so once on stderr and falls back to a new sandbox per kernel (:class:`course_lib.grading.sandbox.
SandboxedKernelManager` with ``fork_server = False`` does that always).
"""
from __future__ import annotations

import contextlib
import ctypes
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time

__all__ = ["PRELOAD", "ForkServer", "ForkedKernel", "ForkServerUnavailable", "fork_server", "stop_fork_servers"]

PRELOAD = ("torch", "numpy", "matplotlib.pyplot", "ipykernel.kernelapp", "course_lib", "course_lib.grading")
START_SECONDS = 120  # the fork server's imports (torch) on a loaded machine
REQUEST_SECONDS = 30

_CLONE_NEWNS, _CLONE_NEWUSER, _CLONE_NEWPID, _CLONE_NEWIPC = 0x00020000, 0x10000000, 0x20000000, 0x08000000
_PR_SET_PDEATHSIG, _PR_SET_DUMPABLE, _PR_CAPBSET_DROP = 1, 4, 24
_MS_RDONLY, _MS_REMOUNT, _MS_BIND, _MS_REC, _MS_PRIVATE, _MS_RELATIME = 1, 32, 0x1000, 0x4000, 0x40000, 1 << 21


class ForkServerUnavailable(RuntimeError):
    """The fork server could not start or stopped answering; the message says why."""


# ---------------------------------------------------------------- inside the sandbox: the fork server and its forks

def _libc():
    return ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        number = ctypes.get_errno()
        raise OSError(number, f"{what}: {os.strerror(number)}")


def _mount_flags(path: str) -> int:
    """The flags of the mount at ``path`` that a remount in a user namespace must keep (nosuid, nodev, noexec,
    atime): statvfs's ``ST_*`` bits are ``MS_*``'s, but for relatime."""
    flags = os.statvfs(path).f_flag
    kept = flags & (os.ST_NOSUID | os.ST_NODEV | os.ST_NOEXEC | os.ST_NOATIME | os.ST_NODIRATIME)
    return kept | (_MS_RELATIME if flags & os.ST_RELATIME else 0)


def _enter_kernel_namespaces(libc, tmp_bytes: int, comm_root: str) -> int:
    """In the fork of the fork server: new user, mount, pid and IPC namespaces, then fork the kernel. Returns 0 in
    the kernel (pid 1 of its namespace, with its own /tmp and /dev/shm, ``comm_root`` bound again at its path,
    no capabilities), the kernel's pid in the intermediate process."""
    uid, gid = os.getuid(), os.getgid()
    _check(libc.unshare(_CLONE_NEWUSER | _CLONE_NEWNS | _CLONE_NEWPID | _CLONE_NEWIPC), "unshare")
    libc.prctl(_PR_SET_DUMPABLE, 1, 0, 0, 0)  # its own /proc/self files, to write the uid map
    for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
        with open(f"/proc/self/{name}", "w") as handle:
            handle.write(text)
    libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)
    kernel = os.fork()
    if kernel:
        return kernel
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    os.setsid()  # its own process group: ipykernel interrupts with killpg, which must not reach the fork server
    _check(libc.mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None), "mount --make-rprivate /")
    shared = os.open(comm_root, os.O_PATH | os.O_DIRECTORY)  # it may lie under /tmp: kept open across the new /tmp
    _check(libc.mount(b"tmpfs", b"/tmp", b"tmpfs", 0, f"size={tmp_bytes},mode=1777".encode()), "mount /tmp")
    os.makedirs(comm_root, exist_ok=True)
    _check(libc.mount(f"/proc/self/fd/{shared}".encode(), comm_root.encode(), None, _MS_BIND, None), "bind")
    os.close(shared)
    if os.path.isdir("/dev/shm"):
        _check(libc.mount(b"tmpfs", b"/dev/shm", b"tmpfs", 0, b"size=64m,mode=1777"), "mount /dev/shm")
    os.makedirs(os.path.join(os.environ["HOME"], "work"))
    for path in ("/", "/dev"):  # the sandbox's own folders (mount points made by bwrap) are the fork server's
        _check(libc.mount(None, path.encode(), None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | _mount_flags(path), None),
               f"mount -o remount,bind,ro {path}")
    for capability in range(64):
        libc.prctl(_PR_CAPBSET_DROP, capability, 0, 0, 0)

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]

    _check(libc.capset(ctypes.byref(Header(0x20080522, 0)), (Data * 2)()), "capset")  # no capability at all
    libc.prctl(_PR_SET_DUMPABLE, 1, 0, 0, 0)
    return 0


def _run_kernel(connection_file: str) -> None:
    """In the kernel: standard streams to /dev/null (stderr stays: the worker's log), every other descriptor
    closed, fresh random state, then ipykernel as ``python -m ipykernel_launcher -f CONNECTION_FILE`` would run."""
    import random

    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.closerange(3, os.sysconf("SC_OPEN_MAX"))
    os.chdir(os.path.join(os.environ["HOME"], "work"))
    random.seed()
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()
    sys.argv = ["ipykernel_launcher", "-f", connection_file]
    from ipykernel import kernelapp

    kernelapp.launch_new_instance()


def _start(libc, connection_file: str, tmp_bytes: int, comm_root: str) -> dict:
    """Fork an intermediate process that makes the kernel; returns ``{"kernel": pid, "init": pid}`` (pids in the
    fork server's namespace) or ``{"error": why}``."""
    read_end, write_end = os.pipe()
    intermediate = os.fork()
    if intermediate == 0:
        code = 1
        try:
            os.close(read_end)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            os.closerange(3, write_end)
            os.closerange(write_end + 1, os.sysconf("SC_OPEN_MAX"))
            os.dup2(os.open(os.devnull, os.O_RDWR), 0)
            os.dup2(0, 1)
            kernel = _enter_kernel_namespaces(libc, tmp_bytes, comm_root)
            if kernel == 0:  # set up: the fork server's read ends when this and the intermediate close the pipe
                os.close(write_end)
                write_end = -1
                _run_kernel(connection_file)
                code = 0
            else:
                os.write(write_end, (json.dumps({"init": kernel}) + "\n").encode())
                os.close(write_end)
                code = os.waitstatus_to_exitcode(os.waitpid(kernel, 0)[1])
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else 0
        except BaseException as error:  # noqa: BLE001 - said to the fork server (before the kernel ran), then exit
            if write_end >= 0:
                with contextlib.suppress(OSError):
                    os.write(write_end, (json.dumps({"error": f"{type(error).__name__}: {error}"}) + "\n").encode())
        os._exit(code if code >= 0 else 128 - code)
    os.close(write_end)
    chunks = []
    while chunk := os.read(read_end, 4096):
        chunks.append(chunk)
    os.close(read_end)
    answer = {"kernel": intermediate}
    for line in b"".join(chunks).decode().splitlines():  # the intermediate's {"init": pid}, an {"error": ...} from
        answer.update(json.loads(line))                  # either process (one line each: atomic pipe writes)
    if "error" in answer or "init" not in answer:
        for pid in (answer.get("init"), intermediate):
            if pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        answer.setdefault("error", "the kernel process ended before starting")
        answer.pop("init", None)
    return answer


def serve(tmp_bytes: int, comm_root: str) -> None:
    """The fork server's loop (``python -m course_lib.grading.forkserver TMP_BYTES COMM_ROOT`` in the sandbox)."""
    started = time.monotonic()
    requests, replies = os.fdopen(os.dup(0), "r"), os.dup(1)
    os.dup2(os.open(os.devnull, os.O_RDWR), 0)
    os.dup2(2, 1)  # whatever an import prints stays out of the replies
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")  # as ipykernel sets it
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)
    libc = _libc()
    libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)
    threads = len(os.listdir("/proc/self/task"))
    exited: dict[int, int] = {}

    def reply(message: dict) -> None:
        os.write(replies, (json.dumps(message) + "\n").encode())

    def reap() -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            exited[pid] = os.waitstatus_to_exitcode(status)

    if threads != 1:  # forking a process with threads copies locks held by them: refuse
        reply({"error": f"the fork server has {threads} threads after its imports, not 1"})
        return
    reply({"ready": round(time.monotonic() - started, 2)})
    for line in requests:
        request = json.loads(line)
        reap()
        if "start" in request:
            reply(_start(libc, request["start"], tmp_bytes, comm_root))
        elif "poll" in request:
            reply({"exit": exited.get(request["poll"])})
        elif "kill" in request:
            for pid in request["kill"]:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            reply({"killed": request["kill"]})


# ---------------------------------------------------------------- in the grading worker: talking to the fork server

class ForkedKernel:
    """What jupyter_client's provisioner keeps of a kernel process (``poll``, ``wait``, ``send_signal``, ``kill``,
    ``terminate``), for a kernel forked by the fork server. ``pid`` is None: its pid means nothing on the host."""

    pid = None
    stdin = stdout = stderr = None

    def __init__(self, server: ForkServer, kernel: int, init: int):
        self._server, self._pids, self.returncode = server, [init, kernel], None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                self.returncode = self._server.request({"poll": self._pids[1]})["exit"]
            except ForkServerUnavailable:  # the fork server is gone, and its kernels with it
                self.returncode = -signal.SIGKILL
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired("forked kernel", timeout)
            time.sleep(0.05)
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if signum not in (signal.SIGKILL, signal.SIGTERM):  # interrupts are messages (interrupt_mode)
            raise ValueError(f"a forked kernel takes SIGKILL or SIGTERM, not signal {signum}")
        if self.poll() is None:
            self._server.request({"kill": self._pids})

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)


class ForkServer:
    """One fork server (a sandbox, see the module docstring) for the kernels of one grading worker."""

    def __init__(self, command_for, comm_root: str):
        """``command_for(comm_root)`` is the command that starts the fork server in the sandbox
        (:func:`course_lib.grading.sandbox.bwrap_command` with this worker's settings, ``comm_root`` bound in);
        ``comm_root`` is the folder in which the kernels' connection folders are made."""
        self.comm_root = comm_root
        self._process = subprocess.Popen(command_for(comm_root), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        try:
            ready = self._read(START_SECONDS)
            if "ready" not in ready:
                raise ForkServerUnavailable(ready.get("error", f"unexpected answer {ready}"))
        except ForkServerUnavailable:
            self.stop()
            raise

    def _read(self, seconds: float) -> dict:
        if not select.select([self._process.stdout], [], [], seconds)[0]:
            self.stop()
            raise ForkServerUnavailable(f"the fork server did not answer within {seconds:g} s")
        line = self._process.stdout.readline()
        if not line:
            code = self._process.wait()
            raise ForkServerUnavailable(f"the fork server ended (exit code {code})")
        try:
            return json.loads(line)
        except ValueError:
            raise ForkServerUnavailable(f"the fork server said {line[:200]!r}, not JSON") from None

    def request(self, message: dict) -> dict:
        if self._process.poll() is not None:
            raise ForkServerUnavailable(f"the fork server ended (exit code {self._process.returncode})")
        try:
            self._process.stdin.write((json.dumps(message) + "\n").encode())
            self._process.stdin.flush()
        except OSError as error:
            raise ForkServerUnavailable(f"the fork server stopped reading: {error}") from error
        return self._read(REQUEST_SECONDS)

    def start_kernel(self, connection_file: str) -> ForkedKernel:
        answer = self.request({"start": connection_file})
        if "init" not in answer:
            raise ForkServerUnavailable(f"the fork server could not start a kernel: {answer.get('error', answer)}")
        return ForkedKernel(self, answer["kernel"], answer["init"])

    def clear_comm_root(self) -> None:
        """Remove everything in the shared folder (after a kernel has ended)."""
        for entry in os.scandir(self.comm_root):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                os.unlink(entry.path)

    def alive(self) -> bool:
        return self._process.poll() is None

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait()
        for stream in (self._process.stdin, self._process.stdout):
            stream.close()
        shutil.rmtree(self.comm_root, ignore_errors=True)


_servers: dict[tuple, ForkServer | None] = {}  # None: it could not start here (said once)


def fork_server(key: tuple, command_for, base_dir: str | None) -> ForkServer | None:
    """This worker's fork server for ``key`` (the sandbox's settings), started on first use and again if it died;
    None when it cannot run here (said once on stderr; the caller then starts a sandbox per kernel)."""
    if key in _servers and _servers[key] is None:
        return None
    server = _servers.get(key)
    if server is not None and server.alive():
        return server
    if server is not None:
        server.stop()
    comm_root = tempfile.mkdtemp(prefix="kernels-", dir=base_dir)
    os.chmod(comm_root, 0o755)
    try:
        server = ForkServer(command_for, comm_root)
    except (ForkServerUnavailable, OSError) as error:
        shutil.rmtree(comm_root, ignore_errors=True)
        print(f"course_lib grading: no fork server ({error}); a new sandbox per kernel instead", file=sys.stderr)
        server = None
    _servers[key] = server
    return server


def stop_fork_servers() -> None:
    """Stop this process's fork servers (a grading worker's last step)."""
    for server in _servers.values():
        if server is not None:
            server.stop()
    _servers.clear()


if __name__ == "__main__":
    serve(int(sys.argv[1]), sys.argv[2])
