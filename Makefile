# The course in two commands:  make lab  (open the notebooks)  and  make test  (everything CI runs).
# Both create .venv with `python -m venv` if it is missing and install the exact versions of requirements.lock.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# JupyterLab refuses to run as root unless told; only pass the flag when we are root (containers, CI).
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)
PYTEST_FLAGS ?=

export OMP_NUM_THREADS ?= 1

.PHONY: help install lab test test-fast lint test-unit test-notebooks test-portability test-browser test-site site bench release grade collect-lms \
	student-dist sandbox-deps browser-deps hub hub-deps notebooks clean

help:
	@echo "make lab      open the course in JupyterLab (creates .venv on first use)"
	@echo "make test     lint, then the tests: unit, notebooks (nbval), grading in the sandbox, packaging, browser"
	@echo "make test-fast  the unit tests only, in two processes (the edit loop)"
	@echo "make test-portability   every notebook under other CPU kernels, thread counts and COURSE_SEEDs"
	@echo "make site     the course website from freshly executed notebooks (build/site/html)"
	@echo "make bench    course CNN step and each layer with course_lib vs torch.nn norms (ratios)"
	@echo "make release  regenerate exercises/ from solutions/ (nbgrader)"
	@echo "make grade SUBMISSIONS=dir GRADES=grades.csv   autograde a class (each notebook in a bubblewrap sandbox)"
	@echo "make collect-lms ZIP=download.zip ASSIGNMENT=Q3   an LMS download into SUBMISSIONS (nbgrader zip_collect)"
	@echo "make student-dist   what students receive: dist/normalization-course-student(.zip), no solutions"
	@echo "make hub     the class on a local JupyterHub (trial: demo accounts, shared password; README)"

# torch first, from PyTorch's CPU index (requirements-torch.lock), then everything else; both files carry hashes.
$(STAMP): requirements-torch.lock requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "Python >= 3.10 is needed, found " + sys.version.split()[0])'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q --no-deps -r requirements-torch.lock
	$(BIN)/python -m pip install --disable-pip-version-check -q -r requirements.lock
	$(BIN)/python -m pip install --disable-pip-version-check -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

# LAB_ARGS: extra `jupyter lab` options, e.g. LAB_ARGS="--no-browser --port=8899" (the make-lab smoke test uses it).
LAB_ARGS ?=

lab: install
	$(BIN)/jupyter lab --notebook-dir=notebooks $(ROOT_FLAG) $(LAB_ARGS)

# nbval executes every cell of the lecture notebooks and of the exercise masters; tagged cells compare output.
NBVAL_FLAGS := --nbval-lax --nbval-current-env --nbval-cell-timeout=300

test: install browser-deps sandbox-deps hub-deps lint
	$(BIN)/python -m pytest tests notebooks solutions --ignore=tests/site $(NBVAL_FLAGS) $(PYTEST_FLAGS)

# The edit loop: unit tests only (no notebooks, browser, grading pipeline, packaging), two processes.
test-fast: install
	$(BIN)/python -m pytest tests -n 2 -m "not slow" --ignore=tests/browser --ignore=tests/site $(PYTEST_FLAGS)

lint: install
	$(BIN)/ruff check course_lib tests tools benchmarks site deploy nbgrader_config.py

test-notebooks: install
	$(BIN)/python -m pytest notebooks solutions $(NBVAL_FLAGS) $(PYTEST_FLAGS)

test-unit: install
	$(BIN)/python -m pytest tests --ignore=tests/browser $(PYTEST_FLAGS)

# Every lecture notebook and exercise master under other CPU kernel sets (ATEN_CPU_CAPABILITY), thread counts,
# oneDNN on/off and COURSE_SEED 0-4: a table notebook x setting -> pass/FAIL (tools/portability.py).
test-portability: install
	$(BIN)/python tools/portability.py

# JupyterLab + headless chromium: every slider of the widget notebooks moved with the keyboard (tests/browser).
test-browser: install browser-deps
	$(BIN)/python -m pytest tests/browser $(PYTEST_FLAGS)

# The course website: lecture notebooks executed once (SITE_SETTING=ci: under CI's non-default CPU kernels, threads
# and seed), exercises, API reference, search; build/site/html. test-site opens it in headless chromium.
SITE_SETTING ?= local
site: install
	$(BIN)/python tools/build_site.py --setting $(SITE_SETTING)

test-site: install browser-deps
	$(BIN)/python -m pytest tests/site $(PYTEST_FLAGS)

bench: install
	$(BIN)/python benchmarks/cnn_step.py
	$(BIN)/python benchmarks/norms.py

# Student versions: regenerate exercises/ from the masters in solutions/ (nbgrader, temporary gradebook).
release: install
	$(BIN)/python -m course_lib.grading.release

