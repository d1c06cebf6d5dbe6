"""nbgrader in a student's server (JUPYTER_CONFIG_PATH puts this folder before ../): submissions and feedback are
filed under the hub's user name. nbgrader otherwise takes the operating-system account, which on the trial hub is
the hub's own account for everyone (nbgrader does the same for the account "jovyan" of the Kubernetes images).
"""
import os

c = get_config()  # noqa: F821 - traitlets provides get_config() when it loads this file

c.CourseDirectory.student_id = os.environ["JUPYTERHUB_USER"]
