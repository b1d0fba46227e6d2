# flex_ml: every install step lives here, so a fresh machine and CI get the same environment.
#   make install   venv + pinned deps + editable package + Jupyter kernel + nbdev git hooks + data
#   make repro     dvc repro: the whole data-to-model pipeline on the real data
#   make test      notebook checks (nbdev_test) and the pytest suite
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# CI and offline machines fetch the raw data from a local mirror laid out like data/.
FLEX_ML_DATA_MIRROR ?= $(if $(wildcard ../shared/data),$(abspath ../shared/data),)
export FLEX_ML_DATA_MIRROR
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: test-heavy install system-deps data repro pull push model-report test test-fast export lab tune serve bench readme docs plots help
help:
	@grep -E '^#   make' Makefile | sed 's/^#   //'

install: $(STAMP) data

# Debian packages only the tests need (installed when run as root, else named): PostgreSQL (a real
# server for the prediction-log tests), a Java runtime (Spark), Chromium and Graphviz.
system-deps:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; \
	  else echo "PostgreSQL is missing: run 'sudo apt-get install postgresql' (the serving tests start a server)"; exit 1; fi; \
	fi
# A Java runtime (PySpark: the Spark engine's tests start a local[2] session).
	@if ! command -v java >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq default-jre-headless; \
	  else echo "Java is missing: run 'sudo apt-get install default-jre-headless' (the Spark engine's tests start Spark)"; exit 1; fi; \
	fi
# Chromium (the docs site's browser tests) and Graphviz (the `dvc dag` picture in the docs).
	@if ! command -v chromium >/dev/null 2>&1 || ! command -v dot >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium graphviz; \
	  else echo "Chromium or Graphviz is missing: run 'sudo apt-get install chromium graphviz' (docs site and its browser tests)"; exit 1; fi; \
	fi

$(STAMP): requirements.txt setup.py settings.ini
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name flex-ml --display-name "Python (flex-ml)"
	if git rev-parse --git-dir >/dev/null 2>&1; then $(BIN)/nbdev_install_hooks; fi
	touch $(STAMP)

data: $(STAMP)
	$(BIN)/flex-ml fetch

# with a team remote, its outputs are pulled first: the committed bytes, not a retrain on this CPU
repro: install
	$(BIN)/flex-ml remote pull --if-configured
	$(BIN)/dvc repro

#   make pull      the data, stage outputs and run-cache the team's DVC remote holds (README: the team remote)
pull: $(STAMP)
	$(BIN)/flex-ml remote pull

#   make push      data, stage outputs, registry versions and the run-cache to the team's DVC remote
push: $(STAMP)
	$(BIN)/flex-ml remote push

#   make model-report  after make repro: this model against main's (or BASE=rev), in artifacts/model-report/; fails when worse
BASE ?= main
model-report: $(STAMP)
	$(BIN)/flex-ml model-report --base $(BASE)

# Prints the time of each part and the total (CI's log shows where its minutes go).
test: system-deps install
	@start=$$(date +%s); \
	$(BIN)/nbdev_test --n_workers 2 && nb=$$(date +%s) && echo "make test: notebooks $$((nb - start)) s" && \
	$(BIN)/python -m pytest -ra --durations=20 -m "not heavy" tests; rc=$$?; \
	echo "make test: total $$(( $$(date +%s) - start )) s (exit $$rc)"; exit $$rc

#   make test-heavy the heavy tests make test leaves out: a 1M-row bad-input run, a full pipeline through the S3 remote
test-heavy: system-deps install
	@start=$$(date +%s); $(BIN)/python -m pytest -ra --durations=10 -m heavy tests; rc=$$?; \
	echo "make test-heavy: total $$(( $$(date +%s) - start )) s (exit $$rc)"; exit $$rc

#   make test-fast the fast tier: no pipeline run (a small real model is built in a fixture), under 3 minutes on 2 cores.
#   Two pytest workers (pytest-xdist), each test module kept on one worker so a module's fixtures are built once.
test-fast: system-deps install
	@start=$$(date +%s); $(BIN)/python -m pytest -n 2 --dist loadfile -ra --durations=10 -m "not slow" tests; rc=$$?; \
	echo "make test-fast: total $$(( $$(date +%s) - start )) s (exit $$rc)"; exit $$rc

#   make export    regenerate flex_ml/ from nbs/ and clean the notebooks
export: $(STAMP)
	$(BIN)/nbdev_export
	$(BIN)/nbdev_clean

#   make lab       JupyterLab with the project's kernel
# Its configuration is the project's (.jupyter/: runs as root too, nbdev cleans notebooks on save); your
# JupyterLab settings and workspaces stay in ~/.jupyter/lab. LAB_ARGS: more options (e.g. --port=8890).
LAB_ARGS ?=
lab: install
	JUPYTER_CONFIG_DIR=$(CURDIR)/.jupyter \
	JUPYTERLAB_SETTINGS_DIR=$${JUPYTERLAB_SETTINGS_DIR:-$$HOME/.jupyter/lab/user-settings} \
	JUPYTERLAB_WORKSPACES_DIR=$${JUPYTERLAB_WORKSPACES_DIR:-$$HOME/.jupyter/lab/workspaces} \
	$(BIN)/jupyter lab --notebook-dir=nbs $(LAB_ARGS)

#   make tune      search params.yaml tune.space on the valid split (minutes); proposes, never changes params.yaml
tune: install
	$(BIN)/dvc repro split
	$(BIN)/flex-ml tune

#   make serve     the prediction service on 127.0.0.1:8000 (after make repro)
serve: $(STAMP)
	$(BIN)/flex-ml serve --model artifacts/model --host 127.0.0.1 --port 8000

#   make bench     pipeline, training-speed, serving, monitoring, seed-, split-, feature-, cross-fit, retrain-gate and team-remote studies, JSON
bench: install
	$(BIN)/python benchmarks/pipeline.py
	$(BIN)/python benchmarks/training.py
	$(BIN)/python benchmarks/serving.py
	$(BIN)/python benchmarks/monitor.py
	$(BIN)/python benchmarks/seeds.py
	$(BIN)/python benchmarks/splits.py
	$(BIN)/python benchmarks/features.py
	$(BIN)/python benchmarks/teacher.py
	$(BIN)/python benchmarks/crossfit.py
	$(BIN)/python benchmarks/retrain_gates.py
	$(BIN)/python benchmarks/remote.py

#   make plots     dvc plots show into dvc_plots/, drawn with local vega (DVC's own page needs a CDN)
plots: $(STAMP)
	$(BIN)/python docs/build.py --plots-only

#   make docs      the docs site in site/ (offline: API from the notebooks, tutorials, latest pipeline results)
docs: repro
	$(BIN)/python docs/build.py

#   make readme    README.md from nbs/index.ipynb
readme: $(STAMP)
	$(BIN)/jupyter nbconvert --to markdown --log-level WARN nbs/index.ipynb --output-dir . --output README
