"""The real pipeline in tests: a copy of the repository as its own git repo running `dvc repro` on the fixture
digits, commands run there, its MLflow store read back, and `mlflow ui` over it.

`repo` is that copy after one full `dvc repro`, built once per test session and shared by every xdist worker
(the first one builds it under a file lock, the others wait and reuse it); tests change copies of it (`fork`)."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from helpers.digits import FIXTURE_DIGITS as FIXTURE
from helpers.digits import REPO, fixture_digests
from mnist_vae.params import Params

BIN = Path(sys.executable).parent
STAGES = ["download", "dequantize", "classifier", "train", "sampler", "evaluate", "headline", "render", "track"]


def env(**extra) -> dict[str, str]:
    out = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", **extra}
    out.pop("MLFLOW_TRACKING_URI", None)  # each copy uses its own embedded store unless a test says otherwise
    return {**out, **extra}


def sh(*cmd, cwd, check=True, timeout=600, **extra):
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env(**extra))
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def set_params(root: Path, **sections) -> None:
    path = root / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for section, values in sections.items():
        if isinstance(values, dict):
            params[section].update(values)
        else:
            params[section] = values
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def ran_stages(output: str) -> list[str]:
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")]


def commit(root: Path, message: str) -> None:
    sh("git", "add", "-A", cwd=root)
    sh("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message, "--allow-empty", cwd=root)


def build_repo(root: Path) -> Path:
    """A copy of the repository (its tracked and untracked-but-not-ignored files) at `root`, as its own git
    repo, with small-data params, after one full `dvc repro`, committed."""
    files = sh("git", "ls-files", "--cached", "--others", "--exclude-standard", cwd=REPO).stdout.split()
    for rel in files:
        if (REPO / rel).is_file() and rel != "dvc.lock":
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, root / rel)
    write_small_params(
        root,
        train={"epochs": 3, "batch_size": 64},
        evaluate={"iw_samples": 10, "train_slice": 200, "mi_examples": 100},
        render={"latent_points": 200, "samples_grid": 4},
        tracking={"experiment": "pipeline-test", "registered_model": "pipeline-vae"},
    )
    sh("git", "init", "-q", cwd=root)
    commit(root, "init")
    out = sh("dvc", "repro", cwd=root, timeout=3600).stdout  # minutes on a busy machine
    assert ran_stages(out) == STAGES, out
    commit(root, "baseline")
    return root


def write_small_params(root: Path, **sections) -> None:
    """root/params.yaml for a project on the fixture digits: the schema's defaults (the notebook's set-up, not
    whatever the developer's params.yaml holds right now, e.g. an experiment's values after `dvc exp run -S`),
    the fixture as the data, a small classifier, quality scoring and sampler fit, then `sections`."""
    (root / "params.yaml").write_text(yaml.safe_dump(Params().model_dump(), sort_keys=False))
    set_params(root, data={"source": "file", "path": str(FIXTURE), "sha256": fixture_digests()},
               classifier={"epochs": 4, "batch_size": 32, "threads": 1},
               quality={"n_samples": 200, "n_reference": 200, "probe_max_iter": 50},
               sampler={"gmm_components": 5, "held_out": 200}, **sections)


def client(root: Path):
    import mlflow

    return mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}")


def runs(root: Path) -> list:
    """Every run in the copy's store, oldest first."""
    if not (root / "mlflow.db").exists():
        return []
    c = client(root)
    found = c.search_runs([e.experiment_id for e in c.search_experiments()], order_by=["attributes.start_time ASC"])
    return sorted(found, key=lambda r: (r.info.start_time, r.info.end_time or 0))


def statuses(root: Path) -> dict[str, str]:
    """run id -> status, read straight from the sqlite file (no MLflow in between)."""
    if not (root / "mlflow.db").exists():
        return {}
    with sqlite3.connect(root / "mlflow.db") as db:
        try:
            return dict(db.execute("select run_uuid, status from runs"))
        except sqlite3.OperationalError:  # MLflow is still creating the new store's tables
            return {}


def snapshot(root: Path, run_id: str, tmp: Path) -> dict:
    """Everything a user sees of a run: params, metrics (with histories), tags, end time, artifact bytes."""
    c = client(root)
    run = c.get_run(run_id)
    folder = Path(c.download_artifacts(run_id, "", str(tmp)))
    files = {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
             for p in sorted(folder.rglob("*")) if p.is_file()}
    histories = {k: [(m.step, m.value, m.timestamp) for m in c.get_metric_history(run_id, k)] for k in run.data.metrics}
    return {"params": run.data.params, "tags": run.data.tags, "histories": histories, "files": files,
            "status": run.info.status, "end_time": run.info.end_time}


def history_numbers(root: Path) -> list[dict[str, str]]:
    with open(root / "metrics/history.csv", newline="") as f:
        return [{k: v for k, v in row.items() if k not in ("epoch_time", "time")} for row in csv.DictReader(f)]


@pytest.fixture(scope="session")
def repo(tmp_path_factory, worker_id) -> Path:
    """The pipeline after one small-data `dvc repro`, committed; read-only (change a `fork`)."""
    from filelock import FileLock

    shared = tmp_path_factory.getbasetemp() if worker_id == "master" else tmp_path_factory.getbasetemp().parent
    root = shared / "pipeline" / "repo"
    with FileLock(str(shared / "pipeline.lock")):
        if not (root / ".built").exists():
            shutil.rmtree(root, ignore_errors=True)
            build_repo(root)
            (root / ".built").write_text("")
    return root


@pytest.fixture
def fork(repo, tmp_path) -> Path:
    """A copy of `repo` (checkout, DVC cache, MLflow store) that a test may change at will."""
    root = tmp_path / "fork"
    shutil.copytree(repo, root, symlinks=True, ignore=shutil.ignore_patterns(".built"))
    return root


def wait_for(predicate, what: str, timeout: float = 120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


@contextlib.contextmanager
def mlflow_ui(root: Path, port: int):
    """`mlflow ui` on 127.0.0.1:port over root's store, as the Makefile's `ui` target starts it (without
    its set-up prerequisite: the tests run inside the venv) but with one worker; yields its address."""
    ui = subprocess.Popen([str(BIN / "mlflow"), "ui", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                           "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}"],
                          cwd=root, env=env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"),  # no job runner: starts in seconds
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while True:
            try:
                urllib.request.urlopen(f"{base}/health", timeout=5)
                break
            except OSError:
                if time.time() > deadline or ui.poll() is not None:
                    pytest.fail("the MLflow UI did not start")
                time.sleep(0.5)
        yield base
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        ui.wait(timeout=60)
