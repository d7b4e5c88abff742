"""MLflow as a read-only view of the pipeline's outputs: one complete, immutable run per result.

Only the `track` stage uses this module. The other stages write files; `track` logs what they wrote
(every param, the training and test sets as the run's dataset inputs, the per-epoch history as metric
histories with the epochs' own timestamps, the evaluation metrics, the figures, the checkpoint and the
model) as one run, tagged with MLflow's source tags and a *fingerprint*: a digest of the params and of
the bytes of every file the run is logged from. If the store already holds a FINISHED run with that
fingerprint, nothing is logged and that run is named. The logged model is named for what it is
(:func:`model_name`) and logged at the last epoch's step; the headline numbers (metrics/headline.json)
and the curves' values at that step are linked to it (MLflow's model metrics), so the experiment's Models
tab compares models by them and the run page names the model beside each.
A run is never changed after it ends; a different result is a different run, and a lost store is
rebuilt from the files with `dvc repro -s -f track`.

The store is ``sqlite:///<repo>/mlflow.db`` with artifacts in ``<repo>/mlartifacts`` unless
``MLFLOW_TRACKING_URI`` names another. ``<repo>`` is the repository's root also for experiments that
DVC queues and runs in copies under ``.dvc/tmp/exps/``, so every run lands in one store.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mnist_vae.errors import FileProblem
from mnist_vae.files import load_history, load_json, load_npz, sha256_file
from mnist_vae.params import Params, flatten, flatten_tree
from mnist_vae.pipeline import run_page, ui_view
from mnist_vae.pipeline.mlflow_store import (
    artifact_location,
    connect,
    get_or_create_experiment,
    interrupts_deferred,
    store_creation_lock,
    store_errors,
    tracking_uri,
)
from mnist_vae.vae import samplers
from mnist_vae.vae.samplers import choice

log = logging.getLogger("mnist_vae.pipeline.tracking")
FINGERPRINT = "fingerprint"  # the run tag that names the result a run was logged from
NOTE = "mlflow.note.content"  # the run tag MLflow's UI shows as the run's description
# a search worker (mnist-vae search run) names its study and trial to the track stage it runs: the run's tags
SEARCH_ENV = {"MNIST_VAE_SEARCH_STUDY": "search_study", "MNIST_VAE_SEARCH_TRIAL": "search_trial"}
DIGEST_CHARS = 16  # a dataset's digest in MLflow: this many hex digits of its file's SHA-256
MODEL_SECTIONS = ("seed", "dequantize", "model", "train")  # the params the logged model carries


@dataclass
class Result:
    """One pipeline result: the params and the files a run is logged from."""

    params: Params
    history: Path                 # per-epoch rows: metric histories (step = epoch, timestamp = the epoch's end)
    metrics: dict[str, Path]      # prefix -> JSON file whose numbers become metrics `<prefix>.<dotted.key>`
    artifacts: dict[Path, str]    # file or folder -> artifact path in the run ("" = the run's root)
    checkpoint: Path              # the trained model (models/vae.pt)
    headline: Path | None = None  # {name: number}: metrics `<name>`, linked to the logged model
    datasets: dict[str, Path] = field(default_factory=dict)  # context (training, testing) -> .npz with x, y
    images: list[Path] = field(default_factory=list)  # folders whose PNG files are also logged as MLflow images
    params_file: Path | None = None  # params.yaml as written: the run's name and description compare it with git's

    def files(self) -> list[Path]:
        """Every file the run is logged from, folders expanded, in a fixed order."""
        paths = {self.history, self.checkpoint, *self.metrics.values(), *self.datasets.values()}
        paths.update([self.headline] if self.headline else [])
        for path in self.artifacts:
            paths.update(p for p in Path(path).rglob("*") if p.is_file()) if Path(path).is_dir() else paths.add(path)
        return sorted(paths, key=str)

    def fingerprint(self) -> str:
        """SHA-256 of the params and of the bytes of every file the run is logged from."""
        missing = [str(p) for p in self.files() if not p.is_file()]
        if missing:
            raise FileProblem(missing[0], "missing", f"{', '.join(missing)} missing: the pipeline's outputs are not all there")
        content = {"params": flatten(self.params), "files": {str(p): sha256_file(p) for p in self.files()}}
        return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()


def read_history(path: Path) -> list[dict[str, float]]:
    rows = load_history(path)
    if not rows or not {"epoch", "epoch_time", "time"} <= rows[0].keys():
        raise FileProblem(path, "unreadable", f"{path} has no rows with epoch, epoch_time and time")
    return rows


def log_result(result: Result) -> tuple[str, str, bool]:
    """Log `result` as one FINISHED run unless the store already has it.

    Returns (experiment id, run id, whether a run was created). A run this starts and cannot finish
    (an error, Ctrl-C, SIGTERM) ends FAILED; a store that cannot be reached or used raises UserError."""
    fingerprint = result.fingerprint()
    history = read_history(result.history)
    uri = tracking_uri()
    mlflow = connect(uri)
    with store_errors(uri):
        with store_creation_lock(uri):  # queued workers may create an embedded store at the same moment
            client = mlflow.MlflowClient(uri)
            experiment_id = get_or_create_experiment(client, result.params.tracking.experiment, artifact_location(uri))
        found = client.search_runs(
            [experiment_id], f"tags.{FINGERPRINT} = '{fingerprint}' and attributes.status = 'FINISHED'",
            max_results=1)
        if found:
            return experiment_id, found[0].info.run_id, False
    writer = RunWriter(mlflow, client, uri, result, history)
    run_id = writer.write(experiment_id, fingerprint)
    keep_view(client, experiment_id, result)
    return experiment_id, run_id, True


def keep_view(client, experiment_id: str, result: Result) -> None:
    """The experiment's view of the runs' digits (ui_view.py) shows this result's images too; a store that
    refuses (a team member who may not edit the experiment) only costs the view, said in one line."""
    from mlflow.exceptions import MlflowException

    try:
        ui_view.keep(client, experiment_id, [key for _, key, _ in _images(result)])
    except MlflowException as exc:
        log.warning("track: the experiment's view '%s' was not saved: %s", ui_view.NAME, " ".join(str(exc).split())[:200])


class RunWriter:
    """Writes one result as a new run, one store call at a time; if any fails (or Ctrl-C, SIGTERM), the run
    ends FAILED, and so does its logged model if it was not complete."""

    def __init__(self, mlflow, client, uri: str, result: Result, history: list[dict[str, float]]):
        self.mlflow, self.client, self.uri, self.result, self.history = mlflow, client, uri, result, history
        self.run_id: str | None = None
        self.model_id: str | None = None  # the logged model: made (empty) first, so that the metrics can link to it

    def write(self, experiment_id: str, fingerprint: str) -> str:
        started = self.history[0]["time"] - self.history[0]["epoch_time"]  # the run starts when its training did
        name, note = _name_and_note(self.result)
        try:
            with store_errors(self.uri), interrupts_deferred(self.uri):
                self.run_id = self.client.create_run(experiment_id, start_time=int(1000 * started),
                                                     tags={**_tags(self.result, fingerprint), NOTE: note},
                                                     run_name=name).info.run_id
            for step in self.steps(experiment_id):
                with store_errors(self.uri), interrupts_deferred(self.uri):
                    step()
        except BaseException:
            self.fail()
            raise
        return self.run_id

    def steps(self, experiment_id: str) -> list:
        """The store calls after the run's creation, in order: the model before any metric (MLflow links a
        run's step-0 metrics to a model logged after them), the artifacts, then the run's end."""
        result, client, mlflow = self.result, self.client, self.mlflow
        datasets = [_dataset(mlflow, path, context) for context, path in result.datasets.items()]
        steps = [lambda: _log_inputs(mlflow, client, self.run_id, datasets)] if datasets else []
        if result.params.tracking.log_model:
            steps += [lambda: self.create_model(experiment_id), self.log_model]
        steps.append(lambda: client.log_batch(
            self.run_id, metrics=_metrics(mlflow, result, self.history, self.model_id),
            params=[mlflow.entities.Param(k, str(v)) for k, v in flatten(result.params).items()]))
        for path, dest in result.artifacts.items():
            upload = client.log_artifacts if Path(path).is_dir() else client.log_artifact
            steps.append(lambda upload=upload, path=path, dest=dest: upload(self.run_id, str(path), dest or None))
        for path, key, step in _images(result):
            steps.append(lambda path=path, key=key, step=step: _log_image(client, self.run_id, path, key, step))
        steps.append(lambda: client.set_terminated(self.run_id, "FINISHED"))
        return steps

    def create_model(self, experiment_id: str) -> None:
        params = {k: str(v) for k, v in flatten(self.result.params, MODEL_SECTIONS).items()}
        self.model_id = self.client.create_logged_model(experiment_id, name=model_name(self.result.params),
                                                        source_run_id=self.run_id, model_type="VAE",
                                                        params=params).model_id

    def log_model(self) -> None:
        p = self.result.params
        log_model(self.run_id, self.result.checkpoint, p.tracking.registered_model, p.dequantize.mode,
                  model_name(p), self.model_id, int(self.history[-1]["epoch"]))

    def fail(self) -> None:
        from mlflow.entities import LoggedModelStatus

        if self.run_id is None:
            return
        with contextlib.suppress(Exception), interrupts_deferred(self.uri):
            if self.model_id is not None and self.client.get_logged_model(self.model_id).status != LoggedModelStatus.READY:
                self.client.finalize_logged_model(self.model_id, "FAILED")
            self.client.set_terminated(self.run_id, "FAILED")
            log.warning("run %s ended FAILED; the next track logs the result afresh", self.run_id)


def run_line(run_id: str, created: bool) -> str:
    """What track says about its run (for a person)."""
    return f"track: {'logged run' if created else 'this result is already run'} {run_id}"


def search_run(study: str, trial: int) -> str | None:
    """The id of the FINISHED run that `track` logged for a search's trial (found by its search tags), or None
    when the trial made none (its result was in the store already)."""
    uri = tracking_uri()
    mlflow = connect(uri)
    tags = dict(zip(SEARCH_ENV.values(), (study, str(trial))))
    query = " and ".join([*(f"tags.{k} = '{v}'" for k, v in tags.items()), "attributes.status = 'FINISHED'"])
    with store_errors(uri):
        client = mlflow.MlflowClient(uri)
        found = client.search_runs([e.experiment_id for e in client.search_experiments()], query, max_results=1)
    return found[0].info.run_id if found else None


def model_name(params: Params) -> str:
    """The logged model's name, from what tells models apart: objective, architecture, likelihood,
    latent size (e.g. vae-mlp-bernoulli-z20, iwae-k5-conv-gaussian-z2)."""
    t, m = params.train, params.model
    objective = f"iwae-k{t.iw_samples}" if t.objective == "iwae" else ("vae" if t.beta == 1 else f"beta{t.beta:g}-vae")
    return f"{objective}-{m.architecture}-{m.likelihood}-z{m.latent_dim}".replace(".", "p")


def log_model(run_id: str, checkpoint: Path, registered_name: str, dequantize: str, name: str,
              model_id: str | None = None, step: int | None = None) -> None:
    """Log the VAE with api/serving.py (its code and tensors, nothing pickled) and register it as a new version
    of `registered_name`; its pyfunc, with a signature and an input example, answers `mlflow models serve`.
    The samplers fitted to the checkpoint (models/sampler.pt beside it, when there is one; refused if fitted
    to another checkpoint) and the choice of the best of them (models/best_sampler.json, refused if made for
    other files) go inside the logged model, so it samples as the checkpoint does.
    `model_id`: the LoggedModel (made by the caller) that receives it, or a new one in the run's
    experiment when None; `name`: the model's name; `step`: the epoch it is from."""
    from mnist_vae.api import serving

    fitted, best = samplers.beside(checkpoint), choice.beside(checkpoint)
    if fitted.is_file():  # refused here, in one line, if they are not this checkpoint's
        names = samplers.available(samplers.load(fitted, checkpoint))
        if best.is_file():
            choice.load(best, checkpoint, fitted, names)
    serving.log(run_id, checkpoint, fitted if fitted.is_file() else None, dequantize, name,
                registered_model_name=registered_name, model_id=model_id, step=step or 0,
                choice_file=best if best.is_file() else None)


