"""Using a trained VAE: load it from any source, turn images into its input, and its output into images.

The model sees each image as a float32 row of 784 pixels in [0, 1], dequantized as it was trained
(``dequantize.mode``). :func:`preprocess` maps uint8 pixels (0..255) or float intensities (pixel/255,
in [0, 1]) to that input with the *expected value* of the training dequantization, so it is
deterministic:

=========  ================================  ==========================================
mode       training input                    preprocess (its mean over the noise U)
=========  ================================  ==========================================
notebook   clip((pixel + U) / 255, 0, 1)     min((pixel + 0.5) / 255, 1)
uniform    (pixel + U) / 256                 (pixel + 0.5) / 256
none       pixel / 255                       pixel / 255
binarize   Bernoulli(pixel / 255)            pixel / 255 (the Bernoulli mean)
=========  ================================  ==========================================

(For notebook mode, pixel 255 is always clipped to 1, and (pixel + U) / 255 < 1 for every smaller
pixel, hence the min.) :func:`postprocess` maps decoder means in [0, 1] back to uint8 28x28 images.

The tasks (:func:`sample`, :func:`encode`, :func:`decode`, :func:`reconstruct`, :func:`interpolate`,
:func:`traverse`, :func:`kl_order`) are what the ``mnist-vae`` command and the served model run, so
the three give the same numbers for the same inputs and seed.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
import yaml

from mnist_vae import objectives, samplers
from mnist_vae.errors import UserError
from mnist_vae.params import DequantizeParams

DEQUANTIZE_MODES = ("notebook", "uniform", "none", "binarize")
DEFAULT_MODEL = "models/vae.pt"
PIXELS = 784
SIDE = 28


# --------------------------------------------------------------------------- pixels in and out


def preprocess(images, mode: str) -> torch.Tensor:
    """Images -> the model's input under dequantization `mode` (deterministic: the noise's mean).

    images: uint8 pixels 0..255, or floats in [0, 1] read as pixel / 255 (what Pillow's "L" image
        divided by 255, or ``data/raw`` / 255, gives); shaped (28, 28), (784,), (N, 28, 28) or (N, 784).
    mode: the ``dequantize.mode`` the model was trained with (a loaded model's ``.dequantize``).
    Returns float32 (N, 784) in [0, 1] (N = 1 for a single image): min((p + 0.5) / 255, 1) for
    notebook, (p + 0.5) / 256 for uniform, p / 255 for none and binarize, with p = pixel in 0..255.
    """
    if mode not in DEQUANTIZE_MODES:
        raise UserError(f"unknown dequantize mode {mode!r}; use one of {', '.join(DEQUANTIZE_MODES)}")
    a = images.detach().cpu().numpy() if torch.is_tensor(images) else np.asarray(images)
    if a.dtype == np.uint8:
        p = a.astype(np.float64)
    elif np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer):
        if np.issubdtype(a.dtype, np.integer):
            if a.size and (a.min() < 0 or a.max() > 255):
                raise UserError("integer pixels must lie in 0..255")
            p = a.astype(np.float64)
        else:
            if a.size and not (np.isfinite(a).all() and a.min() >= 0 and a.max() <= 1):
                raise UserError("float images must be intensities in [0, 1] (pixel / 255); pass uint8 for 0..255")
            p = a.astype(np.float64) * 255.0
    else:
        raise UserError(f"images must be uint8 or float, got {a.dtype}")
    if a.shape in ((SIDE, SIDE), (PIXELS,)):
        p = p.reshape(1, PIXELS)
    elif a.ndim in (2, 3) and a.shape[1:] in ((SIDE, SIDE), (PIXELS,)):
        p = p.reshape(len(p), PIXELS)
    else:
        raise UserError(f"images must be shaped (28, 28), (784,), (N, 28, 28) or (N, 784), got {a.shape}")
    if mode == "notebook":
        x = np.minimum((p + 0.5) / 255.0, 1.0)
    elif mode == "uniform":
        x = (p + 0.5) / 256.0
    else:
        x = p / 255.0
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def postprocess(means) -> np.ndarray:
    """Decoder means E[x|z] in [0, 1], shaped (..., 784) -> uint8 images (..., 28, 28), round(255 x)."""
    a = means.detach().cpu().numpy() if torch.is_tensor(means) else np.asarray(means)
    if a.shape[-1] != PIXELS:
        raise UserError(f"postprocess expects (..., 784) means, got {a.shape}")
    return np.rint(np.clip(a, 0, 1) * 255).astype(np.uint8).reshape(*a.shape[:-1], SIDE, SIDE)


# --------------------------------------------------------------------------- loading


@dataclass
class Origin:
    """Where a loaded model came from, and how its dequantization mode was found."""

    uri: str
    kind: str  # "checkpoint" | "mlflow"
    dequantize_from: str
    run_id: Optional[str] = None
    details: dict[str, Any] = field(default_factory=dict)


def load(source: Union[str, os.PathLike] = DEFAULT_MODEL, dequantize: Optional[str] = None):
    """Load a trained VAE (in eval mode, on the CPU) from a checkpoint path, ``runs:/<run id>/<model name>`` or
    ``models:/<name>/<version>`` (MLflow, with MLFLOW_TRACKING_URI from the environment).

    The returned ``mnist_vae.model.VAE`` has two more attributes: ``dequantize``, the mode it was
    trained with (give `dequantize` to set it; otherwise it is read from the logged model or its MLflow
    run's ``dequantize.mode`` param, or for a checkpoint from the ``dvc.lock`` that produced it or the
    ``params.yaml`` beside it), and ``origin`` (an :class:`Origin`). Its ``encode(x)`` takes (N, 784)
    inputs from :func:`preprocess` and returns (mu, logvar), each (N, latent_dim); ``decode(z)`` returns
    logits, which ``mean`` turns into images in [0, 1].
    """
    if dequantize is not None and dequantize not in DEQUANTIZE_MODES:
        raise UserError(f"unknown dequantize mode {dequantize!r}; use one of {', '.join(DEQUANTIZE_MODES)}")
    uri = str(source)
    if uri.startswith(("runs:/", "models:/")):
        model, origin = _load_mlflow(uri, dequantize)
    elif "://" in uri or uri.startswith(("models:", "runs:")):
        raise UserError(f"--model {uri!r} is neither a checkpoint path nor runs:/<run id>/<model name> nor models:/<name>/<version>")
    else:
        model, origin = _load_checkpoint(Path(uri), dequantize)
    model.dequantize = origin.details.pop("dequantize")
    model.origin = origin
    if not hasattr(model, "samplers"):  # a model logged without fitted samplers
        model.samplers, model.sampler_problem = None, None
    return model.cpu().eval()


def _load_checkpoint(path: Path, dequantize: Optional[str]):
    from mnist_vae.model import load_checkpoint

    if not path.exists():
        raise UserError(f"model {path} does not exist; train one with `dvc repro train` or pass --model PATH|runs:/<id>/<model name>|models:/<name>/<version>")
    model = load_checkpoint(path)
    samplers.attach(model, path)
    if dequantize:
        mode, where = dequantize, "given"
    else:
        mode, where = _checkpoint_mode(path)
    return model, Origin(uri=str(path), kind="checkpoint", dequantize_from=where, details={"dequantize": mode})


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
        if mode in DEQUANTIZE_MODES:
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
                if mode in DEQUANTIZE_MODES:
                    return mode
    return None


def _mlflow():
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    return mlflow


def _load_mlflow(uri: str, dequantize: Optional[str]):
    mlflow = _mlflow()
    from mlflow.exceptions import MlflowException

    where = os.environ.get("MLFLOW_TRACKING_URI") or mlflow.get_tracking_uri()
    try:
        info = mlflow.models.get_model_info(uri)
        model = mlflow.pytorch.load_model(uri, map_location="cpu")
    except MlflowException as exc:
        raise UserError(f"model {uri} is not in the MLflow store {where} ({_first_line(exc)}); "
                        "check the run id / version with `mlflow ui`, or set MLFLOW_TRACKING_URI") from None
    except Exception as exc:  # an unreadable artifact, a class that no longer unpickles
        raise UserError(f"model {uri} could not be loaded ({exc.__class__.__name__}: {_first_line(exc)})") from None
    from mnist_vae.model import VAE

    if not isinstance(model, VAE):
        raise UserError(f"model {uri} is a {type(model).__name__}, not an mnist-vae VAE")
    run_id = info.run_id
    params: dict[str, str] = {}
    metrics: dict[str, float] = {}
    if run_id:
        try:
            run = mlflow.get_run(run_id)
            params, metrics = dict(run.data.params), dict(run.data.metrics)
        except MlflowException:
            pass
    logged = (info.metadata or {}).get("dequantize_mode") or getattr(model, "dequantize", None)
    if dequantize:
        mode, found = dequantize, "given"
    elif logged in DEQUANTIZE_MODES:
        mode, found = logged, f"the logged model ({uri})"
    elif params.get("dequantize.mode") in DEQUANTIZE_MODES:
        mode, found = params["dequantize.mode"], f"the MLflow run {run_id}'s param dequantize.mode"
    else:
        mode = DequantizeParams().mode
        found = "default (the run logged no dequantize.mode; pass --dequantize to set it)"
    origin = Origin(uri=uri, kind="mlflow", dequantize_from=found, run_id=run_id,
                    details={"dequantize": mode, "tracking_uri": where, "params": params, "metrics": metrics})
    return model, origin


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


# --------------------------------------------------------------------------- tasks


def _device(model) -> torch.device:
    return next(model.parameters()).device


def as_latents(z, latent_dim: int) -> torch.Tensor:
    """One latent vector (d,) or several (N, d) -> a float32 (N, d) CPU tensor; a UserError unless d == latent_dim."""
    try:
        z = torch.as_tensor(np.asarray(z, dtype=np.float32) if not torch.is_tensor(z) else z, dtype=torch.float32)
    except (ValueError, TypeError):
        raise UserError(f"latent vectors must be lists of {latent_dim} numbers") from None
    if z.ndim == 1:
        z = z.unsqueeze(0)
    if z.ndim != 2 or z.shape[1] != latent_dim:
        raise UserError(f"latent vectors must have length {latent_dim} (this model's latent_dim), got shape {tuple(z.shape)}")
    if not torch.isfinite(z).all():
        raise UserError("latent vectors must be finite numbers")
    return z.cpu()


def _latents(model, z) -> torch.Tensor:
    return as_latents(z, model.latent_dim).to(_device(model))


def _inputs(model, x) -> torch.Tensor:
    x = torch.as_tensor(x, dtype=torch.float32)
    if x.ndim != 2 or x.shape[1] != PIXELS:
        raise UserError(f"model inputs must be (N, 784) rows from preprocess, got shape {tuple(x.shape)}")
    return x.to(_device(model))


@torch.no_grad()
def sample(model, n: int, seed: int = 0, temperature: float = 1.0, sampler: str = samplers.PRIOR) -> torch.Tensor:
    """n decoder means E[x|z], (n, 784) float32 in [0, 1] on the CPU, of z drawn from `sampler` with a CPU
    generator seeded with `seed`: the model's prior ("prior", z = T * model.sample_prior) or a fitted
    sampler of the model (samplers.available), whose spread the temperature T scales the same way.
    A model without fitted samplers asked for one samples from the prior and warns (UserWarning)."""
    if n < 1:
        raise UserError(f"the number of samples must be at least 1, got {n}")
    if not (temperature >= 0 and math.isfinite(temperature)):
        raise UserError(f"the temperature must be a finite number >= 0, got {temperature}")
    name, note = samplers.resolve(model, sampler)
    if note:
        warnings.warn(note, UserWarning, stacklevel=2)
    g = torch.Generator().manual_seed(int(seed))
    return decode(model, samplers.draw(model, name, n, g, temperature))


@torch.no_grad()
def encode(model, x) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 784) inputs from preprocess -> (mu, log sigma^2) of q(z|x), each (N, latent_dim), on the CPU."""
    mu, logvar = model.encode(_inputs(model, x))
    return mu.float().cpu(), logvar.float().cpu()


@torch.no_grad()
def decode(model, z) -> torch.Tensor:
    """Latent vectors (N, latent_dim) or (latent_dim,) -> decoder means (N, 784) in [0, 1] on the CPU."""
    return model.mean(model.decode(_latents(model, z))).float().cpu()


@torch.no_grad()
def reconstruct(model, x) -> torch.Tensor:
    """(N, 784) inputs -> E[x | z = mu(x)], (N, 784) in [0, 1]: decoded from the encoder mean (deterministic)."""
    return decode(model, encode(model, x)[0])


def interpolate(z1, z2, steps: int, slerp: bool = False) -> torch.Tensor:
    """`steps` points from z1 to z2 (both ends included), as (steps, d).

    Linear: (1 - a) z1 + a z2. Spherical (slerp), the usual choice for Gaussian latents, whose mass
    lies near a sphere: sin((1 - a) w) / sin(w) z1 + sin(a w) / sin(w) z2 with w the angle between
    them, which keeps the norm from sagging midway; it falls back to linear when z1 and z2 are (anti)parallel.
    """
    from mnist_vae.figures import interpolate as linear

    if steps < 2:
        raise UserError(f"--steps must be at least 2, got {steps}")
    z1 = torch.as_tensor(z1, dtype=torch.float32).reshape(-1)
    z2 = torch.as_tensor(z2, dtype=torch.float32).reshape(-1)
    if z1.shape != z2.shape:
        raise UserError(f"the two ends have different lengths ({len(z1)} and {len(z2)})")
    if not slerp:
        return linear(z1, z2, steps)
    a = torch.linspace(0, 1, steps, dtype=torch.float64).unsqueeze(-1)
    u, v = z1.double(), z2.double()
    cos = torch.dot(u, v) / (u.norm() * v.norm()).clamp_min(1e-300)
    omega = torch.arccos(cos.clamp(-1, 1))
    if omega.abs() < 1e-6 or (math.pi - omega).abs() < 1e-6 or u.norm() == 0 or v.norm() == 0:
        return linear(z1, z2, steps)
    path = (torch.sin((1 - a) * omega) * u + torch.sin(a * omega) * v) / torch.sin(omega)
    return path.float()


@torch.no_grad()
def kl_order(model, x) -> tuple[list[int], list[float]]:
    """Latent units ordered by their mean KL(q(z_j|x) || N(0, 1)) over the inputs x, largest first, and
    each unit's mean KL (nats), indexed by unit. Units with KL near 0 are inactive (collapsed)."""
    mu, logvar = encode(model, x)
    kl = objectives.kl_per_dim(mu.double(), logvar.double()).mean(0)
    order = torch.argsort(kl, descending=True, stable=True).tolist()
    return order, kl.tolist()


@torch.no_grad()
def traverse(model, dims: list[int], values, base=None) -> torch.Tensor:
    """For each unit j in `dims`, decode `base` with z_j set to each of `values`: (len(dims), len(values), 784).

    base: the latent vector to start from (default: zeros, the prior's mean)."""
    values = torch.as_tensor(values, dtype=torch.float32).reshape(-1)
    z0 = torch.zeros(model.latent_dim) if base is None else _latents(model, base)[0].cpu()
    rows = []
    for j in dims:
        if not 0 <= j < model.latent_dim:
            raise UserError(f"--dim {j} is out of range: this model's units are 0..{model.latent_dim - 1}")
        z = z0.repeat(len(values), 1)
        z[:, j] = values
        rows.append(decode(model, z))
    return torch.stack(rows)


def describe(model) -> dict[str, Any]:
    """What `mnist-vae info` prints: the model's params and origin, and its training and evaluation numbers."""
    origin: Origin = model.origin
    out: dict[str, Any] = {
        "model": origin.uri,
        "kind": origin.kind,
        "config": model.config.model_dump(),
        "prior": model.config.prior if model.config.prior == "standard"
        else f"{model.config.prior} ({model.config.vamp_components} pseudo-inputs)",
        "n_parameters": sum(p.numel() for p in model.parameters()),
        "dequantize": {"mode": model.dequantize, "from": origin.dequantize_from},
        "samplers": _describe_samplers(model),
    }
    if origin.kind == "mlflow":
        params, metrics = origin.details.get("params", {}), origin.details.get("metrics", {})
        out.update({
            "tracking_uri": origin.details.get("tracking_uri"), "run_id": origin.run_id, "params": params,
            # track logs metrics/train.json as train.*, metrics/eval.json as eval.*, and the last epoch's row as is
            "training": {k.removeprefix("train."): v for k, v in metrics.items() if not k.startswith("eval.")},
            "evaluation": {k.removeprefix("eval."): v for k, v in metrics.items() if k.startswith("eval.")},
        })
    else:
        root = project_dir(Path(origin.uri))
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
        from mnist_vae.model import checkpoint_provenance

        out["provenance"] = checkpoint_provenance(Path(origin.uri))  # what train recorded: data digest, torch, device
    return out


def _describe_samplers(model) -> dict[str, Any]:
    """The samplers `sample --sampler` takes, and what the fitted ones were fitted to."""
    out: dict[str, Any] = {"available": samplers.available(model)}
    state = getattr(model, "samplers", None)
    if state:
        out.update({"fit_on": state["fit_on"], "n_codes": state["n_codes"],
                    "components": {name: len(s["weights"]) for name, s in state["samplers"].items()}})
    elif getattr(model, "sampler_problem", None):
        out["note"] = model.sampler_problem
    return out
