"""The search's Optuna study: its storage (MNIST_VAE_SEARCH_STORAGE, or the embedded sqlite:///optuna.db),
its algorithm and pruner, and the spec it was started with."""

from __future__ import annotations

import contextlib
import json
import os
import time
import warnings
from pathlib import Path
from typing import Iterator

from mnist_vae.errors import UserError
from mnist_vae.ops.search.spec import Spec, grid_values
from mnist_vae.params import SearchRange
from mnist_vae.pipeline.mlflow_store import error_cause, shown_uri

STORAGE_ENV = "MNIST_VAE_SEARCH_STORAGE"
MAX_RETRY = 3  # a dead worker's trial is queued again at most this often


def storage_url(root: Path) -> str:
    return os.environ.get(STORAGE_ENV) or f"sqlite:///{root / 'optuna.db'}"


@contextlib.contextmanager
def storage_errors(url: str) -> Iterator[None]:
    """What an unreachable or unusable storage raises -> one line naming it (password masked)."""
    from optuna.exceptions import StorageInternalError
    from sqlalchemy.exc import SQLAlchemyError

    try:
        yield
    except (SQLAlchemyError, StorageInternalError, OSError) as exc:
        exc = exc.__cause__ if isinstance(exc, StorageInternalError) and exc.__cause__ else exc
        raise UserError(f"search storage {shown_uri(url)} failed: {error_cause(exc, url)}. Check {STORAGE_ENV} "
                        "(and that the database server is up and reachable)") from None


def open_storage(url: str, heartbeat: int = 10):
    """Optuna's RDB storage with heartbeats: a trial silent for 3 heartbeats is FAIL and queued again."""
    import optuna
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    if not url.startswith(("sqlite:", "postgresql:", "postgresql+", "mysql")):
        raise UserError(f"{STORAGE_ENV}={shown_uri(url)} is not a database URL; use postgresql://user@host:port/db "
                        "(or unset it for the embedded sqlite:///optuna.db)")
    engine = {"connect_args": {"connect_timeout": 10}} if url.startswith("postgresql") else {}
    # SQLAlchemy 2.1 reads a plain postgresql:// as psycopg 3; the project ships psycopg2
    driver_url = "postgresql+psycopg2://" + url.removeprefix("postgresql://") if url.startswith("postgresql://") else url
    with warnings.catch_warnings(), storage_errors(url):
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for attempt in range(3):
            try:
                return optuna.storages.RDBStorage(
                    driver_url, engine_kwargs=engine, heartbeat_interval=heartbeat, grace_period=3 * heartbeat,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(MAX_RETRY))
            except (IntegrityError, ProgrammingError):  # another worker is creating the tables right now
                if attempt == 2:
                    raise
                time.sleep(1 + attempt)


def make_pruner(spec: Spec):
    import optuna

    s = spec.search
    if s.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=s.prune_startup_trials, n_warmup_steps=s.prune_warmup_epochs)
    return optuna.pruners.NopPruner()


def make_algorithm(spec: Spec):
    """Optuna's sampler for search.algorithm: how each trial's params are chosen."""
    import optuna

    s = spec.search
    if s.algorithm == "grid":
        return optuna.samplers.GridSampler({k: grid_values(k, v) for k, v in s.space.items()})
    return optuna.samplers.RandomSampler() if s.algorithm == "random" else optuna.samplers.TPESampler()


def open_study(spec: Spec, storage, url: str):
    """Load the study, or create it; a study of that name with other objectives or another space is refused."""
    import optuna

    s = spec.search
    # ("sampler" is Optuna's name for search.algorithm, and the name studies were recorded with)
    described = {"objectives": [o.model_dump() for o in s.objectives], "sampler": s.algorithm, "n_trials": s.n_trials,
                 "space": {k: (v.model_dump() if isinstance(v, SearchRange) else v) for k, v in s.space.items()}}
    if s.pruner != "none":  # (a study from before pruning existed records no pruner)
        described["pruner"] = {"name": s.pruner, "startup_trials": s.prune_startup_trials,
                               "warmup_epochs": s.prune_warmup_epochs}
    with warnings.catch_warnings(), storage_errors(url):
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # set_metric_names
        study = optuna.create_study(storage=storage, study_name=s.study, sampler=make_algorithm(spec),
                                    pruner=make_pruner(spec), directions=spec.directions, load_if_exists=True)
        recorded = study.user_attrs.get("spec")
        if recorded is None:
            study.set_user_attr("spec", described)
            study.set_metric_names(spec.names)
        elif recorded != described:
            raise UserError(f"study '{s.study}' in {shown_uri(url)} was started with another search spec "
                            f"({json.dumps(recorded, sort_keys=True)}); name a new search.study for this one")
    return study


def load_existing(name: str, url: str):
    import optuna

    storage = open_storage(url)
    with storage_errors(url):
        try:
            return optuna.load_study(study_name=name, storage=storage)
        except KeyError:
            raise UserError(f"no study '{name}' in {shown_uri(url)}; start it with `mnist-vae search run`") from None


