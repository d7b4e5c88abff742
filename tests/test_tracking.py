"""Where runs go, and how stages reopen them."""

import json
import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest

from mnist_vae import tracking
from mnist_vae.errors import UserError


def test_queued_experiment_copies_resolve_to_the_repository_root(monkeypatch, tmp_path):
    monkeypatch.setenv("DVC_ROOT", str(tmp_path / "repo" / ".dvc" / "tmp" / "exps" / "tmpab12cd"))
    assert tracking.repo_root() == tmp_path / "repo"
    monkeypatch.setenv("DVC_ROOT", str(tmp_path / "repo"))
    assert tracking.repo_root() == tmp_path / "repo"
    monkeypatch.delenv("DVC_ROOT")
    monkeypatch.chdir(tmp_path)
    assert tracking.repo_root() == tmp_path


def test_tracking_uri_defaults_to_sqlite_at_the_root_and_obeys_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    assert tracking.tracking_uri() == f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking.tracking_uri() == "http://127.0.0.1:5000"


class Recorder:
    def __init__(self):
        self.params, self.tags = {}, {}

    def log_params(self, p):
        self.params.update(p)

    def set_tags(self, t):
        self.tags.update(t)


def test_params_are_logged_once_and_changes_become_override_tags():
    rec = Recorder()
    tracking.log_params_once(rec, {"render.samples_grid": "10"}, {"render.samples_grid": 10, "render.curves": True})
    assert rec.params == {"render.curves": True} and rec.tags == {}
    rec = Recorder()
    tracking.log_params_once(rec, {"render.samples_grid": "10"}, {"render.samples_grid": 8})
    assert rec.params == {} and rec.tags == {"override.render.samples_grid": "8"}


def test_resume_run_needs_a_run_file(tmp_path):
    with pytest.raises(UserError, match="dvc repro train"):
        with tracking.resume_run(tmp_path / "missing.json", {}):
            pass
    bad = tmp_path / "run.json"
    bad.write_text("{}")
    with pytest.raises(UserError, match="not a run file"):
        with tracking.resume_run(bad, {}):
            pass


def test_unknown_run_id_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_file = tmp_path / "run.json"
    run_file.write_text(json.dumps({"run_id": "0" * 32}))
    with pytest.raises(UserError, match="is not in"):
        with tracking.resume_run(run_file, {}):
            pass


@pytest.fixture
def trained_run(tmp_path, monkeypatch):
    """A run in a fresh sqlite store, as train leaves it: (mlflow, run id, run file)."""
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    with mlflow.start_run() as run:
        mlflow.log_param("render.samples_grid", 10)
    run_file = tmp_path / "run.json"
    run_file.write_text(json.dumps({"run_id": run.info.run_id}))
    return mlflow, run.info.run_id, run_file


def test_resume_run_logs_through_its_worker_and_finishes(trained_run):
    mlflow, run_id, run_file = trained_run
    with tracking.resume_run(run_file, {"render.samples_grid": 8, "render.curves": True}) as run:
        run.log_metric("eval.a", 1.5)
        run.log_metrics({"eval.b": 2.0, "eval.c": -3.0})
        run.set_tag("stage", "render")
    got = mlflow.get_run(run_id)
    assert got.info.status == "FINISHED"
    assert got.data.metrics == {"eval.a": 1.5, "eval.b": 2.0, "eval.c": -3.0}
    assert got.data.params == {"render.samples_grid": "10", "render.curves": "True"}
    assert got.data.tags["override.render.samples_grid"] == "8" and got.data.tags["stage"] == "render"
    assert len(mlflow.search_runs(search_all_experiments=True)) == 1  # no stray run from the worker


def test_an_error_inside_resume_run_marks_the_run_failed(trained_run):
    mlflow, run_id, run_file = trained_run
    with pytest.raises(RuntimeError, match="boom"):
        with tracking.resume_run(run_file, {}) as run:
            run.log_metric("eval.a", 1.0)
            raise RuntimeError("boom")
    assert mlflow.get_run(run_id).info.status == "FAILED"


def test_sigterm_to_stage_and_worker_marks_the_run_failed(trained_run):
    mlflow, run_id, run_file = trained_run
    before = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(KeyboardInterrupt):
            with tracking.resume_run(run_file, {}) as run:
                run.log_metric("eval.a", 1.0)  # the worker is up and the run open
                for child in multiprocessing.active_children():
                    os.kill(child.pid, signal.SIGTERM)  # as a group-wide kill would
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)  # the handler raises before this ends
    finally:
        signal.signal(signal.SIGTERM, before)
    assert mlflow.get_run(run_id).info.status == "FAILED"


def test_git_state_reports_commit_and_dirtiness(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert tracking.git_state() == {"git_commit": "unknown", "git_dirty": "unknown"}
    monkeypatch.chdir(Path(__file__).parent)
    state = tracking.git_state()
    assert len(state["git_commit"]) == 40 and state["git_dirty"] in {"true", "false"}
