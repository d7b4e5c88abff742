# One-command set-up: every target below creates .venv (if missing) and installs the pinned
# dependencies and the package before doing its work.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# stage commands run `python`: make it the virtualenv's
export PATH := $(CURDIR)/$(BIN):$(PATH)
export MLFLOW_DISABLE_TELEMETRY ?= true
# the team server's folder (database, artifacts, logs); see docs/team.md
TEAM_DIR ?= $(CURDIR)/team-server
# `make search`: worker processes in this clone (docs/search.md); `make search-dashboard`'s port
WORKERS ?= 1
SEARCH_DASHBOARD_PORT ?= 8080
# `make test`: pytest-xdist workers (2 = this project's 2-core machine; 0 = one process)
TEST_WORKERS ?= 2

.PHONY: setup repro track test test-fast ui bench docs docs-serve lock clean team-server team-server-stop search search-status search-dashboard

setup: $(STAMP)  ## create .venv and install the pinned dependencies and the package (every target below does it first)

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

repro: setup  ## run the pipeline (only the stages whose inputs changed)
	$(BIN)/dvc repro

track: setup  ## log the current outputs to MLflow again (a new or rebuilt store); nothing is retrained
	$(BIN)/dvc repro -s -f track

test: setup  ## the whole test suite (what CI runs); TEST_WORKERS=N pytest processes, each test file in one of them
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

test-fast: setup  ## the unit tests alone (no process, server, browser or store; seconds each): run it after every change
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --unit

ui: setup  ## the MLflow UI on 127.0.0.1 over this project's store (a tracking server has its own)
	@$(BIN)/python -m mnist_vae.pipeline.mlflow_store
	@case "$${MLFLOW_TRACKING_URI:-}" in http://*|https://*) exit 0;; esac; \
	$(BIN)/mlflow ui --host 127.0.0.1 --port $${MLFLOW_UI_PORT:-5000} \
	  --backend-store-uri $${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/mlflow.db}

team-server: setup  ## the team's MLflow server (PostgreSQL, proxied artifacts, basic auth); needs MNIST_VAE_ADMIN_PASSWORD
	deploy/team-server.sh start --dir $(TEAM_DIR) $(TEAM_SERVER_ARGS)

team-server-stop:  ## stop the team server (its data stay in TEAM_DIR)
	deploy/team-server.sh stop --dir $(TEAM_DIR)

search: setup  ## a search worker on params.yaml's `search` (docs/search.md); WORKERS=N for N here
	$(BIN)/mnist-vae search run --workers $(WORKERS)

search-status: setup  ## the search's trials by state and its best trial
	$(BIN)/mnist-vae search status

search-dashboard: setup  ## optuna-dashboard on 127.0.0.1 over the search's storage (SEARCH_DASHBOARD_PORT, default 8080)
	$(BIN)/mnist-vae search dashboard --host 127.0.0.1 --port $(SEARCH_DASHBOARD_PORT)

bench: setup  ## speed benchmarks; prints a table, writes benchmarks/results/*.json
	$(BIN)/python benchmarks/run.py

docs: setup  ## the documentation site from docs/ into site/ (strict: a broken link fails)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

docs-serve: setup  ## the documentation on 127.0.0.1, rebuilt on every change (DOCS_PORT, default 8000)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --strict --dev-addr 127.0.0.1:$${DOCS_PORT:-8000}

lock:  ## re-resolve the dependencies from pyproject.toml into requirements.lock
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet -e '.[test,docs]'
	.lock-venv/bin/python -m pip freeze --exclude-editable | sed -E 's/^torch==([0-9.]+)\+cpu$$/torch==\1/' > requirements.lock
	rm -rf .lock-venv

clean:  ## remove the virtualenv (DVC outputs stay: `dvc gc` manages the cache)
	rm -rf $(VENV)
