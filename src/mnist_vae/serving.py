"""The VAE as an MLflow model that `mlflow models serve` answers, and that `mlflow.pytorch.load_model`
still loads as the VAE.

This module is an MLflow *flavor module*: pass it to ``mlflow.models.Model.log(..., flavor=serving,
pytorch_model=vae, dequantize=mode)``, or call :func:`log_model`. Its :func:`save_model` saves the
model with ``mlflow.pytorch.save_model`` (the ``pytorch`` flavor: the pickled VAE, with this package's
code beside it, and the mode of the dequantization it was trained with as its ``dequantize``
attribute) and then points the ``python_function`` flavor's loader at this module, so the pyfunc is
:class:`ServedVAE`, with a signature.

A request to ``/invocations`` is ``{"inputs": [[...], ...], "params": {"task": ..., ...}}``:

===========  ======================================  ==========================================
task         inputs (a 2-D array of numbers)          answer ``predictions``
===========  ======================================  ==========================================
sample       ignored (send ``[[0]]``); ``params.n``   (n, 784) decoder means in [0, 1] of
             images, ``seed``, ``temperature``        z ~ p(z), the model's prior (N(0, temperature² I)
                                                      when standard), drawn with `seed`
encode       (N, 784) pixels, whole numbers 0..255    ``{"mu": (N, d), "logvar": (N, d)}``
decode       (N, d) latent vectors                    (N, 784) decoder means in [0, 1]
reconstruct  (N, 784) pixels, whole numbers 0..255    (N, 784) means decoded from mu(x)
===========  ======================================  ==========================================

Pixels are preprocessed as ``mnist_vae.preprocess`` does under the model's own dequantization, and
every task runs the same function of ``mnist_vae.inference`` as the local API and the command, so
the answers are equal. A wrong width, an unknown task or a pixel outside 0..255 is a 400 answer
with a one-line message.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Optional

import numpy as np

from mnist_vae import inference
from mnist_vae.errors import UserError

TASKS = ("sample", "encode", "decode", "reconstruct")
PARAMS = {"task": ("string", "reconstruct"), "n": ("long", 1), "seed": ("long", 0), "temperature": ("double", 1.0)}


def signature():
    """Inputs: one float64 tensor (N, width); params: task, n, seed, temperature (with defaults)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ParamSchema, ParamSpec, Schema, TensorSpec

    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype("float64"), (-1, -1))]),
        outputs=Schema([TensorSpec(np.dtype("float32"), (-1, -1))]),
        params=ParamSchema([ParamSpec(name, dtype, default) for name, (dtype, default) in PARAMS.items()]),
    )


def input_example(latent_dim: int):
    """A request the served model answers: decode the prior's mean (and an example of `params`)."""
    return np.zeros((1, latent_dim), np.float64), {"task": "decode", "n": 1, "seed": 0, "temperature": 1.0}


def save_model(path, mlflow_model=None, *, pytorch_model, dequantize: str, **kwargs):
    """mlflow.pytorch.save_model, with this module as the python_function loader.

    pytorch_model: a mnist_vae.model.VAE (saved as a copy that carries `dequantize`).
    dequantize: the dequantize.mode it was trained with. Other keyword arguments go to
    mlflow.pytorch.save_model (defaults: this module's signature and input example, the package
    as code, pickle serialization, torch and pydantic as the pip requirements).
    """
    import mlflow.pytorch
    import torch
    from mlflow.models import Model
    from mlflow.models.model import MLMODEL_FILE_NAME

    import mnist_vae

    if dequantize not in inference.DEQUANTIZE_MODES:
        raise ValueError(f"unknown dequantize mode {dequantize!r}")
    model = copy.deepcopy(pytorch_model).cpu().eval()
    model.dequantize = dequantize
    if mlflow_model is None:
        mlflow_model = Model()
    example, example_params = input_example(model.latent_dim)
    kwargs.setdefault("signature", signature())
    kwargs.setdefault("input_example", (example, example_params))
    kwargs.setdefault("code_paths", [str(Path(mnist_vae.__file__).parent)])
    kwargs.setdefault("serialization_format", "pickle")
    kwargs.setdefault("pip_requirements", [f"torch=={torch.__version__.split('+')[0]}", "pydantic>=2", "pillow>=10"])
    kwargs["metadata"] = {**(kwargs.get("metadata") or {}), "dequantize_mode": dequantize}
    mlflow.pytorch.save_model(model, path, mlflow_model=mlflow_model, **kwargs)
    pyfunc = mlflow_model.flavors["python_function"]
    pyfunc["loader_module"] = __name__
    mlflow_model.save(os.path.join(path, MLMODEL_FILE_NAME))


