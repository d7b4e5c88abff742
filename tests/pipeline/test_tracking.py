"""The track stage's module against a real MLflow store (sqlite in a temporary folder): what one run
holds, the fingerprint that makes logging idempotent, and how failures end."""

import json
import time

import pytest
import torch

from helpers.tracking import write_result
from mnist_vae import load
from mnist_vae.errors import FileProblem, UserError
from mnist_vae.files import sha256_file
from mnist_vae.ops.team_server import free_port
from mnist_vae.params import Params
from mnist_vae.pipeline import tracking, ui_view
from mnist_vae.vae.model import VAE

# --------------------------------------------------------------------------- a result on disk



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
    history = store.get_metric_history(run_id, "training/train_total")
    assert [(m.step, m.value, m.timestamp) for m in history] == [
        (1, 200.0, 1_700_000_002_500), (2, 150.0, 1_700_000_004_500)]  # each epoch at its own time
    assert run.info.start_time == 1_700_000_000_500  # when training started
    assert run.data.metrics["test/iw_nll"] == 99.25 and run.data.metrics["representation/active_units"] == 2
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
    model = load(f"models:/tiny-vae/{version.version}")
    assert isinstance(model.vae, VAE) and model.vae.encode(torch.rand(3, 784))[0].shape == (3, 2)
    assert model.dequantize == result.params.dequantize.mode
    name = tracking.model_name(result.params)
    assert name == "vae-mlp-bernoulli-z2"
    assert isinstance(load(f"runs:/{run_id}/{name}").vae, VAE)  # the model is in the run's experiment
    info = mlflow.models.get_model_info(f"models:/tiny-vae/{version.version}")
    assert "model_code_path" in info.flavors["python_function"]  # the served pyfunc, from code: nothing pickled
    assert {p.name for p in info.signature.params.params} == {"task", "n", "seed", "temperature", "sampler"}
    assert "dequantize" not in run.data.params  # the model's settings are its artifact, not the run's params


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
    assert linked[("test_nll_iwae", 0)] == 99.25 and linked[("sample_fid", 0)] == 12.5
    assert linked[("training/train_total", 2)] == 150.0 and ("training/train_total", 1) not in linked  # the model's epoch
    assert not any(key.startswith("test/") for key, _ in linked)  # the details stay the run's alone
    assert [m.value for m in store.get_metric_history(run_id, "training/train_total")] == [200.0, 150.0]  # the whole curve
    assert run.data.metrics["test/iw_nll"] == 99.25 and run.data.metrics["sample_fid"] == 12.5


def logged_images(store, run_id) -> dict[tuple[str, int], str]:
    """(key, step) -> artifact path of the full-size PNG of every image the run logged with log_image."""
    out = {}
    for artifact in store.list_artifacts(run_id, "images"):
        name = artifact.path.removeprefix("images/")
        if name.endswith(".png"):
            key, _, step, *_ = name.split("+")
            out[(key.replace("~", "/"), int(step))] = artifact.path
    return out


def test_figures_and_frames_are_images_under_stable_keys_the_frames_at_their_epochs(store, tmp_path):
    import numpy as np
    import PIL.Image

    result = write_result(tmp_path)
    _, run_id, _ = tracking.log_result(result)
    images = logged_images(store, run_id)
    assert set(images) == {("samples/prior", 0), ("reconstructions", 0), *(
        (f"progress/{kind}", epoch) for kind in ("samples", "reconstructions") for epoch in (0, 1, 2))}
    fetched = store.download_artifacts(run_id, images[("samples/prior", 0)], str(tmp_path / "back"))
    with PIL.Image.open(fetched) as logged, PIL.Image.open(tmp_path / "reports/figures/samples.png") as drawn:
        assert np.array_equal(np.asarray(logged), np.asarray(drawn))  # the figure's pixels, not another picture
    assert {a.path for a in store.list_artifacts(run_id, "progress")} >= {"progress/samples_epoch_002.png"}  # files too
    view = store.get_experiment(store.get_run(run_id).info.experiment_id).tags[ui_view.TAG]
    assert set(ui_view.keys_of(view)) == {key for key, _ in images}  # the saved view shows every key


def test_without_frames_no_progress_image_is_logged(store, tmp_path):
    result = write_result(tmp_path)
    for frame in (tmp_path / "reports/progress").glob("*.png"):
        frame.unlink()  # what render writes under progress_every: 0
    _, run_id, _ = tracking.log_result(result)
    assert not any(key.startswith("progress/") for key, _ in logged_images(store, run_id))


def test_outside_a_git_checkout_the_run_says_it_has_no_baseline(store, tmp_path):
    _, run_id, _ = tracking.log_result(write_result(tmp_path))
    run = store.get_run(run_id)
    assert run.info.run_name == "workspace" and "no committed baseline" in run.data.tags[tracking.NOTE]


def test_model_names_tell_models_apart():
    def name(**sections):
        return tracking.model_name(Params(**sections))

    assert name() == "vae-mlp-bernoulli-z20"
    assert name(model={"architecture": "conv", "likelihood": "gaussian", "latent_dim": 2}) == "vae-conv-gaussian-z2"
    assert name(train={"objective": "iwae", "iw_samples": 5}) == "iwae-k5-mlp-bernoulli-z20"
    assert name(train={"beta": 0.5}) == "beta0p5-vae-mlp-bernoulli-z20"  # no '.', which MLflow refuses in a name


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
    with pytest.raises(FileProblem, match="history.csv has no rows with epoch, epoch_time and time"):
        tracking.read_history(path)


def test_a_dataset_another_run_inserted_at_the_same_moment_is_linked_on_a_second_call_and_other_errors_raise():
    import mlflow

    class Client:  # a store whose first log_inputs loses the check-then-insert race (as PostgreSQL words it)
        def __init__(self, error: str):
            self.calls, self.error = 0, error

        def log_inputs(self, run_id, datasets):
            self.calls += 1
            if self.calls == 1:
                raise mlflow.exceptions.MlflowException(self.error)

    raced = Client('BAD_REQUEST: (psycopg2.errors.UniqueViolation) duplicate key value violates unique constraint '
                   '"dataset_pk" DETAIL: Key (experiment_id, name, digest)=(1, mnist-train, 5c18af12) already exists.')
    tracking._log_inputs(mlflow, raced, "run", [])
    assert raced.calls == 2
    other = Client("RESOURCE_DOES_NOT_EXIST: run 'run' not found")
    with pytest.raises(mlflow.exceptions.MlflowException, match="not found"):
        tracking._log_inputs(mlflow, other, "run", [])
    assert other.calls == 1