# Autograde a class: SUBMISSIONS holds <student_id>/<assignment>/<notebook>.ipynb; one CSV row per submission,
# feedback HTML in FEEDBACK (default: feedback/ next to GRADES), WORKERS grading processes in parallel.
# Every notebook runs in a bubblewrap sandbox; without bubblewrap grading refuses unless NO_SANDBOX=1.
# RESUME=1 keeps the rows already in GRADES (after an interrupted run) and grades the rest.
# GRADEBOOK=url: the course's nbgrader gradebook (due dates in, results out; default gradebook.db if it exists),
# TOTALS=totals.csv: one row per student for the LMS, DASK=1 (LocalCluster of WORKERS) or DASK=tcp://host:8786.
GRADES ?= grades.csv
WORKERS ?= 2
grade: install sandbox-deps
	@test -n "$(SUBMISSIONS)" || { echo "usage: make grade SUBMISSIONS=dir GRADES=grades.csv [FEEDBACK=dir] [WORKERS=2] [RESUME=1] [NO_SANDBOX=1] [TOTALS=totals.csv] [GRADEBOOK=url] [DASK=1|tcp://host:port]"; exit 2; }
	$(BIN)/python -m course_lib.grading.autograde "$(SUBMISSIONS)" "$(GRADES)" --workers $(WORKERS) $(if $(FEEDBACK),--feedback "$(FEEDBACK)",) $(if $(RESUME),--resume,) $(if $(NO_SANDBOX),--no-sandbox,) $(if $(TOTALS),--totals "$(TOTALS)",) $(if $(GRADEBOOK),--gradebook "$(GRADEBOOK)",) $(if $(DASK),$(if $(filter 1,$(DASK)),--dask,--dask="$(DASK)"),)

# An LMS download (zip of <student>_<id>_<id>_<notebook>.ipynb) into SUBMISSIONS/<student>/<assignment>/ with
# nbgrader zip_collect: make collect-lms ZIP=download.zip ASSIGNMENT=Q3 [SUBMISSIONS=submitted] [LMS=canvas|moodle]
LMS ?= canvas
collect-lms: install
	@test -n "$(ZIP)" -a -n "$(ASSIGNMENT)" || { echo "usage: make collect-lms ZIP=download.zip ASSIGNMENT=Q3 [SUBMISSIONS=submitted] [LMS=canvas|moodle]"; exit 2; }
	$(BIN)/python -m course_lib.grading.lms "$(ZIP)" "$(ASSIGNMENT)" --out "$(or $(SUBMISSIONS),submitted)" --lms $(LMS)

# What students receive (instead of the repository, which holds solutions/): dist/normalization-course-student/
# and the same as a .zip -- lecture notebooks, exercises, course_lib, a student README, both lock files, LICENSE.
student-dist: install
	$(BIN)/python -m course_lib.grading.student_dist --out dist

# Debian's bubblewrap for the grading sandbox (make grade, and its tests in make test).
sandbox-deps:
	@if command -v bwrap >/dev/null 2>&1; then \
		true; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing bubblewrap for the grading sandbox (apt-get)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null; \
	else \
		echo "NOTE: bubblewrap (bwrap) not found: make grade will refuse to grade without NO_SANDBOX=1. Install it:"; \
		echo "      sudo apt-get install bubblewrap   (Debian/Ubuntu; Fedora: sudo dnf install bubblewrap)"; \
	fi

# Maintainers: re-execute the lecture notebooks on one thread, then strip every output nbval does not check.
notebooks: install
	for nb in notebooks/Q*.ipynb; do \
		$(BIN)/jupyter nbconvert --to notebook --execute --inplace --ExecutePreprocessor.timeout=300 "$$nb" || exit 1; \
	done
	$(BIN)/python tools/notebook_hygiene.py strip notebooks/Q*.ipynb
	$(BIN)/python tools/notebook_hygiene.py check notebooks/Q*.ipynb

# Debian's chromium for the real-browser test (Playwright's own browser download does not work offline).
browser-deps:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then \
		true; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing chromium for the browser test (apt-get)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else \
		echo "NOTE: chromium not found; the browser test will be skipped. Install it with:"; \
		echo "      sudo apt-get install chromium   (Debian/Ubuntu)"; \
	fi

# JupyterHub for the class: jupyterhub (pip, the `hub` extra of pyproject.toml) into the venv and JupyterHub's proxy,
# configurable-http-proxy, from npm into deploy/jupyterhub/node_modules (pinned with hashes in package-lock.json).
# Needs Node.js (Debian: apt-get install nodejs npm, done here as root).
hub-deps: install
	@$(BIN)/python -c 'import jupyterhub' 2>/dev/null || { echo "installing jupyterhub (pip)"; \
		sed -n 's/^\([A-Za-z0-9_.-]*==[^ ;]*\).*/\1/p' requirements.lock > $(VENV)/.lock-constraints.txt && \
		$(BIN)/python -m pip install --disable-pip-version-check -q -c $(VENV)/.lock-constraints.txt \
			"$$(sed -n 's/^.*"\(jupyterhub[^"]*\)".*$$/\1/p' pyproject.toml | head -1)"; }
	@if ! command -v npm >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing Node.js for JupyterHub's proxy (apt-get)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null; \
	fi
	@if [ -x deploy/jupyterhub/node_modules/.bin/configurable-http-proxy ]; then \
		true; \
	elif command -v npm >/dev/null 2>&1; then \
		echo "installing configurable-http-proxy (npm ci, deploy/jupyterhub/node_modules)"; \
		npm ci --prefix deploy/jupyterhub --no-audit --no-fund --loglevel=error; \
	else \
		echo "NOTE: npm not found: the hub needs configurable-http-proxy. Install Node.js (sudo apt-get install nodejs npm)"; \
		echo "      and run make hub-deps again; the hub test will be skipped."; \
	fi

# The class on a local JupyterHub, 127.0.0.1:HUB_PORT: instructor + student1..3, one shared demo password.
# FOR A TRIAL ONLY (every server runs as you; see deploy/jupyterhub/jupyterhub_config.py). State in .hub/.
HUB_PORT ?= 8000
hub: hub-deps
	$(BIN)/python deploy/jupyterhub/launch.py --port $(HUB_PORT)

clean:
	rm -rf $(VENV) .pytest_cache artifacts
