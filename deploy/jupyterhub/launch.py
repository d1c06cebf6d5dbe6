"""Start the course's JupyterHub for a local trial: ``make hub`` (or ``python deploy/jupyterhub/launch.py --help``).

Prepares the folders the hub needs, then replaces itself with ``jupyterhub -f deploy/jupyterhub/jupyterhub_config.py``:

* STATE (default ``.hub/`` in the repository, git-ignored): hub database, cookie secret, users' homes;
* the course folder (default STATE/course): on first start a copy of the repository's ``nbgrader_config.py`` and
  ``solutions/`` -- the instructor generates, releases, collects and grades there (the repository is not touched);
* the exchange (default STATE/exchange), writable by every user as nbgrader's docs ask.

TRIAL ONLY: one shared demo password, every server runs as your account (see jupyterhub_config.py).
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DEMO_PASSWORD = "normalization-demo"  # README, section "A class on JupyterHub"
INSTRUCTORS = "instructor"
STUDENTS = "student1,student2,student3"

WARNING = """\
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
!! LOCAL TRIAL ONLY: every account shares one demo password and every server runs as {user!r}: students   !!
!! can read each other's work and the solutions. Keep it on 127.0.0.1; for a class see README (Kubernetes). !!
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"""


def free_port(ip: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


def prepare(state: Path, course_dir: Path, exchange: Path) -> None:
    """Create the hub's folders; copy the course (config + masters) into ``course_dir`` unless it holds one."""
    (state / "home").mkdir(parents=True, exist_ok=True)
    exchange.mkdir(parents=True, exist_ok=True)
    exchange.chmod(0o777)  # nbgrader's exchange root: every user writes their submissions into it
    if not (course_dir / "nbgrader_config.py").exists():
        course_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / "nbgrader_config.py", course_dir / "nbgrader_config.py")
        shutil.copytree(REPO / "solutions", course_dir / "solutions", dirs_exist_ok=True)


def hub_environment(args: argparse.Namespace) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        COURSE_HUB_STATE=str(args.state), COURSE_HUB_COURSE_DIR=str(args.course_dir),
        COURSE_HUB_EXCHANGE=str(args.exchange), COURSE_HUB_IP=args.ip, COURSE_HUB_PORT=str(args.port),
        COURSE_HUB_API_PORT=str(free_port()), COURSE_HUB_PROXY_API_PORT=str(free_port()),
        COURSE_HUB_PASSWORD=args.password, COURSE_HUB_INSTRUCTORS=args.instructors, COURSE_HUB_STUDENTS=args.students,
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}",
    )
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The course's JupyterHub on this machine (local trial).")
    parser.add_argument("--state", type=Path, default=REPO / ".hub", help="hub database and homes (default .hub)")
    parser.add_argument("--course-dir", type=Path, default=None, help="instructor's course folder (STATE/course)")
    parser.add_argument("--exchange", type=Path, default=None, help="nbgrader exchange (default STATE/exchange)")
    parser.add_argument("--ip", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port of the hub (default 8000; 0: a free one)")
    parser.add_argument("--password", default=os.environ.get("COURSE_HUB_PASSWORD", DEMO_PASSWORD),
                        help=f"the shared demo password (default {DEMO_PASSWORD!r})")
    parser.add_argument("--instructors", default=INSTRUCTORS, help=f"comma-separated (default {INSTRUCTORS})")
    parser.add_argument("--students", default=STUDENTS, help=f"comma-separated (default {STUDENTS})")
    args = parser.parse_args(argv)
    args.state = args.state.resolve()
    args.course_dir = (args.course_dir or args.state / "course").resolve()
    args.exchange = (args.exchange or args.state / "exchange").resolve()
    args.port = args.port or free_port(args.ip)
    jupyterhub = shutil.which("jupyterhub", path=str(Path(sys.executable).parent)) or shutil.which("jupyterhub")
    if jupyterhub is None:
        print("jupyterhub is not installed: run `make hub-deps`", file=sys.stderr)
        return 2
    prepare(args.state, args.course_dir, args.exchange)
    import getpass
    print(WARNING.format(user=getpass.getuser()))
    print(f"JupyterHub of the course: http://{args.ip}:{args.port}/  (Ctrl-C stops it)\n"
          f"  accounts: {args.instructors} (instructor: course folder + formgrader), {args.students}\n"
          f"  password: {args.password}\n"
          f"  course folder: {args.course_dir}\n  exchange: {args.exchange}\n  homes: {args.state / 'home'}",
          flush=True)
    os.chdir(args.state)
    os.execve(jupyterhub, [jupyterhub, "-f", str(HERE / "jupyterhub_config.py")], hub_environment(args))
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
