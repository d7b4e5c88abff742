# One-command set-up: every target below creates .venv (if missing) and installs the pinned
# dependencies and the package before doing its work.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# stage commands run `python`: make it the virtualenv's
export PATH := $(CURDIR)/$(BIN):$(PATH)
export MLFLOW_DISABLE_TELEMETRY ?= true
# the team server's folder (database, artifacts, logs); see README "Working as a team"
TEAM_DIR ?= $(CURDIR)/team-server

.PHONY: setup repro track test ui bench lock clean team-server team-server-stop

setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

repro: setup  ## run the pipeline (only the stages whose inputs changed)
	$(BIN)/dvc repro

track: setup  ## log the current outputs to MLflow again (a new or rebuilt store); nothing is retrained
	$(BIN)/dvc repro -s -f track

test: setup  ## the test suite (what CI runs)
	$(BIN)/python -m pytest

ui: setup  ## the MLflow UI on 127.0.0.1 over this project's store (a tracking server has its own)
	@$(BIN)/python -m mnist_vae.tracking
	@case "$${MLFLOW_TRACKING_URI:-}" in http://*|https://*) exit 0;; esac; \
	$(BIN)/mlflow ui --host 127.0.0.1 --port $${MLFLOW_UI_PORT:-5000} \
	  --backend-store-uri $${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/mlflow.db}

team-server: setup  ## the team's MLflow server (PostgreSQL, proxied artifacts, basic auth); needs MNIST_VAE_ADMIN_PASSWORD
	deploy/team-server.sh start --dir $(TEAM_DIR) $(TEAM_SERVER_ARGS)

team-server-stop:  ## stop the team server (its data stay in TEAM_DIR)
	deploy/team-server.sh stop --dir $(TEAM_DIR)

bench: setup  ## speed benchmarks; prints a table, writes benchmarks/results/*.json
	$(BIN)/python benchmarks/run.py

lock:  ## re-resolve the dependencies from pyproject.toml into requirements.lock
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet -e '.[test]'
	.lock-venv/bin/python -m pip freeze --exclude-editable | sed -E 's/^torch==([0-9.]+)\+cpu$$/torch==\1/' > requirements.lock
	rm -rf .lock-venv

clean:  ## remove the virtualenv (DVC outputs stay: `dvc gc` manages the cache)
	rm -rf $(VENV)
