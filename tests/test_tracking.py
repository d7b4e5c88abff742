"""The track stage's module against a real MLflow store (sqlite in a temporary folder): what one run
holds, the fingerprint that makes logging idempotent, and how failures end."""

import csv
import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from mnist_vae.pipeline import tracking
from mnist_vae.errors import UserError
from mnist_vae.files import save_npz, sha256_file
from mnist_vae.vae.model import VAE, save_checkpoint
from mnist_vae.ops.team_server import free_port
from mnist_vae.params import Params


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


def test_passwords_never_show_in_messages():
    assert tracking.shown_uri("http://ann:s3cret@host:5000/x") == "http://ann:***@host:5000/x"
    assert tracking.shown_uri("sqlite:////tmp/mlflow.db") == "sqlite:////tmp/mlflow.db"


# --------------------------------------------------------------------------- a result on disk

HISTORY = [
    {"epoch": 1, "train_total": 200.0, "train_rec": 190.0, "train_kl": 10.0, "epoch_time": 2.0, "time": 1_700_000_002.5},
    {"epoch": 2, "train_total": 150.0, "train_rec": 138.0, "train_kl": 12.0, "epoch_time": 2.0, "time": 1_700_000_004.5},
]


def write_result(root: Path, params: Params | None = None) -> tracking.Result:
    """The files the pipeline's stages write, small: a tiny model, two epochs, one metric file, the
    headline, a figure, and a training and a test set of a few digits."""
    params = params or Params(model={"hidden_dims": [8], "latent_dim": 2}, tracking={"registered_model": "tiny-vae"})
    torch.manual_seed(0)
    save_checkpoint(root / "models/vae.pt", VAE(params.model), {"device": "cpu", "torch_version": "2.13.0"})
    (root / "metrics").mkdir(parents=True, exist_ok=True)
    with open(root / "metrics/history.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(HISTORY[0]))
        writer.writeheader()
        writer.writerows(HISTORY)
    (root / "metrics/eval.json").write_text(json.dumps(
        {"test": {"nelbo": 101.5, "iw_nll": 99.25}, "likelihood": {"normalised": False, "note": "text"},
         "posterior": {"active_units": 2, "kl_per_dim": [1.0, 2.0]}}))
    (root / "metrics/headline.json").write_text(json.dumps({"test_nll_iwae": 99.25, "sample_fid": 12.5}))
    (root / "reports/figures").mkdir(parents=True, exist_ok=True)
    (root / "reports/figures/samples.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    digits = np.random.default_rng(0)
    for split, n in (("train", 12), ("test", 5)):
        save_npz(root / f"data/processed/{split}.npz", {"x": digits.random((n, 784), dtype=np.float32),
                                                        "y": digits.integers(0, 10, n).astype(np.uint8)})
    return tracking.Result(
        params=params, history=root / "metrics/history.csv", metrics={"eval": root / "metrics/eval.json"},
        artifacts={root / "metrics/eval.json": "", root / "reports/figures": "figures",
                   root / "models/vae.pt": "checkpoint"},
        checkpoint=root / "models/vae.pt", headline=root / "metrics/headline.json",
        datasets={"training": root / "data/processed/train.npz", "testing": root / "data/processed/test.npz"},
    )


@pytest.fixture
def root(tmp_path, monkeypatch):
    """tmp_path as the repository root as far as tracking is concerned (its store: tmp_path/mlflow.db)."""
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.chdir(tmp_path)  # where MLflow puts the artifacts of an experiment made without a location
    yield tmp_path
    mlflow.set_tracking_uri(None)


@pytest.fixture
def store(root):
    """A fresh embedded store under tmp_path."""
    import mlflow

    return mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}")


def all_runs(client):
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


def test_one_run_holds_params_histories_metrics_artifacts_tags_and_model(store, tmp_path):
    import mlflow

    result = write_result(tmp_path)
    experiment_id, run_id, created = tracking.log_result(result)
    assert created
    run = store.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["model.latent_dim"] == "2" and run.data.params["train.lr"] == "0.001"
    assert len(run.data.params) == len(tracking.flatten(result.params))  # every param
    history = store.get_metric_history(run_id, "train_total")
    assert [(m.step, m.value, m.timestamp) for m in history] == [
        (1, 200.0, 1_700_000_002_500), (2, 150.0, 1_700_000_004_500)]  # each epoch at its own time
    assert run.info.start_time == 1_700_000_000_500  # when training started
    assert run.data.metrics["eval.test.iw_nll"] == 99.25 and run.data.metrics["eval.posterior.active_units"] == 2
    assert not any("note" in k or "kl_per_dim" in k or "normalised" in k for k in run.data.metrics)
    assert run.data.tags[tracking.FINGERPRINT] == result.fingerprint()
    assert run.data.tags["device"] == "cpu" and run.data.tags["torch_version"] == "2.13.0"
    assert run.data.tags["mlflow.source.name"] == "dvc.yaml" and run.data.tags["mlflow.source.type"] == "LOCAL"
    assert "git_commit" not in run.data.tags  # MLflow's own tags (mlflow.source.git.*) in a git checkout
    experiment = store.get_experiment(experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    names = {a.path for a in store.list_artifacts(run_id)} | {a.path for a in store.list_artifacts(run_id, "figures")}
    assert {"eval.json", "figures/samples.png", "checkpoint"} <= names
    assert (tmp_path / "mlartifacts").is_dir()  # artifacts beside the embedded store
    [version] = store.search_model_versions("name = 'tiny-vae'")
    assert version.run_id == run_id
    model = mlflow.pytorch.load_model(f"models:/tiny-vae/{version.version}")
    assert isinstance(model, VAE) and model.encode(torch.rand(3, 784))[0].shape == (3, 2)
    assert model.dequantize == result.params.dequantize.mode
    name = tracking.model_name(result.params)
    assert name == "vae-mlp-bernoulli-z2"
    assert isinstance(mlflow.pytorch.load_model(f"runs:/{run_id}/{name}"), VAE)  # the model is in the run's experiment
    info = mlflow.models.get_model_info(f"models:/tiny-vae/{version.version}")
    assert info.flavors["python_function"]["loader_module"] == "mnist_vae.api.serving"  # the served pyfunc
    assert {p.name for p in info.signature.params.params} == {"task", "n", "seed", "temperature", "sampler"}


def test_the_run_page_shows_its_datasets_and_a_named_model_with_the_curves_and_the_headline(store, tmp_path):
    result = write_result(tmp_path)
    experiment_id, run_id, _ = tracking.log_result(result)
    run = store.get_run(run_id)
    inputs = {i.dataset.name: i for i in run.inputs.dataset_inputs}
    assert sorted(inputs) == ["mnist-test", "mnist-train"]
    for name, context, path in (("mnist-train", "training", "data/processed/train.npz"),
                                ("mnist-test", "testing", "data/processed/test.npz")):
        dataset = inputs[name].dataset
        assert dataset.digest == sha256_file(tmp_path / path)[:16]
        assert (dataset.source_type, json.loads(dataset.source)) == ("local", {"uri": path})
        assert {t.key: t.value for t in inputs[name].tags} == {"mlflow.data.context": context}
    assert json.loads(inputs["mnist-test"].dataset.profile)["features_shape"] == [5, 784]

    [model] = store.search_logged_models([experiment_id])
    assert model.name == "vae-mlp-bernoulli-z2" and model.source_run_id == run_id
    assert str(model.status) == "READY" and model.model_type == "VAE"
    assert model.params["model.latent_dim"] == "2" and "tracking.experiment" not in model.params
    assert [(o.model_id, o.step) for o in run.outputs.model_outputs] == [(model.model_id, 2)]  # the last epoch's
    linked = {(m.key, m.step): m.value for m in model.metrics}
    assert linked[("test_nll_iwae", 0)] == 99.25 and linked[("sample_fid", 0)] == 12.5  # the headline
    assert linked[("train_total", 2)] == 150.0 and ("train_total", 1) not in linked  # the curve at the model's epoch
    assert not any(key.startswith("eval.") for key, _ in linked)  # the details stay the run's alone
    assert [m.value for m in store.get_metric_history(run_id, "train_total")] == [200.0, 150.0]  # the whole curve
    assert run.data.metrics["eval.test.iw_nll"] == 99.25 and run.data.metrics["sample_fid"] == 12.5


def test_model_names_tell_models_apart():
    def name(**sections):
        return tracking.model_name(Params(**sections))

    assert name() == "vae-mlp-bernoulli-z20"
    assert name(model={"architecture": "conv", "likelihood": "gaussian", "latent_dim": 2}) == "vae-conv-gaussian-z2"
    assert name(train={"objective": "iwae", "iw_samples": 5}) == "iwae-k5-mlp-bernoulli-z20"
    assert name(train={"beta": 0.5}) == "beta0p5-vae-mlp-bernoulli-z20"  # no '.', which MLflow refuses in a name


def test_every_ui_address_opens_the_model_training_view(root, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_UI_PORT", "5123")
    base = "http://127.0.0.1:5123/#/"
    assert tracking.ui_address() == base + "?workflowType=machine_learning"
    assert tracking.ui_address("7") == base + "experiments/7/runs?workflowType=machine_learning"
    assert tracking.ui_address("7", tab="models") == base + "experiments/7/models?workflowType=machine_learning"
    assert tracking.ui_address("7", "abc") == base + "experiments/7/runs/abc?workflowType=machine_learning"
    assert tracking.experiment_address("mnist-vae") == tracking.ui_address()  # no store yet: the home page
    assert not (tmp_path / "mlflow.db").exists()  # and none was made to find out
    experiment_id, _, _ = tracking.log_result(write_result(tmp_path))
    assert tracking.experiment_address("mnist-vae") == tracking.ui_address(experiment_id)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://ann:s3cret@team:5000/")
    assert tracking.ui_address("7") == "http://ann:***@team:5000/#/experiments/7/runs?workflowType=machine_learning"


def test_the_same_result_is_logged_once_and_a_changed_one_is_a_new_run(store, tmp_path):
    result = write_result(tmp_path)
    _, first, created = tracking.log_result(result)
    before = store.get_run(first)
    _, again, created_again = tracking.log_result(result)
    assert created and not created_again and again == first
    after = store.get_run(first)
    assert (after.info.end_time, after.data.metrics, after.data.params) == (
        before.info.end_time, before.data.metrics, before.data.params)  # a finished run is never changed
    (tmp_path / "metrics/eval.json").write_text(json.dumps({"test": {"nelbo": 100.0}}))
    _, second, created = tracking.log_result(result)
    assert created and second != first and len(all_runs(store)) == 2


def test_the_fingerprint_follows_params_and_bytes(tmp_path):
    result = write_result(tmp_path)
    fingerprint = result.fingerprint()
    assert write_result(tmp_path).fingerprint() == fingerprint  # the same files and params
    changed = tracking.Result(**{**result.__dict__, "params": Params(
        model={"hidden_dims": [8], "latent_dim": 2}, tracking={"registered_model": "tiny-vae"}, seed=1)})
    assert changed.fingerprint() != fingerprint
    figure = tmp_path / "reports/figures/samples.png"
    figure.write_bytes(figure.read_bytes() + b"\0")
    assert result.fingerprint() != fingerprint
    figure.unlink()
    (tmp_path / "metrics/eval.json").unlink()
    with pytest.raises(UserError, match="eval.json missing"):
        result.fingerprint()


def test_an_interrupt_while_logging_ends_the_run_failed_and_the_next_track_starts_afresh(store, tmp_path, monkeypatch):
    result = write_result(tmp_path)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt("signal 15")

    monkeypatch.setattr(tracking, "log_model", interrupted)
    with pytest.raises(KeyboardInterrupt):
        tracking.log_result(result)
    [failed] = all_runs(store)
    assert failed.info.status == "FAILED"
    [model] = store.search_logged_models([failed.info.experiment_id])
    assert str(model.status) == "FAILED"  # the model it had begun, too
    monkeypatch.undo()
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    _, run_id, created = tracking.log_result(result)
    assert created and run_id != failed.info.run_id  # a failed run is never reused
    assert store.get_run(failed.info.run_id).info.status == "FAILED"


def test_a_run_left_running_by_a_killed_process_is_neither_reused_nor_touched(store, tmp_path):
    result = write_result(tmp_path)
    experiment_id = tracking.get_or_create_experiment(store, result.params.tracking.experiment, None)
    killed = store.create_run(experiment_id, tags={tracking.FINGERPRINT: result.fingerprint()})
    _, run_id, created = tracking.log_result(result)
    assert created and run_id != killed.info.run_id
    assert store.get_run(killed.info.run_id).info.status == "RUNNING"


def test_an_existing_experiment_gets_the_training_view_tag(store):
    experiment_id = store.create_experiment("made-by-hand")
    assert tracking.get_or_create_experiment(store, "made-by-hand", None) == experiment_id
    assert store.get_experiment(experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"


def test_a_deleted_experiment_is_a_clear_error(store):
    store.delete_experiment(store.create_experiment("gone"))
    with pytest.raises(UserError, match="'gone' is deleted"):
        tracking.get_or_create_experiment(store, "gone", None)


def test_an_unreachable_server_fails_fast_with_one_line_naming_it(tmp_path, monkeypatch):
    port = free_port()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://ann:s3cret@127.0.0.1:{port}")
    result = write_result(tmp_path)
    start = time.monotonic()
    with pytest.raises(UserError) as err:
        tracking.log_result(result)
    message = str(err.value)
    assert f"MLflow store http://ann:***@127.0.0.1:{port} failed" in message and "\n" not in message
    assert "s3cret" not in message and "dvc repro track" in message
    assert time.monotonic() - start < 30


def test_an_incompatible_store_is_a_clear_error(tmp_path, monkeypatch):
    (tmp_path / "mlflow.db").write_bytes(b"this is not a database" * 100)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    with pytest.raises(UserError, match="MLflow store sqlite:///.*mlflow.db failed"):
        tracking.log_result(write_result(tmp_path))


def test_a_history_without_timestamps_is_refused(tmp_path):
    path = tmp_path / "history.csv"
    path.write_text("epoch,train_total\n1,100.0\n")
    with pytest.raises(UserError, match="rerun `dvc repro -f train`"):
        tracking.read_history(path)
