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
import re
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit, urlunsplit

from mnist_vae.errors import UserError
from mnist_vae.io import load_history, sha256_file
from mnist_vae.params import Params, flatten, flatten_tree

log = logging.getLogger("mnist_vae.tracking")
EXPS_TMP = os.sep + os.path.join(".dvc", "tmp", "exps") + os.sep
FINGERPRINT = "fingerprint"  # the run tag that names the result a run was logged from
# what the experiment is for (MLflow's UI reads it to suggest its view)
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
# a search worker (mnist-vae search run) names its study and trial to the track stage it runs: the run's tags
SEARCH_ENV = {"MNIST_VAE_SEARCH_STUDY": "search_study", "MNIST_VAE_SEARCH_TRIAL": "search_trial"}
# the MLflow UI (3.x) keeps its GenAI / Model training switch in the browser, GenAI by default; this query
# on an address opens the Model training view whatever the browser holds
TRAINING_VIEW = "workflowType=machine_learning"
DIGEST_CHARS = 16  # a dataset's digest in MLflow: this many hex digits of its file's SHA-256
# an unreachable server fails in seconds, not after MLflow's default minutes of retries
MODEL_SECTIONS = ("seed", "dequantize", "model", "train")  # the params the logged model carries
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}


def repo_root() -> Path:
    """The project root: DVC_ROOT (or the working directory), lifted out of a queued experiment's copy."""
    root = os.path.abspath(os.environ.get("DVC_ROOT") or os.getcwd())
    if EXPS_TMP in root + os.sep:
        root = (root + os.sep).split(EXPS_TMP)[0]
    return Path(root)


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{repo_root() / 'mlflow.db'}"


def shown_uri(uri: str) -> str:
    """The URI without a password, for messages."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{parts.hostname}"
                                     + (f":{parts.port}" if parts.port else "")))


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
            raise UserError(f"{', '.join(missing)} missing; run `dvc repro` to make the pipeline's outputs first")
        content = {"params": flatten(self.params), "files": {str(p): sha256_file(p) for p in self.files()}}
        return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()


def read_history(path: Path) -> list[dict[str, float]]:
    rows = load_history(path)
    if not rows or not {"epoch", "epoch_time", "time"} <= rows[0].keys():
        raise UserError(f"{path} has no rows with epoch, epoch_time and time; rerun `dvc repro -f train`")
    return rows


def log_result(result: Result) -> tuple[str, str, bool]:
    """Log `result` as one FINISHED run unless the store already has it.

    Returns (experiment id, run id, whether a run was created). A run this starts and cannot finish
    (an error, Ctrl-C, SIGTERM) ends FAILED; a store that cannot be reached or used raises UserError."""
    p = result.params.tracking
    fingerprint = result.fingerprint()
    history = read_history(result.history)
    uri = tracking_uri()
    mlflow = _mlflow(uri)
    with store_errors(uri):
        with _store_creation_lock(uri):  # queued workers may create an embedded store at the same moment
            client = mlflow.MlflowClient(uri)
            experiment_id = get_or_create_experiment(client, p.experiment, _artifact_location(uri))
        found = client.search_runs(
            [experiment_id], f"tags.{FINGERPRINT} = '{fingerprint}' and attributes.status = 'FINISHED'",
            max_results=1)
        if found:
            return experiment_id, found[0].info.run_id, False
    started = history[0]["time"] - history[0]["epoch_time"]  # the run starts when its training did
    datasets = [_dataset(mlflow, path, context) for context, path in result.datasets.items()]
    model_id = None  # the logged model: made (empty) first, so that the metrics logged next can link to it

    def create_model():
        nonlocal model_id
        model_id = client.create_logged_model(
            experiment_id, name=model_name(result.params), source_run_id=run_id, model_type="VAE",
            params={k: str(v) for k, v in flatten(result.params, MODEL_SECTIONS).items()}).model_id

    # the model before any metric: MLflow links a run's step-0 metrics to a model logged after them
    steps = [lambda: client.log_inputs(run_id, datasets=datasets)] if datasets else []
    if p.log_model:
        steps += [create_model, lambda: log_model(run_id, result.checkpoint, p.registered_model,
                                                  result.params.dequantize.mode, model_id, int(history[-1]["epoch"]))]
    steps.append(lambda: client.log_batch(
        run_id, metrics=_metrics(mlflow, result, history, model_id),
        params=[mlflow.entities.Param(k, str(v)) for k, v in flatten(result.params).items()]))
    for path, dest in result.artifacts.items():
        upload = client.log_artifacts if Path(path).is_dir() else client.log_artifact
        steps.append(lambda upload=upload, path=path, dest=dest: upload(run_id, str(path), dest or None))
    steps.append(lambda: client.set_terminated(run_id, "FINISHED"))
    tags, run_id = _tags(result, fingerprint), None
    try:
        with store_errors(uri), _interrupts_deferred(uri):
            run_id = client.create_run(experiment_id, start_time=int(1000 * started), tags=tags,
                                       run_name=os.environ.get("DVC_EXP_NAME") or None).info.run_id
        for step in steps:
            with store_errors(uri), _interrupts_deferred(uri):
                step()
    except BaseException:
        from mlflow.entities import LoggedModelStatus

        if run_id is not None:
            with contextlib.suppress(Exception), _interrupts_deferred(uri):
                if model_id is not None and client.get_logged_model(model_id).status != LoggedModelStatus.READY:
                    client.finalize_logged_model(model_id, "FAILED")
                client.set_terminated(run_id, "FAILED")
                log.warning("run %s ended FAILED; the next track logs the result afresh", run_id)
        raise
    return experiment_id, run_id, True


def run_line(run_id: str, created: bool) -> str:
    """What track says about its run; a search worker reads the run's id back from it (RUN_LINE)."""
    return f"track: {'logged run' if created else 'this result is already run'} {run_id}"


