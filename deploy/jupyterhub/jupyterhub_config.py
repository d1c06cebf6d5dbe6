"""JupyterHub for the course on one machine: every student gets JupyterLab with the course's environment, the lecture
notebooks and nbgrader's Assignments panel; the instructor's server opens in the course folder with the formgrader.

###############################################################################################################
#  FOR A LOCAL TRIAL ONLY. Everyone logs in with ONE shared demo password (SharedPasswordAuthenticator), and  #
#  every user's server runs as the account that started the hub (SimpleLocalProcessSpawner): students can    #
#  read each other's files, the exchange and the course folder with its solutions. Never expose this hub     #
#  beyond 127.0.0.1; for a class use real accounts (PAM + LocalProcessSpawner, or Kubernetes:                 #
#  deploy/kubernetes/values.yaml).                                                                            #
###############################################################################################################

Started by ``make hub`` (deploy/jupyterhub/launch.py prepares the folders and sets these variables):

* ``COURSE_HUB_STATE``: the hub's database, cookie secret and the users' homes (``home/<user>``);
* ``COURSE_HUB_COURSE_DIR``: the instructor's nbgrader course folder (nbgrader_config.py, solutions/, gradebook);
* ``COURSE_HUB_EXCHANGE``: nbgrader's exchange (release_assignment -> fetch_assignment, submit -> collect,
  release_feedback -> fetch_feedback), shared by every server on the machine;
* ``COURSE_HUB_IP``/``COURSE_HUB_PORT`` (127.0.0.1:8000), ``COURSE_HUB_PASSWORD`` (the demo password),
  ``COURSE_HUB_INSTRUCTORS`` / ``COURSE_HUB_STUDENTS`` (comma-separated user names).

The course id comes from the repository's nbgrader_config.py. nbgrader's settings for every server (exchange root,
course id) are in deploy/jupyterhub/jupyter/nbgrader_config.py, found through JUPYTER_CONFIG_PATH; students' servers
also read deploy/jupyterhub/jupyter/student/ (formgrader and assignment creation off). This is nbgrader's "one class,
one grader" layout: instructors in the ``formgrade-<course>`` group, students in ``nbgrader-<course>``.
"""
import os
import shutil
import sys
from pathlib import Path

from traitlets.config.loader import PyFileConfigLoader

c = get_config()  # noqa: F821 - JupyterHub provides get_config() when it loads this file

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
BIN = Path(sys.executable).parent  # the course's venv: jupyterhub-singleuser, nbgrader, python


def _required(name: str) -> Path:
    value = os.environ.get(name)
    if not value:
        raise SystemExit(f"{name} is not set: start the hub with `make hub` (deploy/jupyterhub/launch.py)")
    return Path(value).resolve()


def _names(name: str, default: str) -> list[str]:
    return [n.strip() for n in os.environ.get(name, default).split(",") if n.strip()]


STATE = _required("COURSE_HUB_STATE")
COURSE_DIR = _required("COURSE_HUB_COURSE_DIR")
EXCHANGE = _required("COURSE_HUB_EXCHANGE")
INSTRUCTORS = _names("COURSE_HUB_INSTRUCTORS", "instructor")
STUDENTS = _names("COURSE_HUB_STUDENTS", "student1,student2,student3")
COURSE_ID = PyFileConfigLoader("nbgrader_config.py", path=str(REPO)).load_config().CourseDirectory.course_id

# ---------------------------------------------------------------------------------------------------- the hub
c.JupyterHub.ip = os.environ.get("COURSE_HUB_IP", "127.0.0.1")
c.JupyterHub.port = int(os.environ.get("COURSE_HUB_PORT", "8000"))
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = int(os.environ.get("COURSE_HUB_API_PORT", "0")) or c.JupyterHub.port + 1
c.JupyterHub.db_url = f"sqlite:///{STATE / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(STATE / "jupyterhub_cookie_secret")
c.ConfigurableHTTPProxy.pid_file = str(STATE / "jupyterhub-proxy.pid")
_proxy_api_port = int(os.environ.get("COURSE_HUB_PROXY_API_PORT", "0")) or c.JupyterHub.port + 2
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{_proxy_api_port}"
# configurable-http-proxy from `make hub-deps` (npm, deploy/jupyterhub/node_modules), else one on PATH.
_chp = HERE / "node_modules" / ".bin" / "configurable-http-proxy"
c.ConfigurableHTTPProxy.command = [str(_chp) if _chp.exists() else "configurable-http-proxy"]
c.JupyterHub.cleanup_servers = True

# ------------------------------------------------------------------------------------- accounts (trial only)
c.JupyterHub.authenticator_class = "shared-password"
c.SharedPasswordAuthenticator.user_password = os.environ.get("COURSE_HUB_PASSWORD", "")
c.Authenticator.allowed_users = set(INSTRUCTORS + STUDENTS)
c.JupyterHub.load_groups = {
    f"formgrade-{COURSE_ID}": {"users": INSTRUCTORS},
    f"nbgrader-{COURSE_ID}": {"users": STUDENTS},
}

# ------------------------------------------------------------------------------------------ single-user servers
c.JupyterHub.spawner_class = "simple"  # every server runs as the hub's account, HOME = home/<user>
c.SimpleLocalProcessSpawner.home_dir_template = str(STATE / "home" / "{username}")
c.Spawner.cmd = [str(BIN / "jupyterhub-singleuser")]
# JupyterLab refuses to run as root unless told (containers, CI).
c.Spawner.args = ["--allow-root"] if os.geteuid() == 0 else []
c.Spawner.default_url = "/lab"
c.Spawner.http_timeout = 120  # a 2-core machine under load starts JupyterLab slowly
c.Spawner.start_timeout = 120
c.Spawner.environment = {
    # the venv first: nbgrader runs `alembic` from PATH when it creates a gradebook (docs/DESIGN.md section 5)
    "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
    "NBGRADER_EXCHANGE": str(EXCHANGE),
    "NBGRADER_COURSE_ID": COURSE_ID,
    "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
}


def _prepare_server(spawner) -> None:
    """Instructors: the course folder, formgrader on. Students: their home, with the lecture notebooks copied in
    on first login, and nbgrader's Assignments panel only."""
    name = spawner.user.name
    home = Path(spawner.home_dir)
    home.mkdir(parents=True, exist_ok=True)
    role = "instructor" if name in INSTRUCTORS else "student"
    config_path = [str(HERE / "jupyter" / role), str(HERE / "jupyter")]
    spawner.environment = {**spawner.environment, "JUPYTER_CONFIG_PATH": os.pathsep.join(config_path)}
    if role == "instructor":
        spawner.notebook_dir = str(COURSE_DIR)
    else:
        spawner.notebook_dir = str(home)
        lectures = home / "notebooks"
        if not lectures.exists():
            lectures.mkdir()
            for notebook in sorted((REPO / "notebooks").glob("Q*.ipynb")):
                shutil.copy2(notebook, lectures / notebook.name)


c.Spawner.pre_spawn_hook = _prepare_server