def _name_and_note(result: Result) -> tuple[str, str]:
    """The run's name and description (run_page.py): what tells this result apart from the committed baseline."""
    import yaml

    raw = yaml.safe_load(result.params_file.read_text()) if result.params_file else result.params.model_dump()
    headline = load_json(result.headline) if result.headline else {}
    base = run_page.baseline(Path(os.environ.get("DVC_ROOT") or "."), raw or {}, headline)
    return run_page.run_name(os.environ.get("DVC_EXP_NAME"), base), run_page.description(model_name(result.params), base)


def _log_image(client, run_id: str, path: Path, key: str, step: int) -> None:
    import PIL.Image

    with PIL.Image.open(path) as image:
        client.log_image(run_id, image.copy(), key=key, step=step)


def _tags(result: Result, fingerprint: str) -> dict[str, str]:
    from mnist_vae.vae.model import checkpoint_provenance

    tags = {FINGERPRINT: fingerprint, **_source_tags(),
            **{k: str(v) for k, v in checkpoint_provenance(result.checkpoint).items()}}
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc_exp_name"] = os.environ["DVC_EXP_NAME"]
    tags.update({tag: os.environ[var] for var, tag in SEARCH_ENV.items() if os.environ.get(var)})
    return tags


def _metrics(mlflow, result: Result, history: list[dict[str, float]], model_id: str | None) -> list[Any]:
    """The headline (under its own names: the UI's "Model metrics" section), the per-epoch curves (training/<column>) and every number of the
    metric files (in run_page's sections; the training's last row is the curves' last values). The headline
    and the curves' last values are the model's (`model_id`, if any): MLflow's UI shows a model's first value
    of each metric, and the model is the last epoch's; the headline comes first, as the Models tab's first
    columns."""
    Metric = mlflow.entities.Metric
    now = int(1000 * time.time())
    headline = _numbers(load_json(result.headline)) if result.headline else {}
    out = [Metric(key, float(value), now, 0, model_id=model_id) for key, value in headline.items()]
    last = history[-1]
    out += [Metric(f"{run_page.CURVES}/{key}", value, int(1000 * row["time"]), int(row["epoch"]),
                   model_id=model_id if row is last else None)
            for row in history for key, value in row.items() if key not in ("epoch", "time")]
    for prefix, path in result.metrics.items():
        out += [Metric(run_page.metric_name(prefix, key), float(value), now, 0)
                for key, value in _numbers(load_json(path)).items() if not (prefix == "train" and key in last)]
    return out