def log_model(vae, dequantize: str, name: str = "model", registered_model_name: Optional[str] = None,
              run_id: Optional[str] = None, **kwargs):
    """Log `vae` with this flavor to the active MLflow run, or to the run `run_id` (open or not), and
    register it if a name is given. Returns MLflow's ModelInfo. Other keyword arguments go to Model.log."""
    import sys

    import mlflow
    from mlflow.models import Model

    active = mlflow.active_run()
    if run_id is not None and "model_id" not in kwargs and (active is None or active.info.run_id != run_id):
        # Model.log files a model logged to a run that is not the active one under the default
        # experiment (MLflow 3), where `runs:/<run id>/model` does not find it: make it in the run's own
        experiment_id = mlflow.MlflowClient().get_run(run_id).info.experiment_id
        kwargs["model_id"] = mlflow.initialize_logged_model(name=name, source_run_id=run_id,
                                                            experiment_id=experiment_id).model_id
    return Model.log(artifact_path=None, name=name, flavor=sys.modules[__name__], registered_model_name=registered_model_name,
                     run_id=run_id, pytorch_model=vae, dequantize=dequantize, **kwargs)


def _load_pyfunc(path, model_config=None):
    """Called by mlflow.pyfunc.load_model with the model's data folder."""
    from mlflow.pytorch import _load_model

    model = _load_model(path, device="cpu", weights_only=False)
    return ServedVAE(model)


class ServedVAE:
    """The pyfunc: `predict(inputs, params)` runs one task of mnist_vae.inference (see the module doc)."""

    def __init__(self, model):
        self.model = model.cpu().eval()
        self.dequantize = getattr(model, "dequantize", None) or "notebook"

    def get_raw_model(self):
        return self.model

    def predict(self, data, params: Optional[dict[str, Any]] = None):
        params = {name: default for name, (_, default) in PARAMS.items()} | dict(params or {})
        task = params["task"]
        try:
            if task not in TASKS:
                raise UserError(f"unknown task {task!r}; params.task is one of {', '.join(TASKS)}")
            x = np.asarray(data.to_numpy() if hasattr(data, "to_numpy") else data, dtype=np.float64)
            if task == "sample":
                return inference.sample(self.model, int(params["n"]), int(params["seed"]), float(params["temperature"])).numpy()
            if task == "decode":
                return inference.decode(self.model, x).numpy()
            pixels = self._pixels(x)
            inputs = inference.preprocess(pixels, self.dequantize)
            if task == "encode":
                mu, logvar = inference.encode(self.model, inputs)
                return {"mu": mu.numpy(), "logvar": logvar.numpy()}
            return inference.reconstruct(self.model, inputs).numpy()
        except UserError as exc:
            from mlflow.exceptions import MlflowException
            from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

            raise MlflowException(f"{task}: {exc}", error_code=INVALID_PARAMETER_VALUE) from None

    @staticmethod
    def _pixels(x: np.ndarray) -> np.ndarray:
        if x.ndim != 2 or x.shape[1] != inference.PIXELS:
            raise UserError(f"inputs must be (N, 784) rows of pixels, got shape {x.shape}")
        if not (np.isfinite(x).all() and (x == np.rint(x)).all() and x.min() >= 0 and x.max() <= 255):
            raise UserError("pixels must be whole numbers 0..255 (MNIST's scale)")
        return x.astype(np.uint8)
