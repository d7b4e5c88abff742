"""The trained model as an MLflow model: the model's code as code, its weights as tensors, nothing pickled.

It is MLflow's *models-from-code* pyfunc: the model is the file served_model.py beside this module, which
builds a :class:`ServedVAE`; the checkpoint (vae.pt), the fitted samplers (sampler.pt) and the choice of the
best sampler (best_sampler.json, vae/samplers/choice.py) travel as the model's artifacts and are read in ``load_context`` with torch.load(weights_only=True); the package code
that answering needs, and only that (SERVED_MODULES: this layer and the layers below it, no pipeline,
search or team server), travels as the model's code. `mlflow models serve`, ``mlflow.pyfunc.load_model``
and ``mnist_vae.load("models:/<name>/<version>")`` all read it so.

A request to ``/invocations`` is ``{"inputs": [[...], ...], "params": {"task": ..., ...}}``:

===========  ======================================  ==========================================
task         inputs (a 2-D array of numbers)          answer ``predictions``
===========  ======================================  ==========================================
sample       ignored (send ``[[0]]``); ``params.n``   (n, 784) decoder means in [0, 1] of z
             images, ``seed``, ``temperature``,       drawn with `seed` from ``sampler``: ``prior``,
             ``sampler``                              a fitted one (``gmm``), or by default the
                                                      model's best (best_sampler.json), at the
                                                      temperature evaluate scored it at
encode       (N, 784) pixels, whole numbers 0..255    ``{"mu": (N, d), "logvar": (N, d)}``
decode       (N, d) latent vectors                    (N, 784) decoder means in [0, 1]
reconstruct  (N, 784) pixels, whole numbers 0..255    (N, 784) means decoded from mu(x)
===========  ======================================  ==========================================

Pixels are preprocessed under the model's own dequantization, and every task runs the same function of
api/tasks.py as the local API and the command, so the answers are equal. A wrong width, an unknown task
or sampler, or a pixel outside 0..255 is a 400 answer with a one-line message. A `sample` answer names the
sampler and temperature it drew from in a line of the server's log (logger ``mnist_vae.serving``).
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional

import mlflow.pyfunc
import numpy as np

from mnist_vae.api import tasks
from mnist_vae.api.loaded import LoadedModel, Origin, read_samplers
from mnist_vae.data.geometry import PIXELS
from mnist_vae.errors import UserError
from mnist_vae.files import load_json
from mnist_vae.vae import samplers
from mnist_vae.vae.model import load_checkpoint
from mnist_vae.vae.samplers import choice

TASKS = ("sample", "encode", "decode", "reconstruct")
# temperature and sampler None: the model's best sampler, at the temperature evaluate scored it at
PARAMS = {"task": ("string", "reconstruct"), "n": ("long", 1), "seed": ("long", 0), "temperature": ("double", None),
          "sampler": ("string", None)}
FORMAT_KEY, FORMAT = "mnist_vae_format", 2  # in the model's metadata; format 1 was a pickled pytorch model
DEQUANTIZE_KEY = "dequantize_mode"
CHECKPOINT, SAMPLERS, CHOICE, SETTINGS = "checkpoint", "samplers", "best_sampler", "settings"  # the model's artifacts
SCRIPT = Path(__file__).with_name("served_model.py")
PACKAGE = Path(__file__).resolve().parents[1]  # src/mnist_vae
# the package's files the served model runs, relative to PACKAGE (tests/test_serving.py checks that they are
# exactly what served_model.py imports, transitively)
SERVED_MODULES = (
    "__init__.py", "errors.py", "files.py",
    "params/__init__.py", "params/base.py", "params/search.py", "params/sections.py",
    "data/__init__.py", "data/dequantize.py", "data/geometry.py",
    "vae/__init__.py", "vae/evaluation.py", "vae/latents.py", "vae/model.py", "vae/objectives.py",
    "vae/samplers/__init__.py", "vae/samplers/choice.py", "vae/samplers/gmm.py",
    "api/__init__.py", "api/loaded.py", "api/serving.py", "api/tasks.py",
)
REQUIREMENTS = ("numpy", "pydantic>=2", "pyyaml")  # besides torch, pinned to the version that trained it
LOG = logging.getLogger("mnist_vae.serving")


def signature():
    """Inputs: one float64 tensor (N, width); params: task, n, seed, temperature, sampler (with defaults)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ParamSchema, ParamSpec, Schema, TensorSpec

    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype("float64"), (-1, -1))]),
        outputs=Schema([TensorSpec(np.dtype("float32"), (-1, -1))]),
        params=ParamSchema([ParamSpec(name, dtype, default) for name, (dtype, default) in PARAMS.items()]),
    )


