"""Fixtures with a trained model: a small project as the pipeline leaves it, and its model registered in a
real MLflow store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers.digits import FIXTURE_DIGITS, REPO
from mnist_vae.data.dequantize import dequantize_splits
from mnist_vae.files import save_npz, sha256_file
from mnist_vae.params import ModelParams, SamplerParams, TrainParams
from mnist_vae.vae import samplers, training
from mnist_vae.vae.model import VAE, save_checkpoint
from mnist_vae.vae.samplers import choice

# small_vae_project's sampler: 5 components, the fixture's last 200 training digits held out
SMALL_SAMPLER = SamplerParams(gmm_components=5, held_out=200)
SMALL_FIDS = {"prior": 85.0, "gmm": 54.0}  # its recorded FIDs (those of the fixture-digit test in test_samplers.py)


@pytest.fixture(scope="session")
def digits():
    """The fixture's 1000 training and 200 test digits as rows of pixel / 255 (a training.Data)."""
    with np.load(FIXTURE_DIGITS) as f:
        x = np.float32(f["x_train"]).reshape(-1, 784) / 255
        xt = np.float32(f["x_test"]).reshape(-1, 784) / 255
    return training.Data(torch.from_numpy(x), torch.from_numpy(xt))


@pytest.fixture(scope="session")
def small_vae_project(tmp_path_factory) -> Path:
    """A project folder as the pipeline leaves it, from a VAE trained briefly on the fixture's 1000 real
    digits (latent_dim 4, hidden 64, 3 epochs, about a second): params.yaml (dequantize.mode uniform,
    so a test can tell it from the default), models/vae.pt, models/sampler.pt (a 5-component Gaussian
    mixture fitted to the mu(x) of the first 800 training digits, the last 200 held out, as the sampler stage
    does), models/best_sampler.json (evaluate's choice: gmm, from the FIDs SMALL_FIDS, given rather than
    measured, so no classifier is trained here), data/processed/{train,test}.npz (1000 and 200 digits,
    dequantized) and data/raw/mnist.npz. Treat it as read-only; copy it to change it."""
    root = tmp_path_factory.mktemp("vae-project")
    with np.load(FIXTURE_DIGITS) as f:
        raw = {k: f[k] for k in f.files}
    splits = dequantize_splits(raw, "uniform", 0)
    save_npz(root / "data" / "raw" / "mnist.npz", raw)
    save_npz(root / "data" / "processed" / "train.npz", splits["train"])
    save_npz(root / "data" / "processed" / "test.npz", splits["test"])
    (root / "params.yaml").write_text("seed: 0\ndequantize:\n  mode: uniform\n")
    torch.manual_seed(0)
    model = VAE(ModelParams(hidden_dims=[64], latent_dim=4))
    data = training.Data(torch.from_numpy(splits["train"]["x"]), torch.from_numpy(splits["test"]["x"]))
    training.train(model, data, TrainParams(epochs=3, batch_size=100), training.Seeds.from_seed(0), torch.device("cpu"))
    save_checkpoint(root / "models" / "vae.pt", model)
    state, _ = samplers.fit(model, torch.from_numpy(splits["train"]["x"]), SMALL_SAMPLER, 0)
    samplers.save(root / "models" / "sampler.pt", state, sha256_file(root / "models" / "vae.pt"))
    choice.record(root / "models" / "best_sampler.json", SMALL_FIDS, {"prior": 1.0, "gmm": 1.0},
                  root / "models" / "vae.pt", root / "models" / "sampler.pt")
    return root


LOG_SMALL_VAE = """
import json, sys
from pathlib import Path
import mlflow
from mnist_vae import load
from mnist_vae.pipeline import tracking
vae = load(sys.argv[1])
experiment = mlflow.create_experiment("mnist-vae", artifact_location=sys.argv[2])
with mlflow.start_run(experiment_id=experiment) as run:
    mlflow.log_params({"dequantize.mode": vae.dequantize, "model.latent_dim": vae.latent_dim})
    mlflow.log_metrics({"training/test_total": 150.5, "test/iw_nll": 140.25})
tracking.log_model(run.info.run_id, Path(sys.argv[1]), "mnist-vae", vae.dequantize, "vae-mlp-bernoulli-z4")  # as track does
[version] = mlflow.MlflowClient().search_model_versions("name = 'mnist-vae'")
print(json.dumps({"run_id": run.info.run_id, "version": version.version}))
"""


@pytest.fixture(scope="session")
def registered_vae(small_vae_project, tmp_path_factory):
    """small_vae_project's model logged and registered as mnist-vae by the track stage's
    tracking.log_model (so with mnist_vae.api.serving) in a fresh sqlite MLflow store, in a child process
    (so this process's MLflow state stays untouched).
    Gives tracking_uri, run_id, version and env (os.environ plus MLFLOW_TRACKING_URI) for commands."""
    store = tmp_path_factory.mktemp("mlflow-store")
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{store / 'mlflow.db'}", "MLFLOW_DISABLE_TELEMETRY": "true",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-c", LOG_SMALL_VAE, str(small_vae_project / "models" / "vae.pt"),
                           (store / "artifacts").as_uri()], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    logged = json.loads(proc.stdout.strip().splitlines()[-1])
    return types.SimpleNamespace(tracking_uri=env["MLFLOW_TRACKING_URI"], env=env, **logged)