RUN_LINE = re.compile(r"^track: (?:logged run|this result is already run) ([0-9a-f]{32})\b", re.M)


def ui_address(experiment_id: str | None = None, run_id: str | None = None, tab: str = "runs") -> str:
    """An address in the MLflow UI, in its Model training view: the tracking server's, or that of
    `make ui` (MLFLOW_UI_PORT, 5000 by default) for an embedded store. With a run id, the run's page;
    with an experiment id, the experiment's `tab` (runs, models); with neither, the UI's home."""
    uri = tracking_uri()
    base = (shown_uri(uri).rstrip("/") if uri.startswith(("http://", "https://"))
            else f"http://127.0.0.1:{os.environ.get('MLFLOW_UI_PORT', '5000')}")
    page = "#/" if experiment_id is None else (
        f"#/experiments/{experiment_id}/runs/{run_id}" if run_id else f"#/experiments/{experiment_id}/{tab}")
    return f"{base}/{page}?{TRAINING_VIEW}"


def experiment_address(name: str) -> str:
    """The UI's address of experiment `name`'s training runs, or of the UI's home if the store has no
    such experiment yet (a missing embedded store is not created to find out)."""
    uri = tracking_uri()
    db = _sqlite_path(uri)
    if db is not None and not db.is_file():
        return ui_address()
    mlflow = _mlflow(uri)
    with store_errors(uri):
        experiment = mlflow.MlflowClient(uri).get_experiment_by_name(name)
    return ui_address(experiment.experiment_id) if experiment else ui_address()


def model_name(params: Params) -> str:
    """The logged model's name, from what tells models apart: objective, architecture, likelihood,
    latent size (e.g. vae-mlp-bernoulli-z20, iwae-k5-conv-gaussian-z2)."""
    t, m = params.train, params.model
    objective = f"iwae-k{t.iw_samples}" if t.objective == "iwae" else ("vae" if t.beta == 1 else f"beta{t.beta:g}-vae")
    return f"{objective}-{m.architecture}-{m.likelihood}-z{m.latent_dim}".replace(".", "p")


