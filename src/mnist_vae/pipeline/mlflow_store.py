"""MLflow's store as this project uses it: where it is (an embedded sqlite store at the repository's root, or
MLFLOW_TRACKING_URI), one-line errors when it cannot be reached or used, the experiment, and the UI's
addresses in its Model training view. `make ui` prints the experiment's address (`python -m
mnist_vae.pipeline.mlflow_store`)."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit, urlunsplit

from mnist_vae.errors import UserError

EXPS_TMP = os.sep + os.path.join(".dvc", "tmp", "exps") + os.sep
# what the experiment is for (MLflow's UI reads it to suggest its view)
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
# the MLflow UI (3.x) keeps its GenAI / Model training switch in the browser, GenAI by default; this query
# on an address opens the Model training view whatever the browser holds
TRAINING_VIEW = "workflowType=machine_learning"
# an unreachable server fails in seconds, not after MLflow's default minutes of retries
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


def ui_address(experiment_id: str | None = None, run_id: str | None = None, tab: str = "runs", query: str = "") -> str:
    """An address in the MLflow UI, in its Model training view: the tracking server's, or that of
    `make ui` (MLFLOW_UI_PORT, 5000 by default) for an embedded store. With a run id, the run's page;
    with an experiment id, the experiment's `tab` (runs, models); with neither, the UI's home. `query` is
    added to the address's query (name=value&...)."""
    uri = tracking_uri()
    base = (shown_uri(uri).rstrip("/") if uri.startswith(("http://", "https://"))
            else f"http://127.0.0.1:{os.environ.get('MLFLOW_UI_PORT', '5000')}")
    page = "#/" if experiment_id is None else (
        f"#/experiments/{experiment_id}/runs/{run_id}" if run_id else f"#/experiments/{experiment_id}/{tab}")
    return f"{base}/{page}?{TRAINING_VIEW}" + (f"&{query}" if query else "")


def experiment_address(name: str, query: str = "") -> str:
    """The UI's address of experiment `name`'s training runs (with `query`, as ui_address), or of the UI's
    home if the store has no such experiment yet (a missing embedded store is not created to find out)."""
    uri = tracking_uri()
    db = sqlite_path(uri)
    if db is not None and not db.is_file():
        return ui_address()
    mlflow = connect(uri)
    with store_errors(uri):
        experiment = mlflow.MlflowClient(uri).get_experiment_by_name(name)
    return ui_address(experiment.experiment_id, query=query) if experiment else ui_address()


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
            try:
                client.set_experiment_tag(experiment.experiment_id, key, value)
            except MlflowException:  # another clone's track set it at the same moment (a duplicate key)
                if client.get_experiment(experiment.experiment_id).tags.get(key) != value:
                    raise
    return experiment.experiment_id


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


def connect(uri: str):
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # no network here, and none wanted
    for key, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)
    import mlflow  # imported here: it costs a couple of seconds, and only the track stage needs it

    # urllib3 logs every retry against an unreachable server as a warning ("track: Retrying ..."), which
    # the stage's log format prints; the failure is reported once, by store_errors
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
    mlflow.set_tracking_uri(uri)
    return mlflow


def sqlite_path(uri: str) -> Path | None:
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def artifact_location(uri: str) -> str | None:
    """Artifacts beside an embedded store (not in the working directory, which for a queued experiment
    is a temporary copy); a tracking server chooses its own."""
    db = sqlite_path(uri)
    return (db.parent / "mlartifacts").as_uri() if db else None


@contextlib.contextmanager
def interrupts_deferred(uri: str) -> Iterator[None]:
    """With an embedded sqlite store, let Ctrl-C and SIGTERM that arrive while one store call runs
    interrupt right after it: a sqlite write cut in half leaves the database locked, and the run could
    then not be ended FAILED. Python runs signal handlers in the main thread only, so swapping them
    holds a signal whichever thread the system delivers it to. Calls to a server are interrupted at
    once (a hung server must not make Ctrl-C wait), and an interrupted request locks nothing."""
    if sqlite_path(uri) is None:
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
def store_creation_lock(uri: str) -> Iterator[None]:
    """Hold a file lock beside an embedded sqlite store while it is opened (and so created): two
    processes creating it at once race in its schema migration."""
    db = sqlite_path(uri)
    if db is None:
        yield
        return
    from filelock import FileLock

    db.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(db) + ".lock", timeout=120):
        yield


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
    if "/experiments/" in address:
        from mnist_vae.pipeline import ui_view

        print(f"make ui: the runs' digits side by side (the view '{ui_view.NAME}'):\n"
              f"  {address}&{ui_view.QUERY}", flush=True)


if __name__ == "__main__":
    try:
        main()
    except UserError as exc:
        raise SystemExit(f"make ui: error: {exc}") from None
