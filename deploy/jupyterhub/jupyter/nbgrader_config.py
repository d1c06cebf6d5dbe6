"""nbgrader's settings for every single-user server of the course hub (read through JUPYTER_CONFIG_PATH).

The exchange is one folder shared on the machine; students submit to and fetch from it, the instructor releases
and collects through it. Both values come from the hub's spawner environment (deploy/jupyterhub/jupyterhub_config.py).
"""
import os

c = get_config()  # noqa: F821 - traitlets provides get_config() when it loads this file

c.Exchange.root = os.environ["NBGRADER_EXCHANGE"]
c.CourseDirectory.course_id = os.environ["NBGRADER_COURSE_ID"]
