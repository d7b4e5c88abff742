"""What `mnist-vae info` says of a model: its params and origin, its samplers, and the training and evaluation
numbers recorded beside it (the DVC project's metrics, or the MLflow run's)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mnist_vae.api.loaded import LoadedModel
from mnist_vae.api.loading import project_dir
from mnist_vae.vae import samplers
from mnist_vae.vae.model import checkpoint_provenance


def describe(model: LoadedModel) -> dict[str, Any]:
    """The model's params, origin, samplers, and its training and evaluation numbers."""
    origin = model.origin
    config = model.config
    out: dict[str, Any] = {
        "model": origin.uri,
        "kind": origin.kind,
        "config": config.model_dump(),
        "prior": config.prior if config.prior == "standard" else f"{config.prior} ({config.vamp_components} pseudo-inputs)",
        "n_parameters": sum(p.numel() for p in model.vae.parameters()),
        "dequantize": {"mode": model.dequantize, "from": origin.dequantize_from},
        "samplers": _describe_samplers(model),
    }
    out.update(_mlflow_numbers(model) if origin.kind == "mlflow" else _project_numbers(model))
    return out


def _mlflow_numbers(model: LoadedModel) -> dict[str, Any]:
    """The MLflow run's params, and its metrics by section (the part of a name before its last `/`)."""
    origin = model.origin
    sections: dict[str, dict[str, float]] = {}
    for name, value in sorted(origin.details.get("metrics", {}).items()):
        section, _, key = name.rpartition("/")
        sections.setdefault(section or "other", {})[key] = value
    return {"tracking_uri": origin.details.get("tracking_uri"), "run_id": origin.run_id,
            "params": origin.details.get("params", {}), "metrics": sections}


def _project_numbers(model: LoadedModel) -> dict[str, Any]:
    """metrics/train.json and metrics/eval.json of the checkpoint's project, its params.yaml, and what train
    recorded in the checkpoint (data digest, torch, device)."""
    out: dict[str, Any] = {}
    root = project_dir(Path(model.origin.uri))
    for key, name in (("training", "train.json"), ("evaluation", "eval.json")):
        path = root / "metrics" / name if root else None
        if path is not None and path.is_file():
            try:
                out[key] = json.loads(path.read_text())
                out[f"{key}_file"] = str(path)
            except ValueError:
                out[key] = f"{path} is not valid JSON"
    if root is not None and (root / "params.yaml").is_file():
        out["params_file"] = str(root / "params.yaml")
    out["provenance"] = checkpoint_provenance(Path(model.origin.uri))
    return out


def _describe_samplers(model: LoadedModel) -> dict[str, Any]:
    """The samplers `sample --sampler` takes, the one it takes by default and why, and what the fitted ones
    were fitted to."""
    out: dict[str, Any] = {"available": samplers.available(model.samplers), "default": model.default_sampler}
    if model.choice:
        out.update({"default_temperature": model.choice.temperature, "why": model.choice.reason(),
                    "fid": model.choice.fid, "temperatures": model.choice.temperatures})
    if model.samplers:
        state = model.samplers.state
        out.update({"fit_on": state["fit_on"], "n_codes": state["n_codes"],
                    "held_out": state["n_train"] - state["held_out_start"],
                    "components": {name: len(s["weights"]) for name, s in state["samplers"].items()}})
    problems = [str(p) for p in (model.sampler_problem, model.choice_problem) if p]
    if problems:
        out["note"] = "; ".join(problems)
    return out
