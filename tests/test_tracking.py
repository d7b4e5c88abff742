"""Where runs go, and how stages reopen them."""

import json
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


def test_git_state_reports_commit_and_dirtiness(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert tracking.git_state() == {"git_commit": "unknown", "git_dirty": "unknown"}
    monkeypatch.chdir(Path(__file__).parent)
    state = tracking.git_state()
    assert len(state["git_commit"]) == 40 and state["git_dirty"] in {"true", "false"}