def input_example(latent_dim: int):
    """A request the served model answers: decode the prior's mean (and an example of `params`)."""
    return np.zeros((1, latent_dim), np.float64), {"task": "decode", "n": 1, "seed": 0, "temperature": 1.0,
                                                   "sampler": "prior"}


class ServedVAE(mlflow.pyfunc.PythonModel):
    """The pyfunc: `predict(inputs, params)` runs one task of api/tasks.py (see the module doc)."""

    def load_context(self, context):
        self.model = read_logged(Path(context.artifacts[CHECKPOINT]).parent)
        if not LOG.handlers:  # the server's log says which sampler each `sample` answer drew from
            LOG.addHandler(logging.StreamHandler(sys.stderr))
            LOG.setLevel(logging.INFO)

    def predict(self, context, model_input: np.ndarray, params: Optional[dict[str, Any]] = None):
        params = {name: default for name, (_, default) in PARAMS.items()} | dict(params or {})
        task = params["task"]
        try:
            if task not in TASKS:
                raise UserError(f"unknown task {task!r}; params.task is one of {', '.join(TASKS)}")
            x = np.asarray(model_input.to_numpy() if hasattr(model_input, "to_numpy") else model_input, dtype=np.float64)
            return self._answer(task, x, params)
        except UserError as exc:
            from mlflow.exceptions import MlflowException
            from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

            raise MlflowException(f"{task}: {exc}", error_code=INVALID_PARAMETER_VALUE) from None

    def _answer(self, task: str, x: np.ndarray, params: dict):
        if task == "sample":
            asked = params["sampler"] or None
            name, temperature, _ = tasks.resolve_sampler(self.model, asked, params["temperature"])
            LOG.info("sample: %d draws, seed %d, from the sampler %s at temperature %g%s", int(params["n"]),
                     int(params["seed"]), name, temperature, "" if asked else " (the model's default)")
            return tasks.sample(self.model, int(params["n"]), int(params["seed"]), temperature, name).numpy()
        if task == "decode":
            return tasks.decode(self.model, x).numpy()
        inputs = tasks.preprocess(_pixels(x), self.model.dequantize)
        if task == "encode":
            mu, logvar = tasks.encode(self.model, inputs)
            return {"mu": mu.numpy(), "logvar": logvar.numpy()}
        return tasks.reconstruct(self.model, inputs).numpy()


def _pixels(x: np.ndarray) -> np.ndarray:
    if x.ndim != 2 or x.shape[1] != PIXELS:
        raise UserError(f"inputs must be (N, 784) rows of pixels, got shape {x.shape}")
    if not (np.isfinite(x).all() and (x == np.rint(x)).all() and x.min() >= 0 and x.max() <= 255):
        raise UserError("pixels must be whole numbers 0..255 (MNIST's scale)")
    return x.astype(np.uint8)


# --------------------------------------------------------------------------- writing and reading it


def _stage_code(folder: Path) -> Path:
    """A copy of SERVED_MODULES under folder/mnist_vae: the model's code."""
    root = folder / "mnist_vae"
    for name in SERVED_MODULES:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(PACKAGE / name, root / name)
    return root


