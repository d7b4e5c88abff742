"""Loading a trained model from a checkpoint (models/vae.pt) or from MLflow (runs:/<run id>/<model name>,
models:/<name>/<version>), with its dequantization mode and its fitted samplers."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Optional, Union

import yaml

from mnist_vae.api.loaded import LoadedModel, Origin, read_samplers
from mnist_vae.data.dequantize import MODES, check_mode
from mnist_vae.errors import UserError, one_line
from mnist_vae.params import DequantizeParams
from mnist_vae.vae import samplers
from mnist_vae.vae.model import load_checkpoint
from mnist_vae.vae.samplers import choice

DEFAULT_MODEL = "models/vae.pt"


def load(source: Union[str, os.PathLike] = DEFAULT_MODEL, dequantize: Optional[str] = None) -> LoadedModel:
    """A trained VAE from a checkpoint path, ``runs:/<run id>/<model name>`` or ``models:/<name>/<version>``
    (MLflow, with MLFLOW_TRACKING_URI from the environment), as a LoadedModel.

    Its dequantization mode is `dequantize` when given; otherwise the logged model's, or for a checkpoint
    the one of the ``dvc.lock`` entry that wrote it or of the ``params.yaml`` beside it. A checkpoint's
    samplers are the ``sampler.pt`` beside it, when it was fitted to it, and its best sampler the
    ``best_sampler.json`` beside that (what `sample` draws from when no sampler is named); a logged model
    carries its own.
    """
    if dequantize is not None:
        check_mode(dequantize)
    uri = str(source)
    if uri.startswith(("runs:/", "models:/")):
        return _load_mlflow(uri, dequantize)
    if "://" in uri or uri.startswith(("models:", "runs:")):
        raise UserError(f"{uri!r} is neither a checkpoint path nor runs:/<run id>/<model name> nor "
                        "models:/<name>/<version>")
    return _load_checkpoint(Path(uri), dequantize)


def _load_checkpoint(path: Path, dequantize: Optional[str]) -> LoadedModel:
    vae = load_checkpoint(path)
    mode, where = (dequantize, "given") if dequantize else _checkpoint_mode(path)
    return LoadedModel(vae, mode, Origin(uri=str(path), kind="checkpoint", dequantize_from=where),
                       **read_samplers(path, samplers.beside(path), choice.beside(path)))


def project_dir(checkpoint: Path) -> Optional[Path]:
    """The DVC project a checkpoint belongs to: its folder or the one above (models/vae.pt), holding params.yaml."""
    for folder in (checkpoint.resolve().parent, checkpoint.resolve().parent.parent):
        if (folder / "params.yaml").is_file() or (folder / "dvc.lock").is_file():
            return folder
    return None


def _checkpoint_mode(path: Path) -> tuple[str, str]:
    """The dequantization a checkpoint was trained with: the dvc.lock entry whose output hash is this file's,
    else params.yaml beside it, else the schema's default."""
    root = project_dir(path)
    if root is not None and (root / "dvc.lock").is_file():
        mode = _mode_from_lock(root / "dvc.lock", path)
        if mode:
            return mode, f"{root / 'dvc.lock'} (the run that wrote this checkpoint)"
    if root is not None and (root / "params.yaml").is_file():
        try:
            raw = yaml.safe_load((root / "params.yaml").read_text()) or {}
            mode = (raw.get("dequantize") or {}).get("mode")
        except (yaml.YAMLError, AttributeError):
            mode = None
        if mode in MODES:
            return mode, f"{root / 'params.yaml'} (not checked against dvc.lock; pass --dequantize if it changed since training)"
    default = DequantizeParams().mode
    return default, "default (no dvc.lock or params.yaml beside the checkpoint; pass --dequantize to set it)"


def _mode_from_lock(lock: Path, checkpoint: Path) -> Optional[str]:
    try:
        stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    except (OSError, yaml.YAMLError):
        return None
    md5 = None
    for stage in stages.values():
        for out in stage.get("outs", []) or []:
            if (lock.parent / out.get("path", "")).resolve() == checkpoint.resolve():
                md5 = md5 or hashlib.md5(checkpoint.read_bytes()).hexdigest()
                if out.get("md5") != md5:
                    continue
                params = (stage.get("params") or {}).get("params.yaml", {})
                mode = params.get("dequantize.mode", (params.get("dequantize") or {}).get("mode"))
                if mode in MODES:
                    return mode
    return None


def _load_mlflow(uri: str, dequantize: Optional[str]) -> LoadedModel:
    """A model logged by api/serving.py: its checkpoint and samplers, read as tensors (nothing unpickled)."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a command's output is its own lines
    import mlflow
    from mlflow.exceptions import MlflowException

    from mnist_vae.api import serving

    where = os.environ.get("MLFLOW_TRACKING_URI") or mlflow.get_tracking_uri()
    try:
        info = mlflow.models.get_model_info(uri)
        serving.check_logged(uri, info.metadata)
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
        params, metrics = _run_data(mlflow, info.run_id)
    except MlflowException as exc:
        raise UserError(f"model {uri} is not in the MLflow store {where} ({one_line(exc)}); "
                        "check the run id / version with `mlflow ui`, or set MLFLOW_TRACKING_URI") from None
    logged = serving.read_logged(local / "artifacts")
    mode, found = (dequantize, "given") if dequantize else (logged.dequantize, f"the logged model ({uri})")
    origin = Origin(uri=uri, kind="mlflow", dequantize_from=found, run_id=info.run_id,
                    details={"tracking_uri": where, "params": params, "metrics": metrics})
    return LoadedModel(logged.vae, mode, origin, logged.samplers, logged.sampler_problem, logged.choice,
                       logged.choice_problem)


def _run_data(mlflow, run_id: Optional[str]) -> tuple[dict[str, str], dict[str, float]]:
    """The params and metrics of the run a model was logged from ({} and {} if it cannot be read)."""
    from mlflow.exceptions import MlflowException

    if not run_id:
        return {}, {}
    try:
        run = mlflow.get_run(run_id)
    except MlflowException:
        return {}, {}
    return dict(run.data.params), dict(run.data.metrics)
