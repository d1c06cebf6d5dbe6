"""Sphinx configuration of the course website (built by `make site`, see tools/build_site.py).

tools/build_site.py stages the sources next to this file in build/site-src/: the lecture notebooks executed fresh,
the exercises (student versions), the landing page made from README's course map, and the API page; Sphinx only
renders them (no execution here), with the book theme, and builds its own offline search index.
"""
import os
import sys

import course_lib

project = "Normalization layers, from BatchNorm to RMSNorm"
author = "The normalization course authors"
release = version = course_lib.__version__
repository_url = os.environ.get("COURSE_REPOSITORY_URL", "")

extensions = ["myst_nb", "sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.mathjax", "sphinx.ext.viewcode"]
nb_execution_mode = "off"          # the notebooks arrive executed (plots, printed numbers, widget state)
nb_output_stderr = "show"          # warnings stay visible; the site test fails on any traceback
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": True}
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
suppress_warnings = ["myst.header", "misc.highlighting_failure"]

html_theme = "sphinx_book_theme"
html_title = "Normalization layers — an open course"
html_theme_options = {
    "path_to_docs": "",
    "home_page_in_toc": True,
    "show_toc_level": 2,
    "navigation_with_keys": True,
}
if repository_url:  # launch buttons (Colab, Binder) and a link to the repository on every notebook page
    html_theme_options.update({
        "repository_url": repository_url,
        "repository_branch": "main",
        "use_repository_button": True,
        "launch_buttons": {"colab_url": "https://colab.research.google.com", "binderhub_url": "https://mybinder.org",
                           "notebook_interface": "jupyterlab"},
    })
sys.path.insert(0, os.path.abspath("."))
