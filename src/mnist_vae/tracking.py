"""MLflow: one run per trained model. The train stage opens it; evaluate and render reopen it by id.

The store is ``sqlite:///<repo>/mlflow.db`` with artifacts in ``<repo>/mlartifacts`` unless
``MLFLOW_TRACKING_URI`` says otherwise. ``<repo>`` is the repository's root also for experiments
that DVC queues and runs in copies under ``.dvc/tmp/exps/``, so every run lands in one store.
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import os
import signal
import subprocess
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any, Iterator

from mnist_vae.errors import UserError
from mnist_vae.io import save_json

log = logging.getLogger("mnist_vae.tracking")

EXPS_TMP = os.sep + os.path.join(".dvc", "tmp", "exps") + os.sep


def repo_root() -> Path:
    """The project root: DVC_ROOT (or the working directory), lifted out of a queued experiment's copy."""
    root = os.path.abspath(os.environ.get("DVC_ROOT") or os.getcwd())
    if EXPS_TMP in root + os.sep:
        root = (root + os.sep).split(EXPS_TMP)[0]
    return Path(root)


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{repo_root() / 'mlflow.db'}"


def _mlflow():
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # no network here, and none wanted
    import mlflow  # imported here: it costs a couple of seconds, and only tracking needs it

    mlflow.set_tracking_uri(tracking_uri())  # note: this also sets MLFLOW_TRACKING_URI in os.environ
    return mlflow


def _experiment_id(mlflow, name: str, embedded: bool) -> str:
    exp = mlflow.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    # keep artifacts beside the embedded store (not in the working directory, which for a queued
    # experiment is a temporary copy); a tracking server chooses its own artifact store
    location = (repo_root() / "mlartifacts").as_uri() if embedded else None
    return mlflow.create_experiment(name, artifact_location=location)


def git_state() -> dict[str, str]:
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return ""

    commit = git("rev-parse", "HEAD")
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return {"git_commit": commit or "unknown", "git_dirty": str(bool(dirty)).lower() if commit else "unknown"}


def _raise_on_sigterm() -> None:
    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)


@contextlib.contextmanager
def training_run(experiment: str, run_file: Path, params: dict[str, Any], tags: dict[str, str]) -> Iterator[Any]:
    """Start a run, log params and tags, and write its id to run_file. Ends FAILED on any exception
    (an interrupt or SIGTERM included), so no run is left RUNNING."""
    embedded = not os.environ.get("MLFLOW_TRACKING_URI")
    mlflow = _mlflow()
    _raise_on_sigterm()
    exp_name = os.environ.get("DVC_EXP_NAME")
    experiment_id = _experiment_id(mlflow, experiment, embedded)
    with mlflow.start_run(experiment_id=experiment_id, run_name=exp_name or None) as run:
        mlflow.log_params(params)
        mlflow.set_tags({**tags, **git_state(), **({"dvc_exp_name": exp_name} if exp_name else {})})
        save_json(run_file, {"run_id": run.info.run_id, "experiment_id": run.info.experiment_id,
                             "tracking_uri": tracking_uri()})
        yield mlflow


@contextlib.contextmanager
def resume_run(run_file: Path, params: dict[str, Any]) -> Iterator[Any]:
    """Reopen the training run named in run_file, for evaluate and render to add to.

    Importing MLflow and opening its SQL store take about 3 s, as long as everything else in a render
    rerun. So the run is reopened in a forked worker process, beside the stage's own work; what this
    yields stands for the `mlflow` module, and each call on it runs in the worker, in order. The run
    ends FINISHED, or FAILED on any exception (an interrupt or SIGTERM included)."""
    if not run_file.is_file():
        raise UserError(f"{run_file} is missing; run `dvc repro train` first")
    try:
        run_id = json.loads(run_file.read_text())["run_id"]
    except (ValueError, KeyError):
        raise UserError(f"{run_file} is not a run file; rerun `dvc repro -f train`") from None
    _raise_on_sigterm()
    fork = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(1, mp_context=fork, initializer=_leave_signals_to_the_stage) as worker:
        opened = worker.submit(_open_run, run_id, params)
        try:
            yield _InWorker(worker, opened)
        except BaseException:
            with contextlib.suppress(Exception):
                if opened.exception() is None:
                    worker.submit(_end_run, "FAILED").result()
            raise
        opened.result()
        worker.submit(_end_run, "FINISHED").result()


class _InWorker:
    """The mlflow module as resume_run's caller sees it: calls go to the worker, once the run is open."""

    def __init__(self, worker: ProcessPoolExecutor, opened: Future):
        self._worker, self._opened = worker, opened

    def __getattr__(self, name: str):
        def call(*args, **kwargs):
            self._opened.result()  # never log without the run (MLflow would start a new one)
            return self._worker.submit(_call, name, args, kwargs).result()

        return call


# In the worker process:

def _leave_signals_to_the_stage() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    with contextlib.suppress(OSError, AttributeError):  # Linux: die with the stage, even if it is SIGKILLed
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _open_run(run_id: str, params: dict[str, Any]) -> None:
    mlflow = _mlflow()
    try:
        run = mlflow.get_run(run_id)
    except Exception:
        raise UserError(
            f"MLflow run {run_id} is not in {tracking_uri()}; rerun `dvc repro -f train` to record a new one"
        ) from None
    mlflow.start_run(run_id=run_id)
    log_params_once(mlflow, run.data.params, params)


def _call(name: str, args: tuple, kwargs: dict) -> Any:
    return getattr(_mlflow(), name)(*args, **kwargs)


def _end_run(status: str) -> None:
    _mlflow().end_run(status)


def log_params_once(mlflow, logged: dict[str, str], params: dict[str, Any]) -> None:
    """MLflow params are write-once: log the new ones; a changed value (a stage rerun with other
    params on the same model) is recorded as an `override.<key>` tag."""
    new = {k: v for k, v in params.items() if k not in logged}
    changed = {f"override.{k}": str(v) for k, v in params.items() if k in logged and logged[k] != str(v)}
    if new:
        mlflow.log_params(new)
    if changed:
        mlflow.set_tags(changed)


def log_model(mlflow, model) -> None:
    """Log the nn.Module (pickled, with this package's code beside it) so that
    mlflow.pytorch.load_model gives back a VAE with encode, decode and sample."""
    import torch

    import mnist_vae

    version = torch.__version__.split("+")[0]
    mlflow.pytorch.log_model(
        model.cpu(), name="model", serialization_format="pickle",
        code_paths=[str(Path(mnist_vae.__file__).parent)],
        pip_requirements=[f"torch=={version}", "pydantic>=2"],  # given, so MLflow does not spend ~10 s inferring them
    )