def _numbers(tree: dict) -> dict[str, float]:
    """The numbers of a JSON tree under dotted keys; lists and notes stay in the file."""
    return {key: value for key, value in flatten_tree(tree).items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)}


def _images(result: Result) -> list[tuple[Path, str, int]]:
    """(file, key, step) of every PNG in the image folders: a frame at its epoch; a figure (the trained model's)
    at step 0, where the UI's image grid opens, so runs of any number of epochs sit side by side."""
    out = []
    for folder in result.images:
        for path in sorted(Path(folder).glob("*.png")):
            key, step = run_page.image_key(path)
            out.append((path, key, 0 if step is None else step))
    return out


def _log_inputs(mlflow, client, run_id: str, datasets: list) -> None:
    """The run's datasets. MLflow's store adds a dataset it has not seen by a check, then an insert: two clones
    tracking the same data into one experiment at one moment make one insert fail on the dataset's key (seen on
    a team server's PostgreSQL); the other's dataset then exists, and a second call links it (nothing of the
    failed call was committed)."""
    try:
        client.log_inputs(run_id, datasets=datasets)
    except mlflow.exceptions.MlflowException as exc:
        if not any(key in str(exc) for key in ("dataset_pk", "UNIQUE constraint failed: datasets")):
            raise
        client.log_inputs(run_id, datasets=datasets)