def get_or_create_experiment(client, name: str, artifact_location: str | None) -> str:
    """The experiment's id, creating it (tagged for the UI's training view) if no one has yet."""
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return client.create_experiment(name, artifact_location=artifact_location, tags=EXPERIMENT_KIND)
        except MlflowException as exc:  # another worker created it first: read it back
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            experiment = client.get_experiment_by_name(name)
    if experiment.lifecycle_stage != "active":
        raise UserError(f"MLflow experiment '{name}' is deleted; restore it in the UI or set tracking.experiment")
    for key, value in EXPERIMENT_KIND.items():
        if experiment.tags.get(key) != value:
            client.set_experiment_tag(experiment.experiment_id, key, value)
    return experiment.experiment_id


def log_model(run_id: str, checkpoint: Path, registered_name: str, dequantize: str, model_id: str | None = None,
              step: int | None = None) -> None:
    """Log the VAE with mnist_vae.serving and register it as a new version of `registered_name`:
    mlflow.pytorch.load_model gives back the VAE (its `dequantize` attribute the mode it was trained
    with), and its pyfunc, with a signature and an input example, answers `mlflow models serve`.

    The model is pickled by torch.save (MLflow's pytorch flavour) with this package's code beside it:
    loading it runs that code and unpickles, so it trusts the artifact store. The checkpoint logged
    beside it (checkpoint/vae.pt) holds tensors only and loads with torch.load(weights_only=True).
    The samplers fitted to the checkpoint (models/sampler.pt beside it, when there is one; refused if
    fitted to another checkpoint) go inside the logged model, so it samples as the checkpoint does.
    `model_id`: the LoggedModel (made by the caller) that receives it, or a new one in the run's
    experiment when None; `step`: the epoch it is from."""
    from mnist_vae import samplers, serving
    from mnist_vae.model import load_checkpoint

    vae = load_checkpoint(checkpoint)
    fitted = samplers.beside(checkpoint)
    vae.samplers = samplers.load(fitted, checkpoint) if fitted.is_file() else None
    linked = {k: v for k, v in (("model_id", model_id), ("step", step)) if v is not None}
    serving.log_model(vae, dequantize, registered_model_name=registered_name, run_id=run_id, **linked)


@contextlib.contextmanager
def store_errors(uri: str) -> Iterator[None]:
    """Turn what an unreachable, locked or incompatible store raises into one line naming the URI."""
    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import SQLAlchemyError

    try:
        yield
    except (MlflowException, SQLAlchemyError, OSError) as exc:
        raise UserError(f"MLflow store {shown_uri(uri)} failed: {error_cause(exc, uri)}. Check MLFLOW_TRACKING_URI "
                        "(and that the server is up), then rerun `dvc repro track`") from None


def error_cause(exc: BaseException, uri: str) -> str:
    """An exception about a store at `uri` as a short phrase on one line, without the URI's password."""
    cause = " ".join(str(exc).split()) or exc.__class__.__name__
    if "Connection refused" in cause:
        cause = "connection refused"
    password = urlsplit(uri).password
    return (cause.replace(password, "***") if password else cause)[:300]


# --------------------------------------------------------------------------- internals


def _mlflow(uri: str):
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # no network here, and none wanted
    for key, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)
    import mlflow  # imported here: it costs a couple of seconds, and only the track stage needs it

    # urllib3 logs every retry against an unreachable server as a warning ("track: Retrying ..."), which
    # the stage's log format prints; the failure is reported once, by store_errors
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
    mlflow.set_tracking_uri(uri)
    return mlflow


def _sqlite_path(uri: str) -> Path | None:
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def _artifact_location(uri: str) -> str | None:
    """Artifacts beside an embedded store (not in the working directory, which for a queued experiment
    is a temporary copy); a tracking server chooses its own."""
    db = _sqlite_path(uri)
    return (db.parent / "mlartifacts").as_uri() if db else None


