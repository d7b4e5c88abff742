"""pipeline/mlflow_store.py: where the store is, passwords kept out of messages, the experiment, and the UI's
addresses in its Model training view."""

import pytest

from helpers.tracking import write_result
from mnist_vae.errors import UserError
from mnist_vae.pipeline import mlflow_store, tracking


def test_queued_experiment_copies_resolve_to_the_repository_root(monkeypatch, tmp_path):
    monkeypatch.setenv("DVC_ROOT", str(tmp_path / "repo" / ".dvc" / "tmp" / "exps" / "tmpab12cd"))
    assert mlflow_store.repo_root() == tmp_path / "repo"
    monkeypatch.setenv("DVC_ROOT", str(tmp_path / "repo"))
    assert mlflow_store.repo_root() == tmp_path / "repo"
    monkeypatch.delenv("DVC_ROOT")
    monkeypatch.chdir(tmp_path)
    assert mlflow_store.repo_root() == tmp_path


def test_tracking_uri_defaults_to_sqlite_at_the_root_and_obeys_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    assert mlflow_store.tracking_uri() == f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert mlflow_store.tracking_uri() == "http://127.0.0.1:5000"


def test_passwords_never_show_in_messages():
    assert mlflow_store.shown_uri("http://ann:s3cret@host:5000/x") == "http://ann:***@host:5000/x"
    assert mlflow_store.shown_uri("sqlite:////tmp/mlflow.db") == "sqlite:////tmp/mlflow.db"


def test_every_ui_address_opens_the_model_training_view(root, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_UI_PORT", "5123")
    base = "http://127.0.0.1:5123/#/"
    assert mlflow_store.ui_address() == base + "?workflowType=machine_learning"
    assert mlflow_store.ui_address("7") == base + "experiments/7/runs?workflowType=machine_learning"
    assert mlflow_store.ui_address("7", tab="models") == base + "experiments/7/models?workflowType=machine_learning"
    assert mlflow_store.ui_address("7", "abc") == base + "experiments/7/runs/abc?workflowType=machine_learning"
    assert mlflow_store.experiment_address("mnist-vae") == mlflow_store.ui_address()  # no store yet: the home page
    assert not (tmp_path / "mlflow.db").exists()  # and none was made to find out
    experiment_id, _, _ = tracking.log_result(write_result(tmp_path))
    assert mlflow_store.experiment_address("mnist-vae") == mlflow_store.ui_address(experiment_id)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://ann:s3cret@team:5000/")
    assert mlflow_store.ui_address("7") == "http://ann:***@team:5000/#/experiments/7/runs?workflowType=machine_learning"


def test_an_existing_experiment_gets_the_training_view_tag(store):
    experiment_id = store.create_experiment("made-by-hand")
    assert mlflow_store.get_or_create_experiment(store, "made-by-hand", None) == experiment_id
    assert store.get_experiment(experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"


def test_a_tag_another_clone_set_at_the_same_moment_is_not_an_error(store, monkeypatch):
    from mlflow.exceptions import MlflowException

    experiment_id = store.create_experiment("shared")
    set_tag = store.set_experiment_tag

    def racing(eid, key, value):  # the other clone's insert lands first; ours is the duplicate
        set_tag(eid, key, value)
        raise MlflowException("duplicate key value violates unique constraint \"experiment_tag_pk\"")

    monkeypatch.setattr(store, "set_experiment_tag", racing)
    assert mlflow_store.get_or_create_experiment(store, "shared", None) == experiment_id

    other = store.create_experiment("other")
    monkeypatch.setattr(store, "set_experiment_tag", lambda *a: (_ for _ in ()).throw(MlflowException("server down")))
    with pytest.raises(MlflowException, match="server down"):  # a failure that left no tag is still one
        mlflow_store.get_or_create_experiment(store, "other", None)
    assert "mlflow.experimentKind" not in store.get_experiment(other).tags


def test_a_deleted_experiment_is_a_clear_error(store):
    store.delete_experiment(store.create_experiment("gone"))
    with pytest.raises(UserError, match="'gone' is deleted"):
        mlflow_store.get_or_create_experiment(store, "gone", None)