def _model_kwargs(checkpoint: Path, sampler_file: Optional[Path], dequantize: str, folder: Path,
                  choice_file: Optional[Path] = None) -> dict:
    """What mlflow.pyfunc writes: the code (staged under `folder`), the checkpoint, samplers and best-sampler
    choice, and the settings (the dequantize mode) as a small JSON artifact."""
    import torch

    settings = folder / "settings.json"
    settings.write_text(json.dumps({"format": FORMAT, "dequantize": dequantize}))
    artifacts = {CHECKPOINT: str(checkpoint), SETTINGS: str(settings),
                 **({SAMPLERS: str(sampler_file)} if sampler_file else {}),
                 **({CHOICE: str(choice_file)} if sampler_file and choice_file else {})}
    return {"python_model": str(SCRIPT), "artifacts": artifacts, "code_paths": [str(_stage_code(folder))],
            "signature": signature(),
            "input_example": input_example(load_checkpoint(checkpoint).latent_dim),
            "pip_requirements": [f"torch=={torch.__version__.split('+')[0]}", *REQUIREMENTS],
            "metadata": {FORMAT_KEY: FORMAT, DEQUANTIZE_KEY: dequantize}}


def save(path: Path, checkpoint: Path, sampler_file: Optional[Path], dequantize: str,
         choice_file: Optional[Path] = None) -> None:
    """Write the model to the folder `path` (as mlflow.pyfunc.save_model)."""
    with tempfile.TemporaryDirectory() as tmp:
        mlflow.pyfunc.save_model(str(path), **_model_kwargs(checkpoint, sampler_file, dequantize, Path(tmp), choice_file))


def log(run_id: str, checkpoint: Path, sampler_file: Optional[Path], dequantize: str, name: str,
        registered_model_name: Optional[str] = None, model_id: Optional[str] = None, step: int = 0,
        choice_file: Optional[Path] = None):
    """Log the model to the run `run_id` (open or not, without making it the active run) as `name`, into the
    LoggedModel `model_id` (a new one in the run's experiment when None), and register it if a name is given.
    Returns MLflow's ModelInfo."""
    from mlflow.models import Model

    if model_id is None:  # Model.log files a model of a run that is not active under the default experiment
        experiment_id = mlflow.MlflowClient().get_run(run_id).info.experiment_id
        model_id = mlflow.initialize_logged_model(name=name, source_run_id=run_id, experiment_id=experiment_id).model_id
    with tempfile.TemporaryDirectory() as tmp:
        return Model.log(artifact_path=None, name=name, flavor=mlflow.pyfunc, registered_model_name=registered_model_name,
                         run_id=run_id, model_id=model_id, step=step,
                         **_model_kwargs(checkpoint, sampler_file, dequantize, Path(tmp), choice_file))


def check_logged(uri: str, metadata: Optional[dict]) -> None:
    """A UserError unless the model at `uri` was logged in this format."""
    if (metadata or {}).get(FORMAT_KEY) != FORMAT:
        raise UserError(f"model {uri} was logged by an older mnist-vae (a pickled PyTorch model, which this version "
                        "does not unpickle); log it again with this version's track stage")


def read_logged(artifacts: Path) -> LoadedModel:
    """The model from a logged model's artifacts folder: the checkpoint, its samplers and best-sampler choice
    as tensors and JSON, the mode from the settings; nothing is unpickled."""
    artifacts = Path(artifacts)
    checkpoint = artifacts / "vae.pt"
    settings = load_json(artifacts / "settings.json")
    origin = Origin(uri=str(artifacts.parent), kind="mlflow", dequantize_from="the logged model")
    return LoadedModel(load_checkpoint(checkpoint), settings["dequantize"], origin,
                       **read_samplers(checkpoint, artifacts / samplers.FILE_NAME, artifacts / choice.FILE_NAME))