@contextlib.contextmanager
def _interrupts_deferred(uri: str) -> Iterator[None]:
    """With an embedded sqlite store, let Ctrl-C and SIGTERM that arrive while one store call runs
    interrupt right after it: a sqlite write cut in half leaves the database locked, and the run could
    then not be ended FAILED. Python runs signal handlers in the main thread only, so swapping them
    holds a signal whichever thread the system delivers it to. Calls to a server are interrupted at
    once (a hung server must not make Ctrl-C wait), and an interrupted request locks nothing."""
    if _sqlite_path(uri) is None:
        yield
        return
    caught: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: caught.append(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if caught:
        raise KeyboardInterrupt(f"signal {caught[0]}")


@contextlib.contextmanager
def _store_creation_lock(uri: str) -> Iterator[None]:
    """Hold a file lock beside an embedded sqlite store while it is opened (and so created): two
    processes creating it at once race in its schema migration."""
    db = _sqlite_path(uri)
    if db is None:
        yield
        return
    from filelock import FileLock

    db.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(db) + ".lock", timeout=120):
        yield


def _tags(result: Result, fingerprint: str) -> dict[str, str]:
    from mnist_vae.model import checkpoint_provenance

    tags = {FINGERPRINT: fingerprint, **_source_tags(),
            **{k: str(v) for k, v in checkpoint_provenance(result.checkpoint).items()}}
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc_exp_name"] = os.environ["DVC_EXP_NAME"]
    tags.update({tag: os.environ[var] for var, tag in SEARCH_ENV.items() if os.environ.get(var)})
    return tags


def _metrics(mlflow, result: Result, history: list[dict[str, float]], model_id: str | None) -> list[Any]:
    """The headline, the per-epoch curves and every number of the metric files. The headline and the
    curves' last values are the model's (`model_id`, if any): MLflow's UI shows a model's first value of
    each metric, and the model is the last epoch's; the headline comes first, as the Models tab's first
    columns."""
    Metric = mlflow.entities.Metric
    now = int(1000 * time.time())
    out = [Metric(key, float(value), now, 0, model_id=model_id)
           for key, value in _numbers(_read_json(result.headline)).items()] if result.headline else []
    last = history[-1]
    out += [Metric(key, value, int(1000 * row["time"]), int(row["epoch"]), model_id=model_id if row is last else None)
            for row in history for key, value in row.items() if key not in ("epoch", "time")]
    for prefix, path in result.metrics.items():
        out += [Metric(key, float(value), now, 0) for key, value in _numbers(_read_json(path), prefix).items()]
    return out


def _read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{path} is unreadable ({exc}); rerun `dvc repro` for the stage that writes it") from None


def _numbers(tree: dict, prefix: str = "") -> dict[str, float]:
    """The numbers of a JSON tree under dotted keys; lists and notes stay in the file."""
    return {key: value for key, value in flatten_tree(tree, prefix).items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)}


def _dataset(mlflow, path: Path, context: str):
    """One of the run's dataset inputs: the arrays of `path` (x, y) named mnist-<context's split>, with
    the file's digest and its path in the repository (made by DVC's dequantize stage) as source."""
    import mlflow.data
    from mlflow.data.dataset_source_registry import get_dataset_source_from_json

    from mnist_vae.io import load_npz

    arrays = load_npz(path, ("x", "y"), "dequantize")
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


def main(params_path: str = "params.yaml") -> None:
    """`make ui`'s first line: the address of the experiment's training runs (on the tracking server that
    MLFLOW_TRACKING_URI names, or in the UI that `make ui` starts), in the Model training view."""
    import sys

    from mnist_vae.params import load_params

    name = load_params(params_path).tracking.experiment
    server = tracking_uri().startswith(("http://", "https://"))
    try:
        address = experiment_address(name)
        found = "training runs" if "/experiments/" in address else "home page (the experiment has no runs yet)"
    except UserError as exc:  # a server that does not answer: its home page, and why
        print(f"make ui: {exc}", file=sys.stderr, flush=True)
        address, found = ui_address(), "home page (the server did not say where the experiment is)"
    where = "on the tracking server MLFLOW_TRACKING_URI names" if server else "in the MLflow UI starting below"
    print(f"make ui: experiment '{name}', {where}: {found} at\n  {address}", flush=True)


if __name__ == "__main__":
    try:
        main()
    except UserError as exc:
        raise SystemExit(f"make ui: error: {exc}") from None