def _dataset(mlflow, path: Path, context: str):
    """One of the run's dataset inputs: the arrays of `path` (x, y) named mnist-<context's split>, with
    the file's digest and its path in the repository (made by DVC's dequantize stage) as source."""
    import mlflow.data
    from mlflow.data.dataset_source_registry import get_dataset_source_from_json

    arrays = load_npz(path, ("x", "y"))
    split = {"training": "train", "testing": "test"}.get(context, context)
    source = get_dataset_source_from_json(json.dumps({"uri": _repo_path(path)}), "local")
    dataset = mlflow.data.from_numpy(arrays["x"], targets=arrays["y"], name=f"mnist-{split}", source=source,
                                     digest=sha256_file(path)[:DIGEST_CHARS])
    return mlflow.entities.DatasetInput(dataset._to_mlflow_entity(),
                                        [mlflow.entities.InputTag("mlflow.data.context", context)])


def _repo_path(path: Path) -> str:
    """`path` relative to the repository (or the queued experiment's copy) it is in."""
    here = Path(os.environ.get("DVC_ROOT") or os.getcwd()).resolve()
    path = Path(path).resolve()
    return str(path.relative_to(here)) if path.is_relative_to(here) else str(path)


def _source_tags() -> dict[str, str]:
    """MLflow's standard source tags (the UI's Source, User and commit): the source is the pipeline,
    dvc.yaml, at the repository's commit, dirty if tracked files differ from it."""
    from mlflow.utils import mlflow_tags as names
    from mlflow.utils.git_utils import _strip_credentials_from_url

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return ""

    tags = {names.MLFLOW_SOURCE_NAME: "dvc.yaml", names.MLFLOW_SOURCE_TYPE: "LOCAL",
            names.MLFLOW_USER: _user()}
    commit = git("rev-parse", "HEAD")
    if commit:
        tags[names.MLFLOW_GIT_COMMIT] = commit
        tags[names.MLFLOW_GIT_DIRTY] = str(bool(git("status", "--porcelain", "--untracked-files=no"))).lower()
        branch = git("rev-parse", "--abbrev-ref", "HEAD")
        if branch and branch != "HEAD":
            tags[names.MLFLOW_GIT_BRANCH] = branch
        remote = git("remote", "get-url", "origin")
        if remote:
            tags[names.MLFLOW_GIT_REPO_URL] = _strip_credentials_from_url(remote)
    return tags


def _user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


